"""RFC 9457 problem details: the one shape every error of the HTTP API takes."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

from tally.errors import (
    CountOverflowError,
    EventLogFullError,
    IdempotencyKeyReusedError,
    NotAppliedError,
    OutcomeUnknownError,
    PartiallyAppliedError,
    RedisStateError,
    ScriptError,
    ValidationError,
)

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("tally.ingest")


class Problem(Exception):
    """An error answered as application/problem+json; raise it from any view."""

    def __init__(self, status: int, slug: str, title: str, detail: str, *,
                 errors: list[dict] | None = None, headers: dict[str, str] | None = None,
                 extra: dict | None = None):
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.errors, self.headers, self.extra = errors, headers or {}, extra or {}


def bad_request(detail: str, slug: str = "bad-request") -> Problem:
    """A 400 for a malformed request (the detail says exactly what is wrong)."""
    return Problem(400, slug, "Bad request", detail)


def response(problem: Problem) -> Response:
    """Render a Problem with its status, headers and problem+json body."""
    body = {"type": f"urn:tally:problem:{problem.slug}", "title": problem.title,
            "status": problem.status, "detail": problem.detail}
    if problem.errors is not None:
        body["errors"] = problem.errors
    body.update(problem.extra)
    resp = Response(json.dumps(body), status=problem.status, mimetype=MEDIA_TYPE)
    resp.headers.update(problem.headers)
    return resp


def from_validation(exc: ValidationError, detail: str = "the request is invalid") -> Problem:
    """A 400 listing every (index, field, message) of a ValidationError."""
    errors = [{"index": index, "field": field, "message": message}
              for index, field, message in exc.problems]
    return Problem(400, "validation", "Invalid input", detail, errors=errors)


def _http(exc: HTTPException) -> Response:
    slug = (exc.name or "error").lower().replace(" ", "-")
    problem = Problem(exc.code or 500, slug, exc.name, exc.description or exc.name)
    if exc.code == 405 and exc.valid_methods:
        problem.headers["Allow"] = ", ".join(exc.valid_methods)
    return response(problem)


def _redis_down(exc: redis.RedisError) -> Response:
    # Reads only: every write goes through tally.ingest.counting.scripts and its own errors below.
    log.error("redis error: %s", exc)
    return response(Problem(503, "redis-unavailable", "Service unavailable",
                            "Redis did not answer; retry later", headers={"Retry-After": "1"}))


# A write Redis refused or never received: (status, title, Retry-After seconds or None).
NOT_APPLIED = {
    "unavailable": (503, "Redis unavailable", 1),
    "out-of-memory": (503, "Redis out of memory", 10),
    "loading": (503, "Redis is loading its data", 1),
    "busy": (503, "Redis is busy", 1),
    "read-only": (503, "Redis is a read-only replica", 1),
    "cluster-unavailable": (503, "Redis Cluster unavailable", 1),
    "script-missing": (503, "Redis lost the script", 1),
    "permission-denied": (500, "Redis refused Tally's credentials", None),
}
RETRY_SAFELY = ("retrying is safe for events with an id (they count once) and for leaderboard "
                "increments with an Idempotency-Key; anything else may count twice")


def _not_applied(exc: NotAppliedError) -> Response:
    log.warning("write not applied: %s", exc)
    status, title, retry = NOT_APPLIED[exc.reason]
    detail = f"{exc}; retry later" if retry else str(exc)
    headers = {"Retry-After": str(retry)} if retry else {}
    return response(Problem(status, f"redis-{exc.reason}", title, detail, headers=headers))


def _outcome_unknown(exc: OutcomeUnknownError) -> Response:
    log.error("write outcome unknown: %s", exc)
    return response(Problem(504, "outcome-unknown", "Outcome unknown", f"{exc}; {RETRY_SAFELY}"))


def _partially_applied(exc: PartiallyAppliedError) -> Response:
    log.error("batch partly applied: %s", exc)
    return response(Problem(500, "partially-applied", "Partly applied", f"{exc}; {RETRY_SAFELY}",
                            extra={"accepted": exc.accepted, "duplicates": exc.duplicates}))


def _overflow(exc: CountOverflowError) -> Response:
    detail = f"{exc}; the batch was refused"
    if exc.accepted + exc.duplicates:
        detail = (f"{exc}; the events of its hash tag were refused, while {exc.accepted} events "
                  f"of other hash tags counted and {exc.duplicates} were duplicates")
    return response(Problem(422, "count-overflow", "Count would overflow", detail,
                            extra={"accepted": exc.accepted, "duplicates": exc.duplicates}))


# Seconds a client waits before resending a batch the full event log refused: the
# archiver drains the log once per flush interval (10 s by default).
LOG_FULL_RETRY_AFTER = 10


def _log_full(exc: EventLogFullError) -> Response:
    log.warning("event log full: %s", exc)
    return response(Problem(503, "event-log-full", "Event log full",
                            f"{exc}; nothing of the batch was counted: retry later",
                            headers={"Retry-After": str(LOG_FULL_RETRY_AFTER)}))


def _state(exc: RedisStateError) -> Response:
    log.error("redis holds data tally cannot use: %s", exc)
    return response(Problem(500, "redis-state-invalid", "Redis holds data Tally cannot use",
                            f"{exc}; nothing was applied"))


def _script(exc: ScriptError) -> Response:
    log.error("script failed: %s", exc)
    return response(Problem(500, "redis-script-failed", "A Tally script failed",
                            f"{exc}; the script checks everything before its first write, so "
                            "nothing was applied"))


def _idempotency(exc: IdempotencyKeyReusedError) -> Response:
    return response(Problem(422, "idempotency-key-reused", "Idempotency-Key reused",
                            f"{exc}; nothing was changed: use a new key for a new request"))


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return response(Problem(500, "internal", "Internal server error",
                            "an unexpected error occurred; it has been logged"))


def init_app(app: Flask) -> None:
    """Answer every error, expected or not, as problem+json."""
    app.register_error_handler(Problem, response)
    app.register_error_handler(ValidationError, lambda exc: response(from_validation(exc)))
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(redis.RedisError, _redis_down)
    app.register_error_handler(CountOverflowError, _overflow)
    app.register_error_handler(NotAppliedError, _not_applied)
    app.register_error_handler(OutcomeUnknownError, _outcome_unknown)
    app.register_error_handler(PartiallyAppliedError, _partially_applied)
    app.register_error_handler(EventLogFullError, _log_full)
    app.register_error_handler(RedisStateError, _state)
    app.register_error_handler(ScriptError, _script)
    app.register_error_handler(IdempotencyKeyReusedError, _idempotency)
    app.register_error_handler(Exception, _unexpected)
