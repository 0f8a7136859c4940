"""Reads of one counter: a key's totals and uniques, its time series, and the top keys."""

from __future__ import annotations

import time

from flask import Blueprint, request

from tally.ingest.api import params, series
from tally.ingest.api.auth import READ, scope
from tally.ingest.api.extensions import resources
from tally.ingest.counting import reads
from tally.keys import DAY, HOUR

bp = Blueprint("counters", __name__)
MAX_TOP = 1000


@bp.get("/v1/counters/<counter>")
@scope(READ)
def counter_key(counter: str):
    """Total, exact unique views (today, all time) and approximate uniques (hour, day)."""
    params.counter(counter)
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


@bp.get("/v1/counters/<counter>/series")
@scope(READ)
def counter_series(counter: str):
    """Points of one key over a range: Redis and TimescaleDB merged, never summed."""
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
        "points": [{"ts": ts, "time": params.rfc3339(ts), "value": value}
                   for ts, value in found.points],
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
    day = params.day_arg("date", int(time.time()) // DAY) if window == "day" else None
    res = resources()
    rows = reads.top(res.client, res.config, counter, k, day)
    return {
        "counter": counter, "window": window,
        "date": None if day is None else params.rfc3339(day * DAY)[:10],
        "top": [{"rank": i, "key": key, "count": count} for i, (key, count) in enumerate(rows, 1)],
    }
