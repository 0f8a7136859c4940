"""Retention drops exactly the expired chunks: minutes after 7 d, hours after 365 d, days never."""

from __future__ import annotations

from tally.ingest.flusher.maintenance import run_retention

AGES = {  # table -> (ages in days that must go, ages that must stay)
    "counts_1m": ((8.5, 10, 30), (0.01, 1, 6.5)),
    "counts_1h": ((400, 500), (1, 300)),
    "counts_1d": ((), (1, 400, 3000)),
}


def _insert(conn, table: str, days: float) -> None:
    conn.execute(f"INSERT INTO {table} (bucket, counter, key, value, uniques) "
                 "VALUES (date_trunc('minute', now() - %s * interval '1 day'), 'c', %s, 1, 0)",
                 [days, str(days)])


def test_retention_drops_expired_chunks_only(pg_conn, postgres_dsn):
    """Rows past retention are gone, every recent row and every day row stays."""
    for table, (old, recent) in AGES.items():
        for days in (*old, *recent):
            _insert(pg_conn, table, days)
    dropped = run_retention(postgres_dsn)
    assert len(dropped) == 5
    for table, (_old, recent) in AGES.items():
        kept = {r[0] for r in pg_conn.execute(f"SELECT key FROM {table}")}
        assert kept == {str(d) for d in recent}
    assert run_retention(postgres_dsn) == []


def _insert_event(conn, days: float) -> None:
    conn.execute("INSERT INTO events (ts, counter, key, value, received) "
                 "VALUES (now() - %s * interval '1 day', 'c', %s, 1, now())", [days, str(days)])


def test_events_keep_their_retention_setting(pg_conn, postgres_dsn):
    """The events table keeps TALLY_EVENTS_RETENTION days (day chunks), and only when asked."""
    for days in (0.01, 3, 9.5, 12, 40):
        _insert_event(pg_conn, days)
    assert run_retention(postgres_dsn) == []  # the event log off: events are left alone
    assert len(run_retention(postgres_dsn, events_days=35)) == 1  # the 40-day-old chunk
    assert len(run_retention(postgres_dsn, events_days=8)) == 2
    kept = {r[0] for r in pg_conn.execute("SELECT key FROM events")}
    assert kept == {"0.01", "3"}
