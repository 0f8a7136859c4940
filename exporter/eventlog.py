"""The event log as the exporter sees it: what the archiver still owes TimescaleDB, per counter.

Each counter shard has a log stream (`<tag>log`) of entries not yet
archived, and its stats hash counts their events (`log_backlog`, raised by
the batch step, lowered by the archiver's trim). The snapshot's per-shard
pipeline reads, besides the stats HMGET (which gains `log_backlog`), XLEN
and XRANGE COUNT 1 of each stream. The oldest entry comes with its lines:
Redis has no command that returns a stream's first ID alone. A Lua script
returning just the ID ships less, but was measured to cost Redis' thread
about 8 times what XRANGE does (docs/observability.md): that thread is what
ingest waits for, while parsing the reply is the exporter's own time.

An entry's ID is `<ms>-<seq>`, ms being Redis' clock when it was appended,
so the oldest entry's age is the scrape's time less that. The bound that
refuses ingest (`event_log_max`) applies to each stream alone, so the
fullest stream is reported next to the sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from tally import keys


class EventLogStats(NamedTuple):
    """One counter's unarchived log, over its shards."""

    counter: str
    backlog_events: int  # sum of the shards' log_backlog
    backlog_entries: int  # sum of the streams' lengths
    fullest_stream_events: int  # the largest one shard's log_backlog (the bound is per stream)
    oldest_age_seconds: float  # age of the oldest entry at the scrape; 0 when the log is empty


class EventLog(NamedTuple):
    """The per-stream bound and every counter's log."""

    max_events: int
    counters: tuple[EventLogStats, ...]

    @property
    def oldest_age_seconds(self) -> float:
        """Age of the oldest unarchived entry of any counter: the archiver's lag."""
        return max((c.oldest_age_seconds for c in self.counters), default=0.0)


def queue_shard(pipe, shard: keys.ShardKeys) -> None:
    """Queue the reads of one shard's stream: its length, then its oldest entry."""
    pipe.xlen(shard.log)
    pipe.xrange(shard.log, count=1)


def entry_time(entry_id: bytes) -> float:
    """Redis time (epoch seconds) an entry was appended, from its ID `<ms>-<seq>`."""
    return int(entry_id.partition(b"-")[0]) / 1000


def counter_stats(counter: str, backlogs: Sequence, heads: Sequence, now: float) -> EventLogStats:
    """A counter's log at `now` from its shards' log_backlog fields and (XLEN, XRANGE) replies.

    The age is never negative: an entry appended after `now` by Redis' clock
    (the exporter's clock behind Redis') counts as new.
    """
    events = [int(raw or 0) for raw in backlogs]
    entries, times = 0, []
    for length, head in heads:
        entries += length
        if head:
            times.append(entry_time(head[0][0]))
    age = max(0.0, now - min(times)) if times else 0.0
    return EventLogStats(counter, sum(events), entries, max(events, default=0), age)
