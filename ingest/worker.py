"""The gunicorn worker of `tally serve`: one greenlet per connection, each with deadlines.

gunicorn's gthread worker gives a connection a thread as soon as a byte
arrives, and the thread blocks until the headers are complete, so 20 clients
sending one header line every few seconds held every thread and /healthz
timed out. Here a connection is a gevent greenlet, so a slow client costs a
socket and a little memory while the worker goes on serving others, and it
is given deadlines:

- request head: the request line and headers (on a kept-alive connection,
  the next request's) must arrive within TALLY_INGEST_HEADER_TIMEOUT seconds
  of the connection opening or of the previous response; otherwise a 408;
- body: read in full, up to TALLY_MAX_BODY_BYTES + 1, within
  TALLY_INGEST_BODY_TIMEOUT seconds before the app runs; otherwise a 408, and
  the app never sees the request (so it changes nothing);
- body memory: at most BUFFERED_BODY_BUDGET bytes of bodies held at once per
  worker; a request that would pass it is answered 503 at once;
- connections: at most TALLY_INGEST_MAX_CONNECTIONS open per worker; the
  worker still accepts a few more (OVERFLOW) only to answer them 503.

Errors the HTTP server itself answers (malformed request line, header too
large, timeouts, the connection limit) are problem+json like the app's.
gevent monkey-patches the worker process before the app is built (gunicorn's
gevent worker does it in init_process), so Redis calls yield to other
greenlets; nothing here imports the app's modules at import time, because the
master imports this module before any patching. The hooks overridden here
(timeout_ctx, handle, handle_request, handle_error, load_wsgi) are
gunicorn internals, so pyproject.toml pins gunicorn 27.x and
tests/test_api_slowloris.py exercises each behaviour.
"""

from __future__ import annotations

import contextlib
import io

import gevent
from gunicorn import util
from gunicorn.http import errors
from gunicorn.workers.ggevent import GeventWorker

# Connections accepted past the limit, only to be answered 503 and closed.
OVERFLOW = 64
# How long a refused connection's unread input is drained before it is closed.
LINGER_SECONDS = 1.0
# Request-body bytes one worker may hold at once (at least two maximum-size bodies).
BUFFERED_BODY_BUDGET = 64 * 1024 * 1024
READ_CHUNK = 64 * 1024


class HeadTimeout(Exception):
    """The request line and headers did not arrive in time."""


class BodyTimeout(Exception):
    """The request body did not arrive in time."""


class Busy(Exception):
    """The worker holds as many request-body bytes as it may."""


# gunicorn's parse errors -> (status, problem slug, title); the first matching row wins.
SERVER_PROBLEMS: tuple[tuple[tuple[type[BaseException], ...], int, str, str], ...] = (
    ((HeadTimeout, BodyTimeout), 408, "request-timeout", "Request timeout"),
    ((Busy,), 503, "server-busy", "Service unavailable"),
    ((errors.LimitRequestHeaders,), 431, "header-fields-too-large",
     "Request header fields too large"),
    ((errors.LimitRequestLine,), 414, "uri-too-long", "URI too long"),
    ((errors.UnsupportedTransferCoding,), 501, "unsupported-transfer-coding",
     "Transfer coding not implemented"),
    ((errors.ExpectationFailed,), 417, "expectation-failed", "Expectation failed"),
    ((errors.InvalidRequestLine, errors.InvalidRequestMethod, errors.InvalidHTTPVersion,
      errors.InvalidHeader, errors.InvalidHeaderName, errors.ObsoleteFolding,
      errors.InvalidSchemeHeaders, errors.InvalidProxyLine, errors.InvalidChunkSize,
      errors.ChunkMissingTerminator, errors.InvalidChunkExtension),
     400, "malformed-request", "Malformed request"),
)


