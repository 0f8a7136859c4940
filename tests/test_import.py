"""Backfill: `tally import` loads history of any age exactly once and rebuilds its days."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections import defaultdict

import psycopg
import pytest

from tests.batch_support import DAY, truncate_sealed
from tests.flusher_support import flusher_env, make_settings

# The suite imports a quarter of a million events (about 40 s); IMPORT_TEST_EVENTS=1000000 runs
# the full million over 400 days (about 150 s on 2 cores), as measured for docs/flusher.md.
EVENTS = int(os.environ.get("IMPORT_TEST_EVENTS", "250000"))
DAYS = 400


@pytest.fixture
def sealed_clean(postgres_owner_dsn):
    yield
    truncate_sealed(postgres_owner_dsn)


def _generate(path, n: int, days: int, seed: int = 400) -> dict:
    """An NDJSON file of n events over the last `days` days (every one with an id, a tenth
    sent twice); returns (counter, key, day) -> (value, distinct users) it must count."""
    rng = random.Random(seed)
    now = int(time.time())
    values: dict = defaultdict(int)
    users: dict = defaultdict(set)
    keys = [f"page:{i}" for i in range(40)] + ["ключ", "a b", "back\\slash"]
    shown = [json.dumps(key, ensure_ascii=False) for key in keys]  # JSON strings, escaped
    span, rand = days * DAY, rng.random
    with open(path, "w") as out:
        lines = []
        for i in range(n):
            ts, k, value = now - int(rand() * span), int(rand() * len(keys)), 1 + i % 3
            counter = "views" if i & 4 else "plays"
            cell = (counter, keys[k], ts // DAY)
            values[cell] += value
            user = ""
            if i % 3:
                name = f"u{int(rand() * 50)}"
                users[cell].add(name)
                user = f', "user": "{name}"'
            text = (f'{{"counter": "{counter}", "key": {shown[k]}, "id": "e{i}", "ts": {ts}, '
                    f'"value": {value}{user}}}\n')
            lines.append(text)
            if i % 10 == 0:
                lines.append(text)  # a retry: the same id counts once
        out.writelines(lines)
    return {cell: (v, len(users[cell])) for cell, v in values.items()}


def _days(dsn: str) -> dict:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT counter, key, extract(epoch FROM bucket)::bigint / 86400, "
                            "value, uniques FROM counts_1d").fetchall()
    return {(c, k, d): (v, u) for c, k, d, v, u in rows}


def _import(settings, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tally.stack.cli", "import", *args],
                          input=stdin, capture_output=True,
                          env=flusher_env(settings, sinks="timescale"),
                          timeout=600)


def test_a_large_file_over_400_days_imports_once(tmp_path, redis_url, pg_dsn, sealed_clean):
    settings = make_settings(redis_url, pg_dsn, "http://127.0.0.1:1", sinks=("timescale",))
    path = tmp_path / "history.ndjson"
    want = _generate(path, EVENTS, DAYS)
    first = _import(settings, str(path))
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    assert f"imported {EVENTS} of {EVENTS + EVENTS // 10}".encode() in first.stderr
    assert re.search(rb"import: \d+/\d+ \d+ events, [\d,]+/s", first.stderr)  # progress lines
    assert _days(pg_dsn) == want

    second = _import(settings, str(path))
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    assert b"imported 0 of" in second.stderr and b"rebuilt 0 days" in second.stderr
    assert _days(pg_dsn) == want


def _lines(now: int) -> bytes:
    good = [{"counter": "views", "key": f"k{i}", "id": f"i{i}", "ts": now - 40 * DAY - i}
            for i in range(5)]
    text = [json.dumps(e) for e in good]
    text[3] = '{"counter": "views", "id": "bad", "ts": 5}'  # no key
    text.insert(5, '{"counter": "views", "key": "x", "ts": NaN}')
    return ("\n".join(text) + "\n").encode()


def _keys(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return sorted(k for (k,) in conn.execute("SELECT key FROM events"))


def test_a_bad_line_stops_the_import_before_its_chunk(tmp_path, redis_url, pg_dsn,
                                                       sealed_clean):
    settings = make_settings(redis_url, pg_dsn, "http://127.0.0.1:1", sinks=("timescale",))
    path = tmp_path / "bad.ndjson"
    path.write_bytes(_lines(int(time.time())))
    done = _import(settings, str(path), "--chunk", "2")
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "line 4: key:" in err, err
    assert "stopped at line 4" in err
    assert _keys(pg_dsn) == ["k0", "k1"]  # chunk 1 loaded; line 3 shares the bad chunk


def test_skip_from_stdin_loads_every_good_line_once(redis_url, pg_dsn, sealed_clean):
    settings = make_settings(redis_url, pg_dsn, "http://127.0.0.1:1", sinks=("timescale",))
    text = _lines(int(time.time()))
    for _ in range(2):  # the second run finds every event logged
        done = _import(settings, "-", "--on-error", "skip", "--chunk", "2", stdin=text)
        assert done.returncode == 1
        err = done.stderr.decode()
        assert "line 4: key:" in err and "line 6: not valid JSON: NaN is not valid JSON" in err
    assert _keys(pg_dsn) == ["k0", "k1", "k2", "k4"]
    with psycopg.connect(pg_dsn) as conn:  # 40 days old: past the events' retention,
        assert conn.execute("SELECT sum(value) FROM counts_1d").fetchone()[0] == 4  # counted
