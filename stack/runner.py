"""`tally up`, `tally down`, `tally status` and `tally logs`: the local stack as child processes.

The stack is the declarative STACK list below. Each entry builds a Service
from Settings; a Supervisor (stack/supervisor.py) starts the entries in
order, awaits each one, runs its after_start hook (migrations, InfluxDB
setup), restarts any that crashes, and records pid files under
<data_dir>/run so that `tally down`, `tally status` and a second `tally up`
find the same processes. `tally up --detach` runs that supervisor as a
background process (stack/background.py). Adding a process is one more entry.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from tally.errors import ServiceError
from tally.ingest.flusher.influx_setup import set_up_influx
from tally.redact import redact
from tally.settings import Settings
from tally.stack import alertmanager, logtail, pg_roles, process, secrets, services
from tally.stack.prometheus_yml import write_config
from tally.stack.rundir import SUPERVISOR, forget, log_file, record, running_pid
from tally.stack.supervisor import Supervisor
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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# `tally down` waits this long for the supervisor to stop its processes (each may take 30 s).
SUPERVISOR_STOP_TIMEOUT = 120.0


def entries(demo: bool) -> tuple[Entry, ...]:
    """The entries `tally up` (with or without --demo) runs."""
    return (*STACK, DEMO) if demo else STACK


def up(args, settings: Settings) -> int:
    """Start the stack under a supervisor, in the foreground or (--detach) in the background."""
    known = running_pid(settings, SUPERVISOR)
    if known:
        for entry in entries(getattr(args, "demo", False)):
            pid = running_pid(settings, entry.name)
            state = f"already running (pid {pid[0]})" if pid else "being restarted"
            print(f"{entry.name:<11} {state}  {entry.build(settings).url}")
        print(f"the stack was already running (supervisor pid {known[0]})")
        return 0
    if args.detach:
        return _detach(args)
    return run_stack(settings, getattr(args, "demo", False))


def run_stack(settings: Settings, demo: bool, on_ready: Callable[[], None] | None = None) -> int:
    """Start every entry, then supervise until Ctrl-C, SIGTERM or `tally down`.

    In the foreground (on_ready None) each process's new log lines are printed
    prefixed by its name; in the background on_ready detaches from the caller.
    """
    settings = local_tokens(settings)
    secrets.private_data_dir(settings.data_dir)
    chosen = entries(demo)
    # Each ends the stack in order (SIGHUP: the terminal closed), even when a shell
    # started us with SIGINT ignored.
    for ending in STOP_SIGNALS:
        signal.signal(ending, signal.default_int_handler)
    _stop_leftovers(settings, chosen)
    record(settings, SUPERVISOR, os.getpid())
    tail = None if on_ready else logtail.LogTail(
        {entry.name: log_file(settings, entry.name) for entry in chosen}).start()
    detached = []  # once on_ready has run: lines go to the supervisor's log, timed

    def say(line: str) -> None:
        stamp = f"{datetime.now(UTC).isoformat(timespec='milliseconds')} " if detached else ""
        print(stamp + line, flush=True)

    supervisor = Supervisor(settings, chosen, say=say)
    try:
        supervisor.start_all()
        _print_endpoints(settings, detached=on_ready is not None)
        if on_ready:
            on_ready()
            detached.append(True)
        return supervisor.run()
    except KeyboardInterrupt:
        print("stopping", flush=True)
        return 130
    finally:
        # A second Ctrl-C or SIGTERM must not cut the stop short and leave processes behind.
        for ending in STOP_SIGNALS:
            signal.signal(ending, signal.SIG_IGN)
        supervisor.stop_all()
        if tail:
            tail.stop()
        forget(settings, SUPERVISOR)


def _stop_leftovers(settings: Settings, chosen: tuple[Entry, ...]) -> None:
    """Stop processes an earlier supervisor left running, to start them under this one."""
    for entry in reversed(chosen):
        known = running_pid(settings, entry.name)
        if known:
            print(f"{entry.name:<11} left running by an earlier `tally up` (pid {known[0]}); "
                  "restarting it under this one", flush=True)
            process.stop_pid(*known, sig=entry.build(settings).stop_signal)
            forget(settings, entry.name)


def _print_endpoints(settings: Settings, detached: bool) -> None:
    print(f"supervisor  restarts crashed processes; metrics "
          f"http://127.0.0.1:{settings.supervisor_port}/metrics")
    print(f"data in {settings.data_dir}, logs in {settings.data_dir / 'log'} (`tally logs`)")
    if (settings.data_dir / TOKENS_FILE).exists():
        print(f"bearer tokens in {settings.data_dir / TOKENS_FILE}")
    # The first place to look (docs/page.md): it asks for the read token.
    print(f"live page: http://127.0.0.1:{settings.ingest_port}/")
    print("stop with `tally down`" if detached else "press Ctrl-C to stop", flush=True)


def _detach(args) -> int:
    """Run the supervisor as a background process; return once every process answers.

    The background process prints its startup lines to our stdout and stderr,
    then writes to a pipe (stack/background.py) and moves its own output to
    <data_dir>/log/supervisor.log. A pipe closed without that word means it
    failed to start the stack: its exit code becomes ours.
    """
    read_end, write_end = os.pipe()
    argv = [sys.executable, "-m", "tally.stack.background", "--ready-fd", str(write_end)]
    if getattr(args, "demo", False):
        argv.append("--demo")
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, pass_fds=(write_end,),
                          start_new_session=True) as child:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as ready:
            if ready.read() == b"ready":
                # It runs on in its own session: mark it done so that leaving the
                # with-block neither waits for it nor warns that it still runs.
                child.returncode = 0
                return 0
        return child.wait()


def down(args, settings: Settings) -> int:
    """Stop the supervisor (which stops its processes), then any recorded process left."""
    recorded = {entry.name: running_pid(settings, entry.name) for entry in reversed(EVERY)}
    supervisor = running_pid(settings, SUPERVISOR)
    if supervisor:
        process.stop_pid(*supervisor, timeout=SUPERVISOR_STOP_TIMEOUT)
        forget(settings, SUPERVISOR)
        print(f"{SUPERVISOR:<11} stopped (pid {supervisor[0]})")
    for entry in reversed(EVERY):
        known = running_pid(settings, entry.name)  # still there: no supervisor stopped it
        if known:
            process.stop_pid(*known, sig=entry.build(settings).stop_signal)
            forget(settings, entry.name)
        if recorded[entry.name]:
            print(f"{entry.name:<11} stopped (pid {recorded[entry.name][0]})")
    if not supervisor and not any(recorded.values()):
        print("nothing was running")
    return 0


def status(args, settings: Settings) -> int:
    """Print the supervisor and each stack process with pid and endpoint; exit 3 unless all run."""
    missing = 0
    rows = [(SUPERVISOR, f"http://127.0.0.1:{settings.supervisor_port}/metrics")]
    rows += [(entry.name, entry.build(settings).url) for entry in STACK]
    for name, url in rows:
        known = running_pid(settings, name)
        missing += not known
        state = f"running (pid {known[0]})" if known else "stopped"
        print(f"{name:<11} {state:<22} {url}")
    return 3 if missing else 0


def logs(args, settings: Settings) -> int:
    """Print the last lines of one process's log or of all (prefixed); -f keeps following."""
    names = [entry.name for entry in EVERY] + [SUPERVISOR]
    if args.name and args.name not in names:
        raise ServiceError(f"no stack process is called {args.name!r}; "
                           f"choose one of {', '.join(names)}")
    chosen = [args.name] if args.name else names
    paths = {name: log_file(settings, name) for name in chosen if log_file(settings, name).exists()}
    width = max(map(len, paths), default=0)
    for name, path in paths.items():
        start = "" if args.name else logtail.prefix(name, width)
        for line in logtail.last_lines(path, args.lines):
            print(start + line)
    sys.stdout.flush()
    if args.follow:
        follow = logtail.LogTail({name: log_file(settings, name) for name in chosen},
                                 prefixed=not args.name)
        try:
            follow.start().wait()
        except KeyboardInterrupt:
            follow.stop()
    return 0
