"""The apps bench_ingest_http.py serves under each candidate HTTP server (no benchmark here).

- `tally_app()`: the ingest API, settings from TALLY_* (as `tally serve` builds it);
- `hello_app()`: a bare Flask app, POST /v1/events reads the body and answers
  `{}` without Redis, the ceiling any server can reach with Flask on top;
- `tally_asgi()` / `hello_asgi()`: the same behind a2wsgi, for ASGI servers.

`python bench/http_apps.py hello` runs the hello app under `tally serve`'s
own server (tally.ingest.serve.serve: gunicorn + IngestWorker), with TALLY_* settings.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ASGI_THREADS = 10  # a2wsgi's thread pool per worker


def tally_app():
    """The ingest API as `tally serve` builds it."""
    from tally.ingest.api import create_app
    return create_app()


def hello_app():
    """A bare Flask app with the ingest API's probe and event routes, answering `{}`."""
    from flask import Flask, request

    app = Flask("hello")

    @app.get("/readyz")
    @app.get("/healthz")
    @app.post("/v1/events")
    def empty():
        request.get_data()  # read the body as the ingest API does, so both cost the same bytes
        return {}

    return app


def tally_asgi():
    """The ingest API behind a2wsgi."""
    from a2wsgi import WSGIMiddleware
    return WSGIMiddleware(tally_app(), workers=ASGI_THREADS)


def hello_asgi():
    """The bare app behind a2wsgi."""
    from a2wsgi import WSGIMiddleware
    return WSGIMiddleware(hello_app(), workers=ASGI_THREADS)


def main() -> int:
    """Serve the hello app under `tally serve`'s server: `http_apps.py hello [WORKERS]`."""
    from tally.ingest.serve import serve
    from tally.settings import load_settings

    if sys.argv[1:2] != ["hello"]:
        print("usage: http_apps.py hello [WORKERS]", file=sys.stderr)
        return 2
    serve(load_settings(), int(sys.argv[2]) if len(sys.argv) > 2 else 2, hello_app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
