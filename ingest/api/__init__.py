"""The ingest HTTP API: a Flask app factory; `tally serve` runs it under gunicorn.

    create_app()                          # settings from TALLY_* / TALLY_CONFIG
    create_app({"insecure_no_auth": True, "redis_url": "redis://..."})   # overrides
    create_app(settings)                  # a ready Settings value (tests)
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask

from tally.ingest.api import (
    access,
    auth,
    batches,
    counters,
    docs_page,
    extensions,
    health,
    leaderboards,
    metrics,
    overview,
    page,
    params,
    problems,
    public,
    ranges,
    ratelimits,
    series,
)
from tally.settings import Settings, load_settings

BLUEPRINTS = (health.bp, metrics.bp, batches.bp, counters.bp, leaderboards.bp, ratelimits.bp,
              overview.bp, page.bp, public.bp, docs_page.bp, ranges.bp)


def _settings(settings: Settings | Mapping | None) -> Settings:
    if isinstance(settings, Settings):
        return settings
    return load_settings(**dict(settings or {}))


def create_app(settings: Settings | Mapping | None = None) -> Flask:
    """Build the app: settings, auth, Redis, metrics, access log, error handling, blueprints."""
    settings = _settings(settings)
    app = Flask(__name__)
    app.json.sort_keys = False
    app.extensions["tally.metrics"] = metrics.Metrics()
    access.init_app(app)  # first, so even refused requests are timed and logged
    auth.init_app(app, settings)
    app.before_request(params.reject_unknown_query)
    ratelimits.init_app(app, settings)
    series.init_app(app, settings)
    ranges.init_app(app, settings)
    problems.init_app(app)
    extensions.init_app(app, settings)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app


def close_app(app: Flask) -> None:
    """Release the app's connections (for tests and embedding)."""
    app.extensions[extensions.EXTENSION].close()


__all__ = ["create_app", "close_app"]
