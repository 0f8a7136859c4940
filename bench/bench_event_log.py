"""The raw event log's costs: ingest throughput, archive throughput, Redis memory, disk.

Each figure has its baseline in the same run; timed cases are the median of
ROUNDS rounds (BENCH_EVENT_LOG_ROUNDS, default 3), each round timing the case
and its baseline interleaved:

1. ingest: bench_counting's workload (Zipf keys, 1,000 events a batch, with
   ids and users; and without either) through `apply_batch` with the log on
   and off, alternating every CHUNK events; `vs_base` is the median of the
   rounds' on / off ratios. The log is archived untimed after each round,
   so every round starts from an empty log. The time per event is split into
   Redis' (EVALSHA in INFO commandstats) and the client's (the rest).
2. archive: ARCHIVE_EVENTS events logged, then drained into `events` by
   `archive_run` (XRANGE, positions locked, COPY, trim) against the same COPY
   text sent with one `COPY events FROM STDIN` straight from Python (no
   Redis, no positions, no trim), which goes first every other round;
   `vs_base` is archive / raw. Both start from an empty `events` table.
3. Redis memory: `INFO memory used_memory` growth while MEMORY_EVENTS events
   are counted with the log on minus the same with it off: the unarchived
   log's own bytes, next to the bytes of COPY text it holds.
4. disk: `hypertable_detailed_size('events')` after archiving, scaled to one
   million events.

Redis is a redis-server of this module's own (appendonly yes, as in
production); PostgreSQL+TimescaleDB is bench/run's, migrated: `bench/run -k
event_log`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_counting import BATCH, NOW, make_events, timed, zipf_keys  # noqa: E402

from tally.events import Event  # noqa: E402
from tally.ingest.counting.batch import apply_batch  # noqa: E402
from tally.ingest.counting.config import CountingConfig  # noqa: E402
from tally.ingest.flusher import archive, handoff  # noqa: E402
from tally.settings import Settings  # noqa: E402
from tally.stack import services  # noqa: E402
from tally.stack.process import free_ports  # noqa: E402

NEEDS = {"postgres"}  # and a redis-server of its own
ROUNDS = int(os.environ.get("BENCH_EVENT_LOG_ROUNDS", "3"))
INGEST_EVENTS = 50_000  # per timed case and round, as bench_counting
CHUNK = BATCH  # the log on and off alternate every CHUNK events (each batch)
ARCHIVE_EVENTS = int(os.environ.get("BENCH_EVENT_LOG_ARCHIVE", "200000"))
MEMORY_EVENTS = 100_000
COUNTRIES = ["DE", "FR", "US", "GB", "JP", "BR", "IN", "NL"]
PLANS = ["free", "pro", "team"]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _second(i: int, n: int) -> int:
    """The ts of event i of n: spread evenly over the hour before NOW, as a live stream's are
    (one shared ts would let the B-tree indexes deduplicate to nearly nothing)."""
    return NOW - 3600 + i * 3600 // n


def rich_events(n: int, prefix: str, keys: list[str]) -> list[Event]:
    """n events with an id, a user and two props (country, plan)."""
    return [Event("views", keys[i], _second(i, n), id=f"{prefix}{i}", user=f"u{i % 100_000}",
                  props={"country": COUNTRIES[i % 8], "plan": PLANS[i % 3]}) for i in range(n)]


def bare_events(n: int, prefix: str, keys: list[str]) -> list[Event]:
    """n events without id, user or props."""
    return [Event("views", keys[i], _second(i, n)) for i in range(n)]


SHAPES = {"id+user+2 props": rich_events, "no id/user/props": bare_events}


def apply(client, config: CountingConfig, events: list[Event]) -> None:
    """The batch step over events, BATCH at a time."""
    for start in range(0, len(events), BATCH):
        apply_batch(client, config, events[start:start + BATCH], now=NOW)


def drain(client, config: CountingConfig, settings: Settings) -> archive.RunResult:
    """One archiver run until every log stream is empty."""
    archiver = archive.EventArchiver.from_settings(settings)
    try:
        return archive.archive_run(client, config, archiver, settings)
    finally:
        archiver.close()


def log_text(client, config: CountingConfig) -> bytes:
    """Every log entry's COPY text, stream by stream in stream order (what the archiver sends)."""
    return b"".join(fields[b"e"] for shard in handoff.discover(client, config.shards)
                    for _, fields in client.xrange(shard.keys.log))


