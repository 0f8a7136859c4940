"""GET /docs: a browsable reference of this API, Swagger UI rendering /openapi.json.

The renderer is swagger-ui-dist 5.35.0 from npm (Apache-2.0; `npm pack
swagger-ui-dist@5.35.0`, tarball sha256 1b8e8918…391a6ea6), vendored in
static/swagger-ui/ with its LICENSE, NOTICE and package.json and installed as
package data: the page loads nothing but this server's files (no CDN at run
time, and the Content-Security-Policy below forbids any other origin).
Only the files the page needs are kept; source maps are left out.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from flask import Blueprint, Response

from tally.ingest.api.problems import Problem

bp = Blueprint("docs_page", __name__)
STATIC = files(__package__) / "static"
# The files /docs/<name> serves, and their media types: nothing else is reachable.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
    "docs-init.js": "text/javascript", "LICENSE": "text/plain", "NOTICE": "text/plain",
    "swagger-ui-bundle.js.LICENSE.txt": "text/plain", "package.json": "application/json",
}
# Swagger UI styles some elements inline and shows images as data: URLs.
POLICY = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
          "object-src 'none'; frame-ancestors 'none'")


@cache
def _read(name: str) -> bytes:
    folder = STATIC if name in ("docs.html", "docs-init.js") else STATIC / "swagger-ui"
    return (folder / name).read_bytes()


@bp.get("/docs")
def docs():
    """The API reference page."""
    return Response(_read("docs.html"), mimetype="text/html",
                    headers={"Content-Security-Policy": POLICY})


@bp.get("/docs/<name>")
def asset(name: str):
    """One of the renderer's files (cached for a day: they change only with Tally)."""
    if name not in ASSETS:
        raise Problem(404, "not-found", "Not found", f"/docs has no file {name!r}")
    return Response(_read(name), mimetype=ASSETS[name],
                    headers={"Cache-Control": "public, max-age=86400"})
