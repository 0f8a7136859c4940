"""What a failed write answers says whether it happened: not applied, refused, or unknown.

Each test runs its own redis-server, so it can pause it (SIGSTOP: a command
sent meanwhile is read and run once the server resumes, after the client
gave up), stop it, fill it to maxmemory or make it a replica, without
disturbing the session's servers.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager

import pytest
import redis

from tally import keys
from tally.errors import NotAppliedError, OutcomeUnknownError
from tally.events import Event
from tally.ingest.api import close_app
from tally.ingest.counting import leaderboard, reads
from tally.ingest.counting.batch import BatchResult, apply_batch
from tally.ingest.counting.config import CountingConfig
from tally.stack import process, services
from tally.stack.process import free_ports
from tests.redis_dump import changed, dump_all
from tests.test_api_support import W, make_app

NOW = int(time.time())
CONFIG = CountingConfig()
BATCH = [Event("views", f"k{i}", NOW, id=f"e{i}", user="u") for i in range(20)]
PLAIN = [Event("views", "k0", NOW)]  # no id: counts again on every retry


class PrivateRedis:
    """A redis-server of this test only: pause, resume, stop and start it again."""

    def __init__(self, root):
        self.service = services.redis(free_ports(1)[0], root / "data")
        self.log = root / "redis.log"
        self.proc = services.start(self.service, self.log)
        self.url = self.service.url

    def client(self, timeout: float = 1.0) -> redis.Redis:
        """A client that gives up after `timeout` seconds."""
        return redis.Redis.from_url(self.url, socket_timeout=timeout, socket_connect_timeout=1)

    @contextmanager
    def paused(self):
        """SIGSTOP for the with-block; the kernel still accepts and buffers what clients send."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (its append-only file keeps what it had)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process would not exit
            process.stop(self.proc)

    def start(self) -> None:
        """Start it again on the same port and data."""
        self.proc = services.start(self.service, self.log)


@pytest.fixture
def private(tmp_path):
    """A private redis-server, stopped after the test."""
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


def settle(client, seconds: float = 5.0) -> None:
    """Wait until a resumed server has run what it buffered (it answers PING after that)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            client.ping()
            return
        except redis.RedisError:
            time.sleep(0.05)


def test_a_batch_sent_to_a_paused_redis_is_unknown_and_runs_once(private):
    """Sent, then the socket timed out: outcome unknown; Redis ran it once, when it resumed."""
    client = private.client(timeout=1)
    apply_batch(client, CONFIG, PLAIN, now=NOW)  # loads the script
    with private.paused(), pytest.raises(OutcomeUnknownError):
        apply_batch(client, CONFIG, BATCH + PLAIN, now=NOW)
    settle(client)
    assert reads.total(client, CONFIG, "views", "k0") == 3  # PLAIN twice, BATCH's e0 once
    # The retry the answer allows (events with ids) counts nothing twice.
    assert apply_batch(client, CONFIG, BATCH, now=NOW) == BatchResult(0, 20)
    client.close()


def test_a_batch_for_a_stopped_redis_is_not_applied(private):
    """No connection, nothing sent: not applied, so a retry of the whole batch is safe."""
    client = private.client()
    apply_batch(client, CONFIG, PLAIN, now=NOW)
    before = dump_all(client)
    private.stop()
    with pytest.raises(NotAppliedError) as caught:
        apply_batch(client, CONFIG, BATCH + PLAIN, now=NOW)
    assert caught.value.reason == "unavailable"
    private.start()
    assert changed(before, dump_all(client)) == []
    assert apply_batch(client, CONFIG, BATCH + PLAIN, now=NOW) == BatchResult(21, 0)
    client.close()


def test_redis_out_of_memory_refuses_the_batch_whole(private):
    """maxmemory reached with noeviction: Redis refuses the script's first write."""
    client = private.client()
    apply_batch(client, CONFIG, PLAIN, now=NOW)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)
    before = dump_all(client)
    with pytest.raises(NotAppliedError) as caught:
        apply_batch(client, CONFIG, BATCH + PLAIN, now=NOW)
    assert caught.value.reason == "out-of-memory"
    assert changed(before, dump_all(client)) == []
    client.config_set("maxmemory", 0)
    assert apply_batch(client, CONFIG, BATCH + PLAIN, now=NOW) == BatchResult(21, 0)
    client.close()


def test_a_replica_refuses_the_batch(private):
    """A read-only replica (a failover in progress, say) runs nothing: not applied."""
    client = private.client()
    client.replicaof("127.0.0.1", free_ports(1)[0])  # a master that is not there
    with pytest.raises(NotAppliedError) as caught:
        apply_batch(client, CONFIG, BATCH, now=NOW)
    assert caught.value.reason == "read-only"
    client.replicaof("NO", "ONE")
    client.close()


