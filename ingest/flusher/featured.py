"""Which keys get their own InfluxDB series, and the per-counter totals every bucket gets.

Rule (stable across flushes): in a bucket, a key is featured if it is
allowlisted (TALLY_INFLUX_KEYS), or it ranks in the top N of that bucket
(value descending, then key) when it is flushed (TALLY_INFLUX_TOP_N), or it
was featured in that bucket before. The last clause is remembered in a
Redis set per shard and bucket (TTL as the bucket), so a featured point is
always rewritten when a late event corrects it, and never left stale.

A run summarizes each bucket once (lua/summary.lua: total and top N), the
first time one of its rounds touches it. The N-th best rank of that summary
may only be older than the moment of the flush: counts only grow, so an
older N-th best is never stricter, and no key of the current top N is
missed. A total is written once per run, before the run releases its
marks; it is read again at the end only if a later round touched its
bucket (an event after the summary re-marks the bucket, so a bucket no
later round touched still has the total its summary read).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from tally import keys
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import reader
from tally.ingest.flusher.handoff import queue_eval
from tally.ingest.flusher.sink import BucketRow

Bucket = tuple[str, str, int]  # (counter, resolution, index)
Rank = tuple[int, str]  # (-value, key): smaller is better


def summarize(client, config: CountingConfig, buckets: Sequence[Bucket],
              top_n: int) -> dict[Bucket, tuple[int, Rank | None]]:
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
                       [max(0, top_n)])
            order.append(mine)
    totals: dict[Bucket, int] = defaultdict(int)
    tops: dict[Bucket, list[Rank]] = defaultdict(list)
    for mine, reply in zip(order, pipe.execute() if order else [], strict=True):
        for bucket, row in zip(mine, reply, strict=True):
            totals[bucket] += int(row[0])
            tops[bucket].extend((-int(v), k.decode()) for k, v in zip(row[1::2], row[2::2],
                                                                       strict=True))
    return {b: (totals[b], _nth_best(tops[b], top_n)) for b in buckets}


def _nth_best(ranks: list[Rank], n: int) -> Rank | None:
    """Rank (-value, key) of the N-th best key; None = top-N off; (0, "") = all keys qualify."""
    if n <= 0:
        return None
    ranked = sorted(ranks)
    return ranked[n - 1] if len(ranked) >= n else (0, "")


class FeaturedRun:
    """Featured selection and counter totals for one flush run of the InfluxDB sink."""

    def __init__(self, client, config: CountingConfig, allow: frozenset[str], top_n: int):
        self.client, self.config, self.allow, self.top_n = client, config, allow, top_n
        self._nth: dict[Bucket, Rank | None] = {}
        self._totals: dict[Bucket, int] = {}
        self._stale: set[Bucket] = set()

    def select(self, wanted: Sequence[reader.Cell]) -> list[BucketRow]:
        """Featured per-key rows of one round's cells, uniques read; remembers buckets touched."""
        buckets = list(dict.fromkeys((c[0], c[1], c[2]) for c in wanted))
        self._stale.update(b for b in buckets if b in self._nth)
        new = [b for b in buckets if b not in self._nth]
        for bucket, (total, nth) in summarize(self.client, self.config, new, self.top_n).items():
            self._totals[bucket], self._nth[bucket] = total, nth
        plain, hot = reader.split_hot(self.config, wanted)
        found = reader.read_candidates(self.client, self.config, plain, self._minimum, self.allow)
        found += self._with_membership(reader.read_cells(self.client, self.config, hot))
        return reader.add_uniques(self.client, self.config, self._choose(found))

    def _minimum(self, counter: str, resolution: str, index: int) -> int | None:
        """Least value that can rank in the top N of a bucket; None when top-N is off."""
        nth = self._nth[(counter, resolution, index)]
        return None if nth is None else -nth[0]

    def _featured_set(self, row: BucketRow) -> str:
        sk = keys.shard_keys(row.counter, keys.key_shard(row.key, self.config.shards))
        return sk.featured(row.resolution, row.index)

    def _with_membership(self, rows: Sequence[BucketRow]) -> list[tuple[BucketRow, bool]]:
        """Rows of hot keys, each with whether it is in its featured set."""
        pipe = self.client.pipeline(transaction=False)
        for row in rows:
            pipe.sismember(self._featured_set(row), row.key)
        return list(zip(rows, pipe.execute() if rows else [], strict=True))

    def _qualifies(self, row: BucketRow) -> bool:
        nth = self._nth[(row.counter, row.resolution, row.index)]
        return row.key in self.allow or (nth is not None and (-row.value, row.key) <= nth)

    def _choose(self, found: Sequence[tuple[BucketRow, bool]]) -> list[BucketRow]:
        """Rows that qualify now (added to their featured set) or were featured before."""
        chosen, added = [], defaultdict(list)
        for row, member in found:
            qualifies = self._qualifies(row)
            if qualifies or member:
                chosen.append(row)
            if qualifies and not member:
                added[self._featured_set(row)].append(row)
        pipe = self.client.pipeline(transaction=False)
        for name, rows in added.items():
            pipe.sadd(name, *(r.key for r in rows))
            pipe.expire(name, self.config.ttl(keys.RESOLUTIONS[rows[0].resolution]), nx=True)
        if added:
            pipe.execute()
        return chosen

    def totals(self) -> list[BucketRow]:
        """One counter-total row per bucket the run touched, read after its last take there."""
        stale = [b for b in self._totals if b in self._stale]
        for bucket, (total, _) in summarize(self.client, self.config, stale, 0).items():
            self._totals[bucket] = total
        return [BucketRow(res, counter, None, index, total, None)
                for (counter, res, index), total in self._totals.items() if total > 0]
