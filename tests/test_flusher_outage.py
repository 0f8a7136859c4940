"""A sink outage under load: the other sink keeps flowing, lag shows it, nothing is lost after."""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tally.errors import SinkError
from tally.exporter.collector import TallyCollector
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import handoff, maintenance
from tally.ingest.flusher.influx import InfluxSink
from tally.ingest.flusher.influx_setup import ensure_influx, set_up_influx
from tally.ingest.flusher.loop import SinkLoop
from tally.ingest.flusher.sink import BucketRow
from tally.ingest.flusher.sinks import build_sink
from tally.ingest.flusher.timescale import TimescaleSink
from tally.stack import pg_roles, process, services
from tests.flusher_support import (
    assert_sinks_hold,
    expected,
    expected_totals,
    ingest,
    make_settings,
    stored_influx,
    stored_pg,
    stream,
    wait_until,
)
from tests.reference_model import ReferenceModel

KEYS = ["video:1", *[f"k{i}" for i in range(15)]]


class Stoppable:
    """A server of our own that a test may stop and start again on the same port and data."""

    def __init__(self, service, log: Path, url: str = ""):
        self.service, self.log, self.proc = service, log, None
        self.url = url or service.url  # with the credentials, where the server needs them

    def start(self) -> None:
        """Start and await the server."""
        self.proc = services.start(self.service, self.log)

    def stop(self) -> None:
        """Stop the server and wait for its exit."""
        self.resume()
        process.stop(self.proc, self.service.stop_signal)

    def pause(self) -> None:
        """SIGSTOP the server and its children: connections stay open, nothing answers.

        The parent first, so it forks no new child meanwhile; children one by one,
        since PostgreSQL backends leave the postmaster's process group (setsid).
        """
        for pid in (self.proc.pid, *_children(self.proc.pid)):
            _signal(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the server and its children (harmless when running)."""
        if self.proc.poll() is None:
            for pid in (*_children(self.proc.pid), self.proc.pid):
                _signal(pid, signal.SIGCONT)


def _signal(pid: int, sig: int) -> None:
    """Signal a process that may have exited since it was listed (a backend ending)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _children(pid: int) -> list[int]:
    """Pids of a process's direct children (Linux /proc)."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [int(c) for task in tasks for c in (task / "children").read_text().split()]


@pytest.fixture
def own_servers(stack_secrets):
    """A private PostgreSQL and InfluxDB (the session ones must not go down), auth on."""
    with tempfile.TemporaryDirectory(prefix="tally-outage-") as tmp:
        os.chmod(tmp, 0o711)
        pg_port, influx_port, rpc = process.free_ports(3)
        secured = stack_secrets.with_(postgres_port=pg_port, influx_port=influx_port)
        pg = Stoppable(services.postgres(
            pg_port, Path(tmp) / "pg", fast=True,
            superuser_password=secured.postgres_superuser_password),
            Path(tmp) / "pg.log", secured.postgres_dsn)
        influx_service = services.influx(influx_port, Path(tmp) / "influx", rpc_port=rpc)
        login = f"{secured.influx_username}:{secured.influx_password}@"
        influx = Stoppable(influx_service, Path(tmp) / "influx.log",
                           influx_service.url.replace("http://", f"http://{login}", 1))
        pg.start()
        influx.start()
        try:
            pg_roles.set_up(secured)
            set_up_influx(secured.with_(influx_url=influx_service.url))
            yield pg, influx
        finally:
            try:
                pg.stop()
            finally:
                influx.stop()


def _health(client, sink: str) -> dict:
    return {k.decode(): v.decode() for k, v in client.hgetall(f"tally:flusher:{sink}").items()}


@pytest.mark.parametrize("down", ["timescale", "influx"])
def test_sink_outage_loses_nothing_and_shows_lag(down, own_servers, redis_client, redis_url,
                                                 request):
    """Stop one sink under load: the other keeps flowing, lag grows, after restart all is exact."""
    pg, influx = own_servers
    settings = make_settings(redis_url, pg.url, influx.url,
                             influx_keys=("video:1",))
    ensure_influx(settings)
    config, rng, model = CountingConfig.from_settings(settings), random.Random(5), ReferenceModel()
    loops = {name: SinkLoop(build_sink(name, settings)) for name in settings.sinks}
    for loop in loops.values():
        request.addfinalizer(loop.sink.close)
    other = "influx" if down == "timescale" else "timescale"
    server = pg if down == "timescale" else influx

    def step_all(now):
        ingest(redis_client, settings, model, stream(rng, now, 60, KEYS), now)
        return {name: loop.step(redis_client, config, settings, lambda _: None)
                for name, loop in loops.items()}

    assert step_all(time.time() - 120) == {"timescale": True, "influx": True}
    succeeded = time.time()
    server.stop()
    for i in range(3):
        assert step_all(time.time() - 60 + i) == {down: False, other: True}
    lags = _lags(redis_client, settings)
    assert lags[down] >= 55 and lags[other] < 1, lags
    assert _health(redis_client, down)["errors_total"] == "3"
    assert _health(redis_client, down)["last_error"]
    assert float(_health(redis_client, down)["last_success"]) <= succeeded + 0.001  # stale (ms)
    assert float(_health(redis_client, other)["last_success"]) > succeeded
    server.start()
    assert step_all(time.time()) == {"timescale": True, "influx": True}
    assert _lags(redis_client, settings) == {"timescale": 0, "influx": 0}
    assert _health(redis_client, down)["last_error"] == ""
    for loop in loops.values():
        loop.sink.close()
    assert_sinks_hold(model, settings, ("video:1",))


def _flusher(settings, **env: str) -> subprocess.Popen:
    """A real `tally flush` process on settings' servers, 0.5 s interval, 2 s sink timeouts."""
    base = {"TALLY_REDIS_URL": settings.redis_url, "TALLY_POSTGRES_DSN": settings.postgres_dsn,
            "TALLY_INFLUX_URL": settings.influx_url, "TALLY_SHARDS": str(settings.shards),
            "TALLY_INFLUX_TOP_N": "0", "TALLY_INFLUX_KEYS": ",".join(settings.influx_keys),
            "TALLY_FLUSH_INTERVAL": "0.5", "TALLY_SINK_WRITE_TIMEOUT": "2",
            "TALLY_SINK_CONNECT_TIMEOUT": "2"}
    return subprocess.Popen([sys.executable, "-m", "tally.stack.cli", "flush"],
                            env=os.environ | base | env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _end(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=30)
    proc.stderr.close()


def _lags(client, settings) -> dict[str, float]:
    """tally_flusher_lag_seconds per sink (not the archiver's) as one exporter scrape reports
    it right now."""
    registry = CollectorRegistry()
    registry.register(TallyCollector(client, CountingConfig.from_settings(settings), top_n=0))
    return {s.labels["sink"]: s.value for family in registry.collect() for s in family.samples
            if s.name == "tally_flusher_lag_seconds" and s.labels["sink"] in settings.sinks}


def _influx_current(settings, model) -> bool:
    return stored_influx(settings.influx_url)[1] == expected_totals(model)


def test_hung_postgres_holds_back_neither_influx_nor_the_lag_metric(own_servers, redis_client,
                                                                    redis_url):
    """PostgreSQL SIGSTOPped 30 s under load: InfluxDB stays current, timescale lag rises."""
    pg, influx = own_servers
    settings = make_settings(redis_url, pg.url, influx.url,
                             influx_keys=("video:1",))
    ensure_influx(settings)
    rng, model = random.Random(11), ReferenceModel()

    def feed() -> None:
        now = time.time()
        ingest(redis_client, settings, model, stream(rng, now, 30, KEYS), now)

    proc = _flusher(settings)
    try:
        feed()
        wait_until(lambda: stored_pg(settings.postgres_dsn) == expected(model), 20)
        pg.pause()
        stopped = time.time()
        try:
            while time.time() - stopped < 30:
                feed()
                # Within a few flush intervals (0.5 s), never after PostgreSQL comes back.
                wait_until(lambda: _influx_current(settings, model), 5)
                lags = _lags(redis_client, settings)
                assert lags["timescale"] >= time.time() - stopped - 1.5, lags
                assert lags["influx"] < 5, lags
                time.sleep(0.5)
        finally:
            pg.resume()
        wait_until(lambda: stored_pg(settings.postgres_dsn) == expected(model), 60)
        assert _lags(redis_client, settings)["timescale"] < 5
    finally:
        _end(proc)
    assert stored_influx(settings.influx_url)[1] == expected_totals(model)


def _wait_for_pause(proc: subprocess.Popen, point: str, timeout: float = 20.0) -> None:
    deadline, seen = time.monotonic() + timeout, b""
    while f'"point": "{point}"'.encode() not in seen:
        assert time.monotonic() < deadline and proc.poll() is None, seen.decode()[-2000:]
        if select.select([proc.stderr], [], [], 0.1)[0]:
            seen += os.read(proc.stderr.fileno(), 65536)


def test_killed_flusher_shows_lag_of_its_in_flight_and_new_marks(own_servers, redis_client,
                                                                  redis_url):
    """kill -9 with marks in flight: the exporter's lag counts them, and keeps rising."""
    pg, influx = own_servers
    settings = make_settings(redis_url, pg.url, influx.url)
    ensure_influx(settings)
    model, marked = ReferenceModel(), time.time() - 30
    ingest(redis_client, settings, model, stream(random.Random(2), marked, 20, KEYS), marked)
    proc = _flusher(settings, TALLY_FLUSH_PAUSE_AT="taken:timescale",
                    TALLY_FLUSH_PAUSE_SECONDS="60")
    _wait_for_pause(proc, "taken:timescale")
    _end(proc, signal.SIGKILL)
    shards = handoff.discover(redis_client, settings.shards)
    assert sum(redis_client.zcard(s.keys.dirty("timescale")) for s in shards) == 0  # in flight
    assert _lags(redis_client, settings)["timescale"] >= 30
    killed = time.time()
    ingest(redis_client, settings, model, stream(random.Random(3), killed, 20, KEYS), killed)
    time.sleep(2)
    assert _lags(redis_client, settings)["influx"] >= 2


ROW = BucketRow("m", "views", "k", 29_000_000, 1, None)


def _fails_within(write, seconds: float) -> str:
    """Run write(); it must raise SinkError within `seconds`; return the message."""
    started = time.monotonic()
    with pytest.raises(SinkError) as raised:
        write()
    assert time.monotonic() - started < seconds
    return str(raised.value)


def test_every_sink_call_gives_up_on_a_stopped_server(own_servers):
    """SIGSTOPped servers keep their sockets open; writes, connects and retention still end."""
    pg, influx = own_servers
    timescale = TimescaleSink(pg.url, connect_timeout=2, write_timeout=1)
    influx_sink = InfluxSink(influx.url, "tally", timeout=(2, 1))
    assert timescale.write([ROW]) == 1  # an open connection, then the server stops
    pg.pause()
    influx.pause()
    try:
        assert "within 1 s" in _fails_within(lambda: timescale.write([ROW]), 4)
        _fails_within(lambda: timescale.write([ROW]), 5)  # a fresh connect: connect_timeout
        _fails_within(lambda: influx_sink.write([ROW]), 4)
        _fails_within(lambda: maintenance.run_retention(pg.url, 2, 1), 5)
    finally:
        pg.resume()
        influx.resume()
        timescale.close()
        influx_sink.close()
