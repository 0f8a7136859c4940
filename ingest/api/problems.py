"""RFC 9457 problem details: the one shape every error of the HTTP API takes."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

from tally.errors import CountOverflowError, ValidationError

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("tally.ingest")


class Problem(Exception):
    """An error answered as application/problem+json; raise it from any view."""

    def __init__(self, status: int, slug: str, title: str, detail: str, *,
                 errors: list[dict] | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.errors, self.headers = errors, headers or {}


def bad_request(detail: str, slug: str = "bad-request") -> Problem:
    """A 400 for a malformed request (the detail says exactly what is wrong)."""
    return Problem(400, slug, "Bad request", detail)


def response(problem: Problem) -> Response:
    """Render a Problem with its status, headers and problem+json body."""
    body = {"type": f"urn:tally:problem:{problem.slug}", "title": problem.title,
            "status": problem.status, "detail": problem.detail}
    if problem.errors is not None:
        body["errors"] = problem.errors
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
    log.error("redis error: %s", exc)
    return response(Problem(503, "redis-unavailable", "Service unavailable",
                            "Redis did not answer; retry later", headers={"Retry-After": "1"}))


def _overflow(exc: CountOverflowError) -> Response:
    return response(Problem(422, "count-overflow", "Count would overflow",
                            f"{exc}; the batch was refused"))


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
    app.register_error_handler(Exception, _unexpected)
