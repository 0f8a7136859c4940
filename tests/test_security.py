"""Secure by default: every server refuses a login without the generated credentials.

The servers are the session's fixtures, started through the same code and
with the same generated secrets as `tally up` (stack/services.py,
stack/secrets.py); the last test runs `tally up` itself and looks at what an
operator (or another local user) can see: file modes, ps, output and logs.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
import requests
from psycopg.conninfo import make_conninfo
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from tally.errors import ConfigError, ServiceError
from tally.ingest.flusher.migrate import apply_migrations
from tally.redact import redact
from tally.settings import load_settings
from tally.stack import pg_roles, process, services
from tally.stack.secrets import (
    GENERATED,
    TOKENS_FILE,
    child_env,
    ensure_file,
    read_file,
    variable,
    with_secrets,
)
from tally.stack.services import pg_superuser_dsn
from tests.flusher_support import wait_until


def without_login(url: str) -> str:
    """The URL with its user:password@ part removed."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def redis_reply(url: str, command: bytes) -> bytes:
    """What the Redis server of url answers to one inline command sent without AUTH."""
    with socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=5) as sock:
        sock.sendall(command + b"\r\n")
        return sock.recv(256)


@pytest.mark.parametrize("command", [b"SET k v", b"GET k", b"KEYS *", b"CONFIG GET *"])
def test_redis_refuses_commands_without_the_password(redis_url, command):
    assert redis_reply(redis_url, command) == b"-NOAUTH Authentication required.\r\n"
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping() is True


def test_redis_refuses_a_wrong_password(redis_url):
    wrong = redis_url.replace("://:", "://:wrong", 1)
    with redis.Redis.from_url(wrong) as client, pytest.raises(redis.AuthenticationError):
        client.ping()


def test_redis_cluster_nodes_refuse_without_the_password(redis_cluster_url):
    assert redis_reply(redis_cluster_url, b"CLUSTER NODES").startswith(b"-NOAUTH")
    with pytest.raises(RedisClusterException, match="authenticated"):
        RedisCluster.from_url(without_login(redis_cluster_url))


def test_influx_refuses_queries_and_writes_without_credentials(influx_url):
    bare = without_login(influx_url)
    assert requests.post(f"{bare}/query", data={"q": "SHOW DATABASES"}, timeout=10
                         ).status_code == 401
    assert requests.post(f"{bare}/write", params={"db": "tally"}, data="counts value=1i",
                         timeout=10).status_code == 401
    assert requests.post(f"{bare}/query", data={"q": "SHOW DATABASES"}, auth=("tally", "wrong"),
                         timeout=10).status_code == 401
    assert requests.post(f"{influx_url}/query", data={"q": "SHOW DATABASES"}, timeout=10).ok


def test_influx_serves_no_profiler(influx_url):
    assert requests.get(f"{influx_url}/debug/pprof/", timeout=10).status_code == 404


@pytest.mark.parametrize("user", ["tally", "tally_owner", "tally_app", "tally_reader"])
def test_postgres_refuses_every_role_without_its_password(postgres_dsn, user):
    port = urlsplit(postgres_dsn).port
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(make_conninfo(host="127.0.0.1", port=port, user=user, dbname="tally"))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(make_conninfo(host="127.0.0.1", port=port, user=user, dbname="tally",
                                      password="wrong"))


@pytest.mark.parametrize("statement", [
    "DROP TABLE counts_1m",
    "TRUNCATE counts_1h",
    "ALTER TABLE counts_1d ADD COLUMN extra int",
    "CREATE TABLE mine (x int)",
    "INSERT INTO tally_migrations (version, name) VALUES (999, 'mine')",
    "CREATE ROLE mine",
    "SELECT drop_chunks('counts_1m', older_than => INTERVAL '1 day')",
])
def test_application_role_may_not_change_the_schema(pg_conn, statement):
    assert pg_conn.execute("SELECT current_user").fetchone() == ("tally_app",)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        pg_conn.execute(statement)


def test_application_role_writes_rows_and_runs_retention(pg_conn):
    pg_conn.execute("INSERT INTO counts_1m VALUES (now(), 'views', 'a', 1, NULL)")
    pg_conn.execute("UPDATE counts_1m SET value = 2 WHERE key = 'a'")
    pg_conn.execute("CALL tally_drop_expired_chunks()")
    assert pg_conn.execute("SELECT value FROM counts_1m").fetchall() == [(2,)]


def test_reader_role_may_only_read(postgres_settings, pg_conn):
    reader = make_conninfo(postgres_settings.postgres_dsn, user="tally_reader",
                           password=postgres_settings.reader_password)
    with psycopg.connect(reader, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM counts_1m").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO counts_1m VALUES (now(), 'views', 'a', 1, NULL)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CALL tally_drop_expired_chunks()")


