"""`tally up` heals itself: kill -9 of any stack process, in the foreground and with --detach.

One real stack per mode on free ports in a throwaway folder (class-scoped, so
the two never run at once). Each process is killed in turn; it must be back
and serving within a deadline, and the counts posted before and after the
kill must stay exact in Redis (through the API) and, after a flush, in
TimescaleDB. The foreground stack ends with the give-up rule, the detached
one with `tally down`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import requests

from tally.settings import load_settings
from tally.stack import process, services
from tally.stack.logtail import prefix
from tally.stack.rundir import SUPERVISOR, log_file, running_pid
from tally.stack.runner import STACK, Entry
from tally.stack.supervisor import MAX_RESTARTS, Supervisor
from tally.stack.tokens import local_tokens
from tests.test_stack import influx_ports, tally, wait_for

COUNTER = "kills"
BACK_WITHIN = 45.0  # seconds from kill -9 to serving again; generous on a shared machine
PORTS = ("REDIS", "POSTGRES", "PROMETHEUS", "ALERTMANAGER", "INGEST", "EXPORTER", "STATSD",
         "STATSD_METRICS", "SUPERVISOR")


def stack_env(data: Path) -> dict[str, str]:
    """A stack on free ports with 1 s flushes (a killed flusher's successor takes over itself)."""
    ports = {f"TALLY_{name}_PORT": str(port)
             for name, port in zip(PORTS, process.free_ports(len(PORTS)), strict=True)}
    return dict(os.environ, **ports, TALLY_DATA_DIR=str(data / "data"),
                TALLY_INFLUX_PORT=str(influx_ports()[0]), TALLY_FLUSH_INTERVAL="1",
                TALLY_INGEST_WORKERS="2")  # fewer workers booting at once on a shared machine


class Stack:
    """A running stack under test: its environment, settings (with tokens) and posted totals."""

    def __init__(self, mode: str, env: dict[str, str]):
        self.mode, self.env = mode, env
        self.settings = load_settings(env)
        self.expected: dict[str, int] = {}  # key -> events posted (the reference)
        self.output = Path(env["TALLY_DATA_DIR"]).parent / "up.out"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self.mode == "foreground":
            with open(self.output, "wb") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "tally.stack.cli", "up"], env=self.env,
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            wait_for(lambda: "press Ctrl-C to stop" in self.text()
                     or self.proc.poll() is not None, 180)
            assert self.proc.poll() is None, self.text()
        else:
            started = tally(self.env, "up", "--detach")
            assert started.returncode == 0, started.stderr
            self.output.write_text(started.stdout)
        self.settings = local_tokens(self.settings)

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(120)
        tally(self.env, "down")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.settings.ingest_port}{path}"

    def post(self, key: str, count: int) -> None:
        """Post count events with fresh ids for key, retrying until the API takes them."""
        events = [{"counter": COUNTER, "key": key, "id": uuid.uuid4().hex}
                  for _ in range(count)]
        headers = {"Authorization": f"Bearer {self.settings.write_tokens[0]}"}

        def accepted():
            try:
                answer = requests.post(self.url("/v1/events"), json=events, headers=headers,
                                       timeout=5)
            except requests.RequestException:
                return False
            return answer.status_code == 200  # a retry of the same ids never counts twice

        wait_for(accepted, BACK_WITHIN)
        self.expected[key] = self.expected.get(key, 0) + count

    def api_total(self, key: str) -> int:
        headers = {"Authorization": f"Bearer {self.settings.read_tokens[0]}"}
        answer = requests.get(self.url(f"/v1/counters/{COUNTER}"), params={"key": key},
                              headers=headers, timeout=5)
        answer.raise_for_status()
        return answer.json()["total"]

    def stored_totals(self) -> dict[str, int]:
        with psycopg.connect(self.settings.postgres_dsn, connect_timeout=5) as conn:
            rows = conn.execute("SELECT key, sum(value) FROM counts_1m WHERE counter = %s "
                                "GROUP BY key", (COUNTER,)).fetchall()
        return {key: int(total) for key, total in rows}


def serving(stack: Stack, name: str, old_pid: int) -> bool:
    """True once a new process is recorded for name and its readiness probe answers."""
    known = running_pid(stack.settings, name)
    if not known or known[0] == old_pid:
        return False
    entry = next(entry for entry in STACK if entry.name == name)
    try:
        return bool(entry.build(stack.settings).ready())
    except Exception:  # noqa: BLE001 - not answering yet
        return False


def assert_exact(stack: Stack) -> None:
    """Every key's total through the API (Redis) and in TimescaleDB is what was posted."""
    for key in stack.expected:
        assert wait_for(lambda k=key: stack.api_total(k) == stack.expected[k] or None, 20), key
    assert wait_for(lambda: stack.stored_totals() == stack.expected or None, 30)


