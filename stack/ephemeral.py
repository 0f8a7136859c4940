"""A throwaway copy of the stack on free ports in a temporary folder (bench/run uses it)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tally.settings import Settings, load_settings
from tally.stack import services
from tally.stack.process import free_ports
from tally.stack.runner import STACK, log_file
from tally.stack.secrets import with_secrets

PORTS = ("redis_port", "postgres_port", "influx_port", "prometheus_port", "ingest_port",
         "exporter_port")


def ephemeral_settings(data_dir: Path) -> Settings:
    """Settings from the environment, with free ports, data_dir, and URLs derived from them."""
    ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    return load_settings(os.environ, data_dir=data_dir, redis_url="", postgres_dsn="",
                         influx_url="", **ports)


@contextmanager
def ephemeral_stack(names: Iterable[str] | None = None) -> Iterator[Settings]:
    """Run the named STACK entries (default: all) until the with-block ends; yield Settings."""
    wanted = set(names) if names is not None else {entry.name for entry in STACK}
    with tempfile.TemporaryDirectory(prefix="tally-stack-") as tmp, ExitStack() as stack:
        os.chmod(tmp, 0o711)  # PostgreSQL, running as its own user, must enter it
        # The same generated secrets as `tally up`: benchmarks measure the secured stack.
        settings = with_secrets(ephemeral_settings(Path(tmp) / "data"))
        for entry in (e for e in STACK if e.name in wanted):
            service = entry.build(settings)
            if entry.before_start:
                entry.before_start(settings)
            stack.enter_context(services.running(service, log_file(settings, entry.name)))
            if entry.after_start:
                entry.after_start(settings, service)
        yield settings