def test_superuser_is_only_reached_with_its_password(postgres_settings):
    dsn = pg_superuser_dsn(postgres_settings.postgres_port,
                           postgres_settings.postgres_superuser_password)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                            ).fetchone() == (True,)


def test_a_changed_role_password_takes_effect_at_the_next_start(postgres_settings):
    rotated = postgres_settings.with_(postgres_app_password="rotated-password")
    try:
        pg_roles.provision(rotated)
        with psycopg.connect(rotated.postgres_dsn) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("tally_app",)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(postgres_settings.postgres_dsn)
    finally:
        pg_roles.provision(postgres_settings)
    psycopg.connect(postgres_settings.postgres_dsn).close()


def test_migrating_as_a_superuser_gives_the_application_role_its_login(
        postgres_settings, postgres_superuser_dsn, postgres_owner_dsn):
    """Compose's path: `tally migrate` as the superuser, with TALLY_POSTGRES_APP_PASSWORD."""
    try:
        apply_migrations(postgres_superuser_dsn, app_password="from-compose")
        dsn = make_conninfo(postgres_settings.postgres_dsn, password="from-compose")
        psycopg.connect(dsn).close()
        apply_migrations(postgres_owner_dsn, app_password="ignored")  # tally_owner may not
        psycopg.connect(dsn).close()
    finally:
        pg_roles.provision(postgres_settings)


