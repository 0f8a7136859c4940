"""The ingest API as a Flask test client on the test Redis (test tokens, Redis-only series)."""

import pytest

from tally.ingest.api import close_app
from tests.test_api_support import make_app


@pytest.fixture
def api(redis_url, redis_client):
    """A test client of an app with the test tokens and rate limits api=3/60, login=1/1."""
    app = make_app(redis_url)
    yield app.test_client()
    close_app(app)
