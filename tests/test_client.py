"""tally.client on a real `tally serve` and Redis: batching, ids, refusals, the queue, reads."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tally.client import Client, ClientClosed, ProblemError, QueueFull, UnsentEvents
from tests.test_api_support import READ, WRITE, gunicorn


@pytest.fixture(scope="module")
def server(redis_url, tmp_path_factory):
    """Base URL of one `tally serve` (2 workers) on the session's Redis for this file."""
    with gunicorn(redis_url, 2, tmp_path_factory.mktemp("serve"),
                  rate_limits="api=2/60") as (base, _):
        yield base


@pytest.fixture
def make(server, redis_client):
    """Build clients on the server (empty Redis); close them after the test."""
    made = []

    def build(**options) -> Client:
        made.append(Client(server, options.pop("token", WRITE), read_token=READ, **options))
        return made[-1]

    yield build
    for client in made:
        client.close(timeout=10)


def wait_until(probe, timeout: float = 10.0):
    """Poll probe() until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return found


def test_full_batches_leave_at_once_the_rest_waits_for_flush(make):
    client = make(batch_size=10, flush_interval=60)
    for i in range(25):
        client.count("views", f"k{i % 2}")
    wait_until(lambda: client.pending() == 5)
    assert client.totals("views", ["k0", "k1"]) == {"k0": 10, "k1": 10}
    client.flush()
    assert (client.pending(), client.totals("views", ["k0", "k1"])) == (0, {"k0": 13, "k1": 12})


def test_a_partial_batch_leaves_after_the_flush_interval(make):
    client = make(batch_size=1000, flush_interval=0.3)
    started = time.monotonic()
    for _ in range(3):
        client.count("views", "k")
    wait_until(lambda: client.pending() == 0)
    assert 0.3 <= time.monotonic() - started < 3
    assert client.total("views", "k") == 3


def test_every_event_gets_an_id_and_a_given_id_counts_once(make):
    client = make()
    generated = {client.count("views", "k") for _ in range(50)}
    assert len(generated) == 50 and all(len(i) == 32 for i in generated)
    assert {client.count("views", "k", id="order-7", value=5) for _ in range(3)} == {"order-7"}
    client.flush()
    assert client.total("views", "k") == 55


def test_invalid_events_are_reported_with_the_problem_and_the_rest_counts(make):
    client = make()
    client.count("views", "good", id="a")
    client.count("Views", "bad", id="b")
    client.count("views", "good", value=0, id="c")
    client.count("views", "good", id="d")
    with pytest.raises(UnsentEvents) as caught:
        client.flush()
    assert caught.value.pending == 0
    assert [(f.event["id"], f.status, f.reason) for f in caught.value.failed] == [
        ("b", 400, "counter must match [a-z0-9_]{1,64}"),
        ("c", 400, "value must be between 1 and 9007199254740991")]
    assert client.total("views", "good") == 2
    client.flush()  # reported once


def test_a_refused_token_is_reported_not_retried(make):
    client = make(token="not-a-token", give_up_after=60)
    client.count("views", "k")
    started = time.monotonic()
    with pytest.raises(UnsentEvents) as caught:
        client.flush()
    assert time.monotonic() - started < 2
    assert [(f.status, f.reason.split(":")[0]) for f in caught.value.failed] == [
        (401, "401 unauthorized")]


def test_a_full_queue_raises_at_once_with_on_full_raise(make):
    client = make(max_queue=3, on_full="raise", batch_size=100, flush_interval=60)
    for _ in range(3):
        client.count("views", "k")
    with pytest.raises(QueueFull, match="3 events are queued"):
        client.count("views", "k")
    client.flush()
    assert client.total("views", "k") == 3


def test_a_full_queue_blocks_until_room_or_the_timeout(make):
    client = make(max_queue=2, block_timeout=0.3, batch_size=100, flush_interval=60)
    client.count("views", "k")
    client.count("views", "k")
    started = time.monotonic()
    with pytest.raises(QueueFull):
        client.count("views", "k")
    assert time.monotonic() - started >= 0.3
    roomy = make(max_queue=2, block_timeout=10, batch_size=100, flush_interval=60)
    roomy.count("plays", "p")
    roomy.count("plays", "p")
    blocked = threading.Thread(target=roomy.count, args=("plays", "p"))
    blocked.start()
    time.sleep(0.2)
    assert blocked.is_alive()  # waiting for room
    roomy.flush()  # sends the two queued events, which frees room for the third
    blocked.join(5)
    roomy.flush()
    assert roomy.total("plays", "p") == 3


def test_close_delivers_what_is_queued_then_refuses(make):
    client = make(batch_size=100, flush_interval=60)
    for _ in range(7):
        client.count("views", "k")
    client.close()
    with pytest.raises(ClientClosed):
        client.count("views", "k")
    assert make().total("views", "k") == 7


def test_reads_totals_in_bulk_top_series_leaderboards_and_rate_limits(make):
    client = make()
    names = [f"video:{i:05d}" for i in range(600)]  # more than one URL holds
    for i, name in enumerate(names):
        for _ in range(i % 4):
            client.count("views", name, user=f"u{i}")
    client.flush()
    assert client.totals("views", names + ["missing"]) == {
        **{name: i % 4 for i, name in enumerate(names)}, "missing": 0}
    assert client.top("views", 2) == [("video:00003", 3), ("video:00007", 3)]
    assert client.counts("views", "video:00003")["unique_views"]["today"] == 1
    assert sum(p["value"] for p in client.series("views", "video:00003")["points"]) == 3
    client.set_score("board", "ann", 10)
    client.increment("board", "bob", 4)
    assert client.increment("board", "bob", 7, idempotency_key="once")["score"] == 11
    assert client.increment("board", "bob", 7, idempotency_key="once")["score"] == 11
    assert [(e["member"], e["score"]) for e in client.leaderboard("board")] == [
        ("bob", 11), ("ann", 10)]
    assert client.rank("board", "ann")["rank"] == 2 and client.rank("board", "cy") is None
    assert [e["member"] for e in client.around("board", "ann", 1)] == ["bob", "ann"]
    assert [client.check_rate_limit("api", "ip:1")["allowed"] for _ in range(3)] == [
        True, True, False]
    with pytest.raises(ProblemError) as caught:
        client.check_rate_limit("nope", "ip:1")
    assert (caught.value.status, caught.value.type) == (404, "unknown-limit")


AT_EXIT = """
import logging, sys
from tally.client import Client
logging.basicConfig()
client = Client(sys.argv[1], sys.argv[2], flush_interval=60)
for _ in range(9):
    client.count("views", "exit")
del client  # neither flushed nor closed: delivered, or reported, at interpreter exit
"""


@pytest.mark.parametrize(("token", "counted", "report"), [
    (WRITE, 9, ""),
    ("wrong", 0, "ERROR:tally.client:tally client at exit: 9 event(s) not counted, 0 still "
                 "unsent; e.g. 401 unauthorized: the bearer token is not valid\n")])
def test_interpreter_exit_delivers_or_reports(make, server, token, counted, report):
    done = subprocess.run([sys.executable, "-c", AT_EXIT, server, token], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, report)
    assert make().total("views", "exit") == counted
