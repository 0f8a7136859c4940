"""POST /v1/events: parse a batch, validate it whole, count it in one atomic step."""

from __future__ import annotations

import time

from flask import Blueprint

from ingest.api import body
from ingest.api.access import note_events
from ingest.api.auth import WRITE, scope
from ingest.api.extensions import resources
from ingest.api.problems import bad_request, from_validation
from ingest.counting.batch import apply_batch
from ingest.counting.events import validate_batch
from tally.errors import ValidationError

bp = Blueprint("events", __name__)


def _json_batch(text: str) -> list:
    value = body.loads(text)
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise bad_request("body must be a JSON array of event objects or one event object",
                      "invalid-body")


def read_batch(max_bytes: int) -> list:
    """The raw events of the request, from a JSON array, one JSON object or NDJSON."""
    kind = body.media_type(body.JSON_TYPES | body.NDJSON_TYPES)
    text = body.text(body.raw_body(max_bytes))
    return body.ndjson(text) if kind in body.NDJSON_TYPES else _json_batch(text)


@bp.post("/v1/events")
@scope(WRITE)
def post_events():
    """Count a batch: all of it, or (on any invalid event) none of it."""
    res = resources()
    settings = res.settings
    raws = read_batch(settings.max_body_bytes)
    if not raws:
        raise bad_request("the batch is empty; send at least one event", "empty-batch")
    if len(raws) > settings.max_batch_events:
        raise body.too_large(f"the batch has {len(raws)} events; the limit is "
                             f"{settings.max_batch_events}")
    now = time.time()
    try:
        events = validate_batch(raws, now, settings.accepted_lateness, settings.clock_skew)
    except ValidationError as exc:
        note_events(rejected=len(raws))
        bad = len({index for index, _, _ in exc.problems})
        raise from_validation(exc, f"{bad} of {len(raws)} events are invalid; "
                                   "no event of this batch was counted") from None
    result = apply_batch(res.client, res.config, events, now)
    note_events(accepted=result.applied, duplicates=result.duplicates)
    return {"accepted": result.applied, "duplicates": result.duplicates}
