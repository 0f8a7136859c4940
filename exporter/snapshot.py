"""Read everything the exporter reports from Redis in as few round trips as possible.

A scrape is two pipelined round trips (discovery, then every per-counter and
per-shard number, the oldest dirty or in-flight mark of each shard and sink
and, with the event log on, each shard's log backlog among them: see
eventlog.py) plus one small pipeline per counter for its top keys
(`reads.top`). On a Redis Cluster, unique users of a counter merge HyperLogLogs
from different slots through `reads.pfcount_across_slots`.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from redis.cluster import RedisCluster

from tally import keys
from tally.exporter import eventlog
from tally.ingest.counting import reads
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import archive, handoff

# Leaderboards reported per scrape, at most (per-board series stay bounded).
MAX_BOARDS = 100
STATS_FIELDS = ("events", "value", "duplicates")  # summed over shards per counter
FLUSHER_FIELDS = ("last_duration_seconds", "rows_total", "errors_total", "last_run")
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
    """One flusher worker's health (a sink's, or the archiver's) as the flusher last wrote it."""

    sink: str
    last_duration_seconds: float
    rows_total: int
    errors_total: int
    last_run: float
    skipped_total: int
    last_success: float | None  # None: no run has succeeded yet


class RedisMemory(NamedTuple):
    """INFO memory of the Redis (summed over cluster primaries) against its maxmemory."""

    used_bytes: int
    max_bytes: int  # 0 when some primary has no limit
    used_ratio: float | None  # used / maxmemory of the fullest primary; None without a limit


class Snapshot(NamedTuple):
    """Everything one scrape reports."""

    counters: tuple[CounterStats, ...]
    flushers: tuple[FlusherHealth, ...]
    dirty: dict[str, int]  # sink -> dirty marks waiting
    lag: dict[str, float]  # sink -> age of its oldest dirty or in-flight mark (0 when drained);
    # with the event log on, also the archiver ("events") -> age of the oldest unarchived entry
    boards: tuple[tuple[str, int], ...]  # (board, members)
    memory: RedisMemory
    keys: int
    event_log: eventlog.EventLog | None  # None when the event log is off


def redis_memory(infos) -> RedisMemory:
    """Memory use against the limit from the INFO memory of every primary."""
    used = sum(info["used_memory"] for info in infos)
    limits = [info.get("maxmemory", 0) for info in infos]
    if not infos or not all(limits):
        return RedisMemory(used, 0, None)
    ratio = max(info["used_memory"] / info["maxmemory"] for info in infos)
    return RedisMemory(used, sum(limits), ratio)


def _server_stats(client) -> tuple[RedisMemory, int]:
    if isinstance(client, RedisCluster):
        memory = client.info("memory", target_nodes=RedisCluster.PRIMARIES)
        return redis_memory(list(memory.values())), client.dbsize()
    pipe = client.pipeline(transaction=False)
    pipe.info("memory")
    pipe.dbsize()
    memory, size = pipe.execute()
    return redis_memory([memory]), size


def _workers(config: CountingConfig) -> tuple[str, ...]:
    """Names of the flusher's workers, whose health hashes the scrape reads: sinks, archiver."""
    return (*config.sinks, *((archive.NAME,) if config.event_log else ()))


def _discover(client, workers: tuple[str, ...]) -> tuple[list[str], list[str], list[dict]]:
    pipe = client.pipeline(transaction=False)
    pipe.smembers(keys.COUNTERS)
    pipe.smembers(keys.LEADERBOARDS)
    for worker in workers:
        pipe.hgetall(keys.flusher_health(worker))
    counters, boards, *flushers = pipe.execute()
    return (sorted(m.decode() for m in counters),
            sorted(m.decode() for m in boards)[:MAX_BOARDS], flushers)


def _flusher(sink: str, raw: dict) -> FlusherHealth | None:
    fields = {k.decode(): v for k, v in raw.items()}
    if not all(name in fields for name in FLUSHER_FIELDS):
        return None  # never reported (or half-written): report nothing rather than zeros
    success = fields.get("last_success")
    return FlusherHealth(sink, float(fields["last_duration_seconds"]), int(fields["rows_total"]),
                         int(fields["errors_total"]), float(fields["last_run"]),
                         int(fields.get("skipped_total", 0)),
                         float(success) if success else None)


def _queue_counter(pipe, config: CountingConfig, counter: str, sinks, indexes, cluster: bool):
    shards = [keys.shard_keys(counter, s) for s in range(config.shards)]
    stats_fields = STATS_FIELDS + (("log_backlog",) if config.event_log else ())
    for index, shard in enumerate(shards):
        pipe.hmget(shard.stats, *stats_fields)
        if config.event_log:
            eventlog.queue_shard(pipe, shard)
        for sink in sinks:
            pipe.zcard(shard.dirty(sink))
            handoff.queue_oldest(pipe, handoff.Shard(counter, index), sink)
    if not cluster:
        for res, index in indexes.values():
            pipe.pfcount(*(shard.counter_hll(res, index) for shard in shards))


def _take_counter(results, config: CountingConfig, sinks, windows, dirty: dict[str, int],
                  oldest: dict[str, list]):
    totals = [0, 0, 0]
    backlogs, heads = [], []
    for _ in range(config.shards):
        stats = next(results)
        for i, raw in enumerate(stats[:len(STATS_FIELDS)]):
            totals[i] += float(raw or 0)  # `value` is a float (HINCRBYFLOAT); all are counters
        if config.event_log:
            backlogs.append(stats[len(STATS_FIELDS)])
            heads.append((next(results), next(results)))
        for sink in sinks:
            dirty[sink] += next(results)
            oldest[sink].append(next(results))
    uniques = {window: next(results) for window in windows}
    return totals, uniques, backlogs, heads


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
    workers = _workers(config)
    counters, boards, flusher_hashes = _discover(client, workers)
    pipe = client.pipeline(transaction=False)
    for counter in counters:
        _queue_counter(pipe, config, counter, sinks, indexes, cluster)
    for board in boards:
        pipe.zcard(keys.leaderboard_key(board))
    results = iter(pipe.execute())
    dirty = dict.fromkeys(sinks, 0)
    oldest: dict[str, list] = {sink: [] for sink in sinks}
    stats, logs = [], []
    for counter in counters:
        (events, value, dups), uniques, backlogs, heads = _take_counter(
            results, config, sinks, () if cluster else indexes, dirty, oldest)
        logs.append(eventlog.counter_stats(counter, backlogs, heads, now))
        if cluster:
            uniques = _cluster_uniques(client, config, counter, indexes)
        top = reads.top(client, config, counter, top_n, day=indexes["day"][1]) if top_n else []
        stats.append(CounterStats(counter, events, value, dups, uniques, tuple(top)))
    board_sizes = tuple((board, next(results)) for board in boards)
    flushers = tuple(f for worker, raw in zip(workers, flusher_hashes, strict=True)
                     if (f := _flusher(worker, raw)) is not None)
    lag = {sink: _age(handoff.oldest_of(replies), now) for sink, replies in oldest.items()}
    log = eventlog.EventLog(config.event_log_max, tuple(logs)) if config.event_log else None
    if log is not None:
        lag[archive.NAME] = log.oldest_age_seconds
    memory, size = _server_stats(client)
    return Snapshot(tuple(stats), flushers, dirty, lag, board_sizes, memory, size, log)


def _age(first_dirty: float | None, now: float) -> float:
    return 0.0 if first_dirty is None else max(0.0, now - first_dirty)
