"""Shared steps of the batch layer's tests: a hostile stream counted, archived and flushed."""

from __future__ import annotations

import random

import psycopg

from tally.ingest.flusher.lineprotocol import representable
from tests.flusher_support import flush_all, ingest
from tests.reference_model import ReferenceModel
from tests.test_event_log import HOSTILE_KEYS, PROPS, archive_all

FEATURED = ("video:1", "a b", "ключ", "x,y=z", "k3")  # allowlisted for InfluxDB
DAY = 86400


def hostile_raws(rng: random.Random, now: float, n: int, spread: float) -> list[dict]:
    """Raw API events over `spread` seconds before now: ids or not, users or not, hostile keys
    and props, ~30% retried (same id), shuffled so they arrive out of order."""
    raws = []
    for _ in range(n):
        raw = {"counter": rng.choice(["views", "plays"]), "key": rng.choice(HOSTILE_KEYS),
               "ts": int(now - rng.random() * spread), "value": rng.choice([1, 1, 2, 7])}
        if rng.random() < 0.7:
            raw["id"] = f"ev-{rng.getrandbits(48):x}"
        if rng.random() < 0.6:
            raw["user"] = rng.choice([f"user-{rng.randrange(9)}", "ü\\ser", "u\"q"])
        if props := rng.choice(PROPS):
            raw["props"] = props
        raws.append(raw)
        if "id" in raw and rng.random() < 0.3:
            raws.append(dict(raw))
    rng.shuffle(raws)
    return raws


def count_stream(client, settings, model: ReferenceModel, raws: list[dict], now: float,
                 batch: int = 200) -> None:
    """Count the raws in batches through the API's validator and the batch step, archive and
    flush them."""
    for i in range(0, len(raws), batch):
        ingest(client, settings, model, raws[i:i + batch], now)
    archive_all(client, settings)
    flush_all(client, settings)


def featured_in_influx(keys=FEATURED) -> set[str]:
    """The allowlisted keys InfluxDB 1.x can store as tag values."""
    return {key for key in keys if representable(key)}


def truncate_sealed(owner_dsn: str) -> None:
    """Forget every sealed day (the fixtures truncate counts and events, not these)."""
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE sealed_days")
