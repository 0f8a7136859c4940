"""Every Grafana panel query runs against the real backend after demo traffic and a real flush."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
import redis
import requests
import yaml
from prometheus_client import CollectorRegistry
from werkzeug.serving import make_server

from tally.exporter.collector import TallyCollector
from tally.exporter.server import serve
from tally.ingest.api import close_app, create_app
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher.influx_setup import ensure_influx, influx_query
from tally.ingest.flusher.loop import SinkLoop
from tally.ingest.flusher.sinks import build_sink
from tally.settings import PROJECT_ROOT, load_settings
from tally.stack import demo, services
from tests.fix_postgres import truncate_counts
from tests.grafana_macros import (
    TimeRange,
    expand_influxql,
    expand_promql,
    expand_sql,
    prom_regex,
    sql_values,
)
from tests.test_event_log import archive_all

GRAFANA = PROJECT_ROOT / "grafana"
RULES = str(PROJECT_ROOT / "prometheus" / "rules" / "tally.yml")
DASHBOARDS = {p.stem: json.loads(p.read_text()) for p in sorted(GRAFANA.glob("dashboards/*.json"))}
TOKEN = "demo-token"


def targets(board: dict) -> list[tuple[str, dict]]:
    """(panel title, target) of every panel target."""
    return [(p["title"], t) for p in board["panels"] for t in p["targets"]]


def _serve_ingest(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _scrape(prometheus_server, targets: dict[str, list[str]], rules: tuple[str, ...] = ()) -> str:
    url, config = prometheus_server
    config.write_text(services.prometheus_config(targets, "1s", rules))
    assert requests.post(f"{url}/-/reload", timeout=30).ok
    return url


def _reset_stores(settings) -> None:
    truncate_counts(settings.postgres_owner_dsn)
    influx_query(settings, f'DROP DATABASE "{settings.influx_db}"')
    ensure_influx(settings)


@pytest.fixture(scope="module")
def stack(redis_url, postgres_dsn, postgres_owner_dsn, postgres_reader_dsn, influx_url,
          prometheus_server):
    """Ingest + exporter scraped by Prometheus; demo traffic posted; both sinks flushed.

    Module-scoped so the six-second demo runs once; it cleans the session
    servers itself (Redis, counts tables, InfluxDB, Prometheus targets).
    """
    settings = load_settings({}, redis_url=redis_url, postgres_dsn=postgres_dsn,
                             postgres_owner_dsn=postgres_owner_dsn, influx_url=influx_url,
                             write_tokens=(TOKEN,), series_history=False)
    app = create_app(settings)
    ingest, ingest_thread = _serve_ingest(app)
    client = redis.Redis.from_url(redis_url)
    config = CountingConfig.from_settings(settings)
    registry = CollectorRegistry()
    registry.register(TallyCollector(client, config, top_n=5))
    exporter, exporter_thread = serve(registry, "127.0.0.1", 0)
    prom = _scrape(prometheus_server, {"tally": [f"127.0.0.1:{ingest.server_port}",
                                                 f"127.0.0.1:{exporter.server_port}"]}, (RULES,))
    started = time.time()
    url = f"http://127.0.0.1:{ingest.server_port}/v1/events"
    summary = demo.run(url, TOKEN, duration=6, rate=300,
                       plan=demo.DemoPlan(keys=40, users=300, seed=7, duplicate_share=0.1))
    logged = _post_logged_events(url, started)
    for name in settings.sinks:
        loop = SinkLoop(build_sink(name, settings))
        assert loop.step(client, config, settings, lambda point: None)
        loop.sink.close()
    archive_all(client, settings)  # the event-log panels read `events`
    time.sleep(3)  # two more scrapes and rule evaluations see the flusher's health
    yield {"prometheus": prom, "settings": settings, "summary": summary, "logged": logged,
           "reader_dsn": postgres_reader_dsn,
           "range": TimeRange(started - 3600, time.time() + 60)}
    # Drop the targets first: Prometheus then closes its keep-alive connections,
    # so no handler thread is left holding a socket when the servers stop.
    _scrape(prometheus_server, {})
    for server, thread in ((ingest, ingest_thread), (exporter, exporter_thread)):
        server.shutdown()
        server.server_close()
        thread.join()
    close_app(app)
    client.flushall()
    client.close()
    _reset_stores(settings)


LOGGED_KEY = "panel:logged"  # the key of the events with properties posted for the log panels
COUNTRIES = [f"c{i:02d}" for i in range(14)]  # more than the breakdown's 10 rows: an other row


def _post_logged_events(url: str, now: float) -> list[dict]:
    """Events with users and a country property (some without), retried once each: what
    the event-log panels count; the list of distinct events posted."""
    events = []
    for i in range(300):
        event = {"counter": "views", "key": LOGGED_KEY, "id": f"logged-{i}",
                 "user": f"lu-{i % 37}", "value": 1 + i % 3, "ts": int(now) - i}
        if i % 7:
            event["props"] = {"country": COUNTRIES[min(i % 23, 13)], "app": "web"}
        events.append(event)
    for body in (events, events):  # the second post: duplicates, counted once
        answer = requests.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                               timeout=30)
        assert answer.ok, answer.text
    return events


def prom_data(base: str, target: dict, rng: TimeRange, variables: dict) -> list:
    """Run a PromQL target as Grafana would (instant or range query); the result list.

    $__interval and $__rate_interval follow the range; a range query reads the last
    minute at 1 s steps, since the demo's samples are only seconds old.
    """
    expr = expand_promql(target["expr"], rng, variables, scrape=1)
    if target.get("instant"):
        params, path = {"query": expr, "time": time.time()}, "query"
    else:
        params = {"query": expr, "start": time.time() - 60, "end": time.time(), "step": 1}
        path = "query_range"
    body = requests.get(f"{base}/api/v1/{path}", params=params, timeout=30).json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def sql_rows(dsn: str, query: str) -> tuple[list[str], list]:
    """Run SQL logged in as the read-only dashboard role, as Grafana is; (column names, rows)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query)
        return [c.name for c in cur.description], cur.fetchall()


