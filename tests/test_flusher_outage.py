"""A sink outage under load: the other sink keeps flowing, lag shows it, nothing is lost after."""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

import pytest

from ingest.counting.config import CountingConfig
from tally.flusher.loop import SinkLoop
from tally.flusher.sink import build_sink
from tally.influx_setup import ensure_influx
from tally.migrate import apply_migrations
from tally.stack import process, services
from tests.flusher_support import (
    expected,
    expected_totals,
    ingest,
    make_settings,
    stored_influx,
    stored_pg,
    stream,
)
from tests.reference_model import ReferenceModel

KEYS = ["video:1", *[f"k{i}" for i in range(15)]]


class Stoppable:
    """A server of our own that a test may stop and start again on the same port and data."""

    def __init__(self, service, log: Path):
        self.service, self.log, self.proc = service, log, None

    def start(self) -> None:
        """Start and await the server."""
        self.proc = services.start(self.service, self.log)

    def stop(self) -> None:
        """Stop the server and wait for its exit."""
        process.stop(self.proc, self.service.stop_signal)


@pytest.fixture
def own_servers():
    """A private PostgreSQL and InfluxDB (the session ones must not go down)."""
    with tempfile.TemporaryDirectory(prefix="tally-outage-") as tmp:
        os.chmod(tmp, 0o711)
        pg_port, influx_port, rpc = process.free_ports(3)
        pg = Stoppable(services.postgres(pg_port, Path(tmp) / "pg", fast=True),
                       Path(tmp) / "pg.log")
        influx = Stoppable(services.influx(influx_port, Path(tmp) / "influx", rpc_port=rpc),
                           Path(tmp) / "influx.log")
        pg.start()
        influx.start()
        try:
            apply_migrations(pg.service.url)
            yield pg, influx
        finally:
            pg.stop()
            influx.stop()


def _health(client, sink: str) -> dict:
    return {k.decode(): v.decode() for k, v in client.hgetall(f"tally:flusher:{sink}").items()}


@pytest.mark.parametrize("down", ["timescale", "influx"])
def test_sink_outage_loses_nothing_and_shows_lag(down, own_servers, redis_client, redis_url):
    """Stop one sink under load: the other keeps flowing, lag grows, after restart all is exact."""
    pg, influx = own_servers
    settings = make_settings(redis_url, pg.service.url, influx.service.url,
                             influx_keys=("video:1",))
    ensure_influx(settings)
    config, rng, model = CountingConfig.from_settings(settings), random.Random(5), ReferenceModel()
    loops = {name: SinkLoop(build_sink(name, settings)) for name in settings.sinks}
    other = "influx" if down == "timescale" else "timescale"
    server = pg if down == "timescale" else influx

    def step_all(now):
        ingest(redis_client, settings, model, stream(rng, now, 60, KEYS), now)
        return {name: loop.step(redis_client, config, settings, lambda _: None)
                for name, loop in loops.items()}

    assert step_all(time.time() - 120) == {"timescale": True, "influx": True}
    server.stop()
    for i in range(3):
        assert step_all(time.time() - 60 + i) == {down: False, other: True}
    assert float(_health(redis_client, down)["lag_seconds"]) >= 55
    assert _health(redis_client, down)["errors_total"] == "3"
    assert _health(redis_client, down)["last_error"]
    assert _health(redis_client, other)["lag_seconds"] == "0.000"
    server.start()
    assert step_all(time.time()) == {"timescale": True, "influx": True}
    assert _health(redis_client, down)["lag_seconds"] == "0.000"
    assert _health(redis_client, down)["last_error"] == ""
    for loop in loops.values():
        loop.sink.close()
    assert stored_pg(settings.postgres_dsn) == expected(model)
    per_key, totals = stored_influx(settings.influx_url)
    assert per_key == {c: v for c, v in expected(model).items() if c[2] == "video:1"}
    assert totals == expected_totals(model)
