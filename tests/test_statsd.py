"""The StatsD listener over real UDP and TCP sockets, counting into a real Redis."""

from __future__ import annotations

import json
import os
import random
import re

import pytest
import requests

from tally.errors import ConfigError
from tally.ingest.counting import reads
from tally.ingest.counting.config import CountingConfig
from tally.ingest.statsd.mapping import Mapping
from tally.ingest.statsd.server import serve_metrics
from tests.statsd_support import (
    lines_seen,
    listening,
    logged_events,
    send_tcp,
    send_udp,
    statsd_settings,
    wait_until,
)


def _total(client, settings, counter: str, key: str) -> int:
    return reads.total(client, CountingConfig.from_settings(settings), counter, key)


@pytest.fixture
def settings(redis_url):
    """A listener's settings on the test Redis."""
    return statsd_settings(redis_url)


def _received(listener, lines: int) -> None:
    wait_until(lambda: lines_seen(listener) >= lines)


def test_counters_several_per_packet_with_sample_rates(redis_client, settings):
    with listening(redis_client, settings) as (listener, (udp, _tcp)):
        send_udp(udp, b"app.hits:1|c\napp.hits:2|c\n", b"app.misses:1|c|@0.1")
        _received(listener, 3)
        listener.flush()
    assert _total(redis_client, settings, "app", "hits") == 3
    assert _total(redis_client, settings, "app", "misses") == 10
    assert listener.stats.samples["c"] == 3 and listener.stats.events_applied == 2


def test_fractional_rates_carry_their_remainder_to_the_next_interval(redis_client, settings):
    """1 / 0.3 = 3.33…: intervals count 3, 3, then 4 (the carried 0.99…), 10 in all."""
    totals = []
    with listening(redis_client, settings) as (listener, (udp, _tcp)):
        for sent in range(1, 4):
            send_udp(udp, b"app.sampled:1|c|@0.3")
            _received(listener, sent)
            listener.flush()
            totals.append(_total(redis_client, settings, "app", "sampled"))
    assert totals == [3, 6, 10]


def test_sets_count_unique_users(redis_client, settings):
    config = CountingConfig.from_settings(settings)
    with listening(redis_client, settings) as (listener, (udp, _tcp)):
        send_udp(udp, b"page.home:alice|s\npage.home:bob|s", b"page.home:alice|s")
        _received(listener, 3)
        listener.flush()
    assert reads.unique_views(redis_client, config, "page", "home") == 2
    assert _total(redis_client, settings, "page", "home") == 3  # occurrences
    users = sorted(e["user"] for e in logged_events(redis_client, settings, "page"))
    assert users == ["alice", "bob"]


def test_tags_become_props_in_the_event_log(redis_client, settings):
    with listening(redis_client, settings) as (listener, (udp, _tcp)):
        send_udp(udp, b"shop.orders:2|c|#country:de,plan:pro\nshop.orders:1|c|#beta",
                 b"shop.orders:1|c|#Country-Code:de")  # not a prop name: malformed
        _received(listener, 3)
        listener.flush()
    logged = sorted((e["value"], e["props"]) for e in logged_events(redis_client, settings,
                                                                    "shop"))
    assert logged == [("1", json.dumps({"beta": "true"}, separators=(",", ":"))),
                      ("2", json.dumps({"country": "de", "plan": "pro"},
                                       separators=(",", ":")))]
    assert listener.stats.malformed == {"bad_tag": 1}
    assert _total(redis_client, settings, "shop", "orders") == 3


MAPPING = """
[[mapping]]
match = "debug.*"
drop = true

[[mapping]]
match = "video.*.views"
counter = "views"
key = "video:$1"

[[mapping]]
match = "api.*.*"
counter = "http_$2"
key = "$1"
"""


@pytest.mark.parametrize(("name", "target"), [
    ("video.42.views", ("views", "video:42")),
    ("api.login.OK", ("http_ok", "login")),  # counters are normalised
    ("debug.anything", None),
    ("video.42.plays", ("video", "42.plays")),  # no rule matches: the default mapping
    ("My-App.requests", ("my_app", "requests")),
    ("requests", ("requests", "requests")),
])
def test_mapping_globs_and_the_default_mapping(name, target):
    assert Mapping.from_text(MAPPING).map_name(name) == target


def test_mapped_names_count_where_the_rules_say(redis_client, settings):
    with listening(redis_client, settings, Mapping.from_text(MAPPING)) as (listener,
                                                                           (udp, _tcp)):
        send_udp(udp, b"video.42.views:5|c\ndebug.x:1|c\nvideo.42.plays:1|c")
        _received(listener, 3)
        listener.flush()
    assert _total(redis_client, settings, "views", "video:42") == 5
    assert _total(redis_client, settings, "video", "42.plays") == 1
    assert listener.stats.samples_dropped == {"mapping": 1}


