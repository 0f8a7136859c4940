"""How to run each backing server on a loopback port with its data in one folder.

`tally up`, the test fixtures and bench/run all build their servers here, so a
flag or config change lands in every place at once.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import requests
from psycopg.conninfo import make_conninfo

from tally.errors import ServiceError
from tally.stack import process

PG_ROOT = Path("/usr/lib/postgresql")
PG_SHARE = Path("/usr/share/postgresql")


def _nothing() -> None:
    """Prepare nothing."""


@dataclass(frozen=True)
class Service:
    """One server: its argv, what to do before the first start, and how to tell it is ready."""

    name: str
    argv: tuple[str, ...]
    url: str
    ready: Callable[[], bool]
    prepare: Callable[[], None] = field(default=_nothing)
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    env: dict[str, str] | None = None  # None: inherit the caller's environment


def start(service: Service, log_path: Path, timeout: float = 60.0) -> subprocess.Popen:
    """Prepare, spawn and await one service; return its process."""
    service.prepare()
    proc = process.spawn(list(service.argv), log_path, user=service.user, env=service.env)
    process.await_ready(proc, service.name, service.ready, log_path, timeout)
    return proc


@contextmanager
def running(service: Service, log_path: Path, timeout: float = 60.0) -> Iterator[Service]:
    """Run a service for the duration of a with-block, then stop it and wait for its exit."""
    proc = start(service, log_path, timeout)
    try:
        yield service
    finally:
        process.stop(proc, service.stop_signal)


def prometheus_config(scrape: dict[str, list[str]], interval: str = "1s",
                      rule_files: tuple[str, ...] = (),
                      alertmanagers: tuple[str, ...] = ()) -> str:
    """Return a Prometheus config scraping {job: [host:port, ...]} (JSON, which is YAML too).

    The one producer of Prometheus configuration: the test fixtures call it
    directly, the local stack and compose through tally.stack.prometheus_yml.
    JSON needs no YAML library at run time. `alertmanagers` (host:port) get
    the alerts; without them the rules still evaluate but notify nobody.
    """
    jobs = [{"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in scrape.items()]
    config = {"global": {"scrape_interval": interval, "evaluation_interval": interval},
              "rule_files": list(rule_files), "scrape_configs": jobs}
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": list(alertmanagers)}]}]}
    return json.dumps(config, indent=2)


def http_ok(url: str, status: int = 200) -> Callable[[], bool]:
    """Return a probe that is true once GET url answers with status."""
    return lambda: requests.get(url, timeout=1).status_code == status


def redis_ping(port: int, password: str = "") -> bool:
    """Tell whether a Redis server on port answers PING (not while still loading its AOF)."""
    request = b"PING\r\n"
    if password:
        secret = password.encode()
        request = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret) + request
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(request)
        reply = b""
        while reply.count(b"\r\n") < (2 if password else 1):
            chunk = sock.recv(64)
            if not chunk:
                break
            reply += chunk
        return reply.endswith(b"+PONG\r\n")


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600), whatever the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def redis(port: int, data_dir: Path, *, cluster_port: int | None = None,
          maxmemory: str = "0", password: str = "") -> Service:
    """Redis with an append-only file, optionally as a cluster node, optionally with a password.

    Always `noeviction`: evicting a counting key would silently lose counts,
    while a refused write is an error the client sees and can retry.
    `maxmemory` "0" means no limit (Redis' default). The password goes into
    a 0600 config file, not argv, which every user can read through ps;
    cluster nodes get it as masterauth too.
    """
    auth_conf = data_dir / "auth.conf"
    argv = ["redis-server", str(auth_conf), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(data_dir), "--appendonly", "yes", "--save", "", "--logfile", "",
            "--maxmemory", maxmemory, "--maxmemory-policy", "noeviction"]
    if cluster_port:
        argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-port", str(cluster_port), "--cluster-node-timeout", "5000"]

    def prepare() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        lines = [f'requirepass "{password}"', f'masterauth "{password}"'] if password else []
        write_private(auth_conf, "".join(line + "\n" for line in lines))

    return Service("redis", tuple(argv), f"redis://127.0.0.1:{port}/0",
                   lambda: redis_ping(port, password), prepare)


def pg_bin() -> Path:
    """Return the bin folder of the newest installed PostgreSQL that has TimescaleDB."""
    found = sorted(PG_ROOT.glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    with_timescale = [p for p in found if (PG_SHARE / p.parent.parent.name / "extension"
                                          / "timescaledb.control").exists()]
    if not with_timescale:
        raise ServiceError("PostgreSQL with TimescaleDB is not installed; "
                           "run `bash scripts/bootstrap` first")
    return with_timescale[-1].parent


def pg_user() -> str | None:
    """Return the OS user PostgreSQL must run as: 'postgres' for root (it refuses root)."""
    return "postgres" if os.geteuid() == 0 else None


HBA = """\
# Written by Tally: password (SCRAM) logins over loopback TCP only, nothing else.
host all all 127.0.0.1/32 scram-sha-256
"""


def _initdb(data_dir: Path, log_path: Path, superuser_password: str) -> None:
    """Create the cluster on the first start: superuser `tally`, SCRAM passwords on loopback."""
    user = pg_user()
    data_dir.mkdir(parents=True, exist_ok=True)
    if (data_dir / "PG_VERSION").exists():
        _refuse_trust(data_dir)
        return
    if user:
        os.chown(data_dir, *_ids(user))
        if subprocess.run(["test", "-w", str(data_dir)], user=user, group=user,
                          extra_groups=[]).returncode:
            raise ServiceError(f"the {user} OS user cannot reach {data_dir}; give its parent "
                               "folders o+x or choose another TALLY_DATA_DIR")
    data_dir.chmod(0o700)
    pwfile = data_dir.parent / "initdb.pw"  # 0600, gone when initdb is done
    write_private(pwfile, superuser_password + "\n")
    if user:
        os.chown(pwfile, *_ids(user))
    try:
        with open(log_path, "ab") as log:
            done = subprocess.run(
                [str(pg_bin() / "initdb"), "-D", str(data_dir), "-U", "tally",
                 "--auth=scram-sha-256", f"--pwfile={pwfile}",
                 "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"],
                stdout=log, stderr=subprocess.STDOUT, user=user, group=user,
                extra_groups=[] if user else None)
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode:
        raise ServiceError(f"initdb failed; log {log_path}:\n{process.tail(log_path)}")
    write_private(data_dir / "pg_hba.conf", HBA)
    if user:
        os.chown(data_dir / "pg_hba.conf", *_ids(user))


def _refuse_trust(data_dir: Path) -> None:
    """Stop at a cluster made by an older Tally: it trusts every loopback login."""
    try:
        hba = (data_dir / "pg_hba.conf").read_text()
    except PermissionError:
        return
    if any(line.split()[-1:] == ["trust"] for line in hba.splitlines()
           if line.strip() and not line.lstrip().startswith("#")):
        raise ServiceError(f"the PostgreSQL data in {data_dir} was made without passwords "
                           "(trust auth) by an older Tally; stop the stack and delete that "
                           "folder to start afresh with password auth (docs/security.md)")


def _ids(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def pg_superuser_dsn(port: int, password: str, dbname: str = "postgres") -> str:
    """DSN of the local cluster's superuser `tally` (only the stack's own set-up uses it)."""
    return make_conninfo(host="127.0.0.1", port=port, user="tally", password=password,
                         dbname=dbname)


def pg_ready(port: int, password: str) -> bool:
    """Tell whether PostgreSQL on port accepts the superuser's login."""
    psycopg.connect(pg_superuser_dsn(port, password), connect_timeout=1).close()
    return True


