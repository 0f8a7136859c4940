"""Raw Redis round trips and pipelined INCRBY: the ceiling any ingest path stays under."""

import time

import redis

NEEDS = {"redis"}
OPS = 20_000


def _rate(seconds: float, ops: int) -> float:
    return ops / seconds


def run(settings) -> list[dict]:
    """Time single PINGs and pipelined INCRBYs against the bench Redis."""
    with redis.Redis.from_url(settings.redis_url) as client:
        start = time.perf_counter()
        for _ in range(2_000):
            client.ping()
        ping = _rate(time.perf_counter() - start, 2_000)
        start = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for i in range(OPS):
            pipe.incrby(f"bench:{i % 100}", 1)
        pipe.execute()
        incr = _rate(time.perf_counter() - start, OPS)
    return [{"case": "PING round trip", "ops_per_s": ping},
            {"case": "pipelined INCRBY", "ops_per_s": incr}]
