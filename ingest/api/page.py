"""The live page at `/`: static HTML, CSS and JavaScript from package data, no token needed.

The files live in `web/` next to this module and are read through
importlib.resources, so an installed wheel serves them like a checkout. Only
the files found there at startup are served (a fixed table, so no path from
a request ever reaches the file system). The page itself reads nothing but
the public API, with the read token the user types into it (docs/page.md).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable

from flask import Blueprint, Response, request

from tally.ingest.api.problems import Problem

bp = Blueprint("page", __name__)
PACKAGE, FOLDER = "tally.ingest.api", "web"
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml",
         "": "text/plain; charset=utf-8"}
# The page loads only its own files and calls only this origin; nothing may frame it.
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def _walk(folder: Traversable, prefix: str = ""):
    for entry in folder.iterdir():
        if entry.is_dir():
            yield from _walk(entry, f"{prefix}{entry.name}/")
        elif not entry.name.startswith("."):
            yield f"{prefix}{entry.name}", entry


@cache
def assets() -> dict[str, tuple[bytes, str]]:
    """Every file of web/ by its path there: (content, Content-Type)."""
    table = {}
    for name, entry in _walk(files(PACKAGE) / FOLDER):
        suffix = name[name.rfind("."):] if "." in name.rpartition("/")[2] else ""
        table[name] = (entry.read_bytes(), TYPES.get(suffix, TYPES[""]))
    return table


def _serve(name: str) -> Response:
    found = assets().get(name)
    if found is None:
        raise Problem(404, "not-found", "Not found", f"no page asset {name!r}")
    content, kind = found
    response = Response(content, content_type=kind, headers=HEADERS)
    response.add_etag()
    return response.make_conditional(request)


@bp.get("/")
def index():
    """The live page."""
    return _serve("index.html")


@bp.get("/assets/<path:name>")
def asset(name: str):
    """One of the page's files (its script, styles and the vendored chart library)."""
    return _serve(name)
