"""Apply the numbered SQL files in timescale/ that a database has not seen yet.

Migrations run as the schema's owner (TALLY_POSTGRES_OWNER_DSN; tally_owner in
the local stack), never as the application role, which may not change the schema.

The files are package data of `tally.timescale`, read through importlib.resources,
so an installed wheel finds them wherever it is installed.

Each file runs in its own transaction together with its row in
tally_migrations, so a failed migration leaves nothing behind and a second
run applies nothing. An advisory lock lets several processes migrate at once.
"""

from __future__ import annotations

import contextlib
import re
from importlib import resources
from importlib.resources.abc import Traversable

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tally.errors import ServiceError
from tally.ingest.flusher.influx_setup import ensure_influx
from tally.redact import redact
from tally.settings import Settings

MIGRATIONS_PACKAGE = "tally.timescale"
LOCK_ID = 0x7A11  # any constant shared by every migrating process


def migrations() -> list[tuple[int, Traversable]]:
    """Return (version, file) of every NNNN_name.sql file of the package, in order."""
    found = [(int(m.group(1)), p) for p in resources.files(MIGRATIONS_PACKAGE).iterdir()
             if p.name.endswith(".sql") and (m := re.match(r"(\d+)_", p.name))]
    return sorted(found, key=lambda item: item[0])


def ensure_database(dsn: str) -> None:
    """Create the DSN's database when missing, connecting to `postgres` first."""
    name = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return
        with contextlib.suppress(errors.DuplicateDatabase):  # created meanwhile by another process
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def applied(conn: psycopg.Connection) -> set[int]:
    """Return the versions already recorded in tally_migrations."""
    if conn.execute("SELECT to_regclass('tally_migrations')").fetchone()[0] is None:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM tally_migrations")}


def _manages_roles(conn: psycopg.Connection) -> bool:
    """Tell whether the migrating role may set passwords (compose's superuser may; the
    local stack's tally_owner may not, its roles are set up before, by tally.stack.pg_roles)."""
    return conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles "
                        "WHERE rolname = current_user").fetchone()[0]


def apply_migrations(dsn: str, reader_password: str = "", app_password: str = "") -> list[str]:
    """Create the database if needed, apply missing migrations, return the names applied.

    Run by a role that manages roles (compose's superuser), it also gives
    tally_reader and tally_app a login with the passwords given.
    """
    ensure_database(dsn)
    names = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [LOCK_ID])
        done = applied(conn)
        for version, path in migrations():
            if version in done:
                continue
            with conn.transaction():
                conn.execute(path.read_text())
                conn.execute("INSERT INTO tally_migrations (version, name) VALUES (%s, %s)",
                             [version, path.name])
            names.append(path.name)
        for role, password in (("tally_reader", reader_password), ("tally_app", app_password)):
            if password and _manages_roles(conn):
                conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)))
        conn.execute("SELECT pg_advisory_unlock(%s)", [LOCK_ID])
    return names


def main(args, settings: Settings) -> int:
    """`tally migrate`: bring each configured sink's schema up to date, and say what changed."""
    if "timescale" in settings.sinks or settings.event_log:  # the archiver writes `events`
        try:
            names = apply_migrations(settings.postgres_owner_dsn, settings.reader_password,
                                     settings.postgres_app_password)
        except psycopg.Error as exc:
            raise ServiceError(f"cannot migrate {redact(settings.postgres_owner_dsn)}: "
                               f"{redact(str(exc))}") from None
        print("timescaledb: " + ("applied " + ", ".join(names) if names else "up to date"))
    if "influx" in settings.sinks:
        ensure_influx(settings)
        print(f"influxdb: database {settings.influx_db} and its retention policies are in place")
    return 0
