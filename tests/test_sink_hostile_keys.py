"""Hostile keys round-trip unchanged through TimescaleDB and InfluxDB (read back by InfluxQL)."""

from __future__ import annotations

import time

import pytest

from tally import keys
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import lineprotocol
from tally.ingest.flusher.loop import SinkLoop
from tally.ingest.flusher.sinks import build_sink
from tests.flusher_support import flush_all, influx_q, ingest, make_settings, stored_pg
from tests.reference_model import ReferenceModel

HOSTILE = ["a,b", "a b", "a=b", "x,y=z w", '"quoted"', "it's", "back\\slash", "two\\\\back",
           "even\\\\,comma", "{t:views:0}m:1", "'; DROP TABLE counts_1m; --", " lead", "ключ",
           "日本語", "🎬🍿", "e\u0301", "#hash", "=", ",", " "]
UNREPRESENTABLE = ["trail\\", "odd\\,comma", "odd\\ space", "odd\\=eq", "x\\\\\\,y"]


@pytest.mark.parametrize(("value", "escaped"), [
    ("a,b c=d", "a\\,b\\ c\\=d"), ("back\\slash", "back\\slash"),
    ("even\\\\,comma", "even\\\\\\,comma"), ("🎬", "🎬"), ('"q"', '"q"')])
def test_tag_value_escaping(value, escaped):
    """Only ',', '=' and ' ' are escaped; other backslashes stay as they are (InfluxDB 1.x)."""
    assert lineprotocol.tag_value(value) == escaped


@pytest.mark.parametrize("value", [*UNREPRESENTABLE, "new\nline", "tab\t", ""])
def test_values_influx_cannot_round_trip_are_refused(value):
    """A trailing or odd escaping backslash, control characters and '' raise, never mis-write."""
    assert not lineprotocol.representable(value)
    with pytest.raises(ValueError, match="cannot be an InfluxDB"):
        lineprotocol.tag_value(value)


def test_influxql_string_literal():
    """Quotes and backslashes are escaped inside '...'."""
    assert lineprotocol.influxql_string("it's a\\b") == "'it\\'s a\\\\b'"


def test_hostile_keys_round_trip_in_both_sinks(redis_client, redis_url, pg_dsn,
                                               influx):
    """Keys come back byte for byte; unrepresentable ones still reach TimescaleDB and totals."""
    keys = HOSTILE + UNREPRESENTABLE
    settings = make_settings(redis_url, pg_dsn, influx, influx_keys=tuple(keys))
    now, model = time.time(), ReferenceModel()
    raws = [{"counter": "views", "key": k, "ts": now, "value": i + 1} for i, k in enumerate(keys)]
    ingest(redis_client, settings, model, raws, now)
    flush_all(redis_client, settings)
    minute = int(now) // 60
    pg = stored_pg(pg_dsn)
    assert {k: pg[("m", "views", k, minute)][0] for k in keys} == {k: i + 1 for i, k in
                                                                   enumerate(keys)}
    for i, key in enumerate(HOSTILE):
        where = f'"key" = {lineprotocol.influxql_string(key)}'
        series = influx_q(influx, f'SELECT value FROM "minute_7d".counts WHERE {where} GROUP BY *')
        assert [(s["tags"]["key"], s["values"][0][1]) for s in series] == [(key, i + 1)]
    tags = influx_q(influx, 'SHOW TAG VALUES FROM "counts" WITH KEY = "key"')[0]["values"]
    assert {v for _, v in tags} == set(HOSTILE)
    total = influx_q(influx, 'SELECT value FROM "minute_7d".counts_total')[0]["values"][0][1]
    assert total == sum(range(1, len(keys) + 1))


def test_unstorable_keys_are_counted_in_the_health_hash(redis_client, redis_url, postgres_dsn,
                                                        influx):
    """Each minute/hour/day point InfluxDB cannot hold is counted for the exporter, not lost."""
    settings = make_settings(redis_url, postgres_dsn, influx, sinks=("influx",),
                             influx_keys=tuple(UNREPRESENTABLE))
    now = time.time()
    raws = [{"counter": "views", "key": k, "ts": now} for k in UNREPRESENTABLE]
    ingest(redis_client, settings, ReferenceModel(), raws, now)
    loop = SinkLoop(build_sink("influx", settings))
    try:
        assert loop.step(redis_client, CountingConfig.from_settings(settings), settings,
                         lambda point: None)
    finally:
        loop.sink.close()
    health = redis_client.hgetall(keys.flusher_health("influx"))
    assert int(health[b"skipped_total"]) == 3 * len(UNREPRESENTABLE)
