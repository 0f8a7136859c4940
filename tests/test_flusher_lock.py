"""The sink lock: one holder, a fence that grows with every holder, a heartbeat that keeps a
live holder's lock past its lease, and a lease that runs out when the holder stops."""

from __future__ import annotations

import random
import time

import psycopg
import pytest

from tally import keys
from tally.errors import ConfigError
from tally.ingest.flusher import handoff, lock
from tally.settings import load_settings
from tests.flusher_support import expected, flush_all, ingest, make_settings, stored_pg, stream
from tests.reference_model import ReferenceModel


def test_one_holder_and_a_growing_fence(redis_client):
    first = lock.acquire(redis_client, "influx", "a", 5.0)
    assert isinstance(first, lock.Lease) and first.fence == 1
    busy = lock.acquire(redis_client, "influx", "b", 5.0)
    assert isinstance(busy, lock.Busy) and 4.0 < busy.retry_in <= 5.0
    with first:
        first.verify()
    second = lock.acquire(redis_client, "influx", "b", 5.0)  # dropped on exit: free at once
    assert isinstance(second, lock.Lease) and second.fence == 2


def test_heartbeat_outlives_the_lease_and_a_stopped_holder_loses_it(redis_client):
    held = lock.acquire(redis_client, "timescale", "a", 0.6)
    with held:
        time.sleep(1.5)  # over twice the lease: renewed by the heartbeat meanwhile
        assert isinstance(lock.acquire(redis_client, "timescale", "b", 0.6), lock.Busy)
        held.verify()
    stale = lock.acquire(redis_client, "timescale", "a", 0.6)  # no heartbeat: runs out
    time.sleep(0.8)
    successor = lock.acquire(redis_client, "timescale", "b", 0.6)
    assert isinstance(successor, lock.Lease) and successor.fence == stale.fence + 1
    with pytest.raises(lock.LockLost, match="another flusher took the lock of sink timescale"):
        stale.verify()
    assert redis_client.hget(keys.flusher_lock("timescale"), "owner") == b"b"


def test_fence_rises_above_one_timescale_kept_when_redis_lost_the_lock(redis_client, redis_url,
                                                                     pg_dsn, influx):
    """Redis emptied (the lock hash gone) while sink_fence holds 1000: the next holder's fence
    is raised past it, and its writes commit."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO sink_fence VALUES ('timescale', 1000) "
                     "ON CONFLICT (sink) DO UPDATE SET fence = 1000")
    settings = make_settings(redis_url, pg_dsn, influx, sinks=("timescale",))
    model, now = ReferenceModel(), time.time() - 60
    ingest(redis_client, settings, model, stream(random.Random(1), now, 50, ["a", "b"]), now)
    flush_all(redis_client, settings)
    assert int(redis_client.hget(keys.flusher_lock("timescale"), "fence")) == 1001
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT fence FROM sink_fence WHERE sink = 'timescale'"
                            ).fetchone() == (1001,)
    assert stored_pg(pg_dsn) == expected(model)


@pytest.mark.parametrize("which", ["single", "cluster"])
def test_reclaim_takes_live_leases_and_remark_restores_earliest_scores(which, request):
    """The new holder's reclaim returns marks whose lease has not run out; a re-mark puts marks
    back that someone else already released, keeping the earlier score of a re-marked one."""
    client = request.getfixturevalue("redis_client" if which == "single"
                                     else "redis_cluster_client")
    shards = [handoff.Shard("views", 0), handoff.Shard("views", 1)]
    for shard in shards:
        client.zadd(shard.keys.dirty("influx"), {"5:a": 100, "6:b": 200})
    marks = handoff.take(client, shards, "influx", "dead", 10, time.time() + 120)
    assert len(marks) == 4 and handoff.recover(client, shards, "influx", time.time()) == 0
    assert handoff.reclaim(client, shards, "influx") == 4
    assert not client.exists(shards[0].keys.inflight("influx", "dead"))
    taken = handoff.take(client, shards, "influx", "next", 10, time.time() + 120)
    handoff.release(client, shards, "influx", "next")
    client.zadd(shards[0].keys.dirty("influx"), {"5:a": 150})  # re-marked by ingest meanwhile
    assert handoff.remark(client, "influx", taken) == 4
    for shard in shards:
        dirty = dict(client.zrange(shard.keys.dirty("influx"), 0, -1, withscores=True))
        assert dirty == {b"5:a": 100, b"6:b": 200}


def test_a_too_short_lock_is_refused_by_name():
    with pytest.raises(ConfigError, match="TALLY_FLUSH_LOCK_SECONDS must be at least 0.5, not 0.1"):
        load_settings({"TALLY_FLUSH_LOCK_SECONDS": "0.1"})
    assert load_settings({}).flush_lock_seconds == 6.0
