"""A bounded slowloris siege on a loopback server, and a normal client timed meanwhile.

Shared by the slowloris test and the ingest HTTP benchmark (no tests here).
Three kinds of hostile connection, all held from one thread with a selector:

- slow headers: a request line, then one more header line every `interval`
  seconds, never the blank line that ends the headers;
- idle: connected, nothing sent;
- slow bodies: complete headers announcing a body, then one body byte every
  `interval` seconds.

Each connection records when the server closed it and what it answered, so a
test can assert that slow connections are dropped, and after how long; a
dropped connection is replaced, so the siege keeps its size for its whole
duration.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

import requests

KINDS = ("slow-headers", "idle", "slow-body")
SLOW_BODY_LENGTH = 100_000


@dataclass
class Hostile:
    """One hostile connection and what the server did with it."""

    kind: str
    sock: socket.socket
    opened: float
    closed: float | None = None  # monotonic time the server closed it
    answer: bytes = b""  # the first bytes the server sent, if any

    @property
    def held(self) -> float | None:
        """Seconds the server kept this connection, None while it is still open."""
        return None if self.closed is None else self.closed - self.opened


def raise_fd_limit(needed: int) -> None:
    """Raise this process's open-file limit to `needed` if the hard limit allows it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise RuntimeError(f"open-file limit {soft} is below the {needed} sockets needed")


@dataclass
class Siege:
    """Hold hostile connections against host:port until stopped (use as a context manager)."""

    host: str
    port: int
    counts: dict[str, int]  # kind -> number of connections
    interval: float = 1.0
    path: str = "/v1/events"
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request
    replenish: bool = True  # open a new connection of the same kind when one is dropped
    connections: list[Hostile] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # open connections at each tick

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._hold, name="siege", daemon=True)

    def __enter__(self) -> Siege:
        raise_fd_limit(sum(self.counts.values()) + 256)
        for kind in KINDS:
            for _ in range(self.counts.get(kind, 0)):
                self._open(kind)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for conn in self.connections:
            self._forget(conn)
        self._selector.close()

    def open_now(self) -> list[Hostile]:
        """Connections the server has not closed yet."""
        return [c for c in self.connections if c.closed is None]

    def _open(self, kind: str) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=5)
        sock.setblocking(False)
        conn = Hostile(kind, sock, time.monotonic())
        self.connections.append(conn)
        self._selector.register(sock, selectors.EVENT_READ, conn)
        head = f"POST {self.path} HTTP/1.1\r\nHost: tally\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in self.headers.items())
        if kind == "slow-headers":
            self._send(conn, head.encode())
        elif kind == "slow-body":
            self._send(conn, (f"{head}Content-Type: application/json\r\n"
                              f"Content-Length: {SLOW_BODY_LENGTH}\r\n\r\n[").encode())

    def _send(self, conn: Hostile, data: bytes) -> None:
        try:
            conn.sock.send(data)
        except BlockingIOError:
            pass  # the server stopped reading; the connection still costs it a socket
        except OSError:
            self._closed(conn)

    def _closed(self, conn: Hostile) -> None:
        if conn.closed is None:
            conn.closed = time.monotonic()
            self._forget(conn)

    def _forget(self, conn: Hostile) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _hold(self) -> None:
        next_tick = time.monotonic() + self.interval
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=max(0.0, next_tick - time.monotonic())):
                self._read(key.data)
            if time.monotonic() >= next_tick:
                next_tick += self.interval
                for conn in self.open_now():
                    if conn.kind == "slow-headers":
                        self._send(conn, b"X-Slow: 1\r\n")
                    elif conn.kind == "slow-body":
                        self._send(conn, b" ")
                if self.replenish:
                    self._replenish()
                self.sizes.append(len(self.open_now()))

    def _replenish(self) -> None:
        """Reopen dropped connections, as a real attacker would, so the siege keeps its size."""
        open_by_kind = {kind: 0 for kind in KINDS}
        for conn in self.open_now():
            open_by_kind[conn.kind] += 1
        for kind, wanted in self.counts.items():
            for _ in range(wanted - open_by_kind[kind]):
                if self._stop.is_set():
                    return
                try:
                    self._open(kind)
                except OSError:
                    return  # the server is not accepting: try again next tick

    def _read(self, conn: Hostile) -> None:
        try:
            data = conn.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            conn.answer += data[: 4096 - len(conn.answer)]
        else:
            self._closed(conn)


def timed_requests(base: str, seconds: float, headers: dict[str, str],
                   pause: float = 0.1, timeout: float = 5.0) -> list[tuple[float, int]]:
    """(seconds, status) of a normal client's requests, each on a new connection.

    It alternates GET /healthz and a one-event POST /v1/events; a request that
    fails or times out is recorded as status 0 and its full wait.
    """
    results, deadline, n = [], time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        n += 1
        started = time.monotonic()
        try:
            if n % 2:
                answer = requests.get(f"{base}/healthz", timeout=timeout)
            else:
                event = {"counter": "siege", "key": "normal", "id": f"normal-{n}"}
                answer = requests.post(f"{base}/v1/events", json=event, headers=headers,
                                       timeout=timeout)
            status = answer.status_code
        except requests.RequestException:
            status = 0
        results.append((time.monotonic() - started, status))
        time.sleep(pause)
    return results


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]
