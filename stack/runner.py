"""`tally up`, `tally down` and `tally status`: the local stack as child processes.

The stack is the declarative STACK list below. Each entry builds a Service
from Settings; the runner starts entries in order, awaits each one, runs its
after_start hook (migrations, InfluxDB setup), and records a pid file under
<data_dir>/run so that `tally down`, `tally status` and a second `tally up`
find the same processes. Adding a process is one more entry.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tally.errors import ServiceError
from tally.ingest.flusher.influx_setup import set_up_influx
from tally.redact import redact
from tally.settings import Settings
from tally.stack import alertmanager, pg_roles, process, secrets, services
from tally.stack.prometheus_yml import write_config
from tally.stack.tokens import TOKENS_FILE, child_env, local_tokens


@dataclass(frozen=True)
class Entry:
    """One stack process: how to build it from Settings, what to do before and once it answers."""

    name: str
    build: Callable[[Settings], services.Service]
    after_start: Callable[[Settings, services.Service], object] | None = None
    before_start: Callable[[Settings], object] | None = None
    finite: bool = False  # may exit on its own without stopping the stack
    listens: bool = True  # owns the port in its URL (checked free before the start)


def _tally(s: Settings, name: str, args: list[str], port: int, probe: str) -> services.Service:
    url = f"http://127.0.0.1:{port}"
    return services.tally(name, args, url, services.http_ok(url + probe), child_env(s))


def _prometheus(s: Settings) -> services.Service:
    return services.prometheus(s.prometheus_port, s.data_dir / "prometheus",
                               s.data_dir / "prometheus.yml", lifecycle=False)


def _alertmanager(s: Settings) -> services.Service:
    return services.alertmanager(s.alertmanager_port, s.data_dir / "alertmanager",
                                 s.data_dir / "alertmanager.yml")


STACK: tuple[Entry, ...] = (
    Entry("redis", lambda s: services.redis(s.redis_port, s.data_dir / "redis",
                                            maxmemory=s.redis_maxmemory,
                                            password=s.redis_password)),
    Entry("postgres", lambda s: services.postgres(
        s.postgres_port, s.data_dir / "postgres",
        superuser_password=s.postgres_superuser_password), after_start=pg_roles.set_up),
    Entry("influxdb", lambda s: services.influx(s.influx_port, s.data_dir / "influxdb"),
          after_start=lambda s, svc: set_up_influx(s.with_(influx_url=svc.url))),
    Entry("alertmanager", _alertmanager, before_start=alertmanager.write_config),
    Entry("prometheus", _prometheus, before_start=write_config),
    # Tally's own processes, started after the servers they use.
    Entry("ingest", lambda s: _tally(s, "ingest", ["serve"], s.ingest_port, "/healthz")),
    Entry("flusher", lambda s: services.tally("flusher", ["flush"], redact(s.redis_url),
                                              lambda: True, child_env(s)), listens=False),
    Entry("exporter", lambda s: _tally(s, "exporter", ["exporter"], s.exporter_port, "/metrics")),
    Entry("statsd", lambda s: services.tally(
        "statsd", ["statsd"], f"statsd://127.0.0.1:{s.statsd_port}",
        services.http_ok(f"http://127.0.0.1:{s.statsd_metrics_port}/metrics"), child_env(s))),
)
# `tally up --demo` adds this one; its end (after an hour) does not stop the stack.
DEMO = Entry("demo", lambda s: services.tally(
    "demo", ["demo", "--duration", "3600", "--rate", "100"],
    f"http://127.0.0.1:{s.ingest_port}/v1/events", lambda: True, child_env(s)),
    finite=True, listens=False)
EVERY = (*STACK, DEMO)


def pid_file(settings: Settings, name: str) -> Path:
    """Where the pid (and start time) of a stack process is recorded."""
    return settings.data_dir / "run" / f"{name}.pid"


def log_file(settings: Settings, name: str) -> Path:
    """Where a stack process writes its output."""
    return settings.data_dir / "log" / f"{name}.log"


def running_pid(settings: Settings, name: str) -> tuple[int, int] | None:
    """Return (pid, start time) of a live recorded process; forget stale pid files."""
    path = pid_file(settings, name)
    try:
        pid, started = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return None
    if process.alive(pid, started):
        return pid, started
    path.unlink(missing_ok=True)
    return None


def _record(settings: Settings, name: str, pid: int) -> None:
    path = pid_file(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid} {process.start_time(pid)}\n")


def _start(settings: Settings, entry: Entry, service: services.Service):
    port = urlsplit(service.url).port if entry.listens else None
    if port and process.port_in_use(port):
        raise ServiceError(f"port {port} for {entry.name} is taken by another program; "
                           f"choose another with TALLY_{entry.name.upper()}_PORT")
    if entry.before_start:
        entry.before_start(settings)
    proc = services.start(service, log_file(settings, entry.name))
    _record(settings, entry.name, proc.pid)
    return proc


def _stop_started(started: list) -> None:
    for _entry, service, proc, path in reversed(started):
        process.stop(proc, service.stop_signal)
        path.unlink(missing_ok=True)


def up(args, settings: Settings) -> int:
    """Start every stack process not yet running, print endpoints, then wait or return."""
    settings = local_tokens(settings)
    secrets.private_data_dir(settings.data_dir)
    started = []
    try:
        for entry in (*STACK, DEMO) if getattr(args, "demo", False) else STACK:
            service = entry.build(settings)
            known = running_pid(settings, entry.name)
            if known:
                print(f"{entry.name:<11} already running (pid {known[0]})  {service.url}")
            else:
                proc = _start(settings, entry, service)
                started.append((entry, service, proc, pid_file(settings, entry.name)))
                print(f"{entry.name:<11} started (pid {proc.pid})  {service.url}", flush=True)
            if entry.after_start:
                entry.after_start(settings, service)
    except BaseException:
        _stop_started(started)
        raise
    print(f"data in {settings.data_dir}, logs in {settings.data_dir / 'log'}")
    if (settings.data_dir / TOKENS_FILE).exists():
        print(f"bearer tokens in {settings.data_dir / TOKENS_FILE}")
    # The first place to look (docs/page.md): it asks for the read token.
    print(f"live page: http://127.0.0.1:{settings.ingest_port}/", flush=True)
    if args.detach or not started:
        print("stop with `tally down`" if started else "the stack was already running")
        return 0
    return _supervise(started)


def _supervise(started: list) -> int:
    """Wait for Ctrl-C or SIGTERM (or a process dying), then stop what this run started."""
    print("press Ctrl-C to stop", flush=True)
    # Both end the stack, even when a shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    code = 0
    try:
        while not (dead := [e.name for e, _s, p, _f in started
                            if p.poll() is not None and not (e.finite and p.returncode == 0)]):
            time.sleep(0.5)
        print(f"{', '.join(dead)} exited; stopping the stack")
        code = 1
    except KeyboardInterrupt:
        print("stopping")
    _stop_started(started)
    return code


def down(args, settings: Settings) -> int:
    """Stop every recorded stack process, newest first."""
    stopped = 0
    for entry in reversed(EVERY):
        known = running_pid(settings, entry.name)
        if known:
            process.stop_pid(*known, sig=entry.build(settings).stop_signal)
            pid_file(settings, entry.name).unlink(missing_ok=True)
            print(f"{entry.name:<11} stopped (pid {known[0]})")
            stopped += 1
    if not stopped:
        print("nothing was running")
    return 0


def status(args, settings: Settings) -> int:
    """Print each stack process with its pid and endpoint; exit 3 unless all run."""
    missing = 0
    for entry in STACK:
        known = running_pid(settings, entry.name)
        missing += not known
        state = f"running (pid {known[0]})" if known else "stopped"
        print(f"{entry.name:<11} {state:<22} {entry.build(settings).url}")
    return 3 if missing else 0
