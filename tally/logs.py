"""Every Tally process logs one JSON object per line on stderr, in one shape.

Each line starts with the same keys: `ts` (Unix seconds, millisecond
precision), `level` (debug, info, warning, error, critical), `logger`, `pid`
and `message`; then the record's own fields, passed as
`log.info("flushed", extra={"fields": {"sink": "influx", "rows": 3}})`; then `exception`
when there is a traceback. `ts` comes first so a reader can tell Tally's lines
from anything else a process prints (gunicorn's master, a crashing
interpreter). The flusher, the ingest server (gunicorn's own logs included)
and the exporter all configure logging through `setup()` or `config()`.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os

BASE_KEYS = ("ts", "level", "logger", "pid", "message")


class JsonLines(logging.Formatter):
    """A log record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """Base keys, then the record's fields (never overriding a base key), then the traceback."""
        line = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                "logger": record.name, "pid": record.process or os.getpid(),
                "message": record.getMessage()}
        for name, value in getattr(record, "fields", {}).items():
            line.setdefault(name, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def config(level: str = "INFO", loggers: dict | None = None) -> dict:
    """A logging.config.dictConfig mapping: the root logger writes JSON lines to stderr.

    `loggers` configures named loggers besides the root (gunicorn's, for one).
    """
    stderr = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
              "formatter": "json"}
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"json": {"()": JsonLines}},
            "handlers": {"stderr": stderr},
            "root": {"level": level, "handlers": ["stderr"]},
            "loggers": loggers or {}}


def setup(level: str = "INFO") -> None:
    """Send this process's log records to stderr as JSON lines (replacing earlier handlers)."""
    logging.config.dictConfig(config(level))