def test_gauges_timers_histograms_distributions_are_refused_and_counted(redis_client,
                                                                         settings):
    with listening(redis_client, settings) as (listener, (udp, _tcp)):
        send_udp(udp, b"app.temp:21|g\napp.latency:12|ms\napp.size:3|h\napp.d:1|d",
                 b"app.latency:14|ms|@0.5")
        _received(listener, 5)
        listener.flush()
        server, _thread = serve_metrics(listener, "127.0.0.1", 0)
        try:
            text = requests.get(f"http://127.0.0.1:{server.server_port}/metrics",
                                timeout=5).text
        finally:
            server.shutdown()
            server.server_close()
    assert listener.stats.refused == {"g": 1, "ms": 2, "h": 1, "d": 1}
    assert 'tally_statsd_refused_total{type="ms"} 2.0' in text
    assert redis_client.keys("*app*") == []


GARBAGE = [b"no_colon", b"x:1", b"x:1|zz", b"x:1|c|@2", b"x:1|c|@0", b"x:-1|c", b"x:abc|c",
           b"x:1|c|@0.5|@0.5", b"x:1|c|T123", b"\xff\xfe:1|c", b":1|c", b"x:1|c|#a:1,a:2",
           b"k." + b"y" * 300 + b":1|c", b"k.\x07bell:1|c"]


def test_malformed_lines_are_counted_and_never_crash_the_listener(redis_client, settings):
    rng = random.Random(7)
    noise = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 1400))) for _ in range(50)]
    with listening(redis_client, settings) as (listener, (udp, tcp)):
        send_udp(udp, b"\n".join(GARBAGE), *noise, os.urandom(65000), b"x" * 65000)
        send_tcp(tcp, os.urandom(200_000) + b"\n", b"\x00" * 20_000 + b"\n")
        wait_until(lambda: listener.stats.udp_packets == 53)
        send_udp(udp, b"app.after:1|c")
        send_tcp(tcp, b"app.after:1|c\n")
        wait_until(lambda: listener.stats.samples["c"] == 2)
        listener.flush()
    malformed = listener.stats.malformed
    assert {"no_value", "no_type", "bad_type", "bad_rate", "negative", "bad_value",
            "bad_field", "not_utf8", "bad_tag", "bad_name", "too_long"} <= set(malformed)
    assert malformed["bad_rate"] == 2 and malformed["bad_field"] == 2
    assert _total(redis_client, settings, "app", "after") == 2


def test_tcp_lines_split_across_reads_and_an_unterminated_tail(redis_client, settings):
    with listening(redis_client, settings) as (listener, (_udp, tcp)):
        send_tcp(tcp, b"tcp.k:1|c\ntcp.k:", b"2|c\ntcp.", b"k:3|c|@0.5\n", b"tcp.k:4|c")
        _received(listener, 4)
        listener.flush()
    assert _total(redis_client, settings, "tcp", "k") == 1 + 2 + 6
    assert listener.stats.malformed == {"unterminated": 1}


def test_past_the_memory_bound_new_targets_are_dropped_and_counted(redis_url, redis_client):
    settings = statsd_settings(redis_url, statsd_max_pending=2)
    with listening(redis_client, settings) as (listener, (udp, _tcp)):
        send_udp(udp, b"m.a:1|c\nm.b:1|c\nm.c:1|c\nm.a:5|c")
        _received(listener, 4)
        listener.flush()
    assert listener.stats.samples_dropped == {"pending_full": 1}
    assert [_total(redis_client, settings, "m", k) for k in "abc"] == [6, 1, 0]


@pytest.mark.parametrize(("text", "message"), [
    ('[[mapping]]\ncounter = "x"', "needs a `match` glob"),
    ('[[mapping]]\nmatch = "a.*"\ncounter = "x"\nlabels = {}', "unknown field(s): labels"),
    ('[[mapping]]\nmatch = "a.*"', "needs a `counter`"),
    ('[[mapping]]\nmatch = "a.*"\ndrop = "yes"', "`drop` must be true or false"),
    ('[mappings]\nmatch = "a.*"', "expected only [[mapping]] tables"),
    ("[[mapping]\n", "cannot read"),
])
def test_a_mapping_file_tally_cannot_use_stops_it_naming_the_problem(text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Mapping.from_text(text)
