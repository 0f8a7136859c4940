"""Reads of one counter: a key's totals and uniques, its time series, and the top keys."""

from __future__ import annotations

import time

from flask import Blueprint, request

from tally.ingest.api import params, series
from tally.ingest.api.auth import READ, scope
from tally.ingest.api.extensions import resources
from tally.ingest.api.openapi import MAX_BULK_KEYS
from tally.ingest.counting import reads
from tally.keys import DAY, HOUR

bp = Blueprint("counters", __name__)
MAX_TOP = 1000


@bp.get("/v1/counters/<counter>")
@scope(READ)
def counter_key(counter: str):
    """One key: its counts and uniques; several keys (`key=a&key=b…`): their totals."""
    params.counter(counter)
    names = request.args.getlist("key")
    if len(names) > 1:
        return bulk_totals(counter, names)
    key = params.text_arg("key")
    res, now = resources(), int(time.time())
    day, hour = now // DAY, now // HOUR
    client, config = res.client, res.config
    return {
        "counter": counter, "key": key,
        "total": reads.total(client, config, counter, key),
        "unique_views": {"today": reads.unique_views(client, config, counter, key, day),
                         "all_time": reads.unique_views(client, config, counter, key)},
        "uniques": {"hour": reads.uniques(client, config, counter, key, "h", [hour]),
                    "day": reads.uniques(client, config, counter, key, "d", [day])},
    }


def bulk_totals(counter: str, names: list[str]) -> dict:
    """All-time totals of up to MAX_BULK_KEYS keys, in request order, in one Redis pipeline."""
    if len(names) > MAX_BULK_KEYS:
        raise params.invalid("key", f"is given {len(names)} times; at most {MAX_BULK_KEYS} "
                                    "keys per request")
    for i, name in enumerate(names):
        params.text_value(f"key[{i}]", name)
    res = resources()
    found = reads.totals(res.client, res.config, counter, names)
    return {"counter": counter,
            "keys": [{"key": k, "total": t} for k, t in zip(names, found, strict=True)]}


@bp.get("/v1/counters/<counter>/series")
@scope(READ)
def counter_series(counter: str):
    """Points of one key over a range: sealed days from the batch layer, the rest merged."""
    params.counter(counter)
    key = params.text_arg("key")
    query = series.query_from_args(counter, key, time.time())
    res = resources()
    found = series.read(res.client, res.config, series.history(), query)
    return {
        "counter": counter, "key": key, "step": query.step,
        "from": params.rfc3339(query.first * query.seconds),
        "to": params.rfc3339((query.last + 1) * query.seconds),
        "history": found.history,
        "points": [{"ts": p.ts, "time": params.rfc3339(p.ts), "value": p.value,
                    "uniques": p.uniques, "sealed": p.sealed} for p in found.points],
    }


@bp.get("/v1/counters/<counter>/top")
@scope(READ)
def counter_top(counter: str):
    """The k keys with the highest counts today, on a given UTC date, or all time."""
    params.counter(counter)
    k = params.int_arg("k", 10, 1, MAX_TOP)
    window = params.choice_arg("window", "day", ("day", "all"))
    if window == "all" and "date" in request.args:
        raise params.invalid("date", "applies only to window=day")
    now = time.time()
    day = params.day_arg("date", int(now) // DAY) if window == "day" else None
    res = resources()
    # A day can be sealed only once it has ended; only then is the database asked.
    rows = (series.history().sealed_top(counter, day, k)
            if day is not None and (day + 1) * DAY <= now else None)
    sealed = rows is not None
    if rows is None:
        rows = reads.top(res.client, res.config, counter, k, day)
    return {
        "counter": counter, "window": window,
        "date": None if day is None else params.rfc3339(day * DAY)[:10], "sealed": sealed,
        "top": [{"rank": i, "key": key, "count": count} for i, (key, count) in enumerate(rows, 1)],
    }
