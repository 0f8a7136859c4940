"""Every key Tally creates is one the key scheme (tally/keys.py) describes, and no Lua script
spells a name of its own."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest

from tally import keys
from tally.events import Event
from tally.ingest.counting import leaderboard, ratelimit
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig
from tally.ingest.counting.loader import COUNTING, FLUSHER
from tally.ingest.flusher import handoff
from tests.flusher_support import flush_all, make_settings

NOW = 1_800_000_123


def traffic(now: int) -> list[Event]:
    """Events with and without ids and users, a hot key, and late ones (hours and a day back)."""
    events = []
    for n in range(40):
        ts = now - (0, 0, 90, 7_200, 86_400)[n % 5]
        events.append(Event("views", f"k{n % 7}", ts, id=f"id{n}" if n % 2 else None,
                            user=f"u{n % 4}" if n % 3 else None))
    events += [Event("views", "hot", now - n, id=f"h{n}", user=f"u{n}") for n in range(12)]
    return events


def apply_everything(client, config: CountingConfig) -> None:
    """Batches (with a retried one), leaderboards with an Idempotency-Key, rate limits."""
    apply_batch(client, config, traffic(NOW), now=NOW)
    apply_batch(client, config, traffic(NOW), now=NOW)  # retries: duplicates
    leaderboard.update(client, "game", "alice", 10, capacity=5)
    leaderboard.update(client, "game", "bob", 3, increment=True, idempotency_key="req-1")
    ratelimit.hit(client, "ingest", "token-a", 10, 60)


def scheme_match(name: str) -> bool:
    return any(p.fullmatch(name) for p in keys.patterns())


def strange_keys(client) -> list[str]:
    """Every key in Redis that no pattern of the key scheme describes."""
    return [n.decode() for n in client.scan_iter(count=1000) if not scheme_match(n.decode())]


@pytest.mark.parametrize("mode", ["exact", "bloom"])
def test_every_key_after_all_features_is_in_the_scheme(redis_client, redis_url,
                                                       pg_dsn, influx, mode):
    """Count, flush to both sinks (featured sets, locks), take marks in flight, then SCAN."""
    settings = make_settings(redis_url, pg_dsn, influx, influx_top_n=2, dedup_mode=mode,
                             hot_keys="views=hot=3")
    config = CountingConfig.from_settings(settings)
    apply_everything(redis_client, config)
    flush_all(redis_client, settings)
    apply_batch(redis_client, config, traffic(NOW + 60), now=NOW + 60)
    shards = handoff.discover(redis_client, config.shards)
    handoff.take(redis_client, shards, "timescale", handoff.new_token(), 100, NOW + 600)
    names = [n.decode() for n in redis_client.scan_iter(count=1000)]
    kinds = {"inflight:", "leases:", "featured:", "uvc:", "top:", "cu:", "u:", "lb:{",
             ":idem:", "rl:{", "ids:" if mode == "exact" else "bloom:"}
    assert {k for k in kinds if any(k in n for n in names)} == kinds
    assert strange_keys(redis_client) == []


def test_a_name_outside_the_scheme_is_found(redis_client):
    """The check can fail: a key no template describes is reported."""
    apply_batch(redis_client, CountingConfig(), traffic(NOW), now=NOW)
    redis_client.set(keys.tag("views", 0) + "uvx:all", 1)
    assert strange_keys(redis_client) == [keys.tag("views", 0) + "uvx:all"]


_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")


def _name_pieces() -> set[str]:
    """Literal text of every template of the scheme (two characters or more), and ':'."""
    templates = [keys.TAG, keys.DIRTY_MEMBER, *keys.SHARD_NAMES.values(),
                 *keys.GLOBAL_NAMES.values()]
    pieces = {":"}
    for template in templates:
        for literal in re.split(r"\{[a-z_]+\}", template.replace("{{", "{").replace("}}", "}")):
            if len(literal) >= 2:
                pieces.add(literal)
    return pieces


@pytest.mark.parametrize("package", [COUNTING, FLUSHER])
def test_no_script_spells_a_name(package):
    """Outside comments, no Lua string is a name word or holds a piece with a colon."""
    pieces = _name_pieces()
    for path in (files(package) / "lua").iterdir():
        if not path.name.endswith(".lua"):
            continue
        code = "\n".join(line.split("--")[0] for line in path.read_text().splitlines())
        for match in _STRING.finditer(code):
            text = match.group(1) if match.group(1) is not None else match.group(2)
            found = [p for p in pieces if text == p or (p != ":" and ":" in p and p in text)]
            assert not found, f"{path.name}: {text!r} spells {found}"