def problem_bytes(status: int, slug: str, title: str, detail: str,
                  headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 problem+json response that closes the connection."""
    from tally.ingest.api.problems import Problem, response

    answer = response(Problem(status, slug, title, detail, headers=headers))
    answer.headers["Connection"] = "close"
    body = answer.get_data()
    answer.headers["Content-Length"] = str(len(body))
    head = f"HTTP/1.1 {answer.status}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in answer.headers.items())
    return (head + "\r\n").encode("latin-1") + body


def _answer_and_close(client, raw: bytes) -> None:
    """Send a final response, then close so that unread request bytes cannot reset it.

    Closing a socket with unread input makes the kernel send RST, which can
    destroy the response before the client reads it: half-close and drain
    briefly first (RFC 9112, section 9.6).
    """
    with contextlib.suppress(OSError):
        util.write_nonblock(client, raw)
    util.close_graceful(client, timeout=LINGER_SECONDS)


def _detail(exc: BaseException) -> str:
    if isinstance(exc, HeadTimeout | BodyTimeout | Busy):
        return str(exc)
    text = str(exc) or type(exc).__name__
    return f"the HTTP server could not parse the request: {text}"


class ReadBodyFirst:
    """WSGI middleware: the whole body is in memory, read within a deadline, before the app runs.

    The app then reads a BytesIO and never waits on the network, so a slow
    upload costs the worker nothing while the app runs, and an upload slower
    than the deadline is refused before the app can change anything. A body
    declared larger than the limit is left unread: the app answers it 413.

    Bodies are read before authentication (the app decides that), so the
    bytes buffered at once in one worker are capped (`budget`): a request
    whose next chunk would pass it is answered 503 at once, so 1000 open
    uploads cannot make a worker hold 1000 maximum-size bodies.
    """

    def __init__(self, app, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout
        self.budget = max(BUFFERED_BODY_BUDGET, 2 * (max_bytes + 1))
        self.buffered = 0  # bytes of bodies this worker holds now

    def __call__(self, environ, start_response):
        declared = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        length = int(declared) if declared.isdigit() else 0
        if not (chunked or 0 < length <= self.max_bytes):
            return self.app(environ, start_response)
        body = io.BytesIO()
        try:
            self._read(environ["wsgi.input"], body)
            body.seek(0)
            environ["wsgi.input"] = body
            return self.app(environ, start_response)
        finally:
            self.buffered -= body.getbuffer().nbytes

    def _read(self, stream, body: io.BytesIO) -> None:
        """Copy up to max_bytes + 1 bytes; raise BodyTimeout or Busy (both end in handle_error)."""
        detail = f"the request body did not arrive within {self.timeout:g} s"
        with gevent.Timeout(self.timeout, BodyTimeout(detail)):
            while body.tell() <= self.max_bytes:
                chunk = stream.read(min(READ_CHUNK, self.max_bytes + 1 - body.tell()))
                if not chunk:
                    return
                if self.buffered + len(chunk) > self.budget:
                    raise Busy(f"this worker holds {self.buffered} bytes of request bodies, "
                               f"its limit is {self.budget}; retry shortly")
                self.buffered += len(chunk)
                body.write(chunk)


class IngestWorker(GeventWorker):
    """gunicorn's gevent worker with a head deadline, a body deadline and a connection limit.

    Its settings come from the gunicorn application object (`self.app.settings`,
    see tally.ingest.serve), so `tally serve` and its options are the one source.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        settings = self.app.settings
        self.head_timeout = settings.ingest_header_timeout
        self.body_timeout = settings.ingest_body_timeout
        self.max_body_bytes = settings.max_body_bytes
        self.max_connections = settings.ingest_max_connections
        self.open_connections = 0

    def load_wsgi(self) -> None:
        """Build the app (after the fork and the monkey-patching), behind ReadBodyFirst."""
        super().load_wsgi()
        self.wsgi = ReadBodyFirst(self.wsgi, self.max_body_bytes, self.body_timeout)

    def timeout_ctx(self):
        """The deadline gunicorn puts around reading each request line and headers."""
        detail = f"the request line and headers did not arrive within {self.head_timeout:g} s"
        return gevent.Timeout(self.head_timeout, HeadTimeout(detail))

    def handle(self, listener, client, addr) -> None:
        """Serve one connection, or answer 503 at once when the worker has too many."""
        if self.open_connections >= self.max_connections:
            self._refuse(client)
            return
        self.open_connections += 1
        try:
            super().handle(listener, client, addr)
        finally:
            self.open_connections -= 1

    def handle_request(self, listener_name, req, sock, addr):
        """Serve one request, then let other connections' greenlets run before the next one.

        A stopping worker closes the connection after the response instead of waiting.

        Without this a kept-alive connection would hold a stopping worker for
        the whole head deadline (gunicorn only marks responses "close" for
        requests that arrive after the stop began).
        """
        keep = super().handle_request(listener_name, req, sock, addr)
        if not self.alive:
            raise StopIteration
        # A fast client's next request is often already buffered, so reading it
        # would not yield: without this, a few connections ping-pong while the
        # others wait (measured: half the requests of 64 connections took >250 ms).
        gevent.sleep(0)
        return keep

    def _refuse(self, client) -> None:
        detail = (f"this worker has {self.max_connections} open connections, its limit; "
                  "retry shortly")
        raw = problem_bytes(503, "too-many-connections", "Service unavailable", detail,
                            headers={"Retry-After": "1"})
        _answer_and_close(client, raw)

    def handle_error(self, req, client, addr, exc) -> None:
        """Answer what gunicorn could not parse (or timed out) as problem+json, then close."""
        for kinds, status, slug, title in SERVER_PROBLEMS:
            if isinstance(exc, kinds):
                self.log.warning("answered %d %s to %s: %s", status, slug,
                                 (addr or ("",))[0], _detail(exc))
                retry = {"Retry-After": "1"} if status == 503 else None
                raw = problem_bytes(status, slug, title, _detail(exc), headers=retry)
                break
        else:
            self.log.exception("error handling request")
            raw = problem_bytes(500, "internal", "Internal server error",
                                "an unexpected error occurred; it has been logged")
        _answer_and_close(client, raw)
