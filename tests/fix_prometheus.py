"""Prometheus fixtures: one server per session; tests hand it scrape targets through a factory."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from tally.stack import services
from tally.stack.process import free_ports


def _configure(url: str, config_file: Path, text: str) -> None:
    config_file.write_text(text)
    response = requests.post(f"{url}/-/reload", timeout=30)
    assert response.ok, f"Prometheus rejected its config: {response.text}"


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory) -> tuple[str, Path]:
    """(URL, config file) of a session-wide Prometheus that reloads through POST /-/reload."""
    root = tmp_path_factory.mktemp("prometheus")
    config = root / "prometheus.yml"
    config.write_text(services.prometheus_config({}))
    service = services.prometheus(free_ports(1)[0], root / "data", config)
    with services.running(service, root / "prometheus.log"):
        yield service.url, config


@pytest.fixture(scope="session")
def prometheus_url(prometheus_server) -> str:
    """URL of the session-wide Prometheus (scraping nothing unless a test asks)."""
    return prometheus_server[0]


@pytest.fixture
def prometheus_scrape(tmp_path) -> Callable[..., str]:
    """Factory: prometheus_scrape(["host:port"], job=..., rule_files=...) -> Prometheus URL.

    The first call starts a Prometheus for this test alone, scraping every second;
    later calls reconfigure it. A fresh server costs about what a reload does
    (Prometheus batches target updates for ~5 s either way) and keeps other
    tests' samples out of range queries and recording rules.
    """
    config = tmp_path / "prometheus.yml"
    started: list[str] = []
    with ExitStack() as stack:

        def configure(targets: list[str], job: str = "tally",
                      rule_files: tuple[str, ...] = ()) -> str:
            text = services.prometheus_config({job: targets}, "1s", rule_files)
            if started:
                _configure(started[0], config, text)
                return started[0]
            config.write_text(text)
            service = services.prometheus(free_ports(1)[0], tmp_path / "prometheus", config)
            stack.enter_context(services.running(service, tmp_path / "prometheus.log"))
            started.append(service.url)
            return service.url

        yield configure
