"""The Redis key scheme: the single owner of every key name Tally uses.

A counter's keyspace is split into `shards` groups, each under its own hash
tag `{t:<counter>:<shard>}`. A key (what is counted) lives in the shard given
by CRC32 of its UTF-8 bytes, so everything one event touches (dedup mark,
buckets, HyperLogLogs, unique-view set, top-k set, dirty mark) shares one
cluster slot, while a big counter spreads over the whole cluster. Hot keys
may be spread over several shards; readers then merge those shards.

Inside a tag, keys are `<tag><kind>:<time index>:<key>`. The counter is
`[a-z0-9_]` and time indexes are integers, so the only free text is the
key, and it always comes last: no two (kind, time, key) triples can produce
the same name, and no brace in a key can change the hash slot (Redis hashes
the first `{...}`, which is always the tag). Hash fields and set members
carry keys as raw bytes. See docs/redis-keys.md for the full table.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from tally.resolutions import DAY, HOUR, MINUTE, RESOLUTIONS  # noqa: F401 - re-exported

COUNTERS = "tally:counters"  # set of counter names seen (no tag; discovery only)
LEADERBOARDS = "tally:leaderboards"  # set of leaderboard names (no tag; discovery only)


def tag(counter: str, shard: int) -> str:
    """Hash tag shared by all keys of one counter shard."""
    return f"{{t:{counter}:{shard}}}"


def key_shard(key: str, shards: int) -> int:
    """Home shard of a key: stable across processes and Python versions."""
    return zlib.crc32(key.encode()) % shards


def spread_shard(key: str, shards: int, spread: int, discriminator: str) -> int:
    """Shard for one event of a hot key spread over `spread` consecutive shards."""
    return (key_shard(key, shards) + zlib.crc32(discriminator.encode()) % spread) % shards


def key_shards(key: str, shards: int, spread: int = 1) -> list[int]:
    """Every shard that may hold data of a key."""
    home = key_shard(key, shards)
    return [(home + i) % shards for i in range(min(spread, shards))]


@dataclass(frozen=True)
class ShardKeys:
    """Key names inside one counter shard (one hash tag, so one cluster slot)."""

    tag: str

    def bucket(self, resolution: str, index: int) -> str:
        """Hash of key -> count for one minute/hour/day."""
        return f"{self.tag}{resolution}:{index}"

    @property
    def total(self) -> str:
        """Hash of key -> all-time count."""
        return f"{self.tag}total"

    def hll(self, resolution: str, index: int, key: str) -> str:
        """HyperLogLog of users of one key in one minute/hour/day."""
        return f"{self.tag}u:{resolution}:{index}:{key}"

    def counter_hll(self, resolution: str, index: int) -> str:
        """HyperLogLog of users of the whole counter shard in one hour/day (for the exporter)."""
        return f"{self.tag}cu:{resolution}:{index}"

    def viewers(self, day: int, key: str) -> str:
        """Exact set of users who touched a key on a UTC day (unique views)."""
        return f"{self.tag}uv:{day}:{key}"

    def unique_views(self, day: int | None) -> str:
        """Hash of key -> unique views for a day (or all time when day is None)."""
        return f"{self.tag}uvc:{'all' if day is None else day}"

    def top(self, day: int | None) -> str:
        """Sorted set of keys by count for a day (or all time when day is None)."""
        return f"{self.tag}top:{'all' if day is None else day}"

    def dedup_ids(self, generation: int) -> str:
        """Set of dedup members seen in one dedup generation (window / 2 seconds), exact mode."""
        return f"{self.tag}ids:{generation}"

    def bloom(self, generation: int) -> str:
        """Bloom filter bitmap of one dedup generation, bloom mode."""
        return f"{self.tag}bloom:{generation}"

    @property
    def stats(self) -> str:
        """Hash of events/duplicates/value counted in this shard (for the exporter)."""
        return f"{self.tag}stats"

    def dirty(self, sink: str) -> str:
        """Sorted set of "<minute>:<key>" marks not yet in one sink, scored by first-dirty time."""
        return f"{self.tag}dirty:{sink}"

    def inflight(self, sink: str, token: str) -> str:
        """Marks taken by one flusher run for one sink, until its writes succeed."""
        return f"{self.tag}inflight:{sink}:{token}"

    def leases(self, sink: str) -> str:
        """Sorted set of in-flight tokens by lease deadline (epoch seconds)."""
        return f"{self.tag}leases:{sink}"

    def featured(self, resolution: str, index: int) -> str:
        """Set of keys already written to InfluxDB as their own series for one bucket."""
        return f"{self.tag}featured:{resolution}:{index}"


def shard_keys(counter: str, shard: int) -> ShardKeys:
    """Key names of one counter shard."""
    return ShardKeys(tag(counter, shard))


def dedup_member(event_id: str, key: str) -> str:
    """Dedup identity of an event inside its counter: id and key (no newline occurs in either)."""
    return f"{event_id}\n{key}"


def dirty_member(minute: int, key: str) -> str:
    """Encode a dirty mark: the minute index, a colon, the key."""
    return f"{minute}:{key}"


def parse_dirty_member(member: bytes) -> tuple[int, str]:
    """Decode a dirty mark (the key may contain colons; the minute never does)."""
    minute, _, key = member.partition(b":")
    return int(minute), key.decode()


def flusher_health(sink: str) -> str:
    """Hash of a sink's flusher health (lag, duration, rows, errors) for the exporter."""
    return f"tally:flusher:{sink}"


def flusher_lock(sink: str) -> str:
    """String holding the token of the one flusher run writing a sink (see flusher/lock.py)."""
    return f"tally:flusher:lock:{sink}"


def leaderboard_key(board: str) -> str:
    """Sorted set of one leaderboard (scores stored negated; see leaderboard.py)."""
    return f"lb:{{{board}}}"


def leaderboard_idempotency_key(board: str, idempotency_key: str) -> str:
    """String recording one Idempotency-Key's request and answer on a board (same slot)."""
    return f"lb:{{{board}}}:idem:{hashlib.sha1(idempotency_key.encode()).hexdigest()}"


def rate_limit_key(limit: str, subject: str) -> str:
    """Sliding-window set of one (limit, subject); the digest spreads subjects over slots."""
    digest = hashlib.sha1(subject.encode()).hexdigest()
    return f"rl:{{{limit}:{digest}}}"
