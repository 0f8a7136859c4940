"""Smoke tests: InfluxDB takes line protocol and answers InfluxQL."""

import requests

from tally.ingest.flusher.influx_setup import ensure_influx, influx_query
from tally.settings import load_settings


def test_point_written_is_read_back(influx):
    line = "counts,counter=views,key=video:42 value=7i,uniques=2i 1795860900000000000"
    response = requests.post(f"{influx}/write", params={"db": "tally", "precision": "ns"},
                             data=line, timeout=10)
    assert response.status_code == 204
    query = "SELECT value, uniques FROM counts WHERE \"key\" = 'video:42'"
    results = influx_query(load_settings({}, influx_url=influx), query, db="tally")
    assert results[0]["series"][0]["values"] == [["2026-11-28T10:15:00Z", 7, 2]]


def test_retention_policies_exist_and_setup_is_idempotent(influx):
    settings = load_settings({}, influx_url=influx)
    ensure_influx(settings)
    series = influx_query(settings, 'SHOW RETENTION POLICIES ON "tally"')[0]["series"][0]
    policies = {row[0]: (row[1], row[-1]) for row in series["values"]}
    assert policies == {"autogen": ("0s", False), "minute_7d": ("168h0m0s", True),
                        "hour_1y": ("8760h0m0s", False), "day_inf": ("0s", False)}