def send_statsd(port: int, line: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(line)
        return True
    except OSError:
        return False


def metrics(port: int) -> str:
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


@pytest.fixture(scope="class")
def stack(request):
    """The class's stack, started in its mode and brought down afterwards."""
    # Not under pytest's 0700 tmp root: PostgreSQL runs as the postgres user and must enter it.
    data = Path(tempfile.mkdtemp(prefix=f"tally-{request.cls.mode}-"))
    data.chmod(0o711)
    running = Stack(request.cls.mode, stack_env(data))
    try:
        running.start()
        yield running
    finally:
        running.stop()
        shutil.rmtree(data, ignore_errors=True)


class Supervised:
    """The tests both modes share."""

    mode = ""

    @pytest.mark.parametrize("name", [entry.name for entry in STACK])
    def test_kill_9_comes_back_serving_and_counts_stay_exact(self, stack, name):
        stack.post(f"before-{name}", 25)
        old_pid = running_pid(stack.settings, name)[0]
        killed = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: serving(stack, name, old_pid), BACK_WITHIN)
        print(f"\n{stack.mode} {name}: serving {time.monotonic() - killed:.1f} s after kill -9")
        stack.post(f"after-{name}", 25)
        if name == "statsd":  # and it counts what it is sent
            port = stack.settings.statsd_port
            wait_for(lambda: send_statsd(port, f"{COUNTER}.via-statsd:7|c\n".encode()), 10)
            stack.expected["via-statsd"] = stack.expected.get("via-statsd", 0) + 7
        assert_exact(stack)

    def test_restarts_show_on_the_supervisor_port_and_in_prometheus(self, stack):
        text = metrics(stack.settings.supervisor_port)
        for entry in STACK:
            assert f'tally_stack_restarts_total{{process="{entry.name}"}} 1.0' in text
            assert f'tally_stack_process_up{{process="{entry.name}"}} 1.0' in text
        query = f"http://127.0.0.1:{stack.settings.prometheus_port}/api/v1/query"

        def scraped():
            answer = requests.get(query, timeout=5, params={
                "query": 'tally_stack_process_up{job="tally-stack"}'}).json()
            return {r["metric"]["process"] for r in answer["data"]["result"]}

        assert wait_for(lambda: scraped() >= {e.name for e in STACK} or None, 60)

    def test_restarts_are_printed(self, stack):
        text = stack.text() if stack.mode == "foreground" else \
            log_file(stack.settings, SUPERVISOR).read_text()
        for entry in STACK:
            assert f"{entry.name} exited with -9; restarting in 0.5 s (restart 1)" in text

    def test_kill_9_of_every_process_at_once_heals_too(self, stack):
        stack.post("before-all", 25)
        old_pids = {entry.name: running_pid(stack.settings, entry.name)[0] for entry in STACK}
        for pid in old_pids.values():
            os.kill(pid, signal.SIGKILL)
        for name, pid in old_pids.items():
            wait_for(lambda n=name, p=pid: serving(stack, n, p), BACK_WITHIN)
        stack.post("after-all", 25)
        assert_exact(stack)


class TestForeground(Supervised):
    """`tally up` in the foreground: output prefixed per process; the give-up rule ends it."""

    mode = "foreground"

    def test_output_is_prefixed_by_process(self, stack):
        lines = stack.text().splitlines()
        width = max(len(entry.name) for entry in STACK)
        assert any(line.startswith(f"{'redis':<{width}} | ") and "Ready to accept" in line
                   for line in lines)
        assert any(line.startswith(f"{'ingest':<{width}} | ") for line in lines)

    def test_a_process_that_keeps_failing_stops_the_stack(self, stack):
        """The exporter's port taken after a kill: it fails at each restart, then all stops."""
        pid = running_pid(stack.settings, "exporter")[0]
        pids = [running_pid(stack.settings, entry.name) for entry in STACK]
        os.kill(pid, signal.SIGKILL)
        with squat(stack.settings.exporter_port):
            assert stack.proc.wait(120) == 1
        text = stack.text()
        assert "exporter failed to restart" in text
        assert (f"after {MAX_RESTARTS} restarts within 60 s; stopping the stack" in text)
        assert not any(process.alive(*known) for known in pids if known)
        assert tally(stack.env, "status").returncode == 3


