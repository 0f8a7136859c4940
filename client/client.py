"""`Client`: count events from application code; read counts, leaderboards and rate limits."""

from __future__ import annotations

import atexit
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from tally.client.batcher import Batcher
from tally.client.errors import Failure, UnsentEvents
from tally.client.http import Backoff, Http
from tally.client.reads import Reads

log = logging.getLogger("tally.client")


class Client(Reads):
    """A Tally API client: count() queues, a background thread sends batches.

    Every event gets an id (a random UUID unless given), so a batch resent
    after a timeout, a 429/503, a 500 partially-applied or a 504
    outcome-unknown counts each event exactly once. Invalid events are not
    retried: flush() and close() raise UnsentEvents naming them with the
    server's problem. The queue holds at most `max_queue` events; when full,
    count() blocks up to `block_timeout` seconds (on_full="block") or raises
    QueueFull at once (on_full="raise") — an event is never dropped silently.

    `token` is the write token; reads use `read_token` (default: `token`,
    for a token listed in both TALLY_WRITE_TOKENS and TALLY_READ_TOKENS).
    """

    def __init__(self, url: str, token: str, *, read_token: str | None = None,
                 batch_size: int = 500, flush_interval: float = 1.0, max_queue: int = 100_000,
                 on_full: str = "block", block_timeout: float = 10.0,
                 give_up_after: float = 300.0, timeout: float = 10.0,
                 read_give_up: float = 10.0, backoff: Backoff | None = None,
                 on_failure: Callable[[list[Failure]], Any] | None = None) -> None:
        self.http = Http(url, timeout, backoff or Backoff())
        self.write_token, self.read_token = token, read_token or token
        self.read_give_up = read_give_up
        self.batcher = Batcher(self.http, token, batch_size=batch_size,
                               flush_interval=flush_interval, max_queue=max_queue,
                               on_full=on_full, block_timeout=block_timeout,
                               give_up_after=give_up_after, on_failure=on_failure)
        self._closed = False
        # A strong reference: a client dropped without close() still delivers at exit.
        atexit.register(self._close_at_exit)

    def count(self, counter: str, key: str, *, user: str | None = None, value: int = 1,
              ts: datetime | float | str | None = None, props: Mapping[str, str] | None = None,
              id: str | None = None) -> str:
        """Queue one event (sent within flush_interval); return its id.

        `ts` is a datetime, epoch seconds or RFC 3339 text (default: the
        server's clock on arrival). The server validates the event.
        """
        event: dict[str, Any] = {"counter": counter, "key": key,
                                 "id": uuid.uuid4().hex if id is None else id}
        if value != 1:
            event["value"] = value
        if user is not None:
            event["user"] = user
        if ts is not None:
            event["ts"] = _rfc3339(ts) if isinstance(ts, datetime) else ts
        if props:
            event["props"] = dict(props)
        self.batcher.put(event)
        return event["id"]

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued so far and wait for it; UnsentEvents if any was not counted."""
        self.batcher.wait(timeout)

    def pending(self) -> int:
        """Events queued or in flight, not yet answered."""
        return self.batcher.pending()

    def close(self, timeout: float | None = None) -> None:
        """Refuse new events, deliver the queued ones, release connections (also at exit)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        try:
            self.batcher.wait(timeout, closing=True)
        finally:
            self.http.close()

    def _close_at_exit(self) -> None:
        try:
            self.close(timeout=30.0)
        except UnsentEvents as exc:
            log.error("tally client at exit: %s", exc)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("ts must be timezone-aware (a naive datetime has no defined instant)")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
