"""The OpenAPI 3.1 document of the ingest API: the one place that describes it.

Built from small helpers so each operation reads as one entry; /openapi.json
serves it and the tests fuzz the app against it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache, wraps

from tally.events import MAX_KEY_BYTES, MAX_PROP_BYTES, MAX_PROPS, MAX_VALUE

PROBLEM = "application/problem+json"
TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_BYTES,
        "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$",
        "description": f"printable UTF-8, at most {MAX_KEY_BYTES} bytes"}
COUNTER = {"type": "string", "pattern": "^[a-z0-9_]{1,64}$"}
# maxLength counts characters, the limit is bytes of UTF-8: the API refuses some strings the
# schema allows (multibyte ones), never the other way round.
PROPS = {"type": "object", "maxProperties": MAX_PROPS, "propertyNames": COUNTER,
         "additionalProperties": {**TEXT, "maxLength": MAX_PROP_BYTES,
                                  "description": f"printable UTF-8, 1 to {MAX_PROP_BYTES} "
                                                 "bytes (not characters)"},
         "description": "text kept with the event in the raw event log (not counted); "
                        "numbers and booleans are refused: send them as strings"}
NAME = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}
TIME = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]}
# Printable ASCII but space, quote, comma and backslash, bare or as a quoted string (the IETF
# draft's sf-string form): UUIDs, ULIDs and base64 fit; a repeated header arrives comma-joined.
_KEY_TEXT = r"[!#-+\--\[\]-~]{1,255}"
IDEMPOTENCY_KEY = f'^({_KEY_TEXT}|"{_KEY_TEXT}")$'
MAX_BULK_KEYS = 1000  # keys of one bulk read of totals (GET /v1/counters/{counter})
RATE_HEADERS = {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"},
                                "description": "whole seconds until a slot frees"}}


def ref(name: str) -> dict:
    """A $ref to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], **props) -> dict:
    """A closed object schema."""
    return {"type": "object", "required": required, "properties": props,
            "additionalProperties": False}


def query(name: str, schema: dict, required: bool = False, description: str = "") -> dict:
    """A query parameter."""
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


def path(name: str, schema: dict) -> dict:
    """A path parameter."""
    return {"name": name, "in": "path", "required": True, "schema": schema}