class TestDetached(Supervised):
    """`tally up --detach`: a background supervisor; `tally logs`; `tally down` ends it."""

    mode = "detach"

    def test_logs_print_every_process_prefixed_or_one_as_is(self, stack):
        pid = running_pid(stack.settings, "flusher")[0]
        os.kill(pid, signal.SIGKILL)  # for a fresh line in the supervisor's log
        wait_for(lambda: serving(stack, "flusher", pid), BACK_WITHIN)
        every = tally(stack.env, "logs", "-n", "100").stdout.splitlines()
        width = max(len(name) for name in (SUPERVISOR, *(entry.name for entry in STACK)))
        assert any(line.startswith(prefix("redis", width)) for line in every)
        assert any(line.startswith(prefix(SUPERVISOR, width) + "20")  # timestamped
                   and " flusher restarted (pid " in line for line in every)
        one = tally(stack.env, "logs", "redis", "-n", "200").stdout
        assert "Ready to accept connections" in one and " | " not in one
        wrong = tally(stack.env, "logs", "rediss")
        assert wrong.returncode == 1 and "no stack process is called 'rediss'" in wrong.stderr

    def test_logs_follow_prints_new_lines(self, stack):
        with subprocess.Popen([sys.executable, "-m", "tally.stack.cli", "logs", "ingest", "-f",
                               "-n", "0"], env=stack.env, stdout=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) as follow:
            time.sleep(1)  # let it reach the end of the file before the request
            stack.post("followed", 1)
            line = ""
            deadline = time.monotonic() + 20
            while "POST /v1/events" not in line and time.monotonic() < deadline:
                line = follow.stdout.readline()
            follow.send_signal(signal.SIGINT)
        assert "POST /v1/events" in line

    def test_up_takes_over_what_a_killed_supervisor_left(self, stack):
        """Processes outlive a killed supervisor (own sessions); a new `tally up` restarts them."""
        pids = [running_pid(stack.settings, entry.name) for entry in STACK]
        kill_supervisor(stack)
        assert all(process.alive(*known) for known in pids)
        assert tally(stack.env, "status").returncode == 3  # nothing would heal them now
        again = tally(stack.env, "up", "--detach")
        assert again.returncode == 0
        assert "redis       left running by an earlier `tally up`" in again.stdout
        assert not any(process.alive(*known) for known in pids)
        assert tally(stack.env, "status").returncode == 0
        stack.post("after-takeover", 25)
        assert_exact(stack)

    def test_down_stops_what_a_killed_supervisor_left_and_leaves_no_process(self, stack):
        pids = [running_pid(stack.settings, entry.name) for entry in STACK]
        kill_supervisor(stack)
        down = tally(stack.env, "down")
        assert down.returncode == 0 and "redis       stopped" in down.stdout
        assert not any(process.alive(*known) for known in pids)
        assert stack_processes(stack.env["TALLY_DATA_DIR"]) == []


def kill_supervisor(stack: Stack) -> None:
    os.kill(running_pid(stack.settings, SUPERVISOR)[0], signal.SIGKILL)
    wait_for(lambda: running_pid(stack.settings, SUPERVISOR) is None, 10)


def stack_processes(data_dir: str) -> list[int]:
    """Pids of every process whose environment names this data folder (workers included)."""
    mark = f"TALLY_DATA_DIR={data_dir}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in environ and process.start_time(int(pid)) is not None:
            found.append(int(pid))
    return found


@contextmanager
def squat(port: int):
    """Listen on port as soon as it is free (its owner was just killed) until the block ends."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT scrapes
        deadline = time.monotonic() + 5
        while True:
            try:
                sock.bind(("127.0.0.1", port))
                break
            except OSError:
                assert time.monotonic() < deadline, f"port {port} stayed taken"
                time.sleep(0.01)
        sock.listen()
        yield


def test_backoff_doubles_then_a_process_that_keeps_failing_stops_the_stack(tmp_path):
    """A real process that exits at once after each start, on a clock running 10 times fast."""
    flaky = Entry("flaky", lambda s: services.Service(
        "flaky", (sys.executable, "-c", "raise SystemExit(3)"), "none://", lambda: True),
        listens=False)
    said = []
    began = time.monotonic()
    supervisor = Supervisor(load_settings({}, data_dir=tmp_path,
                                          supervisor_port=process.free_ports(1)[0]),
                            [flaky], say=said.append,
                            clock=lambda: began + 10 * (time.monotonic() - began))
    try:
        supervisor.start_all()
        assert supervisor.run() == 1
    finally:
        supervisor.stop_all()
    restarts = [line for line in said if "restarting in" in line]
    assert restarts == [f"flaky exited with 3; restarting in {delay} s (restart {n})"
                        for n, delay in enumerate(("0.5", "1", "2", "4", "8"), start=1)]
    assert said[-1].startswith(f"flaky exited with 3 after {MAX_RESTARTS} restarts within 60 s; "
                               "stopping the stack (its log: ")
    assert supervisor.children[0].restarts == MAX_RESTARTS
