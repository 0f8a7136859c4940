"""Create InfluxDB's `tally` database and its retention policies, idempotently.

Uses the v1 HTTP /query API, which InfluxDB 1.x serves and 2.x/3.x keep as
their compatibility API, with a token or user/password from Settings.
"""

from __future__ import annotations

import requests

from tally.errors import ServiceError
from tally.redact import redact
from tally.resolutions import TABLE
from tally.settings import Settings


def auth_options(settings: Settings) -> dict:
    """Return requests keyword arguments carrying the configured InfluxDB credentials."""
    if settings.influx_token:
        return {"headers": {"Authorization": f"Token {settings.influx_token}"}}
    if settings.influx_username:
        return {"auth": (settings.influx_username, settings.influx_password)}
    return {}


def influx_query(settings: Settings, q: str, *, db: str = "") -> list[dict]:
    """Run InfluxQL through POST /query and return its results; raise ServiceError on errors."""
    params = {"q": q, "db": db} if db else {"q": q}
    try:
        response = requests.post(f"{settings.influx_url}/query", data=params, timeout=10,
                                 **auth_options(settings))
        body = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ServiceError(f"InfluxDB at {redact(settings.influx_url)} did not answer: "
                           f"{redact(str(exc))}") from None
    errors = [r["error"] for r in body.get("results", []) if "error" in r]
    if "error" in body or errors or response.status_code >= 400:
        raise ServiceError(f"InfluxDB refused {q!r}: {body.get('error') or errors}")
    return body["results"]


def ensure_admin(settings: Settings) -> None:
    """Make the configured user InfluxDB's admin on a server that has no users yet.

    With auth-enabled, InfluxDB 1.x answers one statement without credentials
    while it has no admin: the creation of the first admin. Once one exists,
    the configured credentials must work (checked with SHOW USERS), else the
    error names the server's refusal.
    """
    if not settings.influx_username:
        return
    password = settings.influx_password.replace("\\", "\\\\").replace("'", "\\'")
    create = (f'CREATE USER "{settings.influx_username}" WITH PASSWORD \'{password}\' '
              "WITH ALL PRIVILEGES")
    try:
        response = requests.post(f"{settings.influx_url}/query", data={"q": create}, timeout=10)
    except requests.RequestException as exc:
        raise ServiceError(f"InfluxDB at {redact(settings.influx_url)} did not answer: "
                           f"{redact(str(exc))}") from None
    if response.status_code != 200 or "error" in response.text:
        influx_query(settings, "SHOW USERS")


def _existing(settings: Settings, db: str) -> dict[str, tuple[str, bool]]:
    results = influx_query(settings, f'SHOW RETENTION POLICIES ON "{db}"')
    series = results[0].get("series", [{}])[0]
    columns = series.get("columns", [])
    rows = [dict(zip(columns, row, strict=True)) for row in series.get("values", [])]
    return {r["name"]: (r["duration"], r["default"]) for r in rows}


def ensure_influx(settings: Settings) -> None:
    """Ensure the database and one retention policy per resolution, as resolutions.py says.

    A policy that exists with another duration or default flag (an older
    Tally's `hour_1y` of 52 weeks, say) is altered to match; InfluxDB then
    expires by the new duration at its next retention check.
    """
    db = settings.influx_db
    influx_query(settings, f'CREATE DATABASE "{db}"')
    existing = _existing(settings, db)
    for r in TABLE:
        name = r.retention_policy
        if existing.get(name) == (r.influx_duration_shown, r.default_policy):
            continue
        verb = "ALTER" if name in existing else "CREATE"
        spec = f"DURATION {r.influx_duration} REPLICATION 1" + (
            " DEFAULT" if r.default_policy else "")
        influx_query(settings, f'{verb} RETENTION POLICY "{name}" ON "{db}" {spec}')



def set_up_influx(settings: Settings) -> None:
    """What the local stack does once InfluxDB answers: its admin, then the database."""
    ensure_admin(settings)
    ensure_influx(settings)