def ok(schema: dict, description: str = "OK") -> dict:
    """A 200 JSON response."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


RETRY_AFTER = {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"},
                                "description": "seconds to wait before retrying"}}
# What a problem status means for a write (docs/api.md, "Errors").
PROBLEM_MEANING = {
    500: "partially-applied (a Redis Cluster counted some hash tags; retry only events with "
         "ids), redis-state-invalid, redis-script-failed (nothing was applied), internal",
    503: "not applied: Redis refused or never received the request (redis-unavailable, "
         "redis-out-of-memory, redis-loading, redis-busy, redis-read-only, "
         "redis-cluster-unavailable, redis-script-missing), or, for events, the event log holds "
         "its bound of unarchived events (event-log-full); retrying after Retry-After is safe",
    504: "outcome-unknown: the write reached Redis but no answer came back, so it may have been "
         "applied; retry only events with ids and increments with their Idempotency-Key",
}


def problems(*codes: int) -> dict:
    """Problem responses for these status codes, plus 503 (Redis refused or unreachable)."""
    out = {}
    for code in (*codes, 503):
        schema = ref("ValidationProblem") if code == 400 else ref("Problem")
        out[str(code)] = {"description": PROBLEM_MEANING.get(code, "problem"),
                          "content": {PROBLEM: {"schema": schema}}}
    out["503"]["headers"] = RETRY_AFTER
    return out


def write_problems(*codes: int) -> dict:
    """Problems of an operation that writes through a Tally script: 500 and 504 too."""
    return problems(*codes, 500, 504)


def op(summary: str, responses: dict, *, scope: str | None = None, parameters=(),
       body: dict | None = None) -> dict:
    """One operation; scoped operations also answer 401 and 403."""
    operation = {"summary": summary, "parameters": list(parameters), "responses": responses}
    if scope:
        operation["security"] = [{"bearer": [scope]}]
        operation["responses"].update(problems(401, 403))
    if body:
        operation["requestBody"] = {"required": True, "content": body}
    return operation


def _schemas() -> dict:
    entry = obj(["rank", "member", "score"], rank={"type": "integer", "minimum": 1},
                member={"type": "string"}, score={"type": "number"})
    error = obj(["index", "field", "message"], index={"type": ["integer", "null"]},
                field={"type": "string"}, message={"type": "string"})
    problem = {"type": "object", "required": ["type", "title", "status", "detail"],
               "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                              "status": {"type": "integer"}, "detail": {"type": "string"},
                              "errors": {"type": "array", "items": error}}}
    return {
        "Event": obj(["counter", "key"], counter=COUNTER, key=TEXT,
                     id=TEXT, user=TEXT,
                     value={"type": "integer", "minimum": 1, "maximum": MAX_VALUE},
                     ts={**TIME, "description": "default: now"}, props=PROPS),
        "Problem": problem, "ValidationProblem": problem, "Entry": entry,
        "BatchResult": obj(["accepted", "duplicates"], accepted={"type": "integer"},
                           duplicates={"type": "integer"}),
        "Counts": obj(["counter", "key", "total", "unique_views", "uniques"],
                      counter={"type": "string"}, key={"type": "string"},
                      total={"type": "integer"},
                      unique_views=obj(["today", "all_time"], today={"type": "integer"},
                                       all_time={"type": "integer"}),
                      uniques=obj(["hour", "day"], hour={"type": "integer"},
                                  day={"type": "integer"})),
        "Totals": obj(["counter", "keys"], counter={"type": "string"},
                      keys={"type": "array", "items": obj(
                          ["key", "total"], key={"type": "string"},
                          total={"type": "integer"})}),
        "Series": obj(["counter", "key", "step", "from", "to", "history", "points"],
                      counter={"type": "string"}, key={"type": "string"},
                      step={"enum": ["1m", "1h", "1d"]}, history={
                          "enum": ["timescale", "unavailable", "disabled"]},
                      points={"type": "array", "items": obj(
                          ["ts", "time", "value", "uniques", "sealed"], ts={"type": "integer"},
                          time={"type": "string"}, value={"type": "integer"},
                          uniques={"type": "integer"}, sealed={"type": "boolean"})},
                      **{"from": {"type": "string"}, "to": {"type": "string"}}),
        "Top": obj(["counter", "window", "date", "sealed", "top"], counter={"type": "string"},
                   window={"enum": ["day", "all"]}, date={"type": ["string", "null"]},
                   sealed={"type": "boolean"},
                   top={"type": "array", "items": obj(
                       ["rank", "key", "count"], rank={"type": "integer"},
                       key={"type": "string"}, count={"type": "integer"})}),
        "Written": obj(["kept", "member", "rank", "score"], kept={"type": "boolean"},
                       member={"type": "string"}, rank={"type": ["integer", "null"]},
                       score={"type": ["number", "null"]}),
        "Entries": obj(["board", "entries"], board={"type": "string"},
                       member={"type": "string"}, size={"type": "integer"},
                       entries={"type": "array", "items": ref("Entry")}),
        "Decision": obj(["allowed", "remaining", "reset_after", "limit", "window_seconds"],
                        allowed={"type": "boolean"}, remaining={"type": "integer"},
                        reset_after={"type": "number"}, limit={"type": "integer"},
                        window_seconds={"type": "number"}),
        "Status": obj(["status"], status={"type": "string"}),
        **_range_schemas(),
    }


def _range_schemas() -> dict:
    """Answers of the range reads from the event log (ingest/api/ranges.py)."""
    head = {"counter": {"type": "string"}, "key": {"type": ["string", "null"]},
            "from": {"type": "string", "format": "date-time"},
            "to": {"type": "string", "format": "date-time"},
            "archived_until": {"type": "string", "format": "date-time",
                               "description": "the archive watermark: every event counted "
                                              "before it was read"},
            "complete": {"type": "boolean", "description": "true when the answer can no "
                         "longer change: to + TALLY_ACCEPTED_LATENESS + TALLY_CLOCK_SKEW <= "
                         "archived_until and "
                         "from within the event log's retention"}}
    count = {"type": "integer", "minimum": 0}
    group = obj(["value", "count", "uniques"], value={"type": ["string", "null"],
                "description": "the property's value; null: events without the property"},
                count=count, uniques=count)
    other = obj(["values", "count", "uniques"], values=count, count=count, uniques=count)
    return {
        "Uniques": obj([*head, "uniques", "count", "events"], **head, uniques=count,
                       count=count, events=count),
        "Breakdown": obj([*head, "by", "k", "rows", "other"], **head, by=COUNTER,
                         k={"type": "integer"}, rows={"type": "array", "items": group},
                         other=other),
    }


def _events() -> dict:
    batch = {"oneOf": [{"type": "array", "minItems": 1, "items": ref("Event")}, ref("Event")]}
    return {"/v1/events": {"post": op(
        "Count a batch of events atomically (all or nothing)",
        {"200": ok(ref("BatchResult")), **write_problems(400, 413, 415, 422)}, scope="write",
        body={"application/json": {"schema": batch},
              "application/x-ndjson": {"schema": {"type": "string"}}})}}


def _counters() -> dict:
    counter, key = path("counter", COUNTER), query("key", TEXT, True)
    keys = {**query("key", {"type": "array", "items": TEXT, "minItems": 1,
                            "maxItems": MAX_BULK_KEYS}, True,
                    f"repeat for a bulk read of totals (at most {MAX_BULK_KEYS} keys)"),
            "style": "form", "explode": True}
    step = query("step", {"enum": ["1m", "1h", "1d"], "default": "1m"})
    span = [query("from", TIME, description="RFC 3339 or epoch s; default to - 1 h/24 h/30 d"),
            query("to", TIME, description="RFC 3339 or epoch seconds; default now")]
    top = [query("k", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10}),
           query("window", {"enum": ["day", "all"], "default": "day"}),
           query("date", {"type": "string", "format": "date"})]
    return {
        "/v1/counters/{counter}": {"get": op(
            "One key's total, unique views and approximate uniques; several keys' totals",
            {"200": ok({"oneOf": [ref("Counts"), ref("Totals")]},
                       "one key: Counts; two or more: Totals, in request order"),
             **problems(400, 404)}, scope="read", parameters=[counter, keys])},
        "/v1/counters/{counter}/series": {"get": op(
            "A key's counts per bucket (to - from: at most 10,080 steps)",
            {"200": ok(ref("Series")), **problems(400, 404)}, scope="read",
            parameters=[counter, key, step, *span])},
        "/v1/counters/{counter}/top": {"get": op(
            "The keys with the highest counts", {"200": ok(ref("Top")), **problems(400, 404)},
            scope="read", parameters=[counter, *top])},
    }


# Longest from-to of a range read: the event log's default retention (TALLY_EVENTS_RETENTION);
# the API refuses anything longer than the configured retention.
RANGE_DESCRIPTION = ("at most TALLY_EVENTS_RETENTION days (35 by default) from from to to; "
                     "answered from the event log, exact, with a stated lag (archived_until)")
RANGE_UNAVAILABLE = ("event-log-unavailable (TimescaleDB down or not configured), "
                     "range-read-timeout (longer than TALLY_RANGE_READ_TIMEOUT), or "
                     "redis-unavailable (the watermark is read from Redis); retry after "
                     "Retry-After")


def _ranges() -> dict:
    """Exact distinct users and breakdowns by property over [from, to) from `events`."""
    counter = path("counter", COUNTER)
    key = query("key", TEXT, description="one key; absent: every key of the counter")
    span = [query("from", TIME, description="RFC 3339 or epoch seconds; default to - 24 h"),
            query("to", TIME, description="RFC 3339 or epoch seconds; default now")]
    by = query("by", COUNTER, True, "the event property (props) to group by")
    k = query("k", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
              description="rows before the rest is summed as `other`")
    def answers(name: str) -> dict:
        out = {"200": ok(ref(name)), **problems(400, 404)}
        out["503"]["description"] = RANGE_UNAVAILABLE
        return out
    return {
        "/v1/counters/{counter}/uniques": {"get": op(
            f"Exact distinct users of a key or counter over a range ({RANGE_DESCRIPTION})",
            answers("Uniques"), scope="read", parameters=[counter, key, *span])},
        "/v1/counters/{counter}/breakdown": {"get": op(
            f"Top values of an event property by count, with distinct users, the rest summed "
            f"({RANGE_DESCRIPTION})",
            answers("Breakdown"), scope="read", parameters=[counter, key, by, k, *span])},
    }


def _leaderboards() -> dict:
    board, member = path("board", NAME), query("member", TEXT, True)
    capacity = query("capacity", {"type": "integer", "minimum": 0, "maximum": 10_000_000},
                     description="keep only the best N members (0: unbounded)")
    number = {"type": "number", "minimum": -(2**53 - 1), "maximum": 2**53 - 1}
    idempotency = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY},
                   "description": "apply this increment once: a repeat within the dedup window "
                                  "answers the first answer and changes nothing; the same key "
                                  "with another request is 422 idempotency-key-reused"}

    def write(summary: str, field: str, *headers: dict) -> dict:
        body = {"application/json": {"schema": obj(["member", field], member=TEXT,
                                                    **{field: number})}}
        return op(summary, {"200": ok(ref("Written")), **write_problems(400, 404, 413, 415, 422)},
                  scope="write", parameters=[board, capacity, *headers], body=body)

    k = query("k", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10})
    radius = query("radius", {"type": "integer", "minimum": 0, "maximum": 1000, "default": 5})
    removed = obj(["removed", "member"], removed={"const": True}, member={"type": "string"})
    prefix = "/v1/leaderboards/{board}"
    return {
        f"{prefix}/scores": {"put": write("Set a member's score", "score"),
                             "post": write("Set a member's score", "score")},
        f"{prefix}/increments": {"post": write("Add to a member's score", "delta", idempotency)},
        f"{prefix}/top": {"get": op("The best k members", {"200": ok(ref("Entries")),
                                    **problems(400, 404)}, scope="read", parameters=[board, k])},
        f"{prefix}/member": {
            "get": op("A member's rank and score", {"200": ok(ref("Entry")),
                      **problems(400, 404)}, scope="read", parameters=[board, member]),
            "delete": op("Remove a member", {"200": ok(removed), **problems(400, 404)},
                         scope="write", parameters=[board, member])},
        f"{prefix}/around": {"get": op(
            "A member and its neighbours", {"200": ok(ref("Entries")), **problems(400, 404)},
            scope="read", parameters=[board, member, radius])},
    }


def _others() -> dict:
    subject = {"application/json": {"schema": obj(["subject"], subject=TEXT)}}
    limited = ok(ref("Decision"), "over the limit")
    limited["headers"] = RATE_HEADERS
    return {
        "/v1/ratelimit/{limit}": {"post": op(
            "Count one request of a subject against a configured limit",
            {"200": ok(ref("Decision")), "429": limited, **write_problems(400, 404, 413, 415)},
            scope="write", parameters=[path("limit", NAME)], body=subject)},
        "/healthz": {"get": op("Liveness", {"200": ok(ref("Status"))})},
        "/readyz": {"get": op("Readiness: Redis answers PING", {"200": ok(ref("Status")),
                                                                 **problems()})},
        "/openapi.json": {"get": op("This document", {"200": ok({"type": "object"})})},
        "/metrics": {"get": op("Prometheus metrics of this service", {"200": {
            "description": "text exposition format 0.0.4",
            "content": {"text/plain": {"schema": {"type": "string"}}}}})},
    }


def _overview() -> dict:
    """The endpoints a client finds its way with (ingest/api/overview.py)."""
    when = {"type": ["string", "null"], "format": "date-time"}
    number = {"type": ["number", "null"]}
    count = {"type": ["integer", "null"]}
    sink = obj(["sink", "lag_seconds", "dirty", "reported", "last_run", "last_success",
                "last_duration_seconds", "rows_total", "errors_total"],
               sink={"type": "string"}, lag_seconds={"type": "number", "minimum": 0},
               dirty={**count, "description": "marks waiting (null for the archiver)"},
               reported={"type": "boolean", "description": "false until its first run"},
               last_run=when, last_success=when, last_duration_seconds=number,
               rows_total=count, errors_total=count)
    point = obj(["ts", "time", "value", "per_second"], ts={"type": "integer"},
                time={"type": "string"}, value={"type": "integer"},
                per_second={"type": "number"})
    board = obj(["board", "size"], board={"type": "string"}, size={"type": "integer"})
    minutes = query("minutes", {"type": "integer", "minimum": 1, "maximum": 60, "default": 60},
                    description="the last N minutes, the current one included")
    return {
        "/v1/counters": {"get": op(
            "Names of every counter that has counted an event",
            {"200": ok(obj(["counters"], counters={"type": "array", "items": COUNTER})),
             **problems()}, scope="read")},
        "/v1/counters/{counter}/rate": {"get": op(
            "A counter's value per minute over all its keys, and per second",
            {"200": ok(obj(["counter", "step", "points"], counter={"type": "string"},
                           step={"enum": ["1m", "1h", "1d"], "description": "always 1m"},
                           points={"type": "array", "items": point})),
             **problems(400)}, scope="read", parameters=[path("counter", COUNTER), minutes])},
        "/v1/leaderboards": {"get": op(
            "Names and sizes of the leaderboards (the first 1,000 by name)",
            {"200": ok(obj(["leaderboards", "truncated"], truncated={"type": "boolean"},
                           leaderboards={"type": "array", "items": board})),
             **problems()}, scope="read")},
        "/v1/flusher": {"get": op(
            "The flusher's health per sink, the event-log archiver (sink events) included",
            {"200": ok(obj(["event_log", "sinks"], event_log={"type": "boolean"},
                           sinks={"type": "array", "items": sink})),
             **problems()}, scope="read")},
    }


def _public() -> dict:
    """Tokenless counting from web pages (ingest/api/public.py) and the /docs reference."""
    event = {"text/plain": {"schema": {"type": "string", "description": "the JSON event, as "
                                       "navigator.sendBeacon sends a string"}},
             "application/json": {"schema": obj(["counter", "key", "id"], counter=COUNTER,
                                                key=TEXT, id=TEXT, props=PROPS)}}
    answers = {"200": ok(ref("BatchResult")), **write_problems(400, 403, 413, 415, 422, 429)}
    answers["429"]["headers"] = RATE_HEADERS
    cors = {name: {"schema": {"type": "string"}} for name in (
        "Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers", "Access-Control-Max-Age")}

    def text(kind: str, description: str) -> dict:
        return {"200": {"description": description,
                        "content": {kind: {"schema": {"type": "string"}}}}}
    return {
        "/v1/public/events": {
            "post": op("Count one event of a public counter from a web page (no token; allowed "
                       "origins only, rate-limited per client address)", answers, body=event),
            "options": op("CORS preflight for allowed origins", {
                "204": {"description": "the origin may post", "headers": cors},
                **problems(403)})},
        "/v1/count.js": {"get": op("The page-view script: one <script> tag counts a view",
                                   text("text/javascript", "JavaScript"))},
        "/docs": {"get": op("This API's reference, browsable (Swagger UI)",
                            text("text/html", "HTML page"))},
    }


METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operation_id(method: str, route: str) -> str:
    """An operationId from method and path: `get /v1/counters/{counter}/top` is
    get_counters_counter_top (the /v1 prefix and punctuation dropped)."""
    return "_".join([method, *re.findall(r"[A-Za-z0-9]+", route.removeprefix("/v1"))])


def with_operation_ids(build: Callable[[], dict]) -> Callable[[], dict]:
    """Give every operation without an operationId the derived one, so operations added
    later get one too; refuse two operations with the same id."""
    @wraps(build)
    def built() -> dict:
        doc, seen = build(), {}
        for route, item in doc["paths"].items():
            for method in (name for name in METHODS if name in item):
                given = item[method].setdefault("operationId", operation_id(method, route))
                if given in seen:
                    raise ValueError(f"operationId {given!r} of {method} {route} is also that "
                                     f"of {seen[given]}")
                seen[given] = f"{method} {route}"
        return doc
    return built


@cache
@with_operation_ids
def document() -> dict:
    """The whole OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tally ingest API", "version": "1",
                 "description": "Count events, read counts and series, leaderboards, "
                                "rate limits. Errors are RFC 9457 problem details. A 503 "
                                "means nothing was applied (retry after Retry-After); a 504 "
                                "outcome-unknown means a write may have been applied: retry "
                                "only events with ids and increments with their "
                                "Idempotency-Key."},
        "paths": {**_events(), **_counters(), **_ranges(), **_leaderboards(), **_others(),
                  **_overview(), **_public()},
        "components": {"schemas": _schemas(), "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "write tokens post events, write leaderboards and "
                                      "check rate limits; read tokens read"}}},
    }


@cache
def query_names(rule: str, method: str) -> frozenset[str] | None:
    """Query parameters the document allows for a Flask rule and method (None: undocumented)."""
    path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule)
    operation = document()["paths"].get(path, {}).get(method.lower())
    if operation is None:
        return None
    return frozenset(p["name"] for p in operation["parameters"] if p["in"] == "query")
