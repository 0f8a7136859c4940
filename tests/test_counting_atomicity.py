"""A refused batch changes no Redis key; an accepted one equals the reference model.

apply.lua reads and checks everything before its first write (see the top
of the script). These tests put every kind of obstacle in its way — counts
at the 64-bit limit, keys of a foreign type, malformed stored numbers — and
compare every key byte for byte (DUMP and expiry) before and after.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tally import keys
from tally.errors import CountOverflowError, RedisStateError
from tally.events import MAX_VALUE, Event
from tally.ingest.counting import eventlog, reads
from tally.ingest.counting.batch import BatchResult, apply_batch
from tally.ingest.counting.config import CountingConfig
from tests.redis_dump import changed, dump_all
from tests.reference_model import Overflow, ReferenceModel, mismatches
from tests.test_counting_property import flush

NOW = 1_800_000_123
CONFIG = CountingConfig()
SHARD = keys.shard_keys("views", keys.key_shard("k", CONFIG.shards))
DAY, HOUR, MINUTE = NOW // 86400, NOW // 3600, NOW // 60
GENERATION = NOW // (CONFIG.dedup_window // 2)
REGISTRY = keys.COUNTERS.encode()


def refusal(client, config, events, now=NOW) -> Exception:
    """Apply a batch that must be refused; return the error once no key has changed."""
    before = dump_all(client)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is checked by the caller
        apply_batch(client, config, events, now=now)
    assert changed(before, dump_all(client)) == []
    return caught.value


@pytest.mark.parametrize("cluster", [False, True])
def test_overflow_by_events_with_a_user_and_no_id_changes_nothing(
        redis_client, redis_cluster_client, cluster):
    """The issue's reproduction: 1,100 events of 2^53 - 1 with a user and no id."""
    client = redis_cluster_client if cluster else redis_client
    apply_batch(client, CONFIG, [Event("ovf", "other", NOW)], now=NOW)  # registers "ovf"
    batch = [Event("ovf", "P", NOW, value=MAX_VALUE, user="u")] * 1100
    error = refusal(client, CONFIG, batch)
    assert isinstance(error, CountOverflowError)
    assert str(error).startswith("the all-time total of key P would pass 9.2e18")
    assert (error.accepted, error.duplicates) == (0, 0)
    assert apply_batch(client, CONFIG, batch[:1], now=NOW) == BatchResult(1, 0)
    assert reads.total(client, CONFIG, "ovf", "P") == MAX_VALUE


def test_the_first_refused_batch_does_not_register_its_counter(redis_client):
    """On one Redis the registry is written by the script, so a refusal leaves it alone too."""
    error = refusal(redis_client, CONFIG, [Event("ovf", "P", NOW, value=MAX_VALUE)] * 1100)
    assert isinstance(error, CountOverflowError)
    assert redis_client.exists(keys.COUNTERS) == 0


def test_a_later_group_overflowing_refuses_the_groups_before_it(redis_client):
    """On one Redis every group is planned before any is written (one call per batch)."""
    first = [Event("views", f"k{i}", NOW, id=f"i{i}", user="u") for i in range(50)]
    error = refusal(redis_client, CONFIG,
                    first + [Event("views", "P", NOW, value=MAX_VALUE, user="u")] * 1100)
    assert isinstance(error, CountOverflowError)


def test_a_hot_key_is_bounded_per_shard_so_its_shards_sum_within_64_bits(redis_client):
    """Spread over 4 shards, each shard takes at most 9.2e18 / 4 of the key's total."""
    config = CountingConfig(hot_keys={("views", "hot"): 4})
    one_shard = [Event("views", "hot", NOW, value=MAX_VALUE, user="u1")]
    assert apply_batch(redis_client, config, one_shard * 255, now=NOW) == BatchResult(255, 0)
    error = refusal(redis_client, config, one_shard)
    assert isinstance(error, CountOverflowError)
    assert "a hot key over 4 shards: 9.2e18 / 4 per shard" in str(error)


def poison_string(client, name):
    """Make `name` a string."""
    client.delete(name)
    client.set(name, "x")


def poison_list(client, name):
    """Make `name` a list."""
    client.delete(name)
    client.rpush(name, "x")


def poison_hash(client, name):
    """Make `name` a hash."""
    client.delete(name)
    client.hset(name, "x", "1")


# (what, key name, how it is spoiled, expected words of the refusal)
FOREIGN = [
    ("minute bucket", SHARD.bucket("m", MINUTE), poison_string, "holds a string, not a hash"),
    ("day bucket", SHARD.bucket("d", DAY), poison_list, "holds a list, not a hash"),
    ("total", SHARD.total, poison_string, "not a hash"),
    ("viewers", SHARD.viewers(DAY, "k"), poison_string, "holds a string, not a set"),
    ("unique views of the day", SHARD.unique_views(DAY), poison_string, "not a hash"),
    ("unique views all time", SHARD.unique_views(None), poison_list, "not a hash"),
    ("top of the day", SHARD.top(DAY), poison_string, "holds a string, not a zset"),
    ("top all time", SHARD.top(None), poison_hash, "holds a hash, not a zset"),
    ("dirty marks", SHARD.dirty("influx"), poison_list, "holds a list, not a zset"),
    ("dedup ids", SHARD.dedup_ids(GENERATION), poison_string, "holds a string, not a set"),
    ("older dedup ids", SHARD.dedup_ids(GENERATION - 2), poison_hash, "not a set"),
    ("stats", SHARD.stats, poison_string, "not a hash"),
    ("registry", keys.COUNTERS, poison_string, "holds a string, not a set"),
]