def influx_series(url: str, query: str) -> list[dict]:
    """Run InfluxQL on db tally; the series of the first statement."""
    body = requests.post(f"{url}/query", data={"q": query, "db": "tally", "epoch": "ms"},
                         timeout=30).json()
    assert "error" not in body["results"][0], (query, body)
    return body["results"][0].get("series", [])


def test_demo_traffic_was_counted(stack):
    summary = stack["summary"]
    assert summary.failed_batches == 0 and summary.sent >= 900
    assert summary.accepted + summary.duplicates == summary.sent and summary.duplicates > 0


def test_overview_panels_return_series(stack):
    base, rng = stack["prometheus"], _recent(stack, 3600)
    counters = requests.get(f"{base}/api/v1/label/counter/values",
                            params={"match[]": "tally_events_total"}, timeout=10).json()["data"]
    assert sorted(counters) == sorted(demo.COUNTERS)
    variables = {"counter": prom_regex(counters)}
    for title, target in targets(DASHBOARDS["tally-overview"]):
        result = prom_data(base, target, rng, variables)
        assert result, f"{title}: {target['expr']} returned no series"
        points = [r["value"] for r in result] if target.get("instant") else \
            [v for r in result for v in r["values"]]
        assert points, f"{title}: no samples"


def test_overview_panels_return_series_over_thirty_days(stack):
    """$__interval grows to 1 h, $__rate_interval to 3601s: every panel still has series."""
    base, rng = stack["prometheus"], _recent(stack, 30 * 86400)
    assert expand_promql("$__interval $__rate_interval", rng, {}, scrape=1) == "1h 3601s"
    for title, target in targets(DASHBOARDS["tally-overview"]):
        assert prom_data(base, target, rng, {"counter": ".*"}), f"{title}: no series"