def _script_usec(client) -> int:
    """Microseconds Redis spent in EVALSHA since the last CONFIG RESETSTAT."""
    return client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)


def _ingest_round(client, configs: tuple[CountingConfig, CountingConfig],
                  events: tuple[list[Event], list[Event]]) -> list[tuple[float, float]]:
    """Per config: (seconds of the batch step over its events, of which inside EVALSHA).

    The two alternate every CHUNK events (which goes first alternating too),
    so both meet the same load from anything else on the machine.
    """
    spent = [[0.0, 0.0], [0.0, 0.0]]
    for number, start in enumerate(range(0, INGEST_EVENTS, CHUNK)):
        for which in (number % 2, 1 - number % 2):
            client.config_resetstat()
            chunk = events[which][start:start + CHUNK]
            spent[which][0] += timed(lambda w=which, c=chunk: apply(client, configs[w], c))
            spent[which][1] += _script_usec(client) / 1e6
    return [(seconds, in_redis) for seconds, in_redis in spent]


def _spread(rates: list[float]) -> str:
    return "/".join(f"{rate / 1000:.1f}k" for rate in rates)


def ingest(client, config: CountingConfig, settings: Settings) -> list[dict]:
    """apply_batch events/s with the log on and off, two workloads (see the module doc)."""
    configs = (dataclasses.replace(config, event_log=False), config)
    keys = zipf_keys(INGEST_EVENTS)
    cases = {"ids+users": True, "no ids/users": False}
    runs: dict[str, list[list[tuple[float, float]]]] = {case: [] for case in cases}
    for cfg in configs:  # every key exists before the first timed round
        apply(client, cfg, make_events(INGEST_EVENTS, f"warm-{cfg.event_log}-", keys))
    drain(client, config, settings)
    for round_ in range(ROUNDS):
        for case, with_ids in cases.items():
            pair = tuple(make_events(INGEST_EVENTS, f"r{round_}{case}{on}-", keys)
                         for on in (0, 1))
            if not with_ids:
                pair = tuple([dataclasses.replace(e, id=None, user=None) for e in events]
                             for events in pair)
            runs[case].append(_ingest_round(client, configs, pair))
            drain(client, config, settings)
    rows = []
    for case in cases:
        ratio = _median([off[0] / on[0] for off, on in runs[case]])
        for on in (0, 1):
            seconds, in_redis = (_median([run[on][i] for run in runs[case]]) for i in (0, 1))
            rates = [INGEST_EVENTS / run[on][0] for run in runs[case]]
            rows.append({"case": f"ingest {case}, log {'on' if on else 'off (baseline)'}",
                         "per_s": _median(rates), "vs_base": f"{ratio:.2f}" if on else "",
                         "target": ">= 0.85" if on else "", "rounds": _spread(rates),
                         "redis_us_per_ev": round(in_redis * 1e6 / INGEST_EVENTS, 2),
                         "client_us_per_ev": round((seconds - in_redis) * 1e6 / INGEST_EVENTS,
                                                   2)})
    return rows


def _truncate(conn) -> None:
    conn.execute("TRUNCATE events")


def _sizes(conn) -> tuple[int, int, int]:
    """(table, index, total) bytes of the events hypertable, TOAST counted with the table."""
    table, index, toast, total = conn.execute(
        "SELECT table_bytes, index_bytes, toast_bytes, total_bytes "
        "FROM hypertable_detailed_size('events')").fetchone()
    return table + toast, index, total


def _raw_copy(conn, text: bytes) -> None:
    with conn.transaction(), conn.cursor() as cur, cur.copy(archive.COPY_EVENTS) as out:
        out.write(text)


def _archive_rate(client, conn, config: CountingConfig, settings: Settings) -> tuple:
    """(events/s of archive_run draining the log into an empty table, the table's sizes)."""
    _truncate(conn)
    results: list[archive.RunResult] = []
    seconds = timed(lambda: results.append(drain(client, config, settings)))
    assert results[0].rows == ARCHIVE_EVENTS, results[0]
    return ARCHIVE_EVENTS / seconds, _sizes(conn)


def _raw_rate(conn, text: bytes) -> float:
    """events/s of one COPY of the log's text into an empty table."""
    _truncate(conn)
    return ARCHIVE_EVENTS / timed(lambda: _raw_copy(conn, text))


