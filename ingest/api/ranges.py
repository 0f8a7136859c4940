"""Range reads from the event log: exact distinct users and breakdowns by property.

Both answer from TimescaleDB's `events` alone, with a stated lag rather than
a merge with the unarchived Redis tail: the answer carries the archive
watermark W (`archived_until`, read before the query, so every event counted
before W is in what the query saw) and `complete`, true when nothing can
change the answer any more: `to` + TALLY_ACCEPTED_LATENESS + TALLY_CLOCK_SKEW
<= W (no event of the range can still be accepted or be waiting in Redis; the
skew covers the ingest host's clock against Redis') and `from` lies
within the log's retention. Sealed days change nothing here: they are
sealed from the same rows.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from flask import Blueprint, Flask, current_app

from tally.ingest.api import params
from tally.ingest.api.auth import READ, scope
from tally.ingest.api.event_reads import EventReads, Span
from tally.ingest.api.extensions import resources
from tally.ingest.api.problems import bad_request
from tally.ingest.batch.watermark import archived_until
from tally.keys import DAY
from tally.settings import Settings

bp = Blueprint("ranges", __name__)
MAX_K = 100  # breakdown rows per answer (the rest is summed as `other`)
DEFAULT_K = 10
EXTENSION = "tally.event_reads"


def instant(epoch: float) -> str:
    """Epoch seconds as RFC 3339 UTC, with fractions only when there are any."""
    moment = datetime.fromtimestamp(epoch, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def span_from_args(counter: str, settings: Settings, now: float) -> Span:
    """key (optional), from and to (default: the last 24 h); at most the log's retention."""
    params.counter(counter)
    key = params.single_arg("key")
    if key is not None:
        params.text_value("key", key)
    end = params.time_arg("to", now)
    start = params.time_arg("from", max(0.0, end - DAY))
    if start >= end:
        raise bad_request("from must be earlier than to", "invalid-range")
    longest = settings.events_retention * DAY
    if end - start > longest:
        raise bad_request(f"from-to spans {end - start:g} s, longer than the event log keeps "
                          f"(TALLY_EVENTS_RETENTION = {settings.events_retention} days, "
                          f"{longest} s): narrow from/to", "range-too-large")
    return Span(counter, key, start, end)


def freshness(span: Span, settings: Settings, watermark: float) -> dict:
    """What the answer covers: the watermark, and whether the range can still change."""
    # The rule of tally.ingest.batch.watermark (complete_before): lateness and clock skew.
    settled = span.end + settings.accepted_lateness + settings.clock_skew <= watermark
    retained = span.start >= watermark - settings.events_retention * DAY
    return {"archived_until": instant(watermark), "complete": settled and retained}


def _span(counter: str) -> Span:
    """This request's span (checked before anything is read)."""
    return span_from_args(counter, resources().settings, time.time())


def _fresh(span: Span) -> dict:
    """The freshness of an answer read after this call: W first, see the module doc."""
    res = resources()
    return freshness(span, res.settings, archived_until(res.client, res.config))


def _head(span: Span) -> dict:
    return {"counter": span.counter, "key": span.key, "from": instant(span.start),
            "to": instant(span.end)}


@bp.get("/v1/counters/<counter>/uniques")
@scope(READ)
def counter_uniques(counter: str):
    """Exact distinct users (and the count) of a key or a whole counter over [from, to)."""
    span = _span(counter)
    fresh = _fresh(span)
    users, value, events = event_reads().uniques(span)
    return {**_head(span), "uniques": users, "count": value, "events": events, **fresh}


@bp.get("/v1/counters/<counter>/breakdown")
@scope(READ)
def counter_breakdown(counter: str):
    """The top k values of an event property by count, with distinct users; the rest summed."""
    span, prop, k = _span(counter), params.prop_arg("by"), params.int_arg("k", DEFAULT_K, 1, MAX_K)
    fresh = _fresh(span)
    found = event_reads().breakdown(span, prop, k)
    return {**_head(span), "by": prop, "k": k,
            "rows": [{"value": g.value, "count": g.count, "uniques": g.uniques}
                     for g in found.top],
            "other": {"values": found.other_values, "count": found.other_count,
                      "uniques": found.other_uniques}, **fresh}


def event_reads() -> EventReads:
    """The current app's reader of `events`."""
    return current_app.extensions[EXTENSION]


def init_app(app: Flask, settings: Settings) -> None:
    """Attach the reader of `events` (TALLY_POSTGRES_DSN, TALLY_RANGE_READ_TIMEOUT)."""
    app.extensions[EXTENSION] = EventReads(settings.postgres_dsn, settings.range_read_timeout)
