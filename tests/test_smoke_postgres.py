"""Smoke tests: PostgreSQL runs TimescaleDB with Tally's migrations applied."""

from datetime import UTC, datetime

import requests

from tally.ingest.flusher import migrate
from tally.ingest.flusher.migrate import apply_migrations, migrations
from tally.settings import load_settings

CHUNKS = """SELECT hypertable_name, time_interval FROM timescaledb_information.dimensions
            WHERE hypertable_name LIKE 'counts_%' ORDER BY hypertable_name"""


def test_hypertables_with_chunk_intervals_fit_for_retention(pg_conn):
    rows = {name: interval.days for name, interval in pg_conn.execute(CHUNKS)}
    assert rows == {"counts_1d": 365, "counts_1h": 30, "counts_1m": 1}


def test_time_bucket_sums_minutes_into_hours(pg_conn):
    pg_conn.execute("""INSERT INTO counts_1m (bucket, counter, key, value) VALUES
        ('2026-11-28 10:15Z', 'views', 'video:42', 3),
        ('2026-11-28 10:59Z', 'views', 'video:42', 4),
        ('2026-11-28 11:00Z', 'views', 'video:42', 5)""")
    rows = pg_conn.execute("""SELECT time_bucket('1 hour', bucket) AS hour, sum(value)
        FROM counts_1m WHERE counter = 'views' GROUP BY hour ORDER BY hour""").fetchall()
    assert rows == [(datetime(2026, 11, 28, 10, tzinfo=UTC), 7),
                    (datetime(2026, 11, 28, 11, tzinfo=UTC), 5)]


def test_counts_start_empty_in_each_test(pg_conn):
    assert pg_conn.execute("SELECT count(*) FROM counts_1m").fetchone() == (0,)


def test_migrations_are_recorded_and_idempotent(postgres_owner_dsn, pg_conn):
    assert apply_migrations(postgres_owner_dsn) == []
    versions = [v for (v,) in pg_conn.execute("SELECT version FROM tally_migrations ORDER BY 1")]
    assert versions == [version for version, _ in migrations()]


def test_reader_role_may_only_select(pg_conn):
    rights = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
    held = [right for right in rights if pg_conn.execute(
        "SELECT has_table_privilege('tally_reader', 'counts_1h', %s)", [right]).fetchone()[0]]
    assert held == ["SELECT"]


def test_tally_migrate_command_sets_up_both_sinks(postgres_dsn, postgres_owner_dsn, influx,
                                                  capsys):
    settings = load_settings({}, postgres_dsn=postgres_dsn, postgres_owner_dsn=postgres_owner_dsn,
                             influx_url=influx)
    requests.post(f"{influx}/query", params={"q": 'DROP DATABASE "tally"'}, timeout=10)
    assert migrate.main(None, settings) == 0
    assert capsys.readouterr().out.splitlines() == [
        "timescaledb: up to date",
        "influxdb: database tally and its retention policies are in place"]
    shown = requests.get(f"{influx}/query", params={"q": 'SHOW RETENTION POLICIES ON "tally"'},
                         timeout=10).json()["results"][0]["series"][0]["values"]
    policies = {row[0]: (row[1], row[4]) for row in shown}  # name: (duration, default)
    assert {name: policies[name] for name in ("minute_7d", "hour_1y", "day_inf")} == {
        "minute_7d": ("168h0m0s", True), "hour_1y": ("8760h0m0s", False),
        "day_inf": ("0s", False)}
