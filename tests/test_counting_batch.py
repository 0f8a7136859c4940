"""Targeted tests of the batch step: exact sums, dedup windows, script reloads, stats, marks."""

from __future__ import annotations

import pytest

from tally import keys
from tally.errors import CountOverflowError
from tally.events import MAX_VALUE, Event
from tally.ingest.counting import reads
from tally.ingest.counting.batch import BatchResult, apply_batch
from tally.ingest.counting.config import CountingConfig
from tests.test_api_support import snapshot

NOW = 1_800_000_123
CONFIG = CountingConfig()


def event(key="k", ts=NOW, value=1, id=None, user=None, counter="views") -> Event:
    """A validated event with defaults."""
    return Event(counter=counter, key=key, ts=ts, value=value, id=id, user=user)


def test_sums_past_2_53_stay_exact(redis_client):
    """Lua sums in doubles; a batch summing past 2^53 must still store the exact integer."""
    apply_batch(redis_client, CONFIG, [event(value=MAX_VALUE)] * 3, now=NOW)
    assert reads.total(redis_client, CONFIG, "views", "k") == 3 * MAX_VALUE
    assert reads.bucket_values(redis_client, CONFIG, "views", "k", "m", [NOW // 60]) == {
        NOW // 60: 3 * MAX_VALUE}
    stats = redis_client.hgetall(keys.shard_keys("views", keys.key_shard("k", 16)).stats)
    # The shard statistic is a float, as Prometheus reads it; the counts above are exact.
    assert stats[b"events"] == b"3" and float(stats[b"value"]) == float(3 * MAX_VALUE)


def test_sums_past_2_53_across_batches_stay_exact(redis_client):
    """A stored value plus a batch's sum past 2^53 is written with HINCRBY, not from a double."""
    for _ in range(3):
        apply_batch(redis_client, CONFIG, [event(value=MAX_VALUE - 1)], now=NOW)
    assert reads.total(redis_client, CONFIG, "views", "k") == 3 * (MAX_VALUE - 1)
    assert reads.bucket_values(redis_client, CONFIG, "views", "k", "d", [NOW // 86400]) == {
        NOW // 86400: 3 * (MAX_VALUE - 1)}


@pytest.mark.parametrize("mode", ["exact", "bloom"])
@pytest.mark.parametrize("offset", [0, 1, 24, 49, 50, 51, 99])
def test_an_id_is_remembered_for_the_whole_window(redis_client, mode, offset):
    """An id seen at any point of a dedup generation is still a duplicate `window` s later."""
    config = CountingConfig(dedup_mode=mode, dedup_window=100)
    start = NOW - NOW % 50 + offset
    assert apply_batch(redis_client, config, [event(id="x")], now=start) == BatchResult(1, 0)
    assert apply_batch(redis_client, config, [event(id="x")], now=start + 99) == BatchResult(0, 1)


def test_a_duplicate_inside_one_batch_counts_once(redis_client):
    """The second copy of an id in the same batch is a duplicate too."""
    result = apply_batch(redis_client, CONFIG, [event(id="a"), event(id="a"), event()], now=NOW)
    assert result == BatchResult(2, 1)
    assert reads.total(redis_client, CONFIG, "views", "k") == 2


def test_dedup_is_per_counter(redis_client):
    """The same id under two counters is two events."""
    batch = [event(id="a"), event(id="a", counter="plays")]
    assert apply_batch(redis_client, CONFIG, batch, now=NOW) == BatchResult(2, 0)


@pytest.mark.parametrize("mode", ["exact", "bloom"])
@pytest.mark.parametrize("cluster", [False, True])
def test_dedup_identity_is_counter_key_and_id(redis_client, redis_cluster_client, mode, cluster):
    """The same id with two keys is two events, whatever their shards; id and key again is one."""
    client = redis_cluster_client if cluster else redis_client
    config = CountingConfig(dedup_mode=mode, shards=4)
    # Keys in the same shard and in different shards, so no shard layout hides a bug.
    others = [k for k in ("a", "b", "c", "d", "e", "f", "g") if k != "k"]
    same = next(k for k in others if keys.key_shard(k, 4) == keys.key_shard("k", 4))
    other = next(k for k in others if keys.key_shard(k, 4) != keys.key_shard("k", 4))
    batch = [event(id="x"), event(key=same, id="x"), event(key=other, id="x")]
    assert apply_batch(client, config, batch, now=NOW) == BatchResult(3, 0)
    assert apply_batch(client, config, batch, now=NOW + 1) == BatchResult(0, 3)
    assert apply_batch(client, config, [event(id="x")] * 2, now=NOW + 2) == BatchResult(0, 2)
    for key in ("k", same, other):
        assert reads.total(client, config, "views", key) == 1


def test_script_flush_is_survived(redis_client, redis_cluster_client):
    """After SCRIPT FLUSH (a restart or failover) the next batch reloads the script and counts."""
    for client in (redis_client, redis_cluster_client):
        apply_batch(client, CONFIG, [event(key=f"k{i}") for i in range(20)], now=NOW)
        client.script_flush()
        assert apply_batch(client, CONFIG, [event(key=f"k{i}") for i in range(20)], now=NOW) == (
            BatchResult(20, 0))
        assert reads.total(client, CONFIG, "views", "k7") == 2


def test_stats_and_dirty_marks(redis_client):
    """Each shard's stats count events, duplicates, value and the unarchived log; touched
    minutes are dirty per sink."""
    apply_batch(redis_client, CONFIG, [event(id="a", value=5), event(id="a", value=5)], now=NOW)
    shard = keys.shard_keys("views", keys.key_shard("k", 16))
    assert redis_client.hgetall(shard.stats) == {b"events": b"1", b"duplicates": b"1",
                                                 b"value": b"5", b"log_backlog": b"1"}
    for sink in CONFIG.sinks:
        assert redis_client.zrange(shard.dirty(sink), 0, -1, withscores=True) == [
            (keys.dirty_member(NOW // 60, "k").encode(), NOW)]
    assert redis_client.smembers(keys.COUNTERS) == {b"views"}


def test_unique_views_count_a_user_once_per_day(redis_client):
    """One view per user per key per day; all time sums the days."""
    day = NOW // 86400
    batch = [event(user="u1"), event(user="u1", ts=NOW - 1), event(user="u2"),
             event(user="u1", ts=NOW - 86_000)]
    apply_batch(redis_client, CONFIG, batch, now=NOW)
    assert reads.unique_views(redis_client, CONFIG, "views", "k", day) == 2
    assert reads.unique_views(redis_client, CONFIG, "views", "k", (NOW - 86_000) // 86400) == 1
    assert reads.unique_views(redis_client, CONFIG, "views", "k") == 3


@pytest.mark.parametrize("mode", ["exact", "bloom"])
def test_an_id_is_forgotten_after_one_and_a_half_windows(redis_client, mode):
    """Generations bound memory: 1.5 windows later the same id counts again."""
    config = CountingConfig(dedup_mode=mode, dedup_window=100)
    assert apply_batch(redis_client, config, [event(id="x")], now=NOW) == BatchResult(1, 0)
    assert apply_batch(redis_client, config, [event(id="x")], now=NOW + 150) == BatchResult(1, 0)


def test_thousands_of_users_for_one_key(redis_client):
    """Variadic writes are chunked below Lua's unpack limit (10,000 users of one key)."""
    batch = [event(user=f"u{n}", id=f"i{n}") for n in range(10_000)]
    assert apply_batch(redis_client, CONFIG, batch, now=NOW) == BatchResult(10_000, 0)
    assert reads.unique_views(redis_client, CONFIG, "views", "k", NOW // 86400) == 10_000


def test_batch_that_would_overflow_a_total_changes_nothing(redis_client):
    """A batch that could push a key's total past 64 bits is refused before any write."""
    big = [Event("views", "k", NOW, value=2**53 - 1) for _ in range(1000)]
    apply_batch(redis_client, CONFIG, big, now=NOW)
    before = snapshot(redis_client)
    more = [Event("views", "k", NOW, value=2**53 - 1, id=f"x{i}", user="u") for i in range(30)]
    with pytest.raises(CountOverflowError, match="all-time total of key k would pass 9.2e18"):
        apply_batch(redis_client, CONFIG, more, now=NOW)
    assert snapshot(redis_client) == before
    assert apply_batch(redis_client, CONFIG, more[:1], now=NOW) == BatchResult(1, 0)


def test_near_the_limit_only_a_key_that_would_overflow_is_refused(redis_client):
    """The shard statistic passing the limit makes the script read key totals, not refuse."""
    one_shard = CountingConfig(shards=1)
    apply_batch(redis_client, one_shard, [event("a", value=MAX_VALUE)] * 1020, now=NOW)
    assert apply_batch(redis_client, one_shard, [event("b", value=MAX_VALUE)] * 10,
                       now=NOW) == BatchResult(10, 0)
    with pytest.raises(CountOverflowError, match="key a would pass"):
        apply_batch(redis_client, one_shard, [event("a", value=MAX_VALUE)] * 10, now=NOW)
    assert reads.total(redis_client, one_shard, "views", "b") == 10 * MAX_VALUE
