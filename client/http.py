"""HTTP to the Tally API with retries: exponential backoff, full jitter, Retry-After honoured."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from tally.client.errors import ProblemError

# Answers after which a resend may succeed. For events every resend carries the
# same ids, so even a 500 partially-applied or a 504 outcome-unknown (Redis may
# have counted the batch) is retried: the counted part answers as duplicates.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# A request that failed on the way: not sent, or sent with its answer lost (the
# server died mid-response: IncompleteRead arrives as ChunkedEncodingError).
TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError)


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts: base · 2^attempt capped at `cap`, with full jitter."""

    base: float = 0.05
    cap: float = 5.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt `attempt + 1`: never less than Retry-After."""
        jittered = random.uniform(0, min(self.cap, self.base * 2 ** attempt))
        return max(jittered, retry_after or 0.0)


def retry_after(response: requests.Response) -> float | None:
    """The Retry-After header in seconds (delta-seconds or an HTTP date), None when absent."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def problem_of(response: requests.Response) -> ProblemError:
    """A ProblemError from an error answer (any body: a proxy may answer HTML)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"type": "urn:tally:problem:http", "detail": response.text[:200]}
    return ProblemError(response.status_code, body)


class Http:
    """requests against a Tally base URL with the retry policy, one Session per thread.

    requests does not promise that a Session is thread-safe, and the sender
    thread posts while application threads read.
    """

    def __init__(self, url: str, timeout: float, backoff: Backoff) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.backoff = backoff
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        """This thread's Session (made on first use)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(session)
        return session

    def send(self, method: str, path: str, token: str, *, retry: Callable[[int], bool],
             give_up_after: float, wait: Callable[[float], Any] = time.sleep,
             **kwargs) -> requests.Response:
        """Send until an answer that `retry` (given the status) does not want retried.

        Transport errors (TRANSPORT_ERRORS) count as status 0. After `give_up_after`
        seconds the last answer is returned, or the last connection error raised.
        """
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        started, attempt = time.monotonic(), 0
        while True:
            try:
                response = self.session.request(method, self.url + path, headers=headers,
                                                timeout=self.timeout, **kwargs)
                status, after = response.status_code, retry_after(response)
            except TRANSPORT_ERRORS:
                status, after, response = 0, None, None
                if not retry(0) or time.monotonic() - started > give_up_after:
                    raise
            if response is not None and (not retry(status)
                                         or time.monotonic() - started > give_up_after):
                return response
            wait(self.backoff.delay(attempt, after))
            attempt += 1

    def close(self) -> None:
        """Close every thread's pooled connections."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