def _recent(stack, seconds: int) -> TimeRange:
    """The range of the last `seconds` up to now, as a dashboard opened now shows it."""
    now = time.time()
    assert now - seconds <= stack["range"].start + 3600
    return TimeRange(now - seconds, now)


# One range per history table the stepped panels choose: minutes, hours, days.
RANGES = {"1m": 3600, "1h": 10 * 86400, "1d": 200 * 86400}


@pytest.mark.parametrize("span", RANGES)
def test_history_sql_panels_return_rows(stack, span):
    dsn, end = stack["reader_dsn"], stack["range"].end
    rng = TimeRange(end - RANGES[span], end)
    board = DASHBOARDS["tally-history"]
    var = {v["name"]: v for v in board["templating"]["list"]}
    _, counters = sql_rows(dsn, expand_sql(var["counter"]["query"], rng, {}))
    assert sorted(c for (c,) in counters) == sorted(demo.COUNTERS)
    _, keys = sql_rows(dsn, expand_sql(var["key"]["query"], rng, {"counter": "views"}))
    assert keys, "the key variable query returned no keys"
    variables = {"counter": "views", "key": sql_values([k for (k,) in keys[:3]])}
    _, props = sql_rows(dsn, expand_sql(var["prop"]["query"], rng, variables))
    assert [p for (p,) in props] == ["app", "country"]
    variables["prop"] = "country"
    for title, target in targets(board):
        if target["datasource"]["type"] == "influxdb":
            continue
        columns, rows = sql_rows(dsn, expand_sql(target["rawSql"], rng, variables))
        assert rows, f"{title}: no rows"
        expected = {"value"} if target["format"] == "table" else {"time", "value"}
        expected |= {"key"} if title == "Top keys in range" else set()
        assert expected <= set(columns), f"{title}: columns {columns}"


def _panel(board: dict, prefix: str) -> dict:
    return next(t for title, t in targets(board) if title.startswith(prefix))


def test_event_log_panels_equal_the_posted_events(stack):
    """Distinct users and the breakdown of the events posted with properties, exactly."""
    dsn, rng, board = stack["reader_dsn"], stack["range"], DASHBOARDS["tally-history"]
    variables = {"counter": "views", "key": sql_values([LOGGED_KEY]), "prop": "country"}
    _, rows = sql_rows(dsn, expand_sql(_panel(board, "Distinct users")["rawSql"], rng,
                                       variables))
    logged = stack["logged"]
    assert rows == [(len({e["user"] for e in logged}),)]
    columns, rows = sql_rows(dsn, expand_sql(_panel(board, "Breakdown by")["rawSql"], rng,
                                             variables))
    assert columns == ["rank", "country", "value", "users"]
    groups: dict = {}
    for event in logged:
        group = groups.setdefault(event.get("props", {}).get("country"), [0, set()])
        group[0] += event["value"]
        group[1].add(event["user"])
    order = sorted(groups, key=lambda v: (-groups[v][0], v is None, v or ""))
    want = [(rank, v, groups[v][0], len(groups[v][1])) for rank, v in enumerate(order[:10], 1)]
    rest = order[10:]
    want.append((11, f"other ({len(rest)} values)", sum(groups[v][0] for v in rest),
                 len(set().union(*(groups[v][1] for v in rest)))))
    assert [tuple(r) for r in rows] == want


