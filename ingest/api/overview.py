"""What a client needs to find its way without knowing names in advance.

The counters and leaderboards that exist (from the tally:counters and
tally:leaderboards sets), a counter's whole rate per minute over the last
hour, and the flusher's health per sink. The live page reads these, but they
are plain read-scoped API endpoints like any other.
"""

from __future__ import annotations

import time

from flask import Blueprint

from tally import keys
from tally.exporter.snapshot import read_snapshot
from tally.ingest.api import params
from tally.ingest.api.auth import READ, scope
from tally.ingest.api.extensions import resources
from tally.resolutions import BY_STEP

bp = Blueprint("overview", __name__)
MAX_BOARDS = 1000  # listed per call at most, by name
MAX_MINUTES = 60  # a counter's rate reads every key of each minute: bounded to an hour
MINUTE = BY_STEP["1m"]


@bp.get("/v1/counters")
@scope(READ)
def counters():
    """Names of every counter that has counted an event, sorted."""
    names = resources().client.smembers(keys.COUNTERS)
    return {"counters": sorted(name.decode() for name in names)}


@bp.get("/v1/leaderboards")
@scope(READ)
def leaderboards():
    """Names and sizes of the leaderboards (the first MAX_BOARDS by name)."""
    client = resources().client
    names = sorted(name.decode() for name in client.smembers(keys.LEADERBOARDS))
    shown = names[:MAX_BOARDS]
    pipe = client.pipeline(transaction=False)
    for board in shown:
        pipe.zcard(keys.leaderboard_key(board))
    sizes = pipe.execute() if shown else []
    return {"leaderboards": [{"board": b, "size": s} for b, s in zip(shown, sizes, strict=True)],
            "truncated": len(names) > MAX_BOARDS}


def minute_sums(client, shards: int, counter: str, minutes: range) -> list[int]:
    """A counter's counted value per minute, summed over every key of every shard.

    One HVALS per shard and minute in one pipeline: the cost grows with the
    keys counted in those minutes, which is why the range is capped.
    """
    pipe = client.pipeline(transaction=False)
    for minute in minutes:
        for shard in range(shards):
            pipe.hvals(keys.shard_keys(counter, shard).bucket(MINUTE.code, minute))
    replies = iter(pipe.execute())
    return [sum(int(v) for _ in range(shards) for v in next(replies)) for _ in minutes]


@bp.get("/v1/counters/<counter>/rate")
@scope(READ)
def counter_rate(counter: str):
    """The counter's value per minute and per second over the last `minutes` minutes.

    The current minute is under way: its per_second divides by the seconds
    it has run, so the rate of a steady stream stays level at the right edge.
    """
    params.counter(counter)
    count = params.int_arg("minutes", MAX_MINUTES, 1, MAX_MINUTES)
    now = time.time()
    current = int(now // MINUTE.seconds)
    minutes = range(current - count + 1, current + 1)
    res = resources()
    sums = minute_sums(res.client, res.config.shards, counter, minutes)
    elapsed = max(1.0, now - current * MINUTE.seconds)
    points = [{"ts": m * MINUTE.seconds, "time": params.rfc3339(m * MINUTE.seconds),
               "value": value,
               "per_second": round(value / (elapsed if m == current else MINUTE.seconds), 3)}
              for m, value in zip(minutes, sums, strict=True)]
    return {"counter": counter, "step": MINUTE.step, "points": points}


def _when(epoch: float | None) -> str | None:
    return None if epoch is None else params.rfc3339(int(epoch))


@bp.get("/v1/flusher")
@scope(READ)
def flusher():
    """Each flusher worker's health: its lag, its last run and last success, its totals.

    The exporter's snapshot computes these for Prometheus; this answers the
    same numbers (one owner: exporter/snapshot.py). The workers are the
    configured sinks and, with the event log on, the archiver (sink "events").
    """
    res = resources()
    snap = read_snapshot(res.client, res.config, top_n=0)
    health = {f.sink: f for f in snap.flushers}
    sinks = []
    for sink, lag in snap.lag.items():
        found = health.get(sink)
        sinks.append({
            "sink": sink, "lag_seconds": round(lag, 3), "dirty": snap.dirty.get(sink),
            "reported": found is not None,
            "last_run": _when(found and found.last_run),
            "last_success": _when(found and found.last_success),
            "last_duration_seconds": found and found.last_duration_seconds,
            "rows_total": found and found.rows_total,
            "errors_total": found and found.errors_total,
        })
    return {"event_log": res.config.event_log, "sinks": sinks}
