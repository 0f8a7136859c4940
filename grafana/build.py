"""Write grafana/dashboards/*.json from the panels below (rerun after editing; JSON is committed).

Run: .venv/bin/python grafana/build.py
"""

from __future__ import annotations

import json
from pathlib import Path

from tally.backends import MEASUREMENT, TOTALS_MEASUREMENT
from tally.resolutions import BY_CODE

MINUTES, HOURS, DAYS = (BY_CODE[code].table for code in "mhd")
MINUTE_RP, HOUR_RP, DAY_RP = (BY_CODE[code].retention_policy for code in "mhd")
DASHBOARDS = Path(__file__).resolve().parent / "dashboards"
GRAFANA_VERSION = "11.6.0"  # docker-compose.yml's image; the JSON is its schema

# Every panel, target and query variable names its data source through a datasource
# variable, so the dashboards import into any Grafana (pick the data sources at the
# top); the defaults are the data sources grafana/provisioning creates.
# (variable, plugin id, provisioned name, provisioned uid)
DATASOURCES = (("ds_prometheus", "prometheus", "Prometheus", "tally-prometheus"),
               ("ds_timescale", "grafana-postgresql-datasource", "TimescaleDB", "tally-timescale"),
               ("ds_influx", "influxdb", "InfluxDB", "tally-influx"))
PROM, PG, INFLUX = ({"type": plugin, "uid": "${" + var + "}"}
                    for var, plugin, _name, _uid in DATASOURCES)

# The history panels pick their table from the dashboard's time range: minutes up
# to 2 days, hours up to 90 days, days beyond. Exactly one branch's WHERE is true;
# PostgreSQL prunes the others at plan time (a constant false One-Time Filter).
RANGE = "($__timeTo()::timestamptz - $__timeFrom()::timestamptz)"
STEPPED = f"""(SELECT bucket, key, value, uniques FROM {MINUTES}
   WHERE {RANGE} <= interval '2 days' AND counter = '$counter' AND $__timeFilter(bucket)
 UNION ALL
 SELECT bucket, key, value, uniques FROM {HOURS}
   WHERE {RANGE} > interval '2 days' AND {RANGE} <= interval '90 days'
     AND counter = '$counter' AND $__timeFilter(bucket)
 UNION ALL
 SELECT bucket, key, value, uniques FROM {DAYS}
   WHERE {RANGE} > interval '90 days' AND counter = '$counter' AND $__timeFilter(bucket)) AS c"""
# InfluxDB keeps each resolution in its own retention policy, so the InfluxQL panels
# read "$influx_rp"."measurement". Grafana has no range-conditional variable; this
# hidden query variable, re-run on every time range change, asks PostgreSQL which
# policy still holds the range's start (with an hour of slack, so "last 7 days"
# stays on minutes: InfluxDB drops a shard group only once all of it has expired).
RP_SQL = (f"SELECT CASE WHEN $__timeFrom()::timestamptz > now() - interval '7 days 1 hour' "
          f"THEN '{MINUTE_RP}' "
          f"WHEN $__timeFrom()::timestamptz > now() - interval '365 days 1 hour' "
          f"THEN '{HOUR_RP}' ELSE '{DAY_RP}' END")
# Hour buckets that overlap the dashboard range (not only those starting in it),
# so "last 30 minutes" still lists the keys of the current hour.
HOURS_OVERLAPPING = ("bucket > $__timeFrom()::timestamptz - interval '1 hour' "
                     "AND bucket < $__timeTo()")


def prom(expr: str, legend: str = "", instant: bool = False) -> dict:
    """A PromQL target."""
    return {"datasource": PROM, "refId": "A", "expr": expr, "legendFormat": legend,
            "instant": instant, "range": not instant}


def sql(text: str, fmt: str = "time_series") -> dict:
    """A raw-SQL target on TimescaleDB."""
    return {"datasource": PG, "refId": "A", "rawQuery": True, "editorMode": "code",
            "format": fmt, "rawSql": text}


def influxql(text: str) -> dict:
    """A raw InfluxQL target."""
    return {"datasource": INFLUX, "refId": "A", "rawQuery": True, "query": text,
            "resultFormat": "time_series"}


