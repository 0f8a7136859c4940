"""Which keys get their own InfluxDB series, and the per-counter totals every bucket gets.

Rule (stable across flushes): in a bucket, a key is featured if it is
allowlisted (TALLY_INFLUX_KEYS), or it ranks in the top N of that bucket
(value descending, then key) when it is flushed (TALLY_INFLUX_TOP_N), or it
was featured in that bucket before. The last clause is remembered in a
Redis set per shard and bucket (TTL as the bucket), so a featured point is
always rewritten when a late event corrects it, and never left stale.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from ingest.counting import keys
from ingest.counting.config import CountingConfig
from tally.flusher.handoff import queue_eval
from tally.flusher.sink import BucketRow

Bucket = tuple[str, str, int]  # (counter, resolution, index)


def featured_set(counter: str, shard: int, resolution: str, index: int) -> str:
    """Set of keys of one shard already written as their own series for a bucket."""
    # Proposed for ingest/counting/keys.py (ShardKeys.featured); kept here until then.
    return f"{keys.tag(counter, shard)}featured:{resolution}:{index}"


def summarize(client, config: CountingConfig, buckets: Sequence[Bucket],
              top_n: int) -> dict[Bucket, tuple[int, tuple[int, str] | None]]:
    """Total of each bucket over all shards, and the rank of its N-th best key."""
    pipe = client.pipeline(transaction=False)
    by_counter: dict[str, list[Bucket]] = defaultdict(list)
    for bucket in buckets:
        by_counter[bucket[0]].append(bucket)
    order = []
    for counter, mine in by_counter.items():
        for shard in range(config.shards):
            sk = keys.shard_keys(counter, shard)
            queue_eval(pipe, "summary", [sk.bucket(res, index) for _, res, index in mine],
                       [top_n])
            order.append(mine)
    totals: dict[Bucket, int] = defaultdict(int)
    tops: dict[Bucket, list[tuple[int, str]]] = defaultdict(list)
    for mine, reply in zip(order, pipe.execute() if order else [], strict=True):
        for bucket, row in zip(mine, reply, strict=True):
            totals[bucket] += int(row[0])
            tops[bucket].extend((-int(v), k.decode()) for k, v in zip(row[1::2], row[2::2],
                                                                       strict=True))
    return {b: (totals[b], _nth_best(tops[b], top_n)) for b in buckets}


def _nth_best(ranks: list[tuple[int, str]], n: int) -> tuple[int, str] | None:
    """Rank (-value, key) of the N-th best key; None = top-N off; (0, "") = all keys qualify."""
    if n <= 0:
        return None
    ranked = sorted(ranks)
    return ranked[n - 1] if len(ranked) >= n else (0, "")


def select(client, config: CountingConfig, rows: Sequence[BucketRow], allow: frozenset[str],
           top_n: int) -> list[BucketRow]:
    """Featured per-key rows plus one total row per touched bucket, for the InfluxDB sink."""
    buckets = list(dict.fromkeys((r.counter, r.resolution, r.index) for r in rows))
    summary = summarize(client, config, buckets, top_n)
    names = [featured_set(r.counter, keys.key_shard(r.key, config.shards), r.resolution, r.index)
             for r in rows]
    pipe = client.pipeline(transaction=False)
    for name, row in zip(names, rows, strict=True):
        pipe.sismember(name, row.key)
    before = pipe.execute() if rows else []
    chosen = []
    for name, row, was in zip(names, rows, before, strict=True):
        nth = summary[(row.counter, row.resolution, row.index)][1]
        if was or row.key in allow or (nth is not None and (-row.value, row.key) <= nth):
            chosen.append(row)
            if not was:
                pipe.sadd(name, row.key)
                pipe.expire(name, config.ttl(keys.RESOLUTIONS[row.resolution]), nx=True)
    pipe.execute()
    totals = [BucketRow(res, counter, None, index, total, None)
              for (counter, res, index), (total, _) in summary.items() if total > 0]
    return chosen + totals
