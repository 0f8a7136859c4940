"""The raw event log: every counted event reaches TimescaleDB's `events` once, and only those."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import psycopg
import pytest
from redis.cluster import RedisCluster

from tally import keys
from tally.errors import CountOverflowError, EventLogFullError
from tally.events import Event
from tally.ingest.api import close_app
from tally.ingest.counting import reads
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import archive
from tally.redis_connect import disconnect
from tests.flusher_support import make_settings
from tests.reference_model import ReferenceModel
from tests.test_api_support import W, make_app

HOSTILE_KEYS = ["video:1", "a b", "back\\slash", "tab-free\\t", "ключ", "🎬", "{brace}", "x,y=z",
                "quote'\"", "\\N", *[f"k{i}" for i in range(12)]]
PROPS = [None, {"country": "DE"}, {"country": "FR", "plan": "pro"},
         {"path": "/a\\b", "q": "\"quoted\" \\N {json}"}, {"emoji": "🎬", "ru": "ключ"}]


def _settings(redis_url, pg_dsn, **overrides):
    return make_settings(redis_url, pg_dsn, "http://127.0.0.1:1", **overrides)


def _events(rng: random.Random, now: float, n: int) -> list[Event]:
    """Events of every shape (id or not, user or not, props or not), ~30% retried, shuffled."""
    events = []
    for _ in range(n):
        late = rng.choice([0, 0, 0, 30, 4000, 20 * 3600])
        event = Event(counter=rng.choice(["views", "plays"]), key=rng.choice(HOSTILE_KEYS),
                      ts=int(now - late - rng.randrange(60)), value=rng.choice([1, 1, 2, 7]),
                      id=rng.choice([None, f"ev-{rng.getrandbits(48):x}"]),
                      user=rng.choice([None, f"user-{rng.randrange(9)}", "ü\\ser"]),
                      props=rng.choice(PROPS))
        events.append(event)
        if rng.random() < 0.3:
            events.append(event)
    rng.shuffle(events)
    return events


def _row(event: Event) -> tuple:
    return (event.ts, event.counter, event.key, event.id, event.user, event.value,
            json.dumps(event.props, sort_keys=True) if event.props else None)


def stored_events(dsn: str) -> Counter:
    """Every row of `events` as a multiset of _row tuples."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute('SELECT extract(epoch FROM ts)::bigint, counter, key, id, "user", '
                            "value, props FROM events").fetchall()
    return Counter((ts, c, k, i, u, v, json.dumps(p, sort_keys=True) if p else None)
                   for ts, c, k, i, u, v, p in rows)


def archive_all(client, settings) -> archive.RunResult:
    """One archiver run in this process."""
    archiver = archive.EventArchiver.from_settings(settings)
    try:
        return archive.archive_run(client, CountingConfig.from_settings(settings), archiver,
                                   settings)
    finally:
        archiver.close()


def backlog(client, config: CountingConfig) -> tuple[int, int]:
    """(events counted as unarchived in the shards' stats, entries in the log streams)."""
    events = entries = 0
    for counter in ("views", "plays"):
        for shard in range(config.shards):
            names = keys.shard_keys(counter, shard)
            events += int(client.hget(names.stats, "log_backlog") or 0)
            entries += client.xlen(names.log)
    return events, entries


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
def test_events_table_holds_each_accepted_event_exactly_once(request, cluster, pg_dsn):
    """Duplicates, retried batches, late events, hostile keys and props: `events` equals the
    model's accepted events row for row, with archiver runs between batches."""
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    client = request.getfixturevalue("redis_cluster_client" if cluster else "redis_client")
    settings = _settings(url, pg_dsn, redis_cluster=cluster)
    config = CountingConfig.from_settings(settings)
    rng, model, now = random.Random(11), ReferenceModel(), time.time() - 3600
    for step in range(8):
        batch = _events(rng, now, 120)
        assert apply_batch(client, config, batch, now=now) == model.apply(batch, int(now))
        if step in (2, 3):  # a retried batch (its events with an id are duplicates) with new ones
            retry = [e for e in batch if e.id is not None] + _events(rng, now, 30)
            rng.shuffle(retry)
            assert apply_batch(client, config, retry, now=now) == model.apply(retry, int(now))
        if step % 3 == 1:
            archive_all(client, settings)
        now += 200
    archive_all(client, settings)
    assert stored_events(pg_dsn) == Counter(_row(e) for e in model.logged)
    assert backlog(client, config) == (0, 0)


