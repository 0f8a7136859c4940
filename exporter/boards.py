"""Find leaderboards (`lb:{<board>}` keys) with bounded SCAN work per scrape.

Leaderboards have no registry set, and a full SCAN of a keyspace holding
hundreds of thousands of counting keys would cost far more than a scrape may.
So each scrape advances a SCAN cursor a few steps and remembers the boards
seen; when the cursor wraps, boards not seen in that pass are forgotten. A
new board appears within one pass, a deleted one disappears after one pass
(its ZCARD reads 0 meanwhile). At most `limit` boards are reported.
"""

from __future__ import annotations

from redis.cluster import RedisCluster

PATTERN = "lb:{*}"


def board_name(raw_key: bytes) -> str:
    """The board of a `lb:{<board>}` key name."""
    return raw_key.decode()[len("lb:{"):-1]


class _Pass:
    """SCAN progress over one Redis node."""

    def __init__(self) -> None:
        self.cursor = 0
        self.seen: set[str] = set()
        self.known: set[str] = set()

    def advance(self, client, steps: int, count: int) -> set[str]:
        for _ in range(steps):
            self.cursor, names = client.scan(self.cursor, match=PATTERN, count=count)
            self.seen.update(board_name(n) for n in names)
            if self.cursor == 0:
                self.known, self.seen = self.seen, set()
                break
        return self.known | self.seen


class BoardFinder:
    """Leaderboard discovery that costs at most `steps` SCAN calls per node per scrape."""

    def __init__(self, limit: int = 100, steps: int = 2, count: int = 10_000) -> None:
        self.limit, self.steps, self.count = limit, steps, count
        self._passes: dict[str, _Pass] = {}

    def _nodes(self, client) -> list[tuple[str, object]]:
        if isinstance(client, RedisCluster):
            return [(node.name, client.get_redis_connection(node))
                    for node in client.get_primaries()]
        return [("", client)]

    def boards(self, client) -> list[str]:
        """Boards known so far, sorted, at most `limit`."""
        found: set[str] = set()
        for name, node in self._nodes(client):
            found |= self._passes.setdefault(name, _Pass()).advance(node, self.steps, self.count)
        return sorted(found)[:self.limit]