def test_a_data_folder_with_trust_auth_is_refused(tmp_path):
    data = tmp_path / "postgres"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    (data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    service = services.postgres(1, data, superuser_password="x")
    with pytest.raises(ServiceError, match="made without passwords.*delete that folder"):
        service.prepare()


def _make_secrets(data_dir: str) -> dict[str, str]:
    return ensure_file(Path(data_dir))


def test_secrets_are_made_once_even_by_two_processes_at_once(tmp_path):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        first, second = pool.map(_make_secrets, [str(tmp_path)] * 2)
    assert first == second == read_file(tmp_path / TOKENS_FILE)
    lines = (tmp_path / TOKENS_FILE).read_text().splitlines()
    assert len(lines) == len(GENERATED) == len(set(lines))
    assert stat.S_IMODE((tmp_path / TOKENS_FILE).stat().st_mode) == 0o600


def test_an_older_tokens_file_keeps_its_tokens_and_gains_the_passwords(tmp_path):
    (tmp_path / TOKENS_FILE).write_text("TALLY_WRITE_TOKENS=w1\nTALLY_READ_TOKENS=r1\n")
    values = ensure_file(tmp_path)
    assert (values["TALLY_WRITE_TOKENS"], values["TALLY_READ_TOKENS"]) == ("w1", "r1")
    assert all(values[variable(name)] for name in GENERATED)
    assert stat.S_IMODE((tmp_path / TOKENS_FILE).stat().st_mode) == 0o600


def test_tally_processes_get_only_the_secrets_they_use(tmp_path, monkeypatch):
    settings = with_secrets(load_settings({}, data_dir=tmp_path))
    monkeypatch.setenv("TALLY_POSTGRES_OWNER_PASSWORD", settings.postgres_owner_password)
    env = child_env(settings)
    assert env["TALLY_POSTGRES_APP_PASSWORD"] == settings.postgres_app_password
    assert env["TALLY_REDIS_PASSWORD"] == settings.redis_password
    for withheld in ("OWNER", "SUPERUSER"):
        assert f"TALLY_POSTGRES_{withheld}_PASSWORD" not in env
    assert "TALLY_READER_PASSWORD" not in env


def test_derived_urls_carry_the_passwords_quoted():
    settings = load_settings({}, redis_password="a/b@c", postgres_app_password="p:q",
                             postgres_owner_password="o")
    assert settings.redis_url == "redis://:a%2Fb%40c@127.0.0.1:6379/0"
    assert settings.postgres_dsn == "postgresql://tally_app:p%3Aq@127.0.0.1:5432/tally"
    assert settings.postgres_owner_dsn == "postgresql://tally_owner:o@127.0.0.1:5432/tally"
    by_hand = load_settings({}, postgres_dsn="postgresql://tally:x@db/tally")
    assert by_hand.postgres_owner_dsn == "postgresql://tally:x@db/tally"


@pytest.mark.parametrize("value", ["two words", 'quo"te', "it's", "back\\slash", "new\nline"])
def test_a_password_that_config_files_cannot_hold_is_refused(value):
    with pytest.raises(ConfigError, match="TALLY_REDIS_PASSWORD must not contain whitespace"):
        load_settings({"TALLY_REDIS_PASSWORD": value})


@pytest.mark.parametrize(("text", "shown"), [
    ("at redis://:s3cret@127.0.0.1:6379/0", "at redis://:***@127.0.0.1:6379/0"),
    ("postgresql://tally_app:s3cret@h/tally", "postgresql://tally_app:***@h/tally"),
    ("host=h password=s3cret user=u", "host=h password=*** user=u"),
    ("http://127.0.0.1:8086", "http://127.0.0.1:8086"),
])
def test_redact_masks_passwords(text, shown):
    assert redact(text) == shown


def tally(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run the `tally` command line with env."""
    return subprocess.run([sys.executable, "-m", "tally.stack.cli", *args], env=env, text=True,
                          capture_output=True, timeout=180, stdin=subprocess.DEVNULL)


@pytest.fixture
def up_stack():
    """A `tally up --detach` stack on free ports in a temporary folder; (env, data_dir)."""
    root = Path(tempfile.mkdtemp(prefix="tally-secure-"))
    root.chmod(0o711)  # PostgreSQL runs as the postgres user and must enter the folder
    names = ("REDIS", "POSTGRES", "PROMETHEUS", "ALERTMANAGER", "INGEST", "EXPORTER", "STATSD",
             "STATSD_METRICS", "SUPERVISOR")
    ports = process.free_ports(len(names) + 1)
    env = dict(os.environ, TALLY_DATA_DIR=str(root / "data"), TALLY_INFLUX_PORT=str(ports[-1]),
               **{f"TALLY_{name}_PORT": str(p) for name, p in zip(names, ports, strict=False)})
    yield env, root / "data"
    tally(env, "down")
    shutil.rmtree(root)


def mode(path: Path) -> int:
    """Permission bits of path."""
    return stat.S_IMODE(path.stat().st_mode)


def test_tally_up_keeps_secrets_out_of_sight(up_stack):
    env, data = up_stack
    started = tally(env, "up", "--detach")
    assert started.returncode == 0, started.stderr
    status = tally(env, "status")
    assert status.returncode == 0
    secrets = [v for k, v in read_file(data / TOKENS_FILE).items()
               if "PASSWORD" in k and len(v) > 16]
    assert len(secrets) == 6
    argv = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    logs = "".join(p.read_text(errors="replace") for p in (data / "log").glob("*.log"))
    for secret in secrets:
        for where, text in [("up", started.stdout + started.stderr), ("status", status.stdout),
                            ("ps", argv), ("logs", logs)]:
            assert secret not in text, f"a password shows in {where}"
    assert mode(data / TOKENS_FILE) == 0o600
    assert mode(data) == (0o710 if os.geteuid() == 0 else 0o700)
    assert {mode(p) for p in (data / "log").glob("*.log")} == {0o600}
    assert {mode(p) for p in (data / "redis").rglob("*") if p.is_file()} == {0o600}
    assert mode(data / "postgres") == 0o700
    shared = [p for p in data.rglob("*") if p.exists() and mode(p) & 0o077]
    assert shared == []  # nothing inside is open to the group or the world


def test_stack_processes_count_and_flush_with_their_credentials(up_stack):
    """Events posted to `tally up` reach both sinks: the flusher logs in everywhere."""
    env, data = up_stack
    env = dict(env, TALLY_FLUSH_INTERVAL="1")
    assert tally(env, "up", "--detach").returncode == 0
    sourced = env | read_file(data / TOKENS_FILE)
    settings = load_settings(sourced)
    posted = requests.post(
        f"http://127.0.0.1:{settings.ingest_port}/v1/events", timeout=10,
        json=[{"counter": "views", "key": "video:1", "id": "e1"}],
        headers={"Authorization": f"Bearer {sourced['TALLY_WRITE_TOKENS']}"})
    assert posted.json() == {"accepted": 1, "duplicates": 0}
    influx = settings.influx_url, (settings.influx_username, settings.influx_password)
    wait_until(lambda: influx_points(*influx) == [1], 60)
    # The README's psql line, as a user who sourced tokens.env.
    argv = ["psql", "-h", "127.0.0.1", "-p", env["TALLY_POSTGRES_PORT"], "-U", "tally_app",
            "tally", "-Atc", "SELECT current_user, sum(value) FROM counts_1m"]
    with_password = dict(sourced, PGPASSWORD=sourced["TALLY_POSTGRES_APP_PASSWORD"])

    def psql():
        return subprocess.run(argv, env=with_password, capture_output=True, text=True,
                              timeout=30)

    # The flusher writes the sinks one after the other: TimescaleDB may follow InfluxDB.
    wait_until(lambda: psql().stdout == "tally_app|1\n", 30)
    done = psql()
    assert done.stdout == "tally_app|1\n", done.stderr
    refused = subprocess.run(argv + ["-w"], env=sourced, capture_output=True, text=True,
                             timeout=30)
    assert "no password supplied" in refused.stderr


def influx_points(url: str, auth: tuple[str, str]) -> list[int]:
    """Values of the minute points of counter `views` in InfluxDB, logged in with auth."""
    body = requests.post(f"{url}/query", auth=auth, timeout=10, data={
        "db": "tally", "q": 'SELECT value FROM "minute_7d".counts WHERE "key" = \'video:1\''},
    ).json()
    return [row[1] for s in body["results"][0].get("series", []) for row in s["values"]]
