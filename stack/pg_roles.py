"""PostgreSQL roles of the local stack, made by its superuser before any migration runs.

- tally_owner: owns database `tally` and everything in it; `tally migrate` runs as it.
- tally_app: what ingest, the flusher and the exporter log in as; reads and writes
  rows, nothing else (its grants are in timescale/0007_roles.sql).
- tally_reader: Grafana's read-only role (timescale/0002_reader.sql).

Run at every `tally up`: each role's password is set again from the stack's
secrets, so a password changed in tokens.env takes effect at the next start.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from tally.ingest.flusher.migrate import apply_migrations
from tally.settings import Settings
from tally.stack.services import Service, pg_superuser_dsn

ROLES = {"tally_owner": "postgres_owner_password", "tally_app": "postgres_app_password",
         "tally_reader": "reader_password"}


def _ensure_role(conn: psycopg.Connection, role: str, password: str) -> None:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
    verb = "ALTER" if exists else "CREATE"
    conn.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}")
                 .format(sql.SQL(verb), sql.Identifier(role), sql.Literal(password)))


def provision(settings: Settings) -> None:
    """Create or update Tally's roles and create database `tally` owned by tally_owner."""
    dsn = pg_superuser_dsn(settings.postgres_port, settings.postgres_superuser_password)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for role, field in ROLES.items():
            _ensure_role(conn, role, getattr(settings, field))
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'tally'").fetchone():
            conn.execute("CREATE DATABASE tally OWNER tally_owner")
        # Only the owner may create objects; PUBLIC keeps CONNECT and TEMP (the flusher
        # stages rows in a temporary table).
        conn.execute("REVOKE CREATE ON DATABASE tally FROM PUBLIC")


def set_up(settings: Settings, service: Service | None = None) -> list[str]:
    """Provision the roles, then migrate as tally_owner; return the migrations applied."""
    provision(settings)
    return apply_migrations(settings.postgres_owner_dsn)
