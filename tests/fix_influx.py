"""InfluxDB fixtures: one 1.x server per session with auth on, database `tally` recreated per test.

The server's admin is made as `tally up` makes it (influx_setup.set_up_influx);
the URL the fixtures yield carries that user's credentials (user:password@),
which requests sends as basic auth.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tally.ingest.flusher.influx_setup import ensure_influx, influx_query, set_up_influx
from tally.settings import load_settings
from tally.stack import services
from tally.stack.process import free_ports


@pytest.fixture(scope="session")
def influx_url(tmp_path_factory, stack_secrets) -> str:
    """URL, with credentials, of a session-wide InfluxDB with database `tally` and its RPs."""
    root = tmp_path_factory.mktemp("influx")
    port, rpc_port = free_ports(2)
    service = services.influx(port, root / "data", rpc_port=rpc_port)
    with services.running(service, root / "influxd.log"):
        set_up_influx(stack_secrets.with_(influx_url=service.url))
        login = (f"{quote(stack_secrets.influx_username, safe='')}:"
                 f"{quote(stack_secrets.influx_password, safe='')}@")
        yield service.url.replace("http://", f"http://{login}", 1)


@pytest.fixture
def influx(influx_url) -> str:
    """influx_url for one test; database `tally` is dropped and set up afresh afterwards."""
    yield influx_url
    settings = load_settings({}, influx_url=influx_url)
    influx_query(settings, f'DROP DATABASE "{settings.influx_db}"')
    ensure_influx(settings)
