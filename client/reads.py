"""Calls answered at once: totals (bulk), series, top keys, range uniques and breakdowns,
leaderboards, rate limits."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlencode

from tally.client.http import Http, problem_of

MAX_BULK_KEYS = 1000  # the API's limit for one bulk read (docs/api.md)
# `tally serve` refuses request lines over 4094 bytes; "GET " and " HTTP/1.1" take 13.
MAX_TARGET_BYTES = 4000
SAFE = frozenset({0, 502, 503, 504})  # retried for reads and idempotent writes


class Reads:
    """Calls answered at once (no queue): reads with the read token, direct writes."""

    http: Http
    read_token: str
    write_token: str
    read_give_up: float

    def _call(self, method: str, path: str, token: str, *, retry=SAFE,
              ok=(200,), **kwargs) -> Any:
        response = self.http.send(method, path, token, retry=lambda s: s in retry,
                                  give_up_after=self.read_give_up, **kwargs)
        if response.status_code not in ok:
            raise problem_of(response)
        return response.json()

    def _get(self, path: str, params: list[tuple[str, Any]] | dict) -> Any:
        return self._call("GET", path, self.read_token, params=params)

    def counts(self, counter: str, key: str) -> dict[str, Any]:
        """One key's answer: total, unique_views (today, all_time), uniques (hour, day)."""
        return self._get(f"/v1/counters/{quote(counter)}", {"key": key})

    def total(self, counter: str, key: str) -> int:
        """One key's all-time count."""
        return self.counts(counter, key)["total"]

    def totals(self, counter: str, keys: Iterable[str]) -> dict[str, int]:
        """All-time counts of many keys: bulk reads of up to 1,000 keys that fit one URL each."""
        found: dict[str, int] = {}
        for chunk in self._chunks(counter, list(dict.fromkeys(keys))):
            if len(chunk) == 1:
                found[chunk[0]] = self.total(counter, chunk[0])
                continue
            body = self._get(f"/v1/counters/{quote(counter)}", [("key", k) for k in chunk])
            found.update((entry["key"], entry["total"]) for entry in body["keys"])
        return found

    @staticmethod
    def _chunks(counter: str, keys: list[str]) -> Iterable[list[str]]:
        room = MAX_TARGET_BYTES - len(f"/v1/counters/{quote(counter)}?")
        chunk: list[str] = []
        used = 0
        for key in keys:
            size = len(urlencode({"key": key})) + 1
            if chunk and (len(chunk) == MAX_BULK_KEYS or used + size > room):
                yield chunk
                chunk, used = [], 0
            chunk.append(key)
            used += size
        if chunk:
            yield chunk

    def series(self, counter: str, key: str, step: str = "1m", start: str | float | None = None,
               end: str | float | None = None) -> dict[str, Any]:
        """Points of one key per bucket over [start, end): the API's answer (points, history).

        Each point holds value, uniques and sealed (true: the batch layer's exact row, docs/api.md).
        """
        params = {"key": key, "step": step, "from": start, "to": end}
        return self._get(f"/v1/counters/{quote(counter)}/series",
                         {k: v for k, v in params.items() if v is not None})

    def top(self, counter: str, k: int = 10, window: str = "day",
            date: str | None = None) -> list[tuple[str, int]]:
        """The k keys with the highest counts today, on a UTC date, or all time (window="all")."""
        params = {"k": k, "window": window, **({"date": date} if date else {})}
        body = self._get(f"/v1/counters/{quote(counter)}/top", params)
        return [(row["key"], row["count"]) for row in body["top"]]

    def uniques(self, counter: str, key: str | None = None, start: str | float | None = None,
                end: str | float | None = None) -> dict[str, Any]:
        """Exact distinct users of a key (None: the whole counter) over [start, end), from the
        event log: the API's answer (uniques, count, events, archived_until, complete)."""
        params = {"key": key, "from": start, "to": end}
        return self._get(f"/v1/counters/{quote(counter)}/uniques",
                         {k: v for k, v in params.items() if v is not None})

    def breakdown(self, counter: str, by: str, key: str | None = None, k: int = 10,
                  start: str | float | None = None,
                  end: str | float | None = None) -> dict[str, Any]:
        """The top k values of event property `by` by count, with distinct users, and the
        rest summed (`other`): the API's answer (rows, other, archived_until, complete)."""
        params = {"by": by, "k": k, "key": key, "from": start, "to": end}
        return self._get(f"/v1/counters/{quote(counter)}/breakdown",
                         {name: v for name, v in params.items() if v is not None})

    def leaderboard(self, board: str, k: int = 10) -> list[dict[str, Any]]:
        """The best k entries of a leaderboard: {rank, member, score}."""
        return self._get(f"/v1/leaderboards/{quote(board)}/top", {"k": k})["entries"]

    def rank(self, board: str, member: str) -> dict[str, Any] | None:
        """A member's {rank, member, score}, None when it is not on the board."""
        body = self._call("GET", f"/v1/leaderboards/{quote(board)}/member", self.read_token,
                          params={"member": member}, ok=(200, 404))
        return None if "rank" not in body else body

    def around(self, board: str, member: str, radius: int = 5) -> list[dict[str, Any]] | None:
        """Entries within `radius` ranks of a member, None when it is not on the board."""
        body = self._call("GET", f"/v1/leaderboards/{quote(board)}/around", self.read_token,
                          params={"member": member, "radius": radius}, ok=(200, 404))
        return body.get("entries")

    def set_score(self, board: str, member: str, score: float,
                  capacity: int | None = None) -> dict[str, Any]:
        """Set a member's score (idempotent, so retried): {kept, rank, member, score}."""
        return self._call("PUT", f"/v1/leaderboards/{quote(board)}/scores", self.write_token,
                          json={"member": member, "score": score},
                          params={"capacity": capacity} if capacity is not None else {})

    def increment(self, board: str, member: str, delta: float, capacity: int | None = None,
                  idempotency_key: str | None = None) -> dict[str, Any]:
        """Add to a member's score once, even when retried (one Idempotency-Key per call)."""
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return self._call("POST", f"/v1/leaderboards/{quote(board)}/increments",
                          self.write_token, json={"member": member, "delta": delta},
                          params={"capacity": capacity} if capacity is not None else {},
                          headers=headers, retry=SAFE | {500})

    def check_rate_limit(self, limit: str, subject: str) -> dict[str, Any]:
        """Count one request of `subject` against a configured limit; `allowed` says if it fits.

        Retried only after a 503 (nothing applied): a lost answer may have counted.
        """
        return self._call("POST", f"/v1/ratelimit/{quote(limit)}", self.write_token,
                          json={"subject": subject}, retry={503}, ok=(200, 429))
