"""Bearer-token auth with two scopes: `write` (events, leaderboard writes, rate limits), `read`.

Scopes are separate on purpose: a producer's token cannot read counts back
and a dashboard's token cannot write. List a token in both settings to give
it both. Views declare their scope with `@scope(...)`; views without one
(health, readiness, OpenAPI, metrics) are open.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from flask import Flask, current_app, request

from tally.errors import ConfigError
from tally.ingest.api.problems import Problem
from tally.settings import Settings

READ, WRITE = "read", "write"
log = logging.getLogger("tally.ingest")


def scope(name: str) -> Callable:
    """Mark a view as needing a token of scope `name`."""
    def mark(view: Callable) -> Callable:
        view.tally_scope = name
        return view
    return mark


def _matches(token: bytes, allowed: tuple[bytes, ...]) -> bool:
    # Compare against every token, so timing says nothing about which one matched.
    return any([hmac.compare_digest(token, candidate) for candidate in allowed])


def _unauthorized(detail: str, error: str | None) -> Problem:
    challenge = 'Bearer realm="tally"' + (f', error="{error}"' if error else "")
    return Problem(401, "unauthorized", "Unauthorized", detail,
                   headers={"WWW-Authenticate": challenge})


def _presented() -> bytes:
    header = request.headers.get("Authorization", "")
    kind, _, token = header.partition(" ")
    if not header:
        raise _unauthorized("this endpoint needs an Authorization: Bearer <token> header", None)
    if kind.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be 'Bearer <token>'", "invalid_request")
    return token.strip().encode("utf-8", "surrogateescape")


def _check() -> None:
    view = current_app.view_functions.get(request.endpoint or "")
    needed = getattr(view, "tally_scope", None)
    tokens = current_app.extensions["tally.tokens"]
    if needed is None or tokens is None:
        return
    token = _presented()
    if _matches(token, tokens[needed]):
        return
    if any(_matches(token, allowed) for allowed in tokens.values()):
        raise Problem(403, "forbidden", "Forbidden", f"this token lacks the {needed!r} scope")
    raise _unauthorized("the bearer token is not valid", "invalid_token")


def init_app(app: Flask, settings: Settings) -> None:
    """Load tokens; refuse to start without any unless insecure_no_auth is set."""
    if not (settings.write_tokens or settings.read_tokens):
        if not settings.insecure_no_auth:
            raise ConfigError("no TALLY_WRITE_TOKENS or TALLY_READ_TOKENS configured; set "
                              "tokens or pass --insecure-no-auth (TALLY_INSECURE_NO_AUTH=1)")
        log.warning("serving WITHOUT authentication (insecure_no_auth): anyone who can reach "
                    "this port can write and read counts")
        app.extensions["tally.tokens"] = None
    else:
        app.extensions["tally.tokens"] = {
            READ: tuple(t.encode() for t in settings.read_tokens),
            WRITE: tuple(t.encode() for t in settings.write_tokens),
        }
    app.before_request(_check)
