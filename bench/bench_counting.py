"""Counting core throughput against naive client code and redis-benchmark, plus hot keys and memory.

All cases run in one process against servers this module starts itself (a
redis-server and a three-primary cluster on free ports, appendonly yes as in
production), so the figures compare like with like. Standalone:
`.venv/bin/python bench/bench_counting.py`; under the runner: `bench/run -k counting`.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis
from redis.cluster import RedisCluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tally.events import Event  # noqa: E402
from tally.ingest.counting import reads  # noqa: E402
from tally.ingest.counting.batch import apply_batch  # noqa: E402
from tally.ingest.counting.config import CountingConfig  # noqa: E402
from tally.stack import services  # noqa: E402
from tally.stack.cluster import create_cluster  # noqa: E402
from tally.stack.process import free_ports  # noqa: E402

NEEDS: set[str] = set()  # starts its own servers
BATCH = 1000
NOW = int(time.time())


def zipf_keys(n: int, keys: int = 10_000, s: float = 1.1, seed: int = 1) -> list[str]:
    """n keys drawn from a Zipf(s) distribution over `keys` keys (a few very popular)."""
    weights = [1 / (rank ** s) for rank in range(1, keys + 1)]
    return [f"video:{k}" for k in random.Random(seed).choices(range(keys), weights, k=n)]


def make_events(n: int, prefix: str, keys: list[str] | None = None, users: bool = True) -> list:
    """n distinct events (unique ids) for the counter "views"."""
    keys = keys or zipf_keys(n)
    return [Event("views", keys[i], NOW, id=f"{prefix}{i}", user=f"u{i % 100_000}" if users
                  else None) for i in range(n)]


def timed(work) -> float:
    """Seconds taken by work()."""
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def naive(client, events) -> None:
    """(a) per event: SADD the id to a dedup set, INCR the key if new; one round trip each."""
    for e in events:
        if client.sadd("naive:ids", e.id):
            client.incr(f"naive:{e.key}")


def pipelined(client, events) -> None:
    """(b) the same in client pipelines: SADD a batch, then INCR the new ones (two round trips)."""
    for start in range(0, len(events), BATCH):
        chunk = events[start:start + BATCH]
        pipe = client.pipeline(transaction=False)
        for e in chunk:
            pipe.sadd("pipe:ids", e.id)
        added = pipe.execute()
        for e, new in zip(chunk, added, strict=True):
            if new:
                pipe.incr(f"pipe:{e.key}")
        pipe.execute()


def tally(client, config: CountingConfig, events) -> None:
    """(c) Tally's batch step: dedup, minute/hour/day, totals, HLL, unique views, top-k, dirty."""
    for start in range(0, len(events), BATCH):
        apply_batch(client, config, events[start:start + BATCH], now=NOW)


def redis_benchmark(port: int) -> float:
    """(d) `redis-benchmark -P 16 -t incr`: requests/s, the server's ceiling for plain INCR."""
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-P", "16", "-t", "incr",
                          "-n", "1000000", "-q"], capture_output=True, text=True, check=True)
    return float(re.search(r"INCR: ([\d.]+) requests per second", out.stdout).group(1))


