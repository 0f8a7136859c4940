"""Redis memory per new key and per dedup id, part by part, with how long each part is kept.

Against a real redis-server this module starts (appendonly yes, no
maxmemory), the real batch step applies:

- one event with a user to each of NEW_KEYS keys never seen before
  (`video:<6 digits>`, 12 bytes; users `user-<7 digits>`), without ids, so no
  dedup state is involved; then every kind of key they created is deleted
  in turn (`DEL`, synchronous), and the drop in `INFO memory used_memory` per
  new key is that part's cost, next to its TTL as Redis reports it;
- IDS events with distinct ids on 64 keys that already exist, without
  users, in each dedup mode: the growth per id is the dedup state's cost.

A counter of its own is warmed first (scripts cached, allocator warm), so
only the measured counter's keys are deleted. Standalone:
`.venv/bin/python bench/bench_memory.py`; under the runner: `bench/run -k memory`.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tally.events import Event  # noqa: E402
from tally.ingest.counting.batch import apply_batch  # noqa: E402
from tally.ingest.counting.config import CountingConfig  # noqa: E402
from tally.settings import Settings  # noqa: E402
from tally.stack import services  # noqa: E402
from tally.stack.process import free_ports  # noqa: E402

NEEDS: set[str] = set()  # starts its own redis-server
NEW_KEYS = 20_000
IDS = 200_000
BATCH = 1000
NOW = 1_780_000_000 + 12 * 3600  # a fixed noon (UTC), so TTLs do not depend on the hour
# The kind of a key: its name after the hash tag, up to the first time index or key.
KIND = re.compile(r"^\{[^}]*\}(u:[mhd]|cu:[hd]|uvc:all|top:all|dirty:\w+|[a-z]+)")


def kind(name: bytes) -> str:
    """Kind of a Tally key, e.g. `u:m` for a per-key minute HyperLogLog."""
    found = KIND.match(name.decode(errors="replace"))
    return found.group(1) if found else name.decode(errors="replace")


def used(client) -> int:
    """INFO memory used_memory in bytes."""
    return client.info("memory")["used_memory"]


def apply(client, config: CountingConfig, events: list[Event]) -> None:
    """Apply events through the real batch step, BATCH at a time."""
    for start in range(0, len(events), BATCH):
        apply_batch(client, config, events[start:start + BATCH], now=NOW)


def warm(client, config: CountingConfig) -> None:
    """Cache the scripts and warm the allocator on a counter that is never measured."""
    apply(client, config, [Event("warm", f"w{i}", NOW, id=f"w{i}", user=f"u{i}")
                           for i in range(2 * BATCH)])


def _kept(name: str, ttl: int) -> str:
    """How long a kind of key stays: its TTL, or until the flusher drains it, or forever."""
    if name.startswith("dirty"):
        return "until flushed"
    return "forever" if ttl == -1 else f"{ttl / 3600:.0f} h"


def _order(name: str, ttl: int) -> tuple[int, int]:
    """Dirty marks first (gone in seconds), then by TTL, the kinds without a TTL last."""
    return (0, 0) if name.startswith("dirty") else (2, 0) if ttl == -1 else (1, ttl)


def _keys_by_kind(client, counter: str) -> dict[str, list[bytes]]:
    found = defaultdict(list)
    for name in client.scan_iter(match=f"{{t:{counter}:*", count=1000):
        found[kind(name)].append(name)
    return found


def new_key_costs(client, settings: Settings) -> list[dict]:
    """Bytes per new key with a user, part by part (deleting each kind), and how long kept."""
    config = CountingConfig.from_settings(settings)
    warm(client, config)
    before = used(client)
    apply(client, config, [Event("bench", f"video:{i:06}", NOW, user=f"user-{i:07}")
                           for i in range(NEW_KEYS)])
    total = used(client) - before
    rows = []
    parts = _keys_by_kind(client, "bench")
    ttls = {k: client.ttl(names[0]) for k, names in parts.items()}
    for name in sorted(parts, key=lambda k: _order(k, ttls[k])):
        start = used(client)
        client.delete(*parts[name])
        rows.append({"case": f"new key with a user: {name}", "keys": len(parts[name]),
                     "bytes_per_key": round((start - used(client)) / NEW_KEYS, 1),
                     "kept": _kept(name, ttls[name])})
    rows.append({"case": f"new key with a user: all ({NEW_KEYS:,} keys)",
                 "bytes_per_key": round(total / NEW_KEYS, 1), "kept": "see parts"})
    return rows


def dedup_costs(client, settings: Settings) -> list[dict]:
    """Bytes per dedup id in both modes, on 64 keys that exist already (only dedup grows)."""
    rows = []
    for mode in ("exact", "bloom"):
        client.flushall()
        config = CountingConfig.from_settings(settings.with_(dedup_mode=mode))
        warm(client, config)
        keys = [f"video:{i:06}" for i in range(64)]
        apply(client, config, [Event("bench", key, NOW) for key in keys])
        before = used(client)
        apply(client, config, [Event("bench", keys[i % 64], NOW, id=f"{i:032x}")
                               for i in range(IDS)])
        grown = used(client) - before
        name = "ids" if mode == "exact" else "bloom"
        state = _keys_by_kind(client, "bench")[name]
        note = "" if mode == "exact" else ", a fixed size per generation"
        rows.append({"case": f"dedup id, {mode} ({IDS:,} ids of 32 bytes{note})",
                     "keys": len(state), "bytes_per_id": round(grown / IDS, 1),
                     "kept": _kept(name, client.ttl(state[0])), "mb": round(grown / 2**20, 1)})
    return rows


def run(settings: Settings | None = None) -> list[dict]:
    """Every case against a redis-server of our own; bench/run's settings give the defaults."""
    settings = (settings or Settings()).with_(dedup_mode="exact")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_ports(1)[0]
        password = settings.redis_password
        with services.running(services.redis(port, Path(tmp) / "data", password=password),
                              Path(tmp) / "log"), \
                redis.Redis(port=port, password=password or None) as client:
            return new_key_costs(client, settings) + dedup_costs(client, settings)


if __name__ == "__main__":
    for row in run():
        print("  ".join(f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items()))
