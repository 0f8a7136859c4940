"""Public counters: web pages count into TALLY_PUBLIC_COUNTERS without a token.

A browser cannot keep a secret, so these writes are narrowed instead of
authenticated: only the listed counters, only from the listed origins (CORS
for fetch; the Origin header checked on every request, because a
`navigator.sendBeacon` with a text/plain body is sent without a preflight),
one event per request with only `counter`, `key`, `id` and `props`, and at
most TALLY_PUBLIC_RATE_LIMIT requests per client address, checked with
Tally's own sliding-window limiter before the body is read. docs/api.md,
"From a web page", says why each field is or is not accepted.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from importlib.resources import files

from flask import Blueprint, Response, current_app, request

from tally.errors import ConfigError
from tally.events import COUNTER_PATTERN, Event, InvalidBatch, validate_batch
from tally.ingest.api import body
from tally.ingest.api.access import note_events
from tally.ingest.api.client_address import client_address
from tally.ingest.api.extensions import EXTENSION, resources
from tally.ingest.api.problems import Problem, bad_request, from_validation
from tally.ingest.counting import ratelimit
from tally.ingest.counting.batch import apply_batch

bp = Blueprint("public", __name__)
EVENTS = "/v1/public/events"
FIELDS = ("counter", "key", "id", "props")
BODY_TYPES = frozenset({"text/plain", "application/json"})
MAX_BODY_BYTES = 16 * 1024  # one event at every field's limit, props included
# Outside the names TALLY_RATE_LIMITS accepts, so no configured limit shares its keys.
LIMIT_NAME = "public/ip"
RATE = re.compile(r"(\d{1,9})/(\d{1,9}(?:\.\d+)?)")
ORIGIN = re.compile(r"\*|https?://[^/?#\s]+")


@dataclass(frozen=True)
class PublicConfig:
    """What tokenless writes may do, parsed once at startup."""

    counters: frozenset[str]
    origins: frozenset[str]
    max_requests: int
    window_seconds: float
    proxy_header: str

    def allows(self, origin: str | None) -> bool:
        """Whether a page of this origin may write (a request without Origin may not)."""
        return origin is not None and ("*" in self.origins or origin in self.origins)


def load_config(settings) -> PublicConfig:
    """Check the public-counter settings, naming the variable at fault."""
    for name in settings.public_counters:
        if not COUNTER_PATTERN.fullmatch(name):
            raise ConfigError(f"TALLY_PUBLIC_COUNTERS entry {name!r} is not a counter name "
                              "([a-z0-9_]{1,64})")
    for origin in settings.public_origins:
        if not ORIGIN.fullmatch(origin):
            raise ConfigError(f"TALLY_PUBLIC_ORIGINS entry {origin!r} is not an origin: "
                              "scheme://host[:port] with no path or slash at the end, or *")
    match = RATE.fullmatch(settings.public_rate_limit.strip())
    if not match or int(match[1]) < 1 or float(match[2]) <= 0:
        raise ConfigError(f"TALLY_PUBLIC_RATE_LIMIT must be max/window_seconds with max >= 1 "
                          f"and window > 0, not {settings.public_rate_limit!r}")
    return PublicConfig(frozenset(settings.public_counters), frozenset(settings.public_origins),
                        int(match[1]), float(match[2]), settings.trusted_proxy_header.strip())


def config() -> PublicConfig:
    """The current app's PublicConfig."""
    return current_app.extensions["tally.public"]


def _allowed_origin() -> str:
    origin = request.headers.get("Origin")
    if not config().allows(origin):
        raise Problem(403, "origin-not-allowed", "Forbidden",
                      f"public counters accept writes only from the origins in "
                      f"TALLY_PUBLIC_ORIGINS; Origin {origin or '(none)'!r} is not one")
    return origin


def _check_rate() -> None:
    public = config()
    decision = ratelimit.hit(resources().client, LIMIT_NAME, client_address(public.proxy_header),
                             public.max_requests, public.window_seconds)
    if not decision.allowed:
        wait = max(1, math.ceil(decision.reset_after))
        raise Problem(429, "rate-limited", "Too many requests",
                      f"this client made {public.max_requests} public writes in the last "
                      f"{public.window_seconds:g} s (TALLY_PUBLIC_RATE_LIMIT); retry in {wait} s",
                      headers={"Retry-After": str(wait)})


def _event(now: float) -> Event:
    """The request's one event, by the event schema, for a public counter."""
    body.media_type(BODY_TYPES)
    raw = body.loads(body.text(body.raw_body(MAX_BODY_BYTES)))
    if not isinstance(raw, dict):
        raise bad_request("the body must be one JSON event object", "invalid-body")
    refused = [name for name in raw if name not in FIELDS]
    if refused:
        raise bad_request(f"a public event takes only {', '.join(FIELDS)}; not "
                          f"{', '.join(map(repr, refused))} (docs/api.md)", "invalid-body")
    if "id" not in raw:
        raise bad_request("a public event needs an id, so a resent beacon counts once",
                          "invalid-body")
    settings = resources().settings
    try:
        (event,) = validate_batch([raw], now, settings.accepted_lateness, settings.clock_skew)
    except InvalidBatch as exc:
        note_events(rejected=exc.total)
        raise from_validation(exc, "the event is invalid; it was not counted") from None
    if event.counter not in config().counters:
        raise Problem(403, "counter-not-public", "Forbidden", f"counter {event.counter!r} is "
                      "not public (TALLY_PUBLIC_COUNTERS); count it with a write token")
    return event


def post_event():
    """Count one event from a web page: allowed origin, under the limit, a public counter."""
    _allowed_origin()
    _check_rate()
    now = time.time()
    event = _event(now)
    res = resources()
    result = apply_batch(res.client, res.config, [event], now)
    note_events(accepted=result.applied, duplicates=result.duplicates)
    return {"accepted": result.applied, "duplicates": result.duplicates}


def preflight():
    """Answer a CORS preflight (fetch with a JSON body): allowed origins only."""
    _allowed_origin()
    return "", 204, {"Access-Control-Allow-Methods": "POST",
                     "Access-Control-Allow-Headers": "Content-Type",
                     "Access-Control-Max-Age": "600"}


bp.add_url_rule(EVENTS, view_func=post_event, methods=["POST"], provide_automatic_options=False)
bp.add_url_rule(EVENTS, endpoint="preflight", view_func=preflight, methods=["OPTIONS"])


@bp.after_request
def _cors(response: Response) -> Response:
    """Let pages of allowed origins read the answers (errors and 429s included)."""
    if request.path != EVENTS:
        return response
    response.vary.add("Origin")
    origin = request.headers.get("Origin")
    if config().allows(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    return response


COUNT_JS = (files(__package__) / "static" / "count.js").read_bytes()


@bp.get("/v1/count.js")
def count_js():
    """The one-line page-view snippet's script."""
    return Response(COUNT_JS, mimetype="text/javascript",
                    headers={"Cache-Control": "public, max-age=3600"})


@bp.record_once
def _load(state) -> None:
    """Parse the public-counter settings once, when the app registers this blueprint."""
    state.app.extensions["tally.public"] = load_config(state.app.extensions[EXTENSION].settings)