@pytest.mark.parametrize(("what", "name", "poison", "words"), FOREIGN,
                         ids=[row[0] for row in FOREIGN])
def test_a_key_of_a_foreign_type_refuses_the_batch_before_any_write(
        redis_client, what, name, poison, words):
    """Whatever key holds a foreign type, the batch changes nothing and names the key."""
    apply_batch(redis_client, CONFIG, [Event("views", "k", NOW - 86_400, id="old", user="u0")],
                now=NOW)
    poison(redis_client, name)
    batch = [Event("views", "k", NOW, value=MAX_VALUE, id=f"e{i}", user="u1") for i in range(3)]
    error = refusal(redis_client, CONFIG, batch)
    assert isinstance(error, RedisStateError), error
    assert words in str(error)


@pytest.mark.parametrize(("name", "poison"), [
    (SHARD.hll("m", MINUTE, "k"), poison_list),
    (SHARD.hll("h", HOUR, "k"), poison_string),
    (SHARD.counter_hll("d", DAY), poison_hash),
], ids=["minute HLL a list", "hour HLL a string", "counter HLL a hash"])
def test_a_foreign_key_where_a_hyperloglog_goes_is_left_alone_and_logged(
        redis_client, caplog, name, poison):
    """PFADD, the one write allowed to fail: that key stays as it was, the batch counts."""
    poison(redis_client, name)
    before = redis_client.dump(name)
    batch = [Event("views", "k", NOW, id=f"e{i}", user="u1") for i in range(3)]
    assert apply_batch(redis_client, CONFIG, batch, now=NOW) == BatchResult(3, 0)
    assert redis_client.dump(name) == before
    assert reads.total(redis_client, CONFIG, "views", "k") == 3
    assert reads.unique_views(redis_client, CONFIG, "views", "k", DAY) == 1
    assert f"Redis key {name!r} holds data Tally cannot update" in caplog.text


@pytest.mark.parametrize(("field_of", "value", "words"), [
    (lambda: (SHARD.stats, "events"), "1.5", "events of {t:views:"),
    (lambda: (SHARD.stats, "value"), "lots", "field value of"),
    (lambda: (SHARD.bucket("m", MINUTE), "k"), "abc", "is not a count"),
    (lambda: (SHARD.total, "k"), "12.5", "is not an integer"),
])
def test_a_malformed_stored_number_refuses_the_batch(redis_client, field_of, value, words):
    """A field HINCRBY/HINCRBYFLOAT could not add to is found before the first write."""
    name, field = field_of()
    redis_client.hset(name, field, value)
    batch = [Event("views", "k", NOW, value=MAX_VALUE, id=f"e{i}", user="u1") for i in range(3)]
    error = refusal(redis_client, CONFIG, batch)
    assert isinstance(error, RedisStateError), error
    assert words in str(error)


def test_bloom_filter_of_a_foreign_type_refuses_the_batch(redis_client):
    config = CountingConfig(dedup_mode="bloom")
    redis_client.sadd(SHARD.bloom(GENERATION), "x")
    error = refusal(redis_client, config, [Event("views", "k", NOW, id="a")])
    assert isinstance(error, RedisStateError)
    assert "holds a set, not a string" in str(error)


# ---------------------------------------------------------------------------
# The property: every event shape, with and without counts at the limit.

AGES = [0, 61, 3700, 86_000]
VALUES = [1, 7, 2**40, MAX_VALUE]
PRELOAD = 1020  # events of MAX_VALUE for key P: 9.187e18, so two more overflow and one fits
spec = st.fixed_dictionaries({
    "key": st.sampled_from(["P", "k", "hot", "{x}"]), "value": st.sampled_from(VALUES),
    "age": st.sampled_from(AGES), "id": st.sampled_from([None, None, "a", "b", "c"]),
    "user": st.sampled_from([None, "u1", "u2", "🙂"]),
    "props": st.sampled_from([None, {"c": "DE"}, {"q": "a\\b", "n": "🙂"}])})
batch_specs = st.tuples(st.lists(spec, min_size=1, max_size=12), st.integers(0, 3))
stream_specs = st.tuples(
    st.booleans(), st.sampled_from([(False, None), (True, None), (False, "u"), (True, "u")]),
    st.lists(batch_specs, min_size=1, max_size=5))


HOT_USERS = {"a": "u1", "b": None, "c": "🙂"}