def test_distinct_users_panel_equals_the_uniques_api(stack):
    """Over every key of the counter, the panel and GET /uniques agree (demo users too)."""
    dsn, rng, board = stack["reader_dsn"], stack["range"], DASHBOARDS["tally-history"]
    settings = stack["settings"]
    _, keys = sql_rows(dsn, "SELECT DISTINCT key FROM events WHERE counter = 'views'")
    variables = {"counter": "views", "key": sql_values([k for (k,) in keys])}
    _, rows = sql_rows(dsn, expand_sql(_panel(board, "Distinct users")["rawSql"], rng,
                                       variables))
    app = create_app(load_settings({}, redis_url=settings.redis_url,
                                   postgres_dsn=settings.postgres_dsn, read_tokens=("r",)))
    try:
        answer = app.test_client().get("/v1/counters/views/uniques", headers={
            "Authorization": "Bearer r"}, query_string={"from": rng.start, "to": rng.end})
    finally:
        close_app(app)
    assert answer.status_code == 200, answer.get_json()
    assert rows == [(answer.get_json()["uniques"],)] and rows[0][0] > 37


def influx_rp(dsn: str, board: dict, rng: TimeRange) -> str:
    """The hidden influx_rp variable as Grafana resolves it: its SQL run for this range."""
    var = {v["name"]: v for v in board["templating"]["list"]}["influx_rp"]
    _, rows = sql_rows(dsn, expand_sql(var["query"], rng, {}))
    assert len(rows) == 1, rows
    return rows[0][0]


# Influx ranges ending now, with the policy that holds their start: a short one, the
# long one of the issue (past minute_7d's 7 days), and one beyond hour_1y's year.
INFLUX_RANGES = {"1h": (3600, "minute_7d"), "30d": (30 * 86400, "hour_1y"),
                 "400d": (400 * 86400, "day_inf")}


@pytest.mark.parametrize("span", INFLUX_RANGES)
def test_history_influx_panels_read_the_policy_of_the_range(stack, span):
    settings, end = stack["settings"], stack["range"].end
    seconds, policy = INFLUX_RANGES[span]
    rng, board = TimeRange(end - seconds, end), DASHBOARDS["tally-history"]
    variables = {"counter": "views", "influx_rp": influx_rp(settings.postgres_dsn, board, rng)}
    assert variables["influx_rp"] == policy
    totals = {}
    for title, target in targets(board):
        if target["datasource"]["type"] != "influxdb":
            continue
        query = expand_influxql(target["query"], rng, variables)
        assert f'FROM "{policy}".' in query, query
        series = influx_series(settings.influx_url, query)
        assert series, f"{title}: no series in {policy}"
        assert all(s["columns"] == ["time", "sum"] and s["values"] for s in series), title
        totals[title] = sum(v for s in series for _, v in s["values"] if v is not None)
    # Every policy holds the same events: minutes, hours and days add up alike.
    assert totals == stack.setdefault("influx_totals", totals), (policy, totals)


def test_every_panel_names_its_datasource_through_a_variable():
    for board in DASHBOARDS.values():
        pickers = {v["name"]: v["query"] for v in board["templating"]["list"]
                   if v["type"] == "datasource"}
        refs = [t["datasource"] for _, t in targets(board)] + \
            [p["datasource"] for p in board["panels"]] + \
            [v["datasource"] for v in board["templating"]["list"] if "datasource" in v]
        for ref in refs:
            assert ref["uid"].startswith("${") and ref["uid"].endswith("}"), (board["uid"], ref)
            assert pickers[ref["uid"][2:-1]] == ref["type"], (board["uid"], ref)
        required = {r["id"] for r in board["__requires"] if r["type"] == "datasource"}
        assert required == set(pickers.values()), board["uid"]


def test_datasource_defaults_are_the_provisioned_datasources():
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/tally.yml").read_text())
    known = {(d["type"], d["uid"], d["name"]) for d in provisioned["datasources"]}
    for board in DASHBOARDS.values():
        pickers = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
        assert pickers, board["uid"]
        for picker in pickers:
            current = (picker["query"], picker["current"]["value"], picker["current"]["text"])
            assert current in known, (board["uid"], current)


def test_dashboards_json_is_what_build_py_writes(tmp_path):
    import grafana.build as build

    build.main(tmp_path)
    for path in tmp_path.glob("*.json"):
        assert path.read_text() == (GRAFANA / "dashboards" / path.name).read_text(), path.name
