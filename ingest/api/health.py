"""Open endpoints: liveness, readiness (Redis answers PING) and the OpenAPI document."""

from __future__ import annotations

import redis
from flask import Blueprint

from tally.ingest.api.extensions import resources
from tally.ingest.api.openapi import document
from tally.ingest.api.problems import Problem

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process answers HTTP."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """Redis answers PING, so requests can be served."""
    try:
        resources().client.ping()
    except redis.RedisError as exc:
        raise Problem(503, "not-ready", "Service unavailable",
                      f"Redis does not answer: {exc}") from None
    return {"status": "ready"}


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 document of this API."""
    return document()