def panel(pid: int, title: str, targets: list[dict], kind: str = "timeseries",
          unit: str = "short", width: int = 12) -> dict:
    """One panel on a 24-column grid, two per row by default."""
    x = 0 if width == 24 else (pid - 1) % 2 * 12
    return {"id": pid, "type": kind, "title": title, "datasource": targets[0]["datasource"],
            "gridPos": {"h": 8, "w": width, "x": x, "y": (pid - 1) // 2 * 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [dict(t, refId=chr(65 + i)) for i, t in enumerate(targets)]}


# Panels on the raw event log (`events`, TALLY_EVENTS_RETENTION days): exact distinct users
# and the breakdown by an event property over the dashboard range, as the API's
# /uniques and /breakdown answer them (ingest/api/event_reads.py): the top 10 values by
# count, events without the property as one empty row, the rest as one "other" row with
# its exact distinct users.
LOGGED = "counter = '$counter' AND key IN ($key) AND $__timeFilter(ts)"
DISTINCT_USERS = f'''SELECT count(DISTINCT "user") AS value FROM events\nWHERE {LOGGED}'''
BREAKDOWN = f"""WITH e AS MATERIALIZED (
  SELECT props ->> '$prop' AS v, value, "user" FROM events WHERE {LOGGED}
), g AS (
  SELECT v, sum(value) AS value, count(DISTINCT "user") AS users,
         row_number() OVER (ORDER BY sum(value) DESC, v NULLS LAST) AS rank
  FROM e GROUP BY v
)
SELECT rank, v AS "$prop", value, users FROM g WHERE rank <= 10
UNION ALL
SELECT 11, 'other (' || (SELECT count(*) FROM g WHERE rank > 10) || ' values)',
       sum(value), count(DISTINCT "user") FROM e
WHERE CASE WHEN v IS NULL THEN NOT EXISTS (SELECT 1 FROM g WHERE rank <= 10 AND g.v IS NULL)
           ELSE v NOT IN (SELECT g.v FROM g WHERE rank <= 10 AND g.v IS NOT NULL) END
HAVING count(*) > 0
ORDER BY rank"""
# The property names events of the counter carry in the range (names are [a-z0-9_]).
PROP_SQL = ("SELECT DISTINCT jsonb_object_keys(props) FROM events "
            "WHERE counter = '$counter' AND props IS NOT NULL AND $__timeFilter(ts) "
            "ORDER BY 1 LIMIT 100")


def overview() -> dict:
    """Live rates and health from Prometheus."""
    sel = 'counter=~"$counter"'
    latency = ("histogram_quantile({q}, sum by (le) (rate("
               "tally_ingest_http_request_duration_seconds_bucket[$__rate_interval])))")
    panels = [
        panel(1, "Events per second",
              [prom(f"counter:tally_events:rate1m{{{sel}}}", "{{counter}}")], unit="ops"),
        panel(2, "Duplicate ratio (5m)", [prom(f"counter:tally_duplicates:ratio_rate5m{{{sel}}}",
                                               "{{counter}}")], unit="percentunit"),
        panel(3, "Unique users (current hour / day)",
              [prom(f"tally_unique_users{{{sel}}}", "{{counter}} {{window}}")]),
        panel(4, "Top keys today", [prom(f"topk(20, tally_top_key_events{{{sel}}})",
                                         instant=True)], kind="table"),
        panel(5, "Flusher lag", [prom("tally_flusher_lag_seconds", "{{sink}}")], unit="s"),
        panel(6, "Dirty buckets waiting", [prom("tally_dirty_buckets", "{{sink}}")]),
        panel(7, "Ingest latency", [prom(latency.format(q=q), f"p{round(q * 100)}")
                                    for q in (0.5, 0.95, 0.99)], unit="s"),
        panel(8, "Ingest events by outcome", [prom(
            "sum by (outcome) (rate(tally_ingest_events_total[$__rate_interval]))",
            "{{outcome}}")], unit="ops"),
        panel(9, "Errors: sink failures and HTTP 5xx", [
            prom("sum by (sink) (increase(tally_flusher_errors_total[$__rate_interval]))",
                 "{{sink}}"),
            prom('sum(rate(tally_ingest_http_requests_total{status=~"5.."}[$__rate_interval]))'
                 " or vector(0)", "ingest 5xx")]),
        panel(10, "Exporter: Redis up and scrape time", [
            prom("tally_up", "up"), prom("tally_scrape_duration_seconds", "scrape s")]),
        panel(11, "Since the last successful flush", [prom(
            "time() - tally_flusher_last_success_timestamp_seconds", "{{sink}}")], unit="s"),
        panel(12, "Redis memory and maxmemory (0: no limit; writes refused at the limit)", [
            prom("tally_redis_memory_used_bytes", "used"),
            prom("tally_redis_memory_max_bytes", "maxmemory")], unit="bytes"),
    ]
    counter = {"name": "counter", "type": "query", "datasource": PROM, "refresh": 2,
               "query": {"query": "label_values(tally_events_total, counter)",
                         "refId": "counter"},
               "definition": "label_values(tally_events_total, counter)",
               "multi": True, "includeAll": True, "current": {}}
    return dashboard("tally-overview", "Tally overview", panels, [counter], "now-1h", "30s")


def history() -> dict:
    """Stored history from TimescaleDB, and the same series from InfluxDB."""
    keys = "key IN ($key)"
    panels = [
        panel(1, "Count per key (table by range: 1m ≤ 2 d < 1h ≤ 90 d < 1d)", [sql(
            f"SELECT $__timeGroupAlias(bucket, $__interval), key AS metric, sum(value) AS value\n"
            f"FROM {STEPPED}\nWHERE {keys}\nGROUP BY 1, 2\nORDER BY 1")], width=24),
        panel(2, "Counter total", [sql(
            f"SELECT $__timeGroupAlias(bucket, $__interval), sum(value) AS value\n"
            f"FROM {STEPPED}\nGROUP BY 1\nORDER BY 1")]),
        panel(3, "Unique users per key and hour", [sql(
            f"SELECT bucket AS time, key AS metric, uniques AS value FROM {HOURS}\n"
            f"WHERE counter = '$counter' AND {keys} AND $__timeFilter(bucket)\nORDER BY 1")]),
        panel(4, "Top keys in range", [sql(
            f"SELECT key, sum(value) AS value FROM {HOURS}\n"
            f"WHERE counter = '$counter' AND {HOURS_OVERLAPPING}\n"
            "GROUP BY key ORDER BY value DESC, key LIMIT 20", fmt="table")], kind="table"),
        panel(5, "InfluxDB: counter total (policy by range)", [influxql(
            f'SELECT sum("value") FROM "$influx_rp"."{TOTALS_MEASUREMENT}" '
            "WHERE \"counter\" = '$counter' "
            "AND $timeFilter GROUP BY time($__interval) fill(none)")]),
        panel(6, "InfluxDB: featured keys (policy by range)", [influxql(
            f'SELECT sum("value") FROM "$influx_rp"."{MEASUREMENT}" '
            "WHERE \"counter\" = '$counter' "
            'AND $timeFilter GROUP BY time($__interval), "key" fill(none)')]),
        panel(7, "Distinct users in range (event log, exact)",
              [sql(DISTINCT_USERS, fmt="table")], kind="stat"),
        panel(8, "Breakdown by $prop (event log: top 10 by count, distinct users)",
              [sql(BREAKDOWN, fmt="table")], kind="table"),
    ]
    counter = {"name": "counter", "type": "query", "datasource": PG, "refresh": 1,
               "query": f"SELECT DISTINCT counter FROM {DAYS} ORDER BY 1",
               "definition": f"SELECT DISTINCT counter FROM {DAYS} ORDER BY 1",
               "multi": False, "includeAll": False, "current": {}}
    key_sql = (f"SELECT key FROM {HOURS} WHERE counter = '$counter' AND {HOURS_OVERLAPPING} "
               "GROUP BY key ORDER BY sum(value) DESC, key LIMIT 50")
    key = {"name": "key", "type": "query", "datasource": PG, "refresh": 2, "query": key_sql,
           "definition": key_sql, "multi": True, "includeAll": False, "current": {}}
    rp = {"name": "influx_rp", "type": "query", "datasource": PG, "refresh": 2, "hide": 2,
          "query": RP_SQL, "definition": RP_SQL, "multi": False, "includeAll": False,
          "current": {"text": MINUTE_RP, "value": MINUTE_RP}}
    prop = {"name": "prop", "type": "query", "datasource": PG, "refresh": 2,
            "query": PROP_SQL, "definition": PROP_SQL, "multi": False, "includeAll": False,
            "label": "property", "current": {}}
    return dashboard("tally-history", "Tally history", panels, [counter, key, rp, prop], "now-6h",
                     "1m")


def datasource_variable(name: str, plugin: str, text: str, uid: str) -> dict:
    """A datasource picker; its default is the provisioned data source of that type."""
    return {"name": name, "type": "datasource", "query": plugin, "label": text,
            "current": {"text": text, "value": uid}, "regex": "", "refresh": 1, "hide": 0,
            "multi": False, "includeAll": False}


def requires(panels: list, plugins: set[str]) -> list[dict]:
    """__requires: what Grafana's import dialog lists as needed."""
    kinds = sorted({p["type"] for p in panels})
    return ([{"type": "grafana", "id": "grafana", "name": "Grafana",
              "version": GRAFANA_VERSION}]
            + [{"type": "datasource", "id": plugin, "name": name, "version": "1.0.0"}
               for _var, plugin, name, _uid in DATASOURCES if plugin in plugins]
            + [{"type": "panel", "id": kind, "name": kind, "version": ""} for kind in kinds])


def dashboard(uid: str, title: str, panels: list, variables: list, since: str,
              refresh: str) -> dict:
    """A dashboard document as Grafana 11 stores it, with pickers for the data sources it uses."""
    used = {t["datasource"]["type"] for p in panels for t in p["targets"]}
    used |= {v["datasource"]["type"] for v in variables if "datasource" in v}
    pickers = [datasource_variable(*ds) for ds in DATASOURCES if ds[1] in used]
    return {"__requires": requires(panels, used), "uid": uid, "title": title,
            "tags": ["tally"], "timezone": "utc", "schemaVersion": 39, "version": 1,
            "editable": True, "refresh": refresh, "time": {"from": since, "to": "now"},
            "templating": {"list": pickers + variables}, "annotations": {"list": []},
            "panels": panels}


def main(folder: Path = DASHBOARDS) -> None:
    """Write both dashboards."""
    folder.mkdir(exist_ok=True)
    for board in (overview(), history()):
        path = folder / f"{board['uid']}.json"
        path.write_text(json.dumps(board, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
