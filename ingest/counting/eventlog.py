"""The event log's line format: one accepted event as a line of PostgreSQL COPY text.

The batch step appends the lines of the events it accepted to the shard's
log stream (apply.lua), and the archiver (tally.ingest.flusher.archive)
hands an entry's text to `COPY events FROM STDIN` as it is. Building the
line here, in the ingest process, keeps the per-event work out of Redis'
single thread and out of the archiver: a log entry is already what the
database loads.

Columns are tally.backends.EVENT_COLUMNS. Keys, ids and users are printable
(no tab, newline or carriage return: tally.events refuses control
characters), so a backslash is the only character COPY needs escaped in
them; props go through JSON, whose escapes carry backslashes too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from functools import lru_cache

from tally.events import Event

NULL = "\\N"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\") if "\\" in text else text


def timestamp_text(seconds: float) -> str:
    """Epoch seconds (to the millisecond) as a timestamptz COPY accepts, in UTC."""
    whole, millis = divmod(round(seconds * 1000), 1000)
    text = _second_text(whole)
    return f"{text[:-3]}.{millis:03d}+00" if millis else text


@lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    """A whole second as timestamptz text (cached: the events of a batch share seconds)."""
    return time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(seconds))


def props_text(props: Mapping[str, str] | None) -> str:
    """An event's props as COPY text of a jsonb value (NULL when it has none)."""
    if not props:
        return NULL
    return _escape(json.dumps(props, ensure_ascii=False, separators=(",", ":")))


def line(event: Event, received: str) -> bytes:
    """The event's line, UTF-8: its columns tab-separated, newline-terminated."""
    return (f"{_second_text(event.ts)}\t{event.counter}\t{_escape(event.key)}\t"
            f"{NULL if event.id is None else _escape(event.id)}\t"
            f"{NULL if event.user is None else _escape(event.user)}\t{event.value}\t"
            f"{props_text(event.props)}\t{received}\n").encode()
