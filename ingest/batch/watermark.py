"""The archive watermark W: every event counted before W is in TimescaleDB's `events`.

The batch step appends what it counts to its shard's log stream with an entry
ID of `<ms>-<seq>` in Redis time, and the archiver deletes an entry only after
its events are committed to `events` (archive.py). So the oldest entry still
in a stream bounds what that stream has not yet archived: everything appended
before it is stored. W is the smallest such bound over all streams.

Order matters. Redis TIME is read first, then the head of every stream: an
entry appended after the TIME read has an ID at or above it, and an entry
trimmed between the reads was committed before it left. An empty stream is
bounded by the TIME read. W never exceeds the TIME read, even if a stream's
IDs ran ahead of the clock (XADD keeps IDs increasing across a clock step back).

On a Redis Cluster the streams live on several primaries, each with its own
clock; W then is only as good as their agreement (NTP-level skew, far below
the accepted lateness that every use of W adds).

A bucket [b, b + length) is complete in `events` when
b + length + TALLY_ACCEPTED_LATENESS + TALLY_CLOCK_SKEW <= W: no event for it
can still be accepted and none accepted is unarchived. The lateness check runs
on the ingest host's clock when the event is validated, W on Redis' clock when
the batch is appended; the skew margin covers both the hosts' disagreement and
the moment between the check and the append. (An event's ts may also lie up
to the skew in the future; that only moves it into a later bucket, judged by
its own end.)
"""

from __future__ import annotations

from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import handoff


def redis_time(client) -> float:
    """Redis' clock as epoch seconds."""
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


def stream_heads(client, config: CountingConfig) -> dict[str, int | None]:
    """Each log stream's oldest entry's ms (None for an empty or missing stream)."""
    shards = handoff.discover(client, config.shards)
    if not shards:
        return {}
    pipe = client.pipeline(transaction=False)
    for shard in shards:
        pipe.xrange(shard.keys.log, count=1)
    heads = {}
    for shard, reply in zip(shards, pipe.execute(), strict=True):
        heads[shard.keys.log] = int(reply[0][0].partition(b"-")[0]) if reply else None
    return heads


def archived_until(client, config) -> float:
    """W in epoch seconds: every event counted before it is in `events` (see the module doc).

    `config`: a CountingConfig, or Settings (for its shard count).
    """
    if not isinstance(config, CountingConfig):
        config = CountingConfig.from_settings(config)
    now = redis_time(client)  # first: see the module doc
    heads = [ms / 1000 for ms in stream_heads(client, config).values() if ms is not None]
    return min([now, *heads])


def complete_before(settings, watermark: float) -> float:
    """The time every complete bucket ends by: W - lateness - skew (the module doc's rule)."""
    return watermark - settings.accepted_lateness - settings.clock_skew


def complete(bucket_start: float, length: float, margin: float, watermark: float) -> bool:
    """Whether no event of the bucket can still arrive in `events`; margin = lateness + skew."""
    return bucket_start + length + margin <= watermark