def event_of(raw: dict, now: int) -> Event:
    """A validated event from a drawn spec."""
    value, user = raw["value"], raw["user"]
    if raw["key"] == "hot":
        # Top-k scores are doubles and a hot key's shards are summed as integers: stay below
        # 2^53. A retry of a hot key's event carries its user (the user picks the shard).
        value = min(value, 2**40)
        user = HOT_USERS.get(raw["id"], user)
    return Event("views", raw["key"], now - raw["age"], value=value, id=raw["id"], user=user,
                 props=raw["props"])


def batches_of(draw, rng: random.Random) -> list[list[Event]]:
    """The preload (if drawn), then each drawn batch plus its extra MAX_VALUE events for P."""
    preload, (with_id, user), drawn = draw
    batches = []
    if preload:
        batches.append([Event("views", "P", NOW, value=MAX_VALUE, user=user,
                              id=f"p{i}" if with_id else None) for i in range(PRELOAD)])
    for specs, extra in drawn:
        events = [event_of(raw, NOW) for raw in specs]
        events += [Event("views", "P", NOW - rng.choice(AGES), value=MAX_VALUE,
                         user=rng.choice([None, "u1"]),
                         id=rng.choice([None, f"x{rng.random()}"])) for _ in range(extra)]
        rng.shuffle(events)
        batches.append(events)
    return batches


def only_keys_of_other_tags(before: dict, after: dict, tag: str) -> None:
    """A cluster batch partly counted: the refused tag's keys are unchanged."""
    assert [n for n in changed(before, after) if n.startswith(tag.encode())] == []


def logged(client, config: CountingConfig) -> Counter:
    """The lines in the log streams of counter views, without their `received` column."""
    lines: Counter = Counter()
    for shard in range(config.shards):
        names = keys.shard_keys("views", shard)
        for _, fields in client.xrange(names.log):
            lines.update(line.rsplit(b"\t", 1)[0] for line in fields[b"e"].splitlines())
    return lines


def model_lines(model: ReferenceModel) -> Counter:
    """The lines the model's counted events have in the log (without `received`)."""
    return Counter(eventlog.line(e, "-").rsplit(b"\t", 1)[0] for e in model.logged)


def check_stream(client, config: CountingConfig, draw, seed: int) -> None:
    """Apply the batches to Redis and to the model: refusals agree and change nothing."""
    flush(client)
    rng, model = random.Random(seed), ReferenceModel(dedup_window=config.dedup_window)
    for n, events in enumerate(batches_of(draw, rng)):
        now = NOW + n
        before = dump_all(client)
        try:
            result = apply_batch(client, config, events, now=now)
        except CountOverflowError as exc:
            event("a batch refused for overflow")
            with pytest.raises(Overflow):
                model.apply(events, now)
            if exc.accepted or exc.duplicates:  # a cluster counted the batch's other tags
                event("a cluster batch counted in part")
                only_keys_of_other_tags(before, dump_all(client),
                                        keys.tag("views", keys.key_shard("P", config.shards)))
                return  # the model cannot tell which of the other events counted
            assert changed(before, dump_all(client)) == []
        else:
            assert tuple(result) == model.apply(events, now)
    assert mismatches(client, config, model, "views", k=5) == []
    assert logged(client, config) == model_lines(model)  # in the log iff counted


CONFIGS = {
    "exact": CountingConfig(hot_keys={("views", "hot"): 4}),
    "bloom": CountingConfig(dedup_mode="bloom", bloom_capacity=100_000, bloom_error_rate=1e-9,
                            hot_keys={("views", "hot"): 4}),
}
PROPERTY = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("name", CONFIGS)
@PROPERTY
@given(draw=stream_specs, seed=st.integers(0, 2**32))
def test_refused_batches_change_nothing_on_one_redis(redis_client, name, draw, seed):
    """Every shape of event, counts at the limit, both dedup modes, a hot key: one Redis."""
    check_stream(redis_client, CONFIGS[name], draw, seed)


@pytest.mark.parametrize("name", CONFIGS)
@PROPERTY
@given(draw=stream_specs, seed=st.integers(0, 2**32))
def test_refused_batches_change_nothing_on_a_cluster(redis_cluster_client, name, draw, seed):
    """The same on a three-primary cluster (each hash tag's call is atomic on its own)."""
    check_stream(redis_cluster_client, CONFIGS[name], draw, seed)


def test_a_unique_view_count_that_is_no_number_is_left_alone_and_logged(redis_client, caplog):
    """uvc:* counts are read after SADD answers: a field holding no number is skipped, logged."""
    redis_client.hset(SHARD.unique_views(DAY), "k", "many")
    batch = [Event("views", "k", NOW, id="e", user="u1")]
    assert apply_batch(redis_client, CONFIG, batch, now=NOW) == BatchResult(1, 0)
    assert redis_client.hget(SHARD.unique_views(DAY), "k") == b"many"
    assert redis_client.hget(SHARD.unique_views(None), "k") == b"1"
    assert f"Redis key '{SHARD.unique_views(DAY)} k' holds data Tally cannot update" in caplog.text