def postgres(port: int, data_dir: Path, *, superuser_password: str,
             fast: bool = False) -> Service:
    """PostgreSQL with TimescaleDB preloaded, TCP on loopback only; fast=True drops durability.

    Every login needs a password (SCRAM): the superuser's comes from the
    stack's secrets, the roles Tally uses are made by tally.stack.pg_roles.
    """
    options = {"listen_addresses": "127.0.0.1", "unix_socket_directories": "",
               "shared_preload_libraries": "timescaledb",
               "timescaledb.telemetry_level": "off"}
    if fast:
        options |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    argv = [str(pg_bin() / "postgres"), "-D", str(data_dir), "-p", str(port)]
    for name, value in options.items():
        argv += ["-c", f"{name}={value}"]
    log_path = data_dir.parent / "postgres-initdb.log"
    return Service("postgres", tuple(argv), f"postgresql://tally_app@127.0.0.1:{port}/tally",
                   lambda: pg_ready(port, superuser_password),
                   lambda: _initdb(data_dir, log_path, superuser_password),
                   user=pg_user(), stop_signal=signal.SIGINT)  # SIGINT: "fast" shutdown


INFLUX_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  auth-enabled = true
  pprof-enabled = false
[monitor]
  store-enabled = false
[logging]
  level = "warn"