def archive_and_disk(client, config: CountingConfig, settings: Settings) -> list[dict]:
    """Archive rows/s against a raw COPY of the same text, and the table's size per 1M events."""
    rows = []
    keys = zipf_keys(ARCHIVE_EVENTS, seed=2)
    # As the owner: the bench empties `events` between rounds (TRUNCATE is not tally_app's).
    with psycopg.connect(settings.postgres_owner_dsn, autocommit=True) as conn:
        for shape, build in SHAPES.items():
            archived, raw, sizes = [], [], []
            for round_ in range(ROUNDS):
                apply(client, config, build(ARCHIVE_EVENTS, f"a{round_}-", keys))
                text = log_text(client, config)
                if round_ % 2:
                    raw.append(_raw_rate(conn, text))
                rate, size = _archive_rate(client, conn, config, settings)
                archived.append(rate)
                sizes.append(size)
                if not round_ % 2:
                    raw.append(_raw_rate(conn, text))
            raw_rate, archive_rate = _median(raw), _median(archived)
            rows += [{"case": f"archive {shape}: raw COPY of the log text (baseline)",
                      "per_s": raw_rate, "vs_base": "", "target": "", "rounds": _spread(raw)},
                     {"case": f"archive {shape}: archive_run, {ARCHIVE_EVENTS:,} backlog",
                      "per_s": archive_rate, "vs_base": f"{archive_rate / raw_rate:.2f}",
                      "target": ">= 0.5", "rounds": _spread(archived)}]
            table, index, total = (_median([s[i] for s in sizes]) for i in range(3))
            scale = 1_000_000 / ARCHIVE_EVENTS / 2**20
            rows.append({"case": f"disk {shape}: events per 1M archived",
                         "mb_per_million": round(total * scale, 1),
                         "table_mb": round(table * scale, 1), "index_mb": round(index * scale, 1),
                         "text_mb": round(len(text) * scale, 1)})
        _truncate(conn)
    return rows


def used(client) -> int:
    """INFO memory used_memory in bytes."""
    return client.info("memory")["used_memory"]


def memory(client, config: CountingConfig) -> list[dict]:
    """used_memory growth per 1,000 events with the log on minus off: the log's own cost."""
    off = dataclasses.replace(config, event_log=False)
    keys = zipf_keys(MEMORY_EVENTS, seed=3)
    rows = []
    for shape, build in SHAPES.items():
        grown: dict[bool, list[int]] = {False: [], True: []}
        text_bytes = 0
        for round_ in range(ROUNDS):
            for on in (bool(round_ % 2), not round_ % 2):
                client.flushall()
                cfg = config if on else off
                apply(client, cfg, [Event("warm", f"w{i}", NOW, id=f"w{i}", user=f"u{i}")
                                    for i in range(2 * BATCH)])  # scripts cached, allocator warm
                client.delete(*(s.keys.log for s in handoff.discover(client, config.shards)))
                events = build(MEMORY_EVENTS, f"m{round_}-", keys)
                before = used(client)
                apply(client, cfg, events)
                grown[on].append(used(client) - before)
                if on:
                    text_bytes = len(log_text(client, config))
        log_bytes = _median(grown[True]) - _median(grown[False])
        rows.append({"case": f"redis memory {shape}: unarchived log",
                     "log_bytes_per_1k": round(log_bytes * 1000 / MEMORY_EVENTS),
                     "text_bytes_per_1k": round(text_bytes * 1000 / MEMORY_EVENTS),
                     "counting_bytes_per_1k": round(_median(grown[False]) * 1000
                                                      / MEMORY_EVENTS)})
    return rows


def run(settings: Settings) -> list[dict]:
    """Every case: Redis of our own, bench/run's PostgreSQL (its `events` table is emptied)."""
    config = dataclasses.replace(CountingConfig.from_settings(settings), event_log=True)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_ports(1)[0]
        password = settings.redis_password  # the stack's, as its own Redis has
        with services.running(services.redis(port, Path(tmp) / "data", password=password),
                              Path(tmp) / "log"), \
                redis.Redis(port=port, password=password or None) as client:
            settings = settings.with_(redis_port=port, redis_url="")
            apply(client, config, make_events(2 * BATCH, "warm", zipf_keys(2 * BATCH)))
            drain(client, config, settings)
            return (ingest(client, config, settings) + archive_and_disk(client, config, settings)
                    + memory(client, config))

