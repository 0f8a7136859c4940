"""Reads of counts, uniques and top keys; each merges a key's shards in one round trip."""

from __future__ import annotations

import heapq
import uuid
from collections import defaultdict
from collections.abc import Sequence

from redis.cluster import RedisCluster

from tally import keys
from tally.ingest.counting import loader
from tally.ingest.counting.config import CountingConfig


def _shards(config: CountingConfig, counter: str, key: str) -> list[keys.ShardKeys]:
    spread = config.spread(counter, key)
    return [keys.shard_keys(counter, s) for s in keys.key_shards(key, config.shards, spread)]


def _sum_fields(client, lookups: Sequence[tuple[str, str]]) -> list[int]:
    pipe = client.pipeline(transaction=False)
    for name, field in lookups:
        pipe.hget(name, field)
    return [int(v or 0) for v in pipe.execute()]


def total(client, config: CountingConfig, counter: str, key: str) -> int:
    """Real-time all-time count of a key."""
    return sum(_sum_fields(client, [(s.total, key) for s in _shards(config, counter, key)]))


def totals(client, config: CountingConfig, counter: str,
           names: Sequence[str]) -> list[int]:
    """Real-time all-time counts of many keys, in the order given, in one pipeline.

    Keys of one shard share its total hash, so the pipeline holds one HMGET per
    shard hash touched (at most `shards` of them, however many keys) and a hot
    key's count is summed over its spread. On a Redis Cluster the pipeline sends
    each node its commands at once: one round trip per node.
    """
    wanted: dict[str, list[str]] = defaultdict(list)  # total hash -> keys read from it
    for key in dict.fromkeys(names):
        for shard in _shards(config, counter, key):
            wanted[shard.total].append(key)
    if not wanted:
        return []
    pipe = client.pipeline(transaction=False)
    for name, fields in wanted.items():
        pipe.hmget(name, fields)
    sums: dict[str, int] = defaultdict(int)
    for fields, values in zip(wanted.values(), pipe.execute(), strict=True):
        for key, value in zip(fields, values, strict=True):
            sums[key] += int(value or 0)
    return [sums[key] for key in names]


def bucket_values(client, config: CountingConfig, counter: str, key: str, resolution: str,
                  indexes: Sequence[int]) -> dict[int, int]:
    """Counts of a key per minute/hour/day index (0 where Redis holds nothing)."""
    shards = _shards(config, counter, key)
    values = _sum_fields(client, [(s.bucket(resolution, i), key) for i in indexes for s in shards])
    n = len(shards)
    return {index: sum(values[j * n:(j + 1) * n]) for j, index in enumerate(indexes)}


def unique_views(client, config: CountingConfig, counter: str, key: str,
                 day: int | None = None) -> int:
    """Exact unique views of a key on a UTC day index, or all time."""
    lookups = [(s.unique_views(day), key) for s in _shards(config, counter, key)]
    return sum(_sum_fields(client, lookups))


def pfcount_across_slots(client, names: list[str]) -> int:
    """PFCOUNT of HyperLogLogs in different cluster slots (copied under one temporary tag)."""
    return pfcounts_across_slots(client, [names])[0]


def pfcounts_across_slots(client, groups: Sequence[Sequence[str]]) -> list[int]:
    """PFCOUNT of each group of HyperLogLogs spread over cluster slots, in three round trips.

    The blobs are copied under one temporary tag (PFCOUNT cannot span slots),
    counted group by group in one script call, then deleted.
    """
    pipe = client.pipeline(transaction=False)
    for name in (name for group in groups for name in group):
        pipe.get(name)
    blobs = iter(pipe.execute())
    tag, temps, sizes = f"{{tmp:{uuid.uuid4().hex}}}", [], []
    for group in groups:
        found = [blob for blob in (next(blobs) for _ in group) if blob]
        names = [f"{tag}:{len(temps) + i}" for i in range(len(found))]
        for name, blob in zip(names, found, strict=True):
            pipe.set(name, blob, px=10_000)
        temps.extend(names)
        sizes.append(len(found))
    if not temps:
        return [0] * len(groups)
    pipe.execute()
    try:
        return pfcount_groups(client, temps, sizes)
    finally:
        client.delete(*temps)


def pfcount_groups(client, names: Sequence[str], sizes: Sequence[int]) -> list[int]:
    """PFCOUNT of consecutive groups of names (`sizes` long) that share one cluster slot."""
    if not names:
        return [0] * len(sizes)
    return [int(n) for n in loader.call(client, loader.COUNTING, "pfcount_groups", names, sizes)]


def uniques(client, config: CountingConfig, counter: str, key: str, resolution: str,
            indexes: Sequence[int]) -> int:
    """Approximate distinct users of a key over buckets (HyperLogLogs merged, 0.81% error)."""
    shards = _shards(config, counter, key)
    names = [s.hll(resolution, i, key) for s in shards for i in indexes]
    if isinstance(client, RedisCluster) and len(shards) > 1:
        return pfcount_across_slots(client, names)
    return client.pfcount(*names)


def bucket_uniques(client, config: CountingConfig, counter: str, key: str, resolution: str,
                   indexes: Sequence[int]) -> dict[int, int]:
    """Approximate distinct users of a key in each bucket (0 where Redis holds none)."""
    shards = _shards(config, counter, key)
    groups = [[s.hll(resolution, i, key) for s in shards] for i in indexes]
    if isinstance(client, RedisCluster) and len(shards) > 1:
        counts = pfcounts_across_slots(client, groups)
    else:  # one shard's HyperLogLogs share its slot
        counts = pfcount_groups(client, [n for g in groups for n in g], [len(shards)] * len(groups))
    return dict(zip(indexes, counts, strict=True))


def _shard_tops(client, names: list[str], k: int) -> list[list[tuple[bytes, float]]]:
    # ZREVRANGE orders ties by member descending, but top() wants key
    # ascending: where a shard's k-th score is tied, fetch the members at
    # exactly that score in ascending order instead.
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.zrevrange(name, 0, k - 1, withscores=True)
    rows = pipe.execute()
    full = [i for i, r in enumerate(rows) if len(r) == k]
    for i in full:
        pipe.zrangebyscore(names[i], rows[i][-1][1], rows[i][-1][1], 0, k, withscores=True)
    for i, tied in zip(full, pipe.execute() if full else [], strict=True):
        rows[i] = [row for row in rows[i] if row[1] > rows[i][-1][1]] + tied
    return rows


def top(client, config: CountingConfig, counter: str, k: int,
        day: int | None = None) -> list[tuple[str, int]]:
    """Top k keys by count for a day index or all time: score descending, then key ascending."""
    if k < 1:
        return []
    names = [keys.shard_keys(counter, shard).top(day) for shard in range(config.shards)]
    scores: dict[str, int] = defaultdict(int)
    for rows in _shard_tops(client, names, k):
        for member, score in rows:
            scores[member.decode()] += int(score)
    # A hot key's partial scores may be missing from some shard's top k: read them all.
    for (hot_counter, key), _ in config.hot_keys.items():
        if hot_counter == counter:
            scores[key] = _hot_score(client, config, counter, key, day)
    scores = {key: score for key, score in scores.items() if score > 0}
    return heapq.nsmallest(k, scores.items(), key=lambda item: (-item[1], item[0]))


def _hot_score(client, config: CountingConfig, counter: str, key: str, day: int | None) -> int:
    pipe = client.pipeline(transaction=False)
    for shard in _shards(config, counter, key):
        pipe.zscore(shard.top(day), key)
    return sum(int(v or 0) for v in pipe.execute())

