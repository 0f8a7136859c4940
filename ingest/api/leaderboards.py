"""Leaderboards under /v1/leaderboards/<board>: scores, increments, top-k, ranks, neighbours."""

from __future__ import annotations

import re

from flask import Blueprint, request

from tally.ingest.api import body, params
from tally.ingest.api.auth import READ, WRITE, scope
from tally.ingest.api.extensions import resources
from tally.ingest.api.openapi import IDEMPOTENCY_KEY
from tally.ingest.api.problems import Problem, bad_request
from tally.ingest.counting import leaderboard

bp = Blueprint("leaderboards", __name__, url_prefix="/v1/leaderboards/<board>")
MAX_K = 1000
MAX_CAPACITY = 10_000_000
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_PATTERN = re.compile(IDEMPOTENCY_KEY)


def _entry(entry: leaderboard.Entry) -> dict:
    return {"rank": entry.rank, "member": entry.member, "score": entry.score}


def _number(payload: dict, name: str) -> float:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"{name} must be a number", "invalid-body")
    if abs(value) >= 2**53:
        raise bad_request(f"{name} must be between -(2^53 - 1) and 2^53 - 1", "invalid-body")
    return value


def _fields(payload: dict, allowed: set[str]) -> None:
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)}", "invalid-body")


def idempotency_key() -> str | None:
    """The request's Idempotency-Key, None without one; 400 when malformed or repeated."""
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if "," in value:  # a repeated header arrives joined by commas
        raise bad_request(f"{IDEMPOTENCY_HEADER} must be given once", "invalid-header")
    if IDEMPOTENCY_PATTERN.match(value) is None:
        raise bad_request(f"{IDEMPOTENCY_HEADER} must be 1 to 255 printable ASCII characters "
                          "other than space, quote, comma and backslash, optionally in double "
                          "quotes",
                          "invalid-header")
    return value.strip('"')


def _write(board: str, field: str, increment: bool):
    params.name("board", board)
    key = idempotency_key() if increment else None
    payload = body.json_object()
    _fields(payload, {"member", field})
    member = params.text_value("member", payload.get("member"))
    amount = _number(payload, field)
    capacity = params.int_arg("capacity", resources().settings.leaderboard_capacity, 0,
                              MAX_CAPACITY)
    entry = leaderboard.update(resources().client, board, member, amount,
                               increment=increment, capacity=capacity, idempotency_key=key,
                               remember=resources().settings.dedup_window)
    if entry is None:
        return {"kept": False, "member": member, "rank": None, "score": None}
    return {"kept": True, **_entry(entry)}


@bp.route("/scores", methods=["PUT", "POST"])
@scope(WRITE)
def set_score(board: str):
    """Set a member's score; with ?capacity=N the board keeps only its best N."""
    return _write(board, "score", increment=False)


@bp.post("/increments")
@scope(WRITE)
def increment(board: str):
    """Add delta to a member's score (a missing member starts at 0).

    With an Idempotency-Key the increment applies once: a repeat within the
    dedup window answers what the first one answered and changes nothing.
    """
    return _write(board, "delta", increment=True)


@bp.get("/top")
@scope(READ)
def top(board: str):
    """The best k members."""
    params.name("board", board)
    k = params.int_arg("k", 10, 1, MAX_K)
    entries = leaderboard.top(resources().client, board, k)
    return {"board": board, "size": leaderboard.size(resources().client, board),
            "entries": [_entry(e) for e in entries]}


def _absent(board: str, member: str) -> Problem:
    return Problem(404, "member-not-found", "Not found",
                   f"{member!r} is not on leaderboard {board!r}")


@bp.get("/member")
@scope(READ)
def member(board: str):
    """A member's rank and score."""
    params.name("board", board)
    who = params.text_arg("member")
    entry = leaderboard.entry(resources().client, board, who)
    if entry is None:
        raise _absent(board, who)
    return _entry(entry)


@bp.get("/around")
@scope(READ)
def around(board: str):
    """The member and up to `radius` members above and below it."""
    params.name("board", board)
    who = params.text_arg("member")
    radius = params.int_arg("radius", 5, 0, MAX_K)
    entries = leaderboard.around(resources().client, board, who, radius)
    if not entries:
        raise _absent(board, who)
    return {"board": board, "member": who, "entries": [_entry(e) for e in entries]}


@bp.delete("/member")
@scope(WRITE)
def remove(board: str):
    """Remove a member named by ?member= or a {"member": …} body; 404 if absent."""
    params.name("board", board)
    if "member" in request.args or not (request.content_length or request.content_type):
        who = params.text_arg("member")
    else:
        payload = body.json_object()
        _fields(payload, {"member"})
        who = params.text_value("member", payload.get("member"))
    if not leaderboard.remove(resources().client, board, who):
        raise _absent(board, who)
    return {"removed": True, "member": who}
