"""PostgreSQL fixtures: a migrated TimescaleDB server per session, counts truncated per test."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psycopg
import pytest

from tally.ingest.flusher.migrate import apply_migrations
from tally.resolutions import TABLES
from tally.stack import services
from tally.stack.process import free_ports


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


def truncate_counts(dsn: str) -> None:
    """Empty every counts table (one per resolution), the events and their log positions."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)}, events, event_log_positions")


@pytest.fixture
def pg_dsn(postgres_dsn) -> str:
    """postgres_dsn for one test; the counts tables are truncated after it."""
    yield postgres_dsn
    truncate_counts(postgres_dsn)


@pytest.fixture
def pg_conn(pg_dsn) -> psycopg.Connection:
    """An autocommit psycopg connection to pg_dsn (counts tables truncated after the test)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn
