"""The backends hold what the resolution table says: tables, columns, retention, policies.

The SQL migrations spell table names and intervals themselves (SQL files are
not templated); these tests read back what they created on a real
TimescaleDB, and what ensure_influx created on a real InfluxDB, and compare
it with tally/resolutions.py and tally/backends.py.
"""

from __future__ import annotations

import re

from tally.backends import COLUMNS, EVENT_COLUMNS, PRIMARY_KEY
from tally.ingest.api import openapi
from tally.ingest.flusher.influx_setup import ensure_influx, influx_query
from tally.resolutions import TABLE, TABLES
from tally.settings import load_settings

HYPERTABLES = "SELECT hypertable_name FROM timescaledb_information.hypertables"
COLUMNS_OF = """SELECT column_name FROM information_schema.columns
                WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position"""
PRIMARY_KEY_OF = """SELECT a.attname FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY k.n"""
DROPS = re.compile(r"drop_chunks\('(\w+)', older_than => INTERVAL '([^']+)'\)")
JOBS = """SELECT hypertable_name, config->>'drop_after' FROM timescaledb_information.jobs
          WHERE proc_name = 'policy_retention'"""


def _interval(conn, text: str) -> str:
    """PostgreSQL's own spelling of an interval: '1 year' and '365 days' stay apart."""
    return conn.execute("SELECT %s::interval::text", [text]).fetchone()[0]


def test_migrations_create_exactly_the_tables_and_columns_of_the_table(pg_conn):
    # The counts tables, and the raw events (timescale/0005_events.sql, EVENT_COLUMNS).
    assert sorted(name for (name,) in pg_conn.execute(HYPERTABLES)) == sorted([*TABLES, "events"])
    assert tuple(c for (c,) in pg_conn.execute(COLUMNS_OF, ["events"])) == EVENT_COLUMNS
    for table in TABLES:
        assert tuple(c for (c,) in pg_conn.execute(COLUMNS_OF, [table])) == COLUMNS
        assert tuple(c for (c,) in pg_conn.execute(PRIMARY_KEY_OF, [table])) == PRIMARY_KEY


def test_migrated_retention_keeps_each_table_its_days(pg_conn):
    """tally_drop_expired_chunks() (and the server's jobs, where licensed) expire by keep_days."""
    want = {r.table: _interval(pg_conn, r.timescale_interval) for r in TABLE if r.keep_days}
    source = pg_conn.execute(
        "SELECT pg_get_functiondef('tally_drop_expired_chunks'::regproc)").fetchone()[0]
    assert {table: _interval(pg_conn, text) for table, text in DROPS.findall(source)} == want
    jobs = {table: _interval(pg_conn, text) for table, text in pg_conn.execute(JOBS)}
    licensed = pg_conn.execute(
        "SELECT current_setting('timescaledb.license', true) = 'timescale'").fetchone()[0]
    assert jobs == (want if licensed else {})


def _policies(settings) -> dict[str, tuple[str, bool]]:
    series = influx_query(settings, f'SHOW RETENTION POLICIES ON "{settings.influx_db}"')
    rows = series[0]["series"][0]["values"]
    return {row[0]: (row[1], row[-1]) for row in rows}  # name: (duration, default)


def test_influx_retention_policies_are_those_of_the_table(influx):
    settings = load_settings({}, influx_url=influx)
    want = {r.retention_policy: (r.influx_duration_shown, r.default_policy) for r in TABLE}
    assert _policies(settings) == {"autogen": ("0s", False), **want}
    assert want["hour_1y"] == ("8760h0m0s", False)  # 365 days, as in TimescaleDB


def test_ensure_influx_alters_a_52_week_hour_policy_to_365_days(influx):
    """A database set up by an older Tally (hour_1y = 52w) is altered, not left as it was."""
    settings = load_settings({}, influx_url=influx)
    influx_query(settings, f'ALTER RETENTION POLICY "hour_1y" ON "{settings.influx_db}" '
                           "DURATION 52w")
    assert _policies(settings)["hour_1y"] == ("8736h0m0s", False)
    ensure_influx(settings)
    assert _policies(settings)["hour_1y"] == ("8760h0m0s", False)


def _step_schemas(node):
    """Every schema of a `step` parameter or property in the OpenAPI document."""
    if isinstance(node, dict):
        if node.get("name") == "step" and "schema" in node:
            yield node["schema"]
        if isinstance(node.get("step"), dict):
            yield node["step"]
        for value in node.values():
            yield from _step_schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _step_schemas(value)


def test_series_api_documents_the_steps_of_the_table():
    schemas = list(_step_schemas(openapi.document()))
    assert len(schemas) >= 2  # the parameter and the Series property
    assert all(s["enum"] == [r.step for r in TABLE] for s in schemas)