def test_a_busy_redis_refuses_the_batch(private):
    """Another script past busy-reply-threshold: Redis answers BUSY and runs nothing."""
    client = private.client(timeout=5)
    client.config_set("busy-reply-threshold", 50)
    blocker = redis.Connection(port=private.client().get_connection_kwargs()["port"],
                               socket_timeout=5)
    blocker.send_command("EVAL", "local t = redis.call('TIME')[1] + 3 "
                                 "while tonumber(redis.call('TIME')[1]) < t do end", 0)
    time.sleep(0.2)
    with pytest.raises(NotAppliedError) as caught:
        apply_batch(client, CONFIG, BATCH, now=NOW)
    assert caught.value.reason == "busy"
    client.script_kill()
    with pytest.raises(redis.ResponseError):
        blocker.read_response()
    assert reads.total(client, CONFIG, "views", "k1") == 0
    client.close()
    blocker.disconnect()


def test_an_increment_retried_with_its_idempotency_key_counts_once(private):
    """The leaderboard side: unknown outcome, then a retry with the same key applies once."""
    client = private.client(timeout=1)
    leaderboard.update(client, "game", "ann", 5)
    with private.paused(), pytest.raises(OutcomeUnknownError):
        leaderboard.update(client, "game", "ann", 3, increment=True, idempotency_key="k-1")
    settle(client)
    again = leaderboard.update(client, "game", "ann", 3, increment=True, idempotency_key="k-1")
    assert again == (1, "ann", 8.0)
    assert leaderboard.entry(client, "game", "ann") == (1, "ann", 8.0)
    client.close()


# ---------------------------------------------------------------------------
# The HTTP answers: status, problem type, Retry-After.

@pytest.fixture
def private_api(private):
    """An API test client on the private server (the app's Redis timeout: 5 s)."""
    app = make_app(private.url)
    yield app.test_client()
    close_app(app)


def post(api, events):
    """POST events; return (status, problem type or None, Retry-After or None, body)."""
    response = api.post("/v1/events", json=events, headers=W)
    body = response.json
    kind = body.get("type", "").removeprefix("urn:tally:problem:") or None
    return response.status_code, kind, response.headers.get("Retry-After"), body


EVENTS = [{"counter": "views", "key": f"k{i}", "id": f"e{i}"} for i in range(5)]


def test_http_paused_redis_answers_504_outcome_unknown(private, private_api):
    """Sent, no answer within the timeout: 504, and the retry with ids counts nothing twice."""
    assert post(private_api, EVENTS)[0] == 200
    more = [{"counter": "views", "key": "k9", "id": "x"}]
    with private.paused():
        status, kind, _, body = post(private_api, more)
    assert (status, kind) == (504, "outcome-unknown")
    assert "retrying is safe for events with an id" in body["detail"]
    settle(private.client())
    assert post(private_api, more)[3] == {"accepted": 0, "duplicates": 1}


def test_http_increment_with_idempotency_key_after_504(private, private_api):
    """The increment's 504 says to retry with the same key; the retry counts once."""
    url, headers = "/v1/leaderboards/game/increments", {**W, "Idempotency-Key": "try-1"}
    # A warm connection: a new one would wait for the paused server's handshake, unsent.
    private_api.put("/v1/leaderboards/game/scores", json={"member": "bob", "score": 1}, headers=W)
    with private.paused():
        lost = private_api.post(url, json={"member": "ann", "delta": 2}, headers=headers)
    assert (lost.status_code, lost.json["type"]) == (504, "urn:tally:problem:outcome-unknown")
    settle(private.client())
    retried = private_api.post(url, json={"member": "ann", "delta": 2}, headers=headers)
    assert retried.json == {"kept": True, "rank": 1, "member": "ann", "score": 2.0}


def test_http_stopped_redis_answers_503_not_applied(private, private_api):
    private.stop()
    status, kind, retry, body = post(private_api, EVENTS)
    assert (status, kind, retry) == (503, "redis-unavailable", "1")
    assert "nothing was applied" in body["detail"]


def test_http_out_of_memory_answers_503_redis_out_of_memory(private, private_api):
    client = private.client()
    assert post(private_api, EVENTS)[0] == 200
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)
    before = dump_all(client)
    status, kind, retry, body = post(private_api, [{"counter": "views", "key": "new"}])
    assert (status, kind, retry) == (503, "redis-out-of-memory", "10")
    assert "nothing was applied" in body["detail"]
    increment = private_api.post("/v1/leaderboards/game/increments",
                                 json={"member": "ann", "delta": 1}, headers=W)
    assert (increment.status_code, increment.headers["Retry-After"]) == (503, "10")
    assert changed(before, dump_all(client)) == []
    client.config_set("maxmemory", 0)
    client.close()


def test_http_a_key_of_a_foreign_type_answers_500_redis_state_invalid(private, private_api):
    client = private.client()
    shard = keys.shard_keys("views", keys.key_shard("k0", CONFIG.shards))
    client.set(shard.total, "not a hash")
    status, kind, retry, body = post(private_api, EVENTS[:1])
    assert (status, kind, retry) == (500, "redis-state-invalid", None)
    assert body["detail"] == (f"key {shard.total} holds a string, not a hash; "
                              "nothing was applied")
    client.close()
