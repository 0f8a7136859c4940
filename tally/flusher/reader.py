"""Bulk reads of absolute bucket values for taken marks, one pipeline per run.

A mark (minute, key) stands for the key's minute, hour and day cells; cells
shared by several marks are read once. Ordinary keys live in one shard, so
their reads are plain HGET/PFCOUNT in that shard; hot keys spread over several
shards go through ingest.counting.reads, which merges the shards.
"""

from __future__ import annotations

from collections.abc import Iterable

from ingest.counting import keys, reads
from ingest.counting.config import CountingConfig
from tally.flusher.handoff import Mark
from tally.flusher.sink import BucketRow

Cell = tuple[str, str, int, str]  # (counter, resolution, index, key)


def cells(marks: Iterable[Mark]) -> list[Cell]:
    """Distinct minute, hour and day cells touched by marks, in a stable order."""
    seen: dict[Cell, None] = {}
    for mark in marks:
        ts = mark.minute * keys.MINUTE
        for res, seconds in keys.RESOLUTIONS.items():
            seen.setdefault((mark.shard.counter, res, ts // seconds, mark.key))
    return list(seen)


def _read_hot(client, config: CountingConfig, cell: Cell) -> tuple[int, int]:
    counter, res, index, key = cell
    value = reads.bucket_values(client, config, counter, key, res, [index])[index]
    return value, reads.uniques(client, config, counter, key, res, [index])


def read_cells(client, config: CountingConfig, wanted: list[Cell]) -> list[BucketRow]:
    """Absolute value and unique users of each cell; cells Redis no longer holds are left out."""
    plain = [c for c in wanted if config.spread(c[0], c[3]) == 1]
    pipe = client.pipeline(transaction=False)
    for counter, res, index, key in plain:
        sk = keys.shard_keys(counter, keys.key_shard(key, config.shards))
        pipe.hget(sk.bucket(res, index), key)
        # execute_command: redis-py refuses PFCOUNT in cluster pipelines (one key is safe).
        pipe.execute_command("PFCOUNT", sk.hll(res, index, key))
    replies = pipe.execute() if plain else []
    found = {cell: (int(replies[2 * i] or 0), replies[2 * i + 1]) for i, cell in enumerate(plain)}
    for cell in wanted:
        if cell not in found:
            found[cell] = _read_hot(client, config, cell)
    rows = []
    for cell in wanted:
        value, uniques = found[cell]
        if value > 0:  # 0 = the bucket expired from Redis: never overwrite a store with it
            counter, res, index, key = cell
            rows.append(BucketRow(res, counter, key, index, value, uniques))
    return rows
