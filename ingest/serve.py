"""`tally serve`: the ingest API under gunicorn, with Prometheus multiprocess metrics.

gunicorn's master supervises the workers (a killed worker is replaced,
SIGTERM drains them gracefully); each worker is an tally.ingest.worker.IngestWorker,
which serves connections as gevent greenlets under header and body deadlines
and a connection limit, so slow clients cannot occupy it. The app is built in
each worker after the fork (no preload), so every worker has its own Redis
connections; PROMETHEUS_MULTIPROC_DIR points at a fresh folder before
anything imports prometheus_client, so /metrics on any worker reports the sum
over all of them.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable

from tally import logs
from tally.errors import ConfigError
from tally.settings import Settings

MAX_DEFAULT_WORKERS = 8
# Open files a worker needs besides client connections: Redis sockets, logs, metric files.
FILES_BESIDES_CONNECTIONS = 256


def logging_config() -> dict:
    """Tally's JSON lines (tally.logs) for the app's loggers and gunicorn's own.

    gunicorn applies this in the master before forking, so workers inherit it;
    gunicorn's access log stays off (the app writes one line per request,
    tally.ingest.api.access).
    """
    return logs.config(loggers={
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False}})


def default_workers() -> int:
    """2 × cores + 1 (gunicorn's advice), capped so a big host does not spawn dozens."""
    return min(2 * (os.cpu_count() or 1) + 1, MAX_DEFAULT_WORKERS)


def gunicorn_options(settings: Settings, workers: int) -> dict:
    """Gunicorn settings: bind, workers, the deadlines, and the hook that retires a dead worker."""
    from tally.ingest.worker import OVERFLOW

    def child_exit(server, worker) -> None:
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid)

    return {"bind": f"{settings.ingest_host}:{settings.ingest_port}", "workers": workers,
            "worker_class": "tally.ingest.worker.IngestWorker",
            # IngestWorker answers connections past the limit 503; gunicorn's pool holds both.
            "worker_connections": settings.ingest_max_connections + OVERFLOW,
            # gunicorn reads the next request under a deadline only when keep-alive is on;
            # IngestWorker's deadline is TALLY_INGEST_HEADER_TIMEOUT itself.
            "keepalive": max(1, math.ceil(settings.ingest_header_timeout)),
            "timeout": 30, "graceful_timeout": 10, "accesslog": None, "errorlog": "-",
            "logconfig_dict": logging_config(), "proc_name": "tally-ingest",
            "child_exit": child_exit,
            # gunicorn >= 25 opens a control socket at one shared path per user:
            # two instances (tests, blue/green) would fight over it.
            "control_socket_disable": True}


def _application(settings: Settings, options: dict, load_app: Callable[[], object]):
    from gunicorn.app.base import BaseApplication

    class IngestApplication(BaseApplication):
        """Gunicorn driven from Python: options and settings from Tally, the app per worker."""

        def __init__(self) -> None:
            self.settings = settings  # read by tally.ingest.worker.IngestWorker
            super().__init__()

        def load_config(self) -> None:
            for name, value in options.items():
                if name in self.cfg.settings:  # older gunicorn lacks some settings
                    self.cfg.set(name, value)

        def load(self):
            return load_app()

    return IngestApplication()


def raise_open_file_limit(settings: Settings) -> None:
    """Let each worker hold its connection limit: raise the soft open-file limit if needed.

    Many hosts and container runtimes start processes with a soft limit of
    1024, below the default 1000 connections plus Redis sockets and files.
    """
    import resource

    from tally.ingest.worker import OVERFLOW

    needed = settings.ingest_max_connections + OVERFLOW + FILES_BESIDES_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        logging.getLogger("tally.ingest").warning(
            "open-file limit %d is below the %d that TALLY_INGEST_MAX_CONNECTIONS=%d needs; "
            "raise it (ulimit -n) or lower the setting", target, needed,
            settings.ingest_max_connections)


def serve(settings: Settings, workers: int, load_app: Callable[[], object]) -> None:
    """Run `load_app()`'s WSGI app in `workers` IngestWorker processes until SIGINT/SIGTERM.

    `load_app` runs in each worker after the fork; the benchmark passes a bare
    app here so it is measured under exactly the server `tally serve` runs.
    """
    logs.setup()  # gunicorn applies logging_config() once it starts; this covers the time before
    raise_open_file_limit(settings)
    metrics_dir = tempfile.mkdtemp(prefix=f"tally-ingest-metrics-{int(time.time())}-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _application(settings, gunicorn_options(settings, workers), load_app).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def main(args, settings: Settings) -> int:
    """Run the API until SIGINT/SIGTERM; refuse to start without tokens unless told to."""
    if getattr(args, "insecure_no_auth", False):
        settings = settings.with_(insecure_no_auth=True)
    if not (settings.write_tokens or settings.read_tokens or settings.insecure_no_auth):
        raise ConfigError("no TALLY_WRITE_TOKENS or TALLY_READ_TOKENS configured; set tokens "
                          "or pass --insecure-no-auth")
    workers = getattr(args, "workers", None) or settings.ingest_workers or default_workers()

    def load_app():
        from tally.ingest.api import create_app
        return create_app(settings)

    serve(settings, workers, load_app)
    return 0
