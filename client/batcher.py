"""The bounded event queue and the background thread that delivers it in batches.

count() appends to a deque under one condition variable; the sender thread
takes a batch when `batch_size` events wait, when the oldest has waited
`flush_interval` seconds, or when flush()/close() asks, and sends it until
the server answers for good. Events leave in order and one batch is in
flight at a time, so "everything queued before flush() was called" is one
sequence number: flush() waits until that many events are resolved.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import requests

from tally.client.errors import ClientClosed, Failure, QueueFull, UnsentEvents
from tally.client.http import RETRY_STATUSES, Http, problem_of

Event = dict[str, Any]


class Batcher:
    """Queue events, send them from a daemon thread, account for every one of them."""

    def __init__(self, http: Http, token: str, *, batch_size: int, flush_interval: float,
                 max_queue: int, on_full: str, block_timeout: float, give_up_after: float,
                 on_failure: Callable[[list[Failure]], Any] | None = None) -> None:
        if on_full not in ("block", "raise"):
            raise ValueError('on_full must be "block" or "raise"')
        self.http, self.token = http, token
        self.batch_size, self.flush_interval = batch_size, flush_interval
        self.max_queue, self.on_full, self.block_timeout = max_queue, on_full, block_timeout
        self.give_up_after, self.on_failure = give_up_after, on_failure
        self.cond = threading.Condition()
        self.waiting: deque[tuple[float, Event]] = deque()
        self.enqueued = self.resolved = self.in_flight = self.urgent = 0
        self.failed: list[Failure] = []
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="tally-client-sender", daemon=True)
        self.thread.start()

    def put(self, event: Event) -> None:
        """Queue one event; when the queue is full, block up to block_timeout or raise."""
        with self.cond:
            if self.closed:
                raise ClientClosed("the client is closed")
            if len(self.waiting) >= self.max_queue:
                timeout = 0.0 if self.on_full == "raise" else self.block_timeout
                if not self.cond.wait_for(lambda: len(self.waiting) < self.max_queue
                                          or self.closed, timeout):
                    raise QueueFull(f"{self.max_queue} events are queued, the queue's bound; "
                                    "the event was not queued")
                if self.closed:
                    raise ClientClosed("the client is closed")
            self.waiting.append((time.monotonic(), event))
            self.enqueued += 1
            # Wake the sender: its clock starts with the first event, a full batch leaves now.
            if len(self.waiting) == 1 or len(self.waiting) >= self.batch_size:
                self.cond.notify_all()

    def wait(self, timeout: float | None, closing: bool = False) -> None:
        """Send what is queued now and wait for every answer; raise UnsentEvents on any loss."""
        with self.cond:
            target = self.enqueued
            self.closed = self.closed or closing
            self.urgent += 1
            self.cond.notify_all()
            try:
                self.cond.wait_for(lambda: self.resolved >= target, timeout)
            finally:
                self.urgent -= 1
            failed, self.failed = self.failed, []
            pending = target - self.resolved
        if failed or pending > 0:
            raise UnsentEvents(failed, max(pending, 0))

    def pending(self) -> int:
        """Events queued or in flight."""
        with self.cond:
            return self.enqueued - self.resolved

    def _ready(self) -> bool:
        if not self.waiting:
            return self.closed
        age = time.monotonic() - self.waiting[0][0]
        return (len(self.waiting) >= self.batch_size or self.urgent > 0 or self.closed
                or age >= self.flush_interval)

    def _take(self) -> list[Event] | None:
        with self.cond:
            while not self._ready():
                timeout = (self.waiting[0][0] + self.flush_interval - time.monotonic()
                           if self.waiting else None)
                self.cond.wait(timeout)
            if not self.waiting:
                return None  # closed and drained
            n = min(self.batch_size, len(self.waiting))
            batch = [self.waiting.popleft()[1] for _ in range(n)]
            self.in_flight = n
            self.cond.notify_all()  # room for blocked count() calls
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                failures = self.deliver(batch)
            except Exception as exc:  # never let the thread die with events unaccounted
                failures = [Failure(e, None, f"{type(exc).__name__}: {exc}") for e in batch]
            if failures and self.on_failure:
                self.on_failure(failures)
            with self.cond:
                self.failed.extend(failures)
                self.resolved += self.in_flight
                self.in_flight = 0
                self.cond.notify_all()

    def deliver(self, batch: list[Event]) -> list[Failure]:
        """POST a batch until the server answers for good; return the events it refused."""
        try:
            response = self.http.send(
                "POST", "/v1/events", self.token, retry=lambda s: s == 0 or s in RETRY_STATUSES,
                give_up_after=self.give_up_after, data=json.dumps(batch).encode(),
                headers={"Content-Type": "application/json"})
        except requests.RequestException as exc:
            return [Failure(e, None, f"gave up after {self.give_up_after:g} s: {exc}")
                    for e in batch]
        if response.status_code == 200:
            return []
        problem = problem_of(response)
        if response.status_code == 413 and len(batch) > 1:  # too big: send it in halves
            half = len(batch) // 2
            return self.deliver(batch[:half]) + self.deliver(batch[half:])
        indexes = {e.get("index") for e in problem.errors}
        if problem.type == "validation" and indexes and None not in indexes:
            # Nothing of the batch was counted: drop the invalid events, send the rest.
            messages = {}
            for e in problem.errors:
                messages.setdefault(e["index"], []).append(f"{e['field']} {e['message']}")
            bad = [Failure(ev, 400, "; ".join(messages[i])) for i, ev in enumerate(batch)
                   if i in messages]
            rest = [ev for i, ev in enumerate(batch) if i not in messages]
            return bad + (self.deliver(rest) if rest else [])
        return [Failure(e, problem.status, str(problem)) for e in batch]
