"""Property-based fuzzing of every operation against /openapi.json (schemathesis).

No input may cause a 5xx, and every response must match the document: status
codes, content types, headers and bodies. `positive_data_acceptance` is off
because JSON Schema cannot express two event rules — "printable Unicode"
(unassigned code points) and "ts within the accepted lateness" — so some
schema-valid bodies are rightly refused with a 400 listing the reason.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tally.ingest.api import close_app
from tally.ingest.api.openapi import document
from tests.test_api_support import make_app

TOKEN = "fuzz-token"


@pytest.fixture
def app(redis_url, redis_client, pg_dsn):
    """An app with one token of both scopes; range reads go to the test TimescaleDB."""
    app = make_app(redis_url, write_tokens=(TOKEN,), read_tokens=(TOKEN,), postgres_dsn=pg_dsn)
    yield app
    close_app(app)


# The document is the one /openapi.json serves (test_api_health checks they are equal);
# schemathesis' from_fixture does not work with pytest 9, so it is loaded from the source.
schema = schemathesis.openapi.from_dict(document())


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx, value) -> bytes:
    """Send generated NDJSON bodies (strings) as UTF-8; anything else as its JSON text."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.encode("utf-8", "surrogatepass")

AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Passed to each call too: with a header parameter of its own (Idempotency-Key) an operation's
# configured headers alone count as generated credentials for the ignored-auth check.
schema.config.update(headers=AUTH)


@schema.parametrize()
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_api_matches_its_openapi_document(case, app):
    case.operation.schema.app = app  # this test's app (with its Redis) serves every call and probe
    case.call_and_validate(app=app, headers=AUTH, excluded_checks=[positive_data_acceptance])
