"""Expand Grafana's variables and macros the way Grafana 11 does before it sends a query.

Covers what Tally's dashboards use: $__interval, $__interval_ms,
$__rate_interval and template variables everywhere; $__timeFilter,
$__timeFrom, $__timeTo, $__timeGroup and $__timeGroupAlias for PostgreSQL
with `timescaledb: true` (time_bucket); $timeFilter for InfluxQL. Multi-value
variables are quoted per data source: 'a','b' in SQL, (a|b) as a PromQL regex.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import NamedTuple

# Grafana's interval rounding steps (kbn.roundInterval, simplified to its outcomes).
STEPS = [1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
         604800]
MAX_DATA_POINTS = 1000


class TimeRange(NamedTuple):
    """A dashboard time range in epoch seconds."""

    start: float
    end: float


def duration(seconds: int) -> str:
    """Grafana's short form of an interval: 15s, 1m, 2h, 1d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def interval_seconds(rng: TimeRange, minimum: int) -> int:
    """$__interval: range / max data points, rounded up to a step, at least the minimum."""
    raw = (rng.end - rng.start) / MAX_DATA_POINTS
    return max(minimum, next((s for s in STEPS if s >= raw), STEPS[-1]))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(text: str) -> int:
    text = text.strip().strip("'\"")
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    assert match, f"unsupported interval {text!r}"
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def _variables(text: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):
        text = text.replace("${" + name + "}", variables[name]).replace("$" + name,
                                                                          variables[name])
    return text


def _builtins(rng: TimeRange, minimum: int, scrape: int) -> dict[str, str]:
    step = interval_seconds(rng, minimum)
    return {"__interval": duration(step), "__interval_ms": str(step * 1000),
            "__rate_interval": duration(max(step + scrape, 4 * scrape))}


def sql_values(values: list[str]) -> str:
    """A multi-value variable as SQL string literals."""
    return ",".join("'" + v.replace("'", "''") + "'" for v in values)


def prom_regex(values: list[str]) -> str:
    """A multi-value variable as a PromQL regex alternation."""
    return "(" + "|".join(re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", v) for v in values) + ")"


def expand_sql(text: str, rng: TimeRange, variables: dict[str, str], minimum: int = 1) -> str:
    """A PostgreSQL (TimescaleDB) panel query as Grafana sends it."""
    text = _variables(text, _builtins(rng, minimum, minimum) | variables)
    frm, to = f"'{_iso(rng.start)}'", f"'{_iso(rng.end)}'"
    text = text.replace("$__timeFrom()", frm).replace("$__timeTo()", to)
    text = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN {frm} AND {to}", text)

    def group(match: re.Match) -> str:
        column, step = (part.strip() for part in match[2].split(","))
        bucket = f"time_bucket('{_seconds(step)}s', {column})"
        return bucket + (' AS "time"' if match[1] == "Alias" else "")

    text = re.sub(r"\$__timeGroup(Alias)?\(([^)]+)\)", group, text)
    assert "$" not in text, f"unexpanded macro in {text}"
    return text


def expand_influxql(text: str, rng: TimeRange, variables: dict[str, str],
                    minimum: int = 60) -> str:
    """An InfluxQL panel query as Grafana sends it."""
    text = _variables(text, _builtins(rng, minimum, minimum) | variables)
    text = text.replace("$timeFilter", f"time >= {int(rng.start * 1000)}ms and "
                                       f"time <= {int(rng.end * 1000)}ms")
    assert "$" not in text, f"unexpanded macro in {text}"
    return text


def expand_promql(text: str, rng: TimeRange, variables: dict[str, str], scrape: int) -> str:
    """A PromQL panel query as Grafana sends it (min interval = the scrape interval)."""
    text = _variables(text, _builtins(rng, scrape, scrape) | variables)
    assert "$" not in text, f"unexpanded macro in {text}"
    return text
