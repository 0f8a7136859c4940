"""InfluxDB fixtures: one 1.x server per session, database `tally` recreated after each test."""

from __future__ import annotations

import pytest

from tally.ingest.flusher.influx_setup import ensure_influx, influx_query
from tally.settings import load_settings
from tally.stack import services
from tally.stack.process import free_ports


@pytest.fixture(scope="session")
def influx_url(tmp_path_factory) -> str:
    """URL of a session-wide InfluxDB with database `tally` and Tally's retention policies."""
    root = tmp_path_factory.mktemp("influx")
    port, rpc_port = free_ports(2)
    service = services.influx(port, root / "data", rpc_port=rpc_port)
    with services.running(service, root / "influxd.log"):
        ensure_influx(load_settings({}, influx_url=service.url))
        yield service.url


@pytest.fixture
def influx(influx_url) -> str:
    """influx_url for one test; database `tally` is dropped and set up afresh afterwards."""
    yield influx_url
    settings = load_settings({}, influx_url=influx_url)
    influx_query(settings, f'DROP DATABASE "{settings.influx_db}"')
    ensure_influx(settings)
