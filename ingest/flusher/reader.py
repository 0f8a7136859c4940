"""Bulk reads of absolute bucket values for taken marks: one Lua call per shard and round.

A mark (minute, key) stands for the key's minute, hour and day cells; cells
shared by several marks are read once. Ordinary keys live in one shard, so
their cells are read by lua/read.lua: one HMGET per bucket hash and, for
full rows, a PFCOUNT per cell, all inside the shard's hash tag. Hot keys
spread over several shards go through tally.ingest.counting.reads, which merges
the shards. read_candidates (InfluxDB) returns rows whose `uniques` is None
(not read); add_uniques fills it in for the rows that are kept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from tally import keys
from tally.ingest.counting import reads
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher.handoff import Mark, queue_eval
from tally.ingest.flusher.sink import BucketRow

Cell = tuple[str, str, int, str]  # (counter, resolution, index, key)
Group = tuple[str, int, str, int]  # (counter, shard, resolution, index): one bucket hash


def cells(marks: Iterable[Mark]) -> list[Cell]:
    """Distinct minute, hour and day cells touched by marks, in a stable order."""
    seen: dict[Cell, None] = {}
    spans = tuple(keys.RESOLUTIONS.items())
    for mark in marks:
        ts, counter, key = mark.minute * keys.MINUTE, mark.shard.counter, mark.key
        for res, seconds in spans:
            seen[(counter, res, ts // seconds, key)] = None
    return list(seen)


def _read_hot(client, config: CountingConfig, cell: Cell) -> BucketRow:
    counter, res, index, key = cell
    value = reads.bucket_values(client, config, counter, key, res, [index])[index]
    return BucketRow(res, counter, key, index, value,
                     reads.uniques(client, config, counter, key, res, [index]))


def split_hot(config: CountingConfig, wanted: Sequence[Cell]) -> tuple[list[Cell], list[Cell]]:
    """Cells of ordinary keys (one shard) and of hot keys (spread over several shards)."""
    if not config.hot_keys:
        return list(wanted), []
    plain = [c for c in wanted if config.spread(c[0], c[3]) == 1]
    return plain, [c for c in wanted if config.spread(c[0], c[3]) > 1]


def _groups(config: CountingConfig, plain: Iterable[Cell]) -> dict[tuple[str, int], dict]:
    """Plain cells by shard, then by bucket hash: {(counter, shard): {(res, index): [keys]}}."""
    shards: dict[tuple[str, int], dict] = {}
    home: dict[str, int] = {}
    for counter, res, index, key in plain:
        shard = home.get(key)
        if shard is None:
            shard = home[key] = keys.key_shard(key, config.shards)
        shards.setdefault((counter, shard), defaultdict(list))[(res, index)].append(key)
    return shards


def _joined(names: list[str]) -> tuple[str, str]:
    """Keys concatenated and their UTF-8 byte lengths, as lua/read.lua takes them."""
    joined = "".join(names)
    lengths = map(len, names) if joined.isascii() else (len(n.encode()) for n in names)
    return joined, " ".join(map(str, lengths))


def read_cells(client, config: CountingConfig, wanted: Sequence[Cell]) -> list[BucketRow]:
    """Absolute value and unique users of each cell; cells Redis no longer holds are left out."""
    plain, hot = split_hot(config, wanted)
    grouped = _groups(config, plain)
    pipe = client.pipeline(transaction=False)
    for (counter, shard), buckets in grouped.items():
        sk = keys.shard_keys(counter, shard)
        args = ["cells"]
        for (res, index), names in buckets.items():
            args += [sk.hll(res, index, ""), *_joined(names), ""]
        queue_eval(pipe, "read", [sk.bucket(res, index) for res, index in buckets], args)
    rows = []
    for ((counter, _), buckets), reply in zip(grouped.items(), pipe.execute() if grouped else [],
                                              strict=True):
        order = [(res, index, key) for (res, index), names in buckets.items() for key in names]
        numbers = reply.split()  # value, uniques per key
        for (res, index, key), value, users in zip(order, numbers[::2], numbers[1::2],
                                                   strict=True):
            if value != b"0":  # absent: the bucket expired; never overwrite a store with 0
                rows.append(BucketRow(res, counter, key, index, int(value), int(users)))
    rows += [row for row in (_read_hot(client, config, c) for c in hot) if row.value > 0]
    return rows


def read_candidates(client, config: CountingConfig, plain: Sequence[Cell],
                    minimum: Callable[[str, str, int], int | None],
                    allow: frozenset[str]) -> list[tuple[BucketRow, bool]]:
    """InfluxDB candidates among plain cells: value >= minimum(bucket), featured before, or allowed.

    Each comes with whether it is in its bucket's featured set; uniques are not read.
    """
    grouped = _groups(config, plain)
    pipe = client.pipeline(transaction=False)
    for (counter, shard), buckets in grouped.items():
        sk = keys.shard_keys(counter, shard)
        names, args = [], ["featured"]
        for (res, index), mine in buckets.items():
            least = minimum(counter, res, index)
            flags = "".join("1" if k in allow else "0" for k in mine) if allow else ""
            names += [sk.bucket(res, index), sk.featured(res, index)]
            args += ["-" if least is None else least, *_joined(mine), flags]
        queue_eval(pipe, "read", names, args)
    found = []
    for ((counter, _), buckets), reply in zip(grouped.items(), pipe.execute() if grouped else [],
                                              strict=True):
        parts = reply.split(b"|")[:-1]  # one part per bucket, each ended by "|"
        for ((res, index), mine), part in zip(buckets.items(), parts, strict=True):
            numbers = part.split()
            for pos, value, member in zip(numbers[::3], numbers[1::3], numbers[2::3],
                                          strict=True):
                row = BucketRow(res, counter, mine[int(pos) - 1], index, int(value), None)
                found.append((row, member == b"1"))
    return found


def add_uniques(client, config: CountingConfig, rows: Sequence[BucketRow]) -> list[BucketRow]:
    """Rows with `uniques` read where it is None (through read_cells: one call per shard)."""
    missing = [(r.counter, r.resolution, r.index, r.key) for r in rows
               if r.uniques is None and r.key is not None]
    counted = {(r.counter, r.resolution, r.index, r.key): r.uniques
               for r in read_cells(client, config, missing)} if missing else {}
    return [r if r.uniques is not None or r.key is None
            else r._replace(uniques=counted.get((r.counter, r.resolution, r.index, r.key), 0))
            for r in rows]
