"""Atomic handoff of dirty marks: take into a leased in-flight set, then release or restore.

Each call is one Lua script inside one counter shard's hash tag, so it is
atomic on a single Redis and on a Cluster alike. See docs/flusher.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import NamedTuple

from tally import keys
from tally.ingest.counting import loader


def queue_eval(pipe, name: str, keys_: Sequence[str], args: Sequence) -> None:
    """Queue the flusher's lua/<name>.lua on a pipeline (EVAL: see counting/loader.py)."""
    loader.queue_eval(pipe, loader.FLUSHER, name, keys_, args)


class Shard(NamedTuple):
    """One counter shard: the unit of atomic handoff."""

    counter: str
    index: int

    @property
    def keys(self) -> keys.ShardKeys:
        """Key names of this shard."""
        return keys.shard_keys(self.counter, self.index)


class Mark(NamedTuple):
    """A dirty (minute, key) of one shard with its first-dirty time."""

    shard: Shard
    minute: int
    key: str
    score: float


def new_token() -> str:
    """A unique in-flight token for one flusher run."""
    return uuid.uuid4().hex


def discover(client, shards: int) -> list[Shard]:
    """Every counter shard, counters taken from the tally:counters set."""
    counters = sorted(c.decode() for c in client.smembers(keys.COUNTERS))
    return [Shard(counter, i) for counter in counters for i in range(shards)]


def _inflight_prefix(shard: Shard, sink: str) -> str:
    return shard.keys.inflight(sink, "")


def take(client, shards: Sequence[Shard], sink: str, token: str, limit: int,
         deadline: float) -> list[Mark]:
    """Move up to `limit` oldest marks per shard into this run's leased in-flight sets."""
    replies = _per_shard(client, "take", shards,
                         lambda s: [s.keys.dirty(sink), s.keys.inflight(sink, token),
                                    s.keys.leases(sink)], lambda s: [limit, deadline, token])
    marks = []
    for shard, reply in zip(shards, replies, strict=True):
        if reply:
            marks += _unpack(shard, *reply)
    return marks


def _unpack(shard: Shard, joined: bytes, lengths: bytes, scores: bytes) -> list[Mark]:
    """Marks from take.lua's reply: concatenated members, their byte lengths, their scores."""
    marks, start = [], 0
    for length, score in zip(lengths.split(), scores.split(), strict=True):
        end = start + int(length)
        minute, key = keys.parse_dirty_member(joined[start:end])
        marks.append(Mark(shard, minute, key, float(score)))
        start = end
    return marks


def _per_shard(client, name: str, shards, keys_of, args_of) -> list:
    pipe = client.pipeline(transaction=False)
    for shard in shards:
        queue_eval(pipe, name, keys_of(shard), args_of(shard))
    return pipe.execute() if shards else []


def release(client, shards: Sequence[Shard], sink: str, token: str) -> None:
    """Drop the in-flight marks and lease of a run whose writes all succeeded."""
    _per_shard(client, "release", shards,
               lambda s: [s.keys.inflight(sink, token), s.keys.leases(sink)], lambda s: [token])


def restore(client, shards: Sequence[Shard], sink: str, token: str) -> int:
    """Put a failed run's marks back into dirty (earliest score kept); return how many."""
    moved = _per_shard(client, "recover", shards,
                       lambda s: [s.keys.dirty(sink), s.keys.leases(sink)],
                       lambda s: [0, _inflight_prefix(s, sink), token])
    return int(sum(moved))


def recover(client, shards: Sequence[Shard], sink: str, now: float) -> int:
    """Return marks of every expired lease (killed flushers) to dirty; return how many."""
    moved = _per_shard(client, "recover", shards,
                       lambda s: [s.keys.dirty(sink), s.keys.leases(sink)],
                       lambda s: [now, _inflight_prefix(s, sink)])
    return int(sum(moved))


def reclaim(client, shards: Sequence[Shard], sink: str) -> int:
    """Return every in-flight mark of a sink to dirty, leased or not; return how many.

    Only for the holder of the sink's lock, before it takes marks: only lock
    holders take, so every in-flight set then belongs to a holder that was
    killed or lost the lock, and its marks need not wait for their lease.
    """
    moved = _per_shard(client, "recover", shards,
                       lambda s: [s.keys.dirty(sink), s.keys.leases(sink)],
                       lambda s: ["+inf", _inflight_prefix(s, sink)])
    return int(sum(moved))


def remark(client, sink: str, marks: Sequence[Mark]) -> int:
    """Put marks back into dirty (earliest score kept), whoever holds them now; return how many.

    For a write that may have landed after another flusher's newer one: the
    marks make the lock holder write those buckets again.
    """
    by_shard: dict[Shard, dict[str, float]] = {}
    for mark in marks:
        by_shard.setdefault(mark.shard, {})[keys.dirty_member(mark.minute, mark.key)] = mark.score
    pipe = client.pipeline(transaction=False)
    for shard, members in by_shard.items():
        pipe.zadd(shard.keys.dirty(sink), members, lt=True)
    if by_shard:
        pipe.execute()
    return sum(len(members) for members in by_shard.values())


def queue_oldest(pipe, shard: Shard, sink: str) -> None:
    """Queue the read of a shard's oldest mark of a sink (see `oldest_of`)."""
    queue_eval(pipe, "oldest", [shard.keys.dirty(sink), shard.keys.leases(sink)],
               [_inflight_prefix(shard, sink)])


def oldest_of(replies) -> float | None:
    """The earliest first-dirty time among queue_oldest replies; None when all are drained."""
    found = [float(reply) for reply in replies if reply]
    return min(found) if found else None


def oldest(client, shards: Sequence[Shard], sink: str) -> float | None:
    """First-dirty time of the oldest mark of a sink, dirty or in flight; None when drained.

    In-flight marks count: a run that hangs, or a flusher killed mid-run,
    still owes them to the sink.
    """
    pipe = client.pipeline(transaction=False)
    for shard in shards:
        queue_oldest(pipe, shard, sink)
    return oldest_of(pipe.execute() if shards else [])
