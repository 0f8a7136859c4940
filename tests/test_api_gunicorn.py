"""The API under a real `tally serve` (gunicorn master, IngestWorker processes) on a free port:
metrics summed over workers, a killed worker replaced, SIGTERM draining requests in flight."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time

import pytest
import requests

from tests.test_api_support import R, W, gunicorn, gzipped, ndjson, worker_pids

EVENTS = [{"counter": "views", "key": f"k{i % 3}", "id": f"e{i}"} for i in range(30)]


@pytest.fixture(scope="module")
def served(redis_url, tmp_path_factory):
    """Base URL, log folder and worker pids of `tally serve --workers 2`."""
    tmp = tmp_path_factory.mktemp("serve")
    with gunicorn(redis_url, 2, tmp) as (base, master):
        yield base, tmp, worker_pids(master.pid, 2)


def test_ndjson_gzip_post_and_read_back(served, redis_client):
    base, _, _ = served
    headers = {**W, "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    response = requests.post(f"{base}/v1/events", data=gzipped(ndjson(EVENTS)), headers=headers,
                             timeout=10)
    assert response.json() == {"accepted": 30, "duplicates": 0}
    read = requests.get(f"{base}/v1/counters/views", params={"key": "k1"}, headers=R, timeout=10)
    assert read.json()["total"] == 10


def test_retried_batch_counts_once(served, redis_client):
    base, _, _ = served
    answers = [requests.post(f"{base}/v1/events", json=EVENTS, headers=W, timeout=10).json()
               for _ in range(3)]
    assert answers == [{"accepted": 30, "duplicates": 0}] + [{"accepted": 0, "duplicates": 30}] * 2
    totals = [requests.get(f"{base}/v1/counters/views", params={"key": f"k{i}"}, headers=R,
                           timeout=10).json()["total"] for i in range(3)]
    assert totals == [10, 10, 10]


def _metric(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name + '{' + labels + '}')} (\S+)$", text, re.M)
    return float(match[1]) if match else 0.0


def post_while_paused(base: str, paused: int, first: int, count: int) -> None:
    """POST `count` events while worker `paused` is stopped, so the other worker serves them."""
    os.kill(paused, signal.SIGSTOP)
    try:
        for i in range(first, first + count):
            event = {"counter": "clicks", "key": "k", "id": f"m{i}"}
            assert requests.post(f"{base}/v1/events", json=event, headers=W,
                                 timeout=10).status_code == 200
    finally:
        os.kill(paused, signal.SIGCONT)


def test_metrics_sum_over_workers(served, redis_client):
    base, tmp, workers = served
    assert len(workers) == 2
    route = 'method="POST",route="/v1/events",status="200"'
    before = requests.get(f"{base}/metrics", timeout=10).text
    post_while_paused(base, workers[0], 0, 20)  # served by workers[1]
    post_while_paused(base, workers[1], 20, 10)  # served by workers[0]
    scrapes = [requests.get(f"{base}/metrics", timeout=10).text for _ in range(6)]
    for text in scrapes:
        name = "tally_ingest_http_requests_total"
        assert _metric(text, name, route) - _metric(before, name, route) == 30
    accepted = 'outcome="accepted"'
    assert (_metric(scrapes[-1], "tally_ingest_events_total", accepted)
            - _metric(before, "tally_ingest_events_total", accepted)) == 30
    lines = [json.loads(line) for log in tmp.glob("serve-*.log")
             for line in log.read_text().splitlines() if line.startswith('{"ts"')]
    served_by = {line["pid"] for line in lines if line.get("route") == "/v1/events"}
    assert set(workers) <= served_by


def test_killed_worker_is_replaced_and_its_counts_kept(redis_url, redis_client, tmp_path):
    with gunicorn(redis_url, 2, tmp_path) as (base, master):
        before = worker_pids(master.pid, 2)
        for i in range(10):
            event = {"counter": "kill", "key": "k", "id": f"k{i}"}
            assert requests.post(f"{base}/v1/events", json=event, headers=W,
                                 timeout=10).status_code == 200
        counted = _metric(requests.get(f"{base}/metrics", timeout=10).text,
                          "tally_ingest_events_total", 'outcome="accepted"')
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            after = worker_pids(master.pid, 2, timeout=0.5)
            if len(after) == 2 and before[0] not in after:
                break
            time.sleep(0.2)
        assert len(after) == 2 and before[0] not in after and before[1] in after
        replacement = (set(after) - set(before)).pop()
        os.kill(before[1], signal.SIGSTOP)  # only the replacement can answer now
        try:
            assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
            text = requests.get(f"{base}/metrics", timeout=10).text
        finally:
            os.kill(before[1], signal.SIGCONT)
        # the dead worker's counts stay in the sum (counters live in the multiprocess folder)
        assert _metric(text, "tally_ingest_events_total", 'outcome="accepted"') == counted == 10
    log = next(tmp_path.glob("serve-*.log")).read_text().splitlines()
    pids = {json.loads(line).get("pid") for line in log if '"route"' in line}
    assert replacement in pids


def test_sigterm_finishes_the_request_in_flight(redis_url, redis_client, tmp_path):
    body = json.dumps({"counter": "drain", "key": "k", "id": "d1"}).encode()
    head = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: " + W["Authorization"].encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    with gunicorn(redis_url, 1, tmp_path) as (base, master):
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(head + body[:5])
            time.sleep(0.3)
            master.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            sock.sendall(body[5:])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {"accepted": 1, "duplicates": 0}
        assert master.wait(timeout=15) == 0
    assert redis_client.keys("*drain*") != []