def throughput(client, port: int, n: int = 50_000) -> list[dict]:
    """Cases (a)-(d) on one Redis, with ratios to the ceiling (d) and to naive code (a)."""
    config = CountingConfig()
    keys = zipf_keys(n)
    tally(client, config, make_events(2000, "warm", keys))  # load the script, warm the pool
    naive_events, pipe_events = make_events(n // 5, "a", keys), make_events(n, "b", keys)
    full, no_users = make_events(n, "c", keys), make_events(n, "e", keys, users=False)
    rates = {
        "a naive SADD+INCR per event": n // 5 / timed(lambda: naive(client, naive_events)),
        "b client pipeline SADD+INCR": n / timed(lambda: pipelined(client, pipe_events)),
        "c tally apply_batch (1,000/batch)": n / timed(lambda: tally(client, config, full)),
        "c' same, events without users": n / timed(lambda: tally(client, config, no_users)),
        "d redis-benchmark -P 16 -t incr": redis_benchmark(port),
    }
    a, d = rates["a naive SADD+INCR per event"], rates["d redis-benchmark -P 16 -t incr"]
    return [{"case": case, "events_per_s": rate, "x_naive": round(rate / a, 1),
             "pct_of_ceiling": round(100 * rate / d, 1)} for case, rate in rates.items()]


def prebuilt_rate(client, config, batches) -> float:
    """apply_batch events/s over prebuilt batches (event construction not timed)."""
    seconds = timed(lambda: [apply_batch(client, config, b, now=NOW) for b in batches])
    return sum(len(b) for b in batches) / seconds


def hot_key(cluster, n: int = 30_000) -> list[dict]:
    """One key gets every event: spread over 1 shard versus all 16 shards of a 3-node cluster."""
    rows = []
    for spread in (1, 16):
        cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
        config = CountingConfig(hot_keys={("views", "hot"): spread})
        events = make_events(n, f"hot{spread}-", keys=["hot"] * n)
        batches = [events[i:i + BATCH] for i in range(0, n, BATCH)]
        rate = prebuilt_rate(cluster, config, batches)
        assert reads.total(cluster, config, "views", "hot") == n
        rows.append({"case": f"cluster, one hot key, spread {spread}", "events_per_s": rate})
    return rows


def hot_key_single(client, n: int = 30_000) -> list[dict]:
    """The same on one Redis: spreading only changes key names, the server is still one thread."""
    rows = []
    for spread in (1, 16):
        client.flushall()
        config = CountingConfig(hot_keys={("views", "hot"): spread})
        events = make_events(n, f"hs{spread}-", keys=["hot"] * n)
        batches = [events[i:i + BATCH] for i in range(0, n, BATCH)]
        rows.append({"case": f"one Redis, one hot key, spread {spread}",
                     "events_per_s": prebuilt_rate(client, config, batches)})
    return rows


def memory(client, n: int = 200_000) -> list[dict]:
    """used_memory growth per million distinct ids, exact sets versus Bloom (1M, 0.1%).

    64 keys without users put ids in every shard while the counts themselves
    stay a few hundred bytes, so the growth is the dedup state. A Bloom
    filter is sized up front, so its figure is the fixed size of one
    generation's filters (capacity 1M), not a per-id cost.
    """
    rows = []
    for mode in ("exact", "bloom"):
        client.flushall()
        config = CountingConfig(dedup_mode=mode)
        events = make_events(n, mode, keys=[f"k{i % 64}" for i in range(n)], users=False)
        before = client.info("memory")["used_memory"]
        tally(client, config, events)
        grown = client.info("memory")["used_memory"] - before
        rows.append({"case": f"dedup memory, {mode}, {n:,} ids", "mb_used": round(grown / 2**20, 1),
                     "mb_per_million_ids": round(grown * 1_000_000 / n / 2**20, 1)})
    return rows


@contextmanager
def servers():
    """A throwaway redis-server and a three-primary cluster; yields (port, client, cluster)."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        root, ports = Path(tmp), free_ports(7)
        stack.enter_context(services.running(services.redis(ports[0], root / "single"),
                                             root / "single.log"))
        for i in range(3):
            node = services.redis(ports[1 + i], root / f"n{i}", cluster_port=ports[4 + i])
            stack.enter_context(services.running(node, root / f"n{i}.log"))
        create_cluster(ports[1:4])
        client = stack.enter_context(redis.Redis(port=ports[0]))
        cluster = RedisCluster(host="127.0.0.1", port=ports[1])
        stack.callback(cluster.close)
        yield ports[0], client, cluster


def run(settings=None) -> list[dict]:
    """Every case; `settings` (from bench/run) is unused because the servers are our own."""
    with servers() as (port, client, cluster):
        return (throughput(client, port) + hot_key_single(client) + hot_key(cluster)
                + memory(client))


if __name__ == "__main__":
    for row in run():
        print("  ".join(f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items()))