def _raw(event: Event, rng: random.Random) -> dict:
    """The event as a client sends it: optional fields left out, ts as a number or RFC 3339."""
    raw = {"counter": event.counter, "key": event.key, "value": event.value,
           "ts": event.ts if rng.random() < 0.5 else
           datetime.fromtimestamp(event.ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    raw |= {name: getattr(event, name) for name in ("id", "user", "props")
            if getattr(event, name) is not None}
    return raw


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
def test_events_posted_through_the_api_are_logged_exactly_once(request, cluster, pg_dsn):
    """The same, through the real API: retried requests, late and out-of-order events,
    hostile keys and props; every answer's counts equal the model's."""
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    client = request.getfixturevalue("redis_cluster_client" if cluster else "redis_client")
    app = make_app(url, redis_cluster=cluster, rate_limits="api=100000/60", shards=4)
    api = app.test_client()
    settings = _settings(url, pg_dsn, redis_cluster=cluster)
    rng, model = random.Random(29), ReferenceModel()
    try:
        for step in range(6):
            now = time.time()
            batch = _events(rng, now - 60, 80)
            body = [_raw(e, rng) for e in batch]
            for _ in range(2 if step % 2 else 1):  # odd steps: the request is sent twice
                answer = api.post("/v1/events", json=body, headers=W)
                assert answer.status_code == 200, answer.json
                accepted, duplicates = model.apply(batch, int(time.time()))
                assert answer.json == {"accepted": accepted, "duplicates": duplicates}
            if step == 3:
                archive_all(client, settings)
    finally:
        close_app(app)
    archive_all(client, settings)
    assert stored_events(pg_dsn) == Counter(_row(e) for e in model.logged)


def test_received_is_when_the_batch_was_counted(redis_client, redis_url, pg_dsn):
    """`received` holds the batch step's time to the millisecond, `ts` the event's own second."""
    settings = _settings(redis_url, pg_dsn)
    now = time.time() - 100.5
    apply_batch(redis_client, CountingConfig.from_settings(settings),
                [Event("views", "k", int(now) - 50, props={"a": "b"})], now=now)
    archive_all(redis_client, settings)
    with psycopg.connect(pg_dsn) as conn:
        ts, received, props = conn.execute("SELECT ts, received, props FROM events").fetchone()
    assert ts == datetime.fromtimestamp(int(now) - 50, UTC)
    assert abs(received.timestamp() - now) < 0.001 and props == {"a": "b"}


def test_refused_batch_leaves_no_log_entry(redis_client, redis_url, pg_dsn):
    """A batch the script refuses (count overflow) is neither counted nor logged."""
    settings = _settings(redis_url, pg_dsn)
    config = CountingConfig.from_settings(settings)
    now = time.time()
    big = 2**53 - 1
    apply_batch(redis_client, config, [Event("views", "k", int(now), value=big)] * 1, now=now)
    with pytest.raises(CountOverflowError):
        apply_batch(redis_client, config,
                    [Event("views", "other", int(now)), *[Event("views", "k", int(now), value=big,
                                                                 id=f"i{i}") for i in range(1100)]],
                    now=now)
    assert backlog(redis_client, config) == (1, 1)
    assert reads.total(redis_client, config, "views", "other") == 0
    archive_all(redis_client, settings)
    assert sum(stored_events(pg_dsn).values()) == 1


def test_failed_log_append_undoes_the_other_appends(redis_client, redis_url, pg_dsn):
    """On one Redis a batch over several shards appends one entry per shard first; when one
    append fails (a stream whose last ID is the largest there is), the others are deleted
    again and nothing of the batch counts."""
    settings = _settings(redis_url, pg_dsn)
    config = CountingConfig.from_settings(settings)
    now = int(time.time())
    blocked = keys.shard_keys("views", keys.key_shard("k1", config.shards)).log
    redis_client.xadd(blocked, {"x": "y"}, id="18446744073709551615-18446744073709551615")
    redis_client.xdel(blocked, "18446744073709551615-18446744073709551615")
    batch = [Event("views", f"k{i}", now) for i in range(12)]
    assert len({keys.key_shard(e.key, config.shards) for e in batch}) > 1
    with pytest.raises(Exception, match="exhausted|ID"):
        apply_batch(redis_client, config, batch, now=now)
    assert all(reads.total(redis_client, config, "views", e.key) == 0 for e in batch)
    assert backlog(redis_client, config) == (0, 0)


def test_log_off_writes_no_stream(redis_client, redis_url, pg_dsn):
    """TALLY_EVENT_LOG=off: counting as before, no log stream, no backlog."""
    settings = _settings(redis_url, pg_dsn, event_log=False)
    config = CountingConfig.from_settings(settings)
    apply_batch(redis_client, config, [Event("views", "k", int(time.time()), id="a")])
    assert reads.total(redis_client, config, "views", "k") == 1
    assert not redis_client.keys("*log") and backlog(redis_client, config) == (0, 0)


def test_full_log_refuses_whole_batches_until_archived(redis_client, redis_url, pg_dsn):
    """Past TALLY_EVENT_LOG_MAX a batch counts nothing (EventLogFullError); archiving frees it."""
    settings = _settings(redis_url, pg_dsn, event_log_max=10, shards=4)
    config = CountingConfig.from_settings(settings)
    now, model = int(time.time()), ReferenceModel()
    first = [Event("views", "k", now, id=f"a{i}") for i in range(10)]
    assert apply_batch(redis_client, config, first, now=now) == model.apply(first, now)
    refused = [Event("views", "k", now, id="b"), Event("views", "other", now)]
    with pytest.raises(EventLogFullError, match="not yet archived"):
        apply_batch(redis_client, config, refused, now=now)
    assert reads.total(redis_client, config, "views", "k") == 10
    assert reads.total(redis_client, config, "views", "other") == 0
    archive_all(redis_client, settings)
    assert apply_batch(redis_client, config, refused, now=now) == model.apply(refused, now)
    archive_all(redis_client, settings)
    assert stored_events(pg_dsn) == Counter(_row(e) for e in model.logged)


def test_full_shard_refuses_a_cluster_batch_before_any_shard_counts(
        redis_cluster_client, redis_cluster_url, pg_dsn):
    """On a cluster a batch over a full shard and others counts in none of them (503, not a
    500 partially-applied), also from a process that never saw the shard fill."""
    settings = _settings(redis_cluster_url, pg_dsn, redis_cluster=True, event_log_max=10)
    config = CountingConfig.from_settings(settings)
    now = int(time.time())
    apply_batch(redis_cluster_client, config, [Event("views", "k", now)] * 10, now=now)
    spread = [Event("views", f"k{i}", now) for i in range(40)]
    assert len({keys.key_shard(e.key, config.shards) for e in spread}) > 2
    fresh = RedisCluster.from_url(redis_cluster_url)  # as another process, that saw nothing
    try:
        for client in (redis_cluster_client, fresh):
            with pytest.raises(EventLogFullError):
                apply_batch(client, config, [*spread, Event("views", "k", now)], now=now)
    finally:
        disconnect(fresh)
    assert all(reads.total(redis_cluster_client, config, "views", e.key) == 0 for e in spread)
    assert backlog(redis_cluster_client, config) == (10, 1)


def test_a_log_emptied_by_hand_stops_refusing(redis_client, redis_url, pg_dsn):
    """Entries deleted by hand leave a backlog with nothing behind it; the archiver's next
    run sees the empty stream and clears it, so ingest is not refused for ever."""
    settings = _settings(redis_url, pg_dsn, event_log_max=5, shards=4)
    config = CountingConfig.from_settings(settings)
    now = int(time.time())
    apply_batch(redis_client, config, [Event("views", "k", now)] * 5, now=now)
    redis_client.delete(keys.shard_keys("views", keys.key_shard("k", 4)).log)
    with pytest.raises(EventLogFullError):
        apply_batch(redis_client, config, [Event("views", "k", now)], now=now)
    archive_all(redis_client, settings)
    assert backlog(redis_client, config) == (0, 0)
    assert apply_batch(redis_client, config, [Event("views", "k", now)], now=now) == (1, 0)


def test_entries_stored_but_not_trimmed_are_not_stored_again(redis_client, redis_url, pg_dsn):
    """A crash between the commit and the trim: the next run stores nothing twice."""
    settings = _settings(redis_url, pg_dsn)
    config = CountingConfig.from_settings(settings)
    model, now = ReferenceModel(), time.time()
    batch = _events(random.Random(3), now, 50)
    model.apply(batch, int(now))
    apply_batch(redis_client, config, batch, now=now)
    shards = [keys_shard for keys_shard in archive.handoff.discover(redis_client, config.shards)]
    archiver = archive.EventArchiver.from_settings(settings)
    try:
        entries = archive.read_entries(redis_client, shards, 1000)
        assert archiver.store(entries) == entries  # committed, then "killed" before the trim
    finally:
        archiver.close()
    result = archive_all(redis_client, settings)
    assert (result.rows, result.recovered) == (0, len(entries))
    assert stored_events(pg_dsn) == Counter(_row(e) for e in model.logged)
    assert backlog(redis_client, config) == (0, 0)


def test_racing_archivers_store_each_entry_once(redis_client, redis_url, pg_dsn):
    """Two archivers storing the same entries at once (a lost lock): the positions, locked in
    the same transaction as the COPY, let exactly one of them store each entry."""
    settings = _settings(redis_url, pg_dsn)
    config = CountingConfig.from_settings(settings)
    model, now = ReferenceModel(), time.time()
    for seed in range(4):
        batch = _events(random.Random(seed), now, 40)
        model.apply(batch, int(now))
        apply_batch(redis_client, config, batch, now=now)
    shards = archive.handoff.discover(redis_client, config.shards)
    entries = archive.read_entries(redis_client, shards, 1000)
    stored, barrier = [], threading.Barrier(4)

    def race() -> None:
        archiver = archive.EventArchiver.from_settings(settings)
        try:
            barrier.wait()
            stored.append(archiver.store(entries))
        finally:
            archiver.close()

    threads = [threading.Thread(target=race) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(s) for s in stored) == [0, 0, 0, len(entries)]
    assert stored_events(pg_dsn) == Counter(_row(e) for e in model.logged)
