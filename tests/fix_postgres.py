"""PostgreSQL fixtures: a migrated TimescaleDB server per session, counts truncated per test."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psycopg
import pytest
from tally.ingest.flusher.migrate import apply_migrations
from tally.stack import services
from tally.stack.process import free_ports

COUNTS_TABLES = """SELECT string_agg(format('%I', tablename), ', ') FROM pg_tables
                   WHERE schemaname = 'public' AND tablename LIKE 'counts\\_%'"""


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """DSN of database `tally` on a session-wide PostgreSQL with TimescaleDB, fully migrated.

    The data folder comes from tempfile rather than tmp_path_factory: as root the
    server runs as the `postgres` user, which cannot enter pytest's 0700 folders.
    """
    with tempfile.TemporaryDirectory(prefix="tally-pg-") as tmp:
        os.chmod(tmp, 0o711)
        service = services.postgres(free_ports(1)[0], Path(tmp) / "data", fast=True)
        with services.running(service, Path(tmp) / "postgres.log"):
            apply_migrations(service.url)
            yield service.url


@pytest.fixture
def pg_conn(postgres_dsn) -> psycopg.Connection:
    """An autocommit psycopg connection to postgres_dsn; counts_* tables are truncated after."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        yield conn
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        tables = conn.execute(COUNTS_TABLES).fetchone()[0]
        if tables:
            conn.execute(f"TRUNCATE {tables}")
