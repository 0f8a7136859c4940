"""Helpers of the StatsD tests: a listener in this process on free ports, real sockets."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tally import keys
from tally.ingest.counting.config import CountingConfig
from tally.ingest.statsd.listener import Listener
from tally.ingest.statsd.mapping import Mapping
from tally.settings import load_settings


def statsd_settings(redis_url: str, **overrides):
    """Settings for a listener whose interval never fires by itself (tests call flush())."""
    base = {"shards": 2, "sinks": (), "statsd_interval": 3600.0}
    return load_settings({}, redis_url=redis_url, **(base | overrides))


@contextmanager
def listening(client, settings, mapping: Mapping | None = None) -> Iterator[tuple]:
    """A started Listener and its (udp_port, tcp_port), stopped after the block."""
    listener = Listener(settings, client, mapping or Mapping())
    ports = listener.start("127.0.0.1", 0)
    try:
        yield listener, ports
    finally:
        listener.stop()


def send_udp(port: int, *datagrams: bytes) -> None:
    """Send each datagram to 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", port))


def send_tcp(port: int, *pieces: bytes) -> None:
    """Send pieces on one TCP connection, pausing between them so they arrive as separate reads."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.05)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until condition() is true; fail after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def lines_seen(listener: Listener) -> int:
    """Every line the listener has read so far, whatever became of it."""
    s = listener.stats
    return sum(s.samples.values()) + sum(s.refused.values()) + sum(s.malformed.values()) + \
        sum(s.samples_dropped.values())


def logged_events(client, settings, counter: str) -> list[dict]:
    """The counter's events in the event log streams, as dicts of their columns."""
    config = CountingConfig.from_settings(settings)
    names = ("ts", "counter", "key", "id", "user", "value", "props")
    events = []
    for shard in range(config.shards):
        for _id, fields in client.xrange(keys.shard_keys(counter, shard).log):
            for line in fields[b"e"].decode().splitlines():
                events.append(dict(zip(names, line.split("\t"), strict=False)))
    return events
