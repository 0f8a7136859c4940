"""POST /v1/events: parse a batch, validate it whole, count it in one atomic step."""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint

from tally.events import InvalidBatch, validate_batch
from tally.ingest.api import batch_json, body
from tally.ingest.api.access import note_events
from tally.ingest.api.auth import WRITE, scope
from tally.ingest.api.extensions import resources
from tally.ingest.api.problems import bad_request, from_validation
from tally.ingest.counting.batch import apply_batch

bp = Blueprint("events", __name__)


def _at_most(values: Iterator[object], limit: int) -> Iterator[object]:
    """The values, or a 413 once there are more than limit: the rest is never parsed."""
    for count, value in enumerate(values, 1):
        if count > limit:
            raise body.too_large(f"the batch has more than {limit} events; the limit is {limit}")
        yield value


def read_batch(max_bytes: int, max_events: int) -> Iterator[object]:
    """The raw events of the request, from a JSON array, one JSON object or NDJSON.

    Headers and size are checked at once; the events are parsed as they are
    iterated, so a body of too many events costs no more than `max_events` of them.
    """
    kind = body.media_type(body.JSON_TYPES | body.NDJSON_TYPES)
    text = body.text(body.raw_body(max_bytes))
    values = batch_json.ndjson(text) if kind in body.NDJSON_TYPES else batch_json.json_values(text)
    return _at_most(values, max_events)


@bp.post("/v1/events")
@scope(WRITE)
def post_events():
    """Count a batch: all of it, or (on any invalid event) none of it."""
    res = resources()
    settings = res.settings
    raws = read_batch(settings.max_body_bytes, settings.max_batch_events)
    now = time.time()
    try:  # parses and checks one event at a time, keeping only valid events
        events = validate_batch(raws, now, settings.accepted_lateness, settings.clock_skew)
    except InvalidBatch as exc:
        note_events(rejected=exc.total)
        listed = "" if exc.all_listed else f"; the first {len(exc.problems)} problems are listed"
        raise from_validation(exc, f"{exc.invalid} of {exc.total} events are invalid; "
                                   f"no event of this batch was counted{listed}") from None
    if not events:
        raise bad_request("the batch is empty; send at least one event", "empty-batch")
    result = apply_batch(res.client, res.config, events, now)
    note_events(accepted=result.applied, duplicates=result.duplicates)
    return {"accepted": result.applied, "duplicates": result.duplicates}
