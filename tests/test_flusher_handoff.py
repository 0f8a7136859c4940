"""The Lua handoff: take leases marks, restore keeps the earliest score, recover needs expiry."""

from __future__ import annotations

from tally import keys
from tally.ingest.flusher import handoff

SHARD = handoff.Shard("views", 0)


def _dirty(client) -> dict:
    return {m.decode(): s for m, s in client.zrange(SHARD.keys.dirty("influx"), 0, -1,
                                                     withscores=True)}


def test_take_restore_keeps_earliest_score(redis_client):
    """A failed run's marks return to dirty with the earlier of both first-dirty times."""
    redis_client.zadd(SHARD.keys.dirty("influx"), {"5:a": 100, "6:b": 200, "7:c": 300})
    marks = handoff.take(redis_client, [SHARD], "influx", "t1", 2, 1000)
    assert [(m.minute, m.key, m.score) for m in marks] == [(5, "a", 100), (6, "b", 200)]
    redis_client.zadd(SHARD.keys.dirty("influx"), {"5:a": 150}, nx=True)  # re-marked by ingest
    assert handoff.restore(redis_client, [SHARD], "influx", "t1") == 2
    assert _dirty(redis_client) == {"5:a": 100, "6:b": 200, "7:c": 300}
    assert not redis_client.exists(SHARD.keys.leases("influx"), SHARD.keys.inflight("influx", "t1"))


def test_recover_returns_only_expired_leases(redis_client):
    """Live leases stay in flight; expired ones go back to dirty."""
    redis_client.zadd(SHARD.keys.dirty("influx"), {keys.dirty_member(5, "a:b"): 100, "6:b": 200})
    handoff.take(redis_client, [SHARD], "influx", "old", 1, 50)
    handoff.take(redis_client, [SHARD], "influx", "live", 1, 5000)
    assert handoff.oldest(redis_client, [SHARD], "influx") == 100
    assert handoff.recover(redis_client, [SHARD], "influx", now=60) == 1
    assert _dirty(redis_client) == {"5:a:b": 100}
    assert redis_client.zrange(SHARD.keys.leases("influx"), 0, -1) == [b"live"]
