"""The local stack's generated secrets: made once into <data_dir>/tokens.env (mode 0600).

`tally up`, the test fixtures and bench/run all read their credentials here,
so every server they start has the same authentication on, and nothing is
tested with security off that runs with it on. A value set in the
environment wins over the file; a value missing from the file (a file
written by an older Tally, which held only the bearer tokens) is generated
and appended. Creation and appends hold an exclusive lock, so two `tally up`
runs at once agree on one set of secrets.
"""

from __future__ import annotations

import fcntl
import grp
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

from tally.settings import Settings
from tally.stack import services

TOKENS_FILE = "tokens.env"
INFLUX_USERNAME = "tally"
# setting -> how to make a fresh value; the file's variables are TALLY_<SETTING>.
GENERATED = {
    "write_tokens": lambda: secrets.token_urlsafe(24),
    "read_tokens": lambda: secrets.token_urlsafe(24),
    "redis_password": lambda: secrets.token_urlsafe(24),
    "postgres_app_password": lambda: secrets.token_urlsafe(24),
    "postgres_owner_password": lambda: secrets.token_urlsafe(24),
    "postgres_superuser_password": lambda: secrets.token_urlsafe(24),
    "reader_password": lambda: secrets.token_urlsafe(24),
    "influx_username": lambda: INFLUX_USERNAME,
    "influx_password": lambda: secrets.token_urlsafe(24),
}
TUPLES = ("write_tokens", "read_tokens")


def variable(name: str) -> str:
    """The tokens.env variable of a setting."""
    return f"TALLY_{name.upper()}"


@contextmanager
def _locked(data_dir: Path):
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / f"{TOKENS_FILE}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_file(path: Path) -> dict[str, str]:
    """The VARIABLE=value lines of a tokens.env file ({} when it does not exist)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line)


def ensure_file(data_dir: Path) -> dict[str, str]:
    """Create or complete <data_dir>/tokens.env (0600, never world- or group-readable)."""
    path = data_dir / TOKENS_FILE
    with _locked(data_dir):
        values = read_file(path)
        missing = {variable(n): make() for n, make in GENERATED.items()
                   if variable(n) not in values}
        if missing:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as out:
                out.writelines(f"{name}={value}\n" for name, value in missing.items())
        os.chmod(path, 0o600)
        return values | missing


def with_secrets(settings: Settings) -> Settings:
    """Settings with every generated secret: a configured value wins, else tokens.env's.

    Bearer tokens count as configured when either list is set (the ingest API
    needs both or neither from one place).
    """
    values = ensure_file(settings.data_dir)
    tokens_set = bool(settings.write_tokens or settings.read_tokens)
    changes = {}
    for name in GENERATED:
        if (name in TUPLES and tokens_set) or (name not in TUPLES and getattr(settings, name)):
            continue
        value = values[variable(name)]
        changes[name] = tuple(value.split(",")) if name in TUPLES else value
    return settings.with_(**changes)


# What Tally's own processes (ingest, flusher, exporter, StatsD, demo) need; the owner's,
# the superuser's and Grafana's passwords stay with `tally up` and tokens.env.
FOR_CHILDREN = ("write_tokens", "read_tokens", "redis_password", "postgres_app_password",
                "influx_username", "influx_password")


def child_env(settings: Settings) -> dict[str, str]:
    """Environment for Tally's own processes: the caller's, plus the secrets they use.

    Passed in the environment, never on the command line: argv is visible to
    every user through ps, a process's environment only to its owner and root.
    The other passwords are left out, even when the caller's environment has
    them (a shell that sourced tokens.env): a process that only counts and
    flushes cannot change the schema or the roles, whatever goes wrong in it.
    """
    env = {name: value for name, value in os.environ.items()
           if name not in {variable(n) for n in GENERATED if n not in FOR_CHILDREN}}
    for name in FOR_CHILDREN:
        value = getattr(settings, name)
        env[variable(name)] = ",".join(value) if name in TUPLES else value
    return env


def private_data_dir(data_dir: Path) -> None:
    """Make the data folder 0700, or 0710 group postgres when PostgreSQL runs as that user.

    As root, PostgreSQL runs as the `postgres` OS user (services.pg_user), which
    must traverse the folder to reach postgres/; it gets search (x) through the
    group, never read, and the world gets nothing. This process's umask becomes
    077 too, so what it creates inside (folders, prometheus.yml, pid files) is
    its owner's alone.
    """
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    if services.pg_user():
        os.chown(data_dir, -1, grp.getgrnam(services.pg_user()).gr_gid)
        os.chmod(data_dir, 0o710)
    else:
        os.chmod(data_dir, 0o700)
