"""Read everything the exporter reports from Redis in as few round trips as possible.

A scrape is two pipelined round trips (discovery, then every per-counter and
per-shard number) plus one small pipeline per counter for its top keys
(`reads.top`). On a Redis Cluster, unique users of a counter merge HyperLogLogs
from different slots through `reads.pfcount_across_slots`.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from redis.cluster import RedisCluster

from ingest.counting import keys, reads
from ingest.counting.config import CountingConfig

# Leaderboards reported per scrape, at most (per-board series stay bounded).
MAX_BOARDS = 100
FLUSHER_FIELDS = ("lag_seconds", "last_duration_seconds", "rows_total", "errors_total",
                  "last_run")
WINDOWS = {"hour": ("h", keys.HOUR), "day": ("d", keys.DAY)}


class CounterStats(NamedTuple):
    """One counter's totals summed over its shards, its unique users and its top keys."""

    counter: str
    events: int
    value: float
    duplicates: int
    unique_users: dict[str, int]  # window -> approximate distinct users in the current one
    top: tuple[tuple[str, int], ...]  # today's top keys, count descending


class FlusherHealth(NamedTuple):
    """One sink's flusher health as the flusher last wrote it."""

    sink: str
    lag_seconds: float
    last_duration_seconds: float
    rows_total: int
    errors_total: int
    last_run: float
    skipped_total: int


class Snapshot(NamedTuple):
    """Everything one scrape reports."""

    counters: tuple[CounterStats, ...]
    flushers: tuple[FlusherHealth, ...]
    dirty: dict[str, int]  # sink -> dirty marks waiting
    boards: tuple[tuple[str, int], ...]  # (board, members)
    memory_used_bytes: int
    keys: int


def _server_stats(client) -> tuple[int, int]:
    if isinstance(client, RedisCluster):
        memory = client.info("memory", target_nodes=RedisCluster.PRIMARIES)
        used = sum(node["used_memory"] for node in memory.values())
        return used, client.dbsize()
    pipe = client.pipeline(transaction=False)
    pipe.info("memory")
    pipe.dbsize()
    memory, size = pipe.execute()
    return memory["used_memory"], size


def _discover(client, sinks: tuple[str, ...]) -> tuple[list[str], list[str], list[dict]]:
    pipe = client.pipeline(transaction=False)
    pipe.smembers(keys.COUNTERS)
    pipe.smembers(keys.LEADERBOARDS)
    for sink in sinks:
        pipe.hgetall(keys.flusher_health(sink))
    counters, boards, *flushers = pipe.execute()
    return (sorted(m.decode() for m in counters),
            sorted(m.decode() for m in boards)[:MAX_BOARDS], flushers)


def _flusher(sink: str, raw: dict) -> FlusherHealth | None:
    fields = {k.decode(): v for k, v in raw.items()}
    if not all(name in fields for name in FLUSHER_FIELDS):
        return None  # never reported (or half-written): report nothing rather than zeros
    return FlusherHealth(sink, float(fields["lag_seconds"]),
                         float(fields["last_duration_seconds"]), int(fields["rows_total"]),
                         int(fields["errors_total"]), float(fields["last_run"]),
                         int(fields.get("skipped_total", 0)))


def _queue_counter(pipe, config: CountingConfig, counter: str, sinks, indexes, cluster: bool):
    shards = [keys.shard_keys(counter, s) for s in range(config.shards)]
    for shard in shards:
        pipe.hmget(shard.stats, "events", "value", "duplicates")
        for sink in sinks:
            pipe.zcard(shard.dirty(sink))
    if not cluster:
        for res, index in indexes.values():
            pipe.pfcount(*(shard.counter_hll(res, index) for shard in shards))


def _take_counter(results, config: CountingConfig, sinks, windows, dirty: dict[str, int]):
    totals = [0, 0, 0]
    for _ in range(config.shards):
        for i, raw in enumerate(next(results)):
            totals[i] += float(raw or 0)  # `value` is a float (HINCRBYFLOAT); all are counters
        for sink in sinks:
            dirty[sink] += next(results)
    uniques = {window: next(results) for window in windows}
    return totals, uniques


def _cluster_uniques(client, config: CountingConfig, counter: str, indexes) -> dict[str, int]:
    shards = [keys.shard_keys(counter, s) for s in range(config.shards)]
    return {window: reads.pfcount_across_slots(client, [s.counter_hll(res, index)
                                                         for s in shards])
            for window, (res, index) in indexes.items()}


def read_snapshot(client, config: CountingConfig, top_n: int,
                  now: float | None = None) -> Snapshot:
    """Read one consistent-enough view of Tally's state; raises redis errors as they come."""
    now = time.time() if now is None else now
    sinks = config.sinks
    cluster = isinstance(client, RedisCluster)
    indexes = {window: (res, int(now // seconds)) for window, (res, seconds) in WINDOWS.items()}
    counters, boards, flusher_hashes = _discover(client, sinks)
    pipe = client.pipeline(transaction=False)
    for counter in counters:
        _queue_counter(pipe, config, counter, sinks, indexes, cluster)
    for board in boards:
        pipe.zcard(keys.leaderboard_key(board))
    results = iter(pipe.execute())
    dirty = dict.fromkeys(sinks, 0)
    stats = []
    for counter in counters:
        (events, value, dups), uniques = _take_counter(
            results, config, sinks, () if cluster else indexes, dirty)
        if cluster:
            uniques = _cluster_uniques(client, config, counter, indexes)
        top = reads.top(client, config, counter, top_n, day=indexes["day"][1]) if top_n else []
        stats.append(CounterStats(counter, events, value, dups, uniques, tuple(top)))
    board_sizes = tuple((board, next(results)) for board in boards)
    flushers = tuple(f for sink, raw in zip(sinks, flusher_hashes, strict=True)
                     if (f := _flusher(sink, raw)) is not None)
    used, size = _server_stats(client)
    return Snapshot(tuple(stats), flushers, dirty, board_sizes, used, size)
