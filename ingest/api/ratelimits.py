"""POST /v1/ratelimit/<limit>: one sliding-window check for a subject."""

from __future__ import annotations

import math
import re
from typing import NamedTuple

from flask import Blueprint, Flask, current_app

from tally.errors import ConfigError
from tally.ingest.api import body, params
from tally.ingest.api.auth import WRITE, scope
from tally.ingest.api.extensions import resources
from tally.ingest.api.problems import Problem, bad_request
from tally.ingest.counting import ratelimit

bp = Blueprint("ratelimits", __name__)
SPEC = re.compile(r"([A-Za-z0-9_.:-]{1,64})=(\d{1,9})/(\d{1,9}(?:\.\d+)?)")


class Limit(NamedTuple):
    """At most max_requests per window_seconds."""

    max_requests: int
    window_seconds: float


def parse_limits(text: str) -> dict[str, Limit]:
    """Parse "name=max/window_seconds,..." (TALLY_RATE_LIMITS)."""
    limits = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = SPEC.fullmatch(part)
        if not match or int(match[2]) < 1 or float(match[3]) <= 0:
            raise ConfigError(f"TALLY_RATE_LIMITS entry {part!r} is not name=max/window_seconds "
                              "with max >= 1 and window > 0")
        limits[match[1]] = Limit(int(match[2]), float(match[3]))
    return limits


@bp.post("/v1/ratelimit/<limit>")
@scope(WRITE)
def check(limit: str):
    """Count one request of a subject against a configured limit; 429 when over it."""
    configured = current_app.extensions["tally.limits"].get(limit)
    if configured is None:
        raise Problem(404, "unknown-limit", "Not found", f"no rate limit named {limit!r} is "
                      "configured (TALLY_RATE_LIMITS)")
    payload = body.json_object()
    if set(payload) - {"subject"}:
        raise bad_request("the body takes only a subject", "invalid-body")
    subject = params.text_value("subject", payload.get("subject"))
    decision = ratelimit.hit(resources().client, limit, subject, *configured)
    answer = {"allowed": decision.allowed, "remaining": decision.remaining,
              "reset_after": decision.reset_after, "limit": configured.max_requests,
              "window_seconds": configured.window_seconds}
    if decision.allowed:
        return answer
    return answer, 429, {"Retry-After": str(max(1, math.ceil(decision.reset_after)))}


def init_app(app: Flask, settings) -> None:
    """Parse the configured limits once, at startup."""
    app.extensions["tally.limits"] = parse_limits(settings.rate_limits)