"""


def influx(port: int, data_dir: Path, *, rpc_port: int | None = None) -> Service:
    """InfluxDB 1.x with authentication on and /debug/pprof off; RPC port defaults to port + 2.

    The first admin is created on the first start (influx_setup.ensure_admin).
    """
    config = data_dir / "influxdb.conf"

    def prepare() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        write_private(config, INFLUX_CONFIG.format(
            dir=data_dir, port=port, rpc_port=rpc_port or port + 2))

    return Service("influxdb", ("influxd", "run", "-config", str(config)),
                   f"http://127.0.0.1:{port}", http_ok(f"http://127.0.0.1:{port}/ping", 204),
                   prepare)


def prometheus(port: int, data_dir: Path, config_file: Path, *,
               lifecycle: bool = True) -> Service:
    """Prometheus with a given config; lifecycle=True: reloadable through POST /-/reload.

    The test fixtures reload; `tally up` turns the lifecycle API off, since
    it would let anyone who reaches the port POST /-/quit.
    """
    url = f"http://127.0.0.1:{port}"
    argv = ("prometheus", f"--config.file={config_file}", f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
            *(("--web.enable-lifecycle",) if lifecycle else ()))
    return Service("prometheus", argv, url, http_ok(f"{url}/-/ready"),
                   lambda: data_dir.mkdir(parents=True, exist_ok=True))


ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")  # Debian's name, upstream's


def alertmanager_binary() -> str:
    """Return the installed Alertmanager command (Debian's name when there is none)."""
    return next((name for name in ALERTMANAGER_BINARIES if shutil.which(name)),
                ALERTMANAGER_BINARIES[0])


def _alertmanager_prepare(data_dir: Path) -> None:
    """Refuse to start without the binary (checked at start, so `tally down` still works)."""
    if not shutil.which(alertmanager_binary()):
        raise ServiceError("Alertmanager is not installed (Debian: prometheus-alertmanager); "
                           "run `bash scripts/bootstrap` first")
    data_dir.mkdir(parents=True, exist_ok=True)


def alertmanager(port: int, data_dir: Path, config_file: Path) -> Service:
    """Alertmanager on loopback with its silences and notification log in data_dir.

    An empty cluster address turns off the gossip port (9094 on every
    interface by default): one Alertmanager needs no peers.
    """
    url = f"http://127.0.0.1:{port}"
    argv = (alertmanager_binary(), f"--config.file={config_file}",
            f"--storage.path={data_dir}", f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=", "--log.level=warn")
    return Service("alertmanager", argv, url, http_ok(f"{url}/-/ready"),
                   lambda: _alertmanager_prepare(data_dir))


def tally(name: str, args: list[str], url: str, ready: Callable[[], bool],
          env: dict[str, str] | None = None) -> Service:
    """One of Tally's own processes, `tally <args>`, configured by its environment."""
    return Service(name, (sys.executable, "-m", "tally.stack.cli", *args), url, ready, env=env)
