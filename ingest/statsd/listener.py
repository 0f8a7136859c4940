"""The listener: UDP and TCP sockets feeding one Aggregate, and the interval loop applying it.

Every line of every datagram or TCP stream is read (reader.py) and either
added to the running sums, or counted as refused, dropped or malformed; no
input ends the listener. Each interval the sums are sealed into events and
the pending chunks go, oldest first, through the same batch step as the API
(apply_batch), so they reach every sink and the event log. A chunk the batch
step refuses for now (event log full, Redis unavailable, no answer) stays and
is retried next interval; with event ids (TALLY_STATSD_EVENT_IDS) a retry of
a chunk that did count counts nothing twice.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time

import redis

from tally.errors import (
    EventLogFullError,
    NotAppliedError,
    OutcomeUnknownError,
    PartiallyAppliedError,
    TallyError,
)
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig
from tally.ingest.statsd.aggregate import Aggregate
from tally.ingest.statsd.mapping import Mapping
from tally.ingest.statsd.metrics import Stats
from tally.ingest.statsd.protocol import MAX_LINE_BYTES
from tally.ingest.statsd.reader import LineReader
from tally.settings import Settings

log = logging.getLogger("tally.ingest.statsd")
LOG_EVERY = 60.0  # seconds between two log lines about the same name or reason
MAX_TCP_CONNECTIONS = 256
RECEIVE_BUFFER = 4 * 1024 * 1024  # asked for; the kernel caps it at net.core.rmem_max
# Refusals that pass: the same chunk is tried again next interval.
RETRIED = (EventLogFullError, NotAppliedError, OutcomeUnknownError, PartiallyAppliedError,
           redis.RedisError)


class OncePer:
    """Says whether something may be logged: at most once per key per `seconds`."""

    def __init__(self, seconds: float = LOG_EVERY, keys: int = 10_000):
        self.seconds, self.keys, self.last = seconds, keys, {}

    def due(self, key, now: float) -> bool:
        """True (and remembered) when `key` was not logged in the last `seconds`."""
        if now - self.last.get(key, -self.seconds) < self.seconds:
            return False
        if len(self.last) >= self.keys:
            self.last.clear()
        self.last[key] = now
        return True


class Listener:
    """One StatsD listener: sockets, sums, and the loop applying them."""

    def __init__(self, settings: Settings, client, mapping: Mapping):
        self.settings, self.client = settings, client
        self.config = CountingConfig.from_settings(settings)
        self.reader = LineReader(mapping)
        self.aggregate = Aggregate(settings.statsd_max_pending, settings.max_batch_events,
                                   settings.statsd_event_ids)
        self.stats = Stats()
        self.lock = threading.Lock()
        self.once = OncePer()
        self.stopping = threading.Event()  # the sockets stop reading
        self.received_all = threading.Event()  # they have: the loop applies once more and ends
        self.threads: list[threading.Thread] = []
        self.udp: socket.socket | None = None
        self.tcp: socketserver.ThreadingTCPServer | None = None

    # -- input --------------------------------------------------------------------------

    def handle_lines(self, data: bytes) -> None:
        """Read every newline-separated line of a datagram or of a TCP read."""
        with self.lock:
            for raw in data.split(b"\n"):
                if raw:
                    try:
                        self._line(raw)
                    except Exception:  # noqa: BLE001 - no input may end the listener
                        self.stats.malformed["error"] += 1
                        if self.once.due(("error",), time.monotonic()):
                            log.exception("statsd line could not be handled")

    def _line(self, raw: bytes) -> None:
        outcome = self.reader.read(raw)
        stats = self.stats
        if outcome.action == "count":
            if self.aggregate.add(outcome.target, outcome.amount):
                stats.samples[outcome.kind] += 1
            else:
                stats.samples_dropped["pending_full"] += 1
                self._warn(("full",), "statsd sample dropped: TALLY_STATSD_MAX_PENDING "
                           "aggregated events are held already", name=outcome.name)
        elif outcome.action == "refused":
            stats.refused[outcome.kind] += 1
            self._warn(("refused", outcome.kind, outcome.name), "statsd type not counted",
                       name=outcome.name, type=outcome.kind)
        elif outcome.action == "dropped":
            stats.samples_dropped["mapping"] += 1
        else:
            self.malformed(outcome.kind, raw)

    def malformed(self, reason: str, raw: bytes) -> None:
        """Count a line that could not be read and log it (once per reason per minute)."""
        self.stats.malformed[reason] += 1
        self._warn(("malformed", reason), "statsd line malformed", reason=reason,
                   line=raw[:200].decode("utf-8", "backslashreplace"))

    def _warn(self, key: tuple, message: str, **fields) -> None:
        if self.once.due(key, time.monotonic()):
            log.warning(message, extra={"fields": fields})

    # -- the interval loop -----------------------------------------------------------------

    def flush(self, now: float | None = None) -> None:
        """Seal the running sums and apply every pending chunk the batch step takes."""
        with self.lock:
            self.aggregate.seal(time.time() if now is None else now)
            self._sync_gauges()
        while self.aggregate.pending and self._apply(self.aggregate.pending[0]):
            with self.lock:
                self.aggregate.done()
                self._sync_gauges()

    def _sync_gauges(self) -> None:
        self.stats.pending_events = self.aggregate.pending_events
        self.stats.remainders_dropped = self.aggregate.remainders_dropped

    def _apply(self, chunk: list) -> bool:
        """Apply one chunk; True when it is done with (counted or given up), False to retry."""
        ids = self.settings.statsd_event_ids
        try:
            result = apply_batch(self.client, self.config, chunk)
        except RETRIED as exc:
            if ids or isinstance(exc, EventLogFullError | NotAppliedError | redis.RedisError):
                self.stats.apply_failures[type(exc).__name__] += 1
                self._warn(("apply",), "statsd batch not applied; kept for the next interval",
                           error=str(exc), events=len(chunk))
                return False
            # Without ids a retry could count twice what already counted.
            reason = ("outcome_unknown" if isinstance(exc, OutcomeUnknownError)
                      else "partially_applied")
            self.stats.events_dropped[reason] += len(chunk)
            log.error("statsd batch not retried (no event ids): it may have counted in part",
                      extra={"fields": {"error": str(exc), "events": len(chunk)}})
            return True
        except TallyError as exc:
            self.stats.events_dropped["refused"] += len(chunk)
            log.error("statsd batch refused by the batch step; dropped",
                      extra={"fields": {"error": str(exc), "events": len(chunk)}})
            return True
        self.stats.events_applied += result.applied
        self.stats.events_duplicate += result.duplicates
        return True

    def _loop(self) -> None:
        interval = self.settings.statsd_interval
        while not self.received_all.wait(interval):
            self._flush_logged()
        self._flush_logged()  # what arrived before the stop

    def _flush_logged(self) -> None:
        """flush(), logging and counting what it did not expect rather than ending the loop."""
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - the loop must outlive one bad interval
            self.stats.apply_failures[type(exc).__name__] += 1
            log.exception("statsd interval failed; pending events are kept")

    # -- sockets -----------------------------------------------------------------------

    def start(self, host: str, port: int) -> tuple[int, int]:
        """Bind UDP and TCP on host:port (0: a free port each) and start; return both ports."""
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.udp.bind((host, port))
        self.tcp = _TcpServer((host, port), self)
        for target in (self._receive_udp, self.tcp.serve_forever, self._loop):
            thread = threading.Thread(target=target, daemon=True, name=f"statsd-{target.__name__}")
            thread.start()
            self.threads.append(thread)
        return self.udp.getsockname()[1], self.tcp.server_address[1]

    def _receive_udp(self) -> None:
        """Read datagrams until stop() wakes the blocking recv with an empty one."""
        udp, stats, handle = self.udp, self.stats, self.handle_lines
        while True:
            data = udp.recv(65535)
            if self.stopping.is_set():
                return
            stats.udp_packets += 1
            handle(data)

    def stop(self) -> None:
        """Stop receiving, apply what was received, close the sockets."""
        self.stopping.set()
        if self.udp:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as wake:
                wake.sendto(b"", self.udp.getsockname())
        if self.tcp:
            self.tcp.shutdown()
            self.tcp.server_close()
        *receivers, loop = self.threads or [None]
        for thread in receivers:
            thread.join(timeout=10)
        self.received_all.set()
        if loop:
            loop.join(timeout=60)
        if self.udp:
            self.udp.close()


class _TcpHandler(socketserver.BaseRequestHandler):
    """One TCP client: newline-terminated lines, split anywhere across reads."""

    def handle(self) -> None:
        listener: Listener = self.server.listener
        buffer, skipping = b"", False
        while not listener.stopping.is_set():
            data = self.request.recv(65536)
            if not data:
                break
            head, newline, rest = data.rpartition(b"\n")
            if newline:
                if not skipping:
                    listener.handle_lines(buffer + head)
                else:  # the rest of an over-long line, then whole lines
                    listener.handle_lines(head.partition(b"\n")[2])
                buffer, skipping = rest, False
            else:
                buffer += rest
            if len(buffer) > MAX_LINE_BYTES:
                if not skipping:
                    with listener.lock:
                        listener.malformed("too_long", buffer)
                buffer, skipping = b"", True
        if buffer and not skipping:
            # Cut off mid-line: "x:10|c|@0.25" cut to "x:10|c|@0.2" would read as valid.
            with listener.lock:
                listener.malformed("unterminated", buffer)


class _TcpServer(socketserver.ThreadingTCPServer):
    """Threads per connection, at most MAX_TCP_CONNECTIONS at once (more are closed, counted)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, listener: Listener):
        self.listener = listener
        self.open = threading.BoundedSemaphore(MAX_TCP_CONNECTIONS)
        super().__init__(address, _TcpHandler)

    def process_request(self, request, client_address) -> None:
        """Serve the connection in a thread, or close it when too many are open."""
        if not self.open.acquire(blocking=False):
            with self.listener.lock:
                self.listener.stats.tcp_connections_refused += 1
            self.shutdown_request(request)
            return
        with self.listener.lock:
            self.listener.stats.tcp_connections += 1
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        """Serve, then free the connection's place."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.open.release()
