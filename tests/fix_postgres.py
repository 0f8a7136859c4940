"""PostgreSQL fixtures: a migrated TimescaleDB server per session, counts truncated per test.

The server is set up as `tally up` sets up its own (stack/pg_roles.py):
SCRAM passwords only, tally_owner owning the schema, and the tests' DSN
logging in as the application role tally_app, with exactly its rights.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tally.resolutions import TABLES
from tally.settings import Settings
from tally.stack import pg_roles, services
from tally.stack.process import free_ports


@pytest.fixture(scope="session")
def postgres_settings(stack_secrets) -> Settings:
    """Settings of a session-wide PostgreSQL with TimescaleDB, roles made and fully migrated.

    The data folder comes from tempfile rather than tmp_path_factory: as root the
    server runs as the `postgres` user, which cannot enter pytest's 0700 folders.
    """
    with tempfile.TemporaryDirectory(prefix="tally-pg-") as tmp:
        os.chmod(tmp, 0o711)
        settings = stack_secrets.with_(postgres_port=free_ports(1)[0])
        service = services.postgres(settings.postgres_port, Path(tmp) / "data", fast=True,
                                    superuser_password=settings.postgres_superuser_password)
        with services.running(service, Path(tmp) / "postgres.log"):
            pg_roles.set_up(settings)
            yield settings


@pytest.fixture(scope="session")
def postgres_dsn(postgres_settings) -> str:
    """DSN of database `tally` as the application role tally_app (password included)."""
    return postgres_settings.postgres_dsn


@pytest.fixture(scope="session")
def postgres_owner_dsn(postgres_settings) -> str:
    """DSN of database `tally` as its owner tally_owner, for what the application may not do."""
    return postgres_settings.postgres_owner_dsn


@pytest.fixture(scope="session")
def postgres_reader_dsn(postgres_settings) -> str:
    """DSN of database `tally` as the read-only role tally_reader, as Grafana logs in."""
    return make_conninfo(postgres_settings.postgres_dsn, user="tally_reader",
                         password=postgres_settings.reader_password)


@pytest.fixture(scope="session")
def postgres_superuser_dsn(postgres_settings) -> str:
    """DSN of database `tally` as the cluster's superuser, for tests that create databases."""
    return services.pg_superuser_dsn(postgres_settings.postgres_port,
                                     postgres_settings.postgres_superuser_password, "tally")


def truncate_counts(owner_dsn: str) -> None:
    """Empty every counts table (one per resolution), the events and their log positions."""
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)}, events, event_log_positions")


@pytest.fixture
def pg_dsn(postgres_dsn, postgres_owner_dsn) -> str:
    """postgres_dsn for one test; the counts tables are truncated (as the owner) after it."""
    yield postgres_dsn
    truncate_counts(postgres_owner_dsn)


@pytest.fixture
def pg_conn(pg_dsn) -> psycopg.Connection:
    """An autocommit psycopg connection to pg_dsn (counts tables truncated after the test)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn
