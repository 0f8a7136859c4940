"""`tally serve`: the ingest API under gunicorn, with Prometheus multiprocess metrics.

The app is built in each worker after the fork (no preload), so every worker
has its own Redis connections; PROMETHEUS_MULTIPROC_DIR points at a fresh
folder before anything imports prometheus_client, so /metrics on any worker
reports the sum over all of them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time

from tally.errors import ConfigError
from tally.settings import Settings

MAX_DEFAULT_WORKERS = 8
ACCESS_LOGGER = "tally.ingest.access"


class JsonLines(logging.Formatter):
    """Every log record as one JSON line; access lines are JSON already."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as a JSON object on one line."""
        if record.name == ACCESS_LOGGER:
            return record.getMessage()
        line = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging() -> None:
    """JSON lines on stderr for the app's loggers (gunicorn keeps its own error log)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def default_workers() -> int:
    """2 × cores + 1 (gunicorn's advice), capped so a big host does not spawn dozens."""
    return min(2 * (os.cpu_count() or 1) + 1, MAX_DEFAULT_WORKERS)


def gunicorn_options(settings: Settings, workers: int) -> dict:
    """Gunicorn settings: bind, workers, and the hook that retires a dead worker's metrics."""
    def child_exit(server, worker) -> None:
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid)

    return {"bind": f"{settings.ingest_host}:{settings.ingest_port}", "workers": workers,
            "worker_class": "gthread", "threads": 4, "keepalive": 5, "timeout": 30,
            "graceful_timeout": 10, "accesslog": None, "errorlog": "-",
            "proc_name": "tally-ingest", "child_exit": child_exit,
            # gunicorn >= 25 opens a control socket at one shared path per user:
            # two instances (tests, blue/green) would fight over it.
            "control_socket_disable": True}


def _application(settings: Settings, options: dict):
    from gunicorn.app.base import BaseApplication

    class IngestApplication(BaseApplication):
        """Gunicorn driven from Python: options from Settings, the app from create_app."""

        def load_config(self) -> None:
            for name, value in options.items():
                if name in self.cfg.settings:  # older gunicorn lacks some settings
                    self.cfg.set(name, value)

        def load(self):
            from ingest.api import create_app
            return create_app(settings)

    return IngestApplication()


def main(args, settings: Settings) -> int:
    """Run the API until SIGINT/SIGTERM; refuse to start without tokens unless told to."""
    if getattr(args, "insecure_no_auth", False):
        settings = settings.with_(insecure_no_auth=True)
    if not (settings.write_tokens or settings.read_tokens or settings.insecure_no_auth):
        raise ConfigError("no TALLY_WRITE_TOKENS or TALLY_READ_TOKENS configured; set tokens "
                          "or pass --insecure-no-auth")
    workers = getattr(args, "workers", None) or settings.ingest_workers or default_workers()
    metrics_dir = tempfile.mkdtemp(prefix=f"tally-ingest-metrics-{int(time.time())}-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    configure_logging()
    try:
        _application(settings, gunicorn_options(settings, workers)).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
