"""`tally demo`: post realistic traffic to the ingest API so dashboards have something to show.

Keys follow a Zipf law (a few hot videos, a long tail), events come from a
fixed user population, a share are retries of an already-sent event (same
id, so they count once) and a share arrive late (timestamps minutes old).
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import requests

from tally.errors import ConfigError, ServiceError
from tally.settings import Settings

COUNTERS = {"views": "video", "plays": "track", "likes": "post"}


@dataclass(frozen=True)
class DemoPlan:
    """Shape of the generated traffic."""

    keys: int = 500  # per counter
    users: int = 2_000
    zipf_s: float = 1.1
    duplicate_share: float = 0.05
    late_share: float = 0.05
    late_minutes: float = 30.0
    batch_size: int = 50
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("duplicate_share", "late_share"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"demo {name} must be in [0, 1)")
        if min(self.keys, self.users, self.batch_size) < 1 or self.zipf_s <= 0:
            raise ConfigError("demo keys, users and batch_size must be positive, zipf_s > 0")


def rfc3339(ts: float) -> str:
    """Epoch seconds as an RFC 3339 UTC string."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Traffic:
    """Generator of event batches (pure: no I/O, clock passed in)."""

    def __init__(self, plan: DemoPlan = DemoPlan()) -> None:
        self.plan = plan
        self.rng = random.Random(plan.seed)
        weights = [1 / rank ** plan.zipf_s for rank in range(1, plan.keys + 1)]
        self.cum_weights = list(itertools.accumulate(weights))
        self.recent: deque[dict] = deque(maxlen=1_000)

    def _fresh(self, now: float) -> dict:
        counter, prefix = self.rng.choice(list(COUNTERS.items()))
        rank = self.rng.choices(range(1, self.plan.keys + 1), cum_weights=self.cum_weights)[0]
        ts = now
        if self.rng.random() < self.plan.late_share:
            ts = now - self.rng.uniform(60, self.plan.late_minutes * 60)
        event_id = uuid.UUID(int=self.rng.getrandbits(128)).hex
        user = f"u-{self.rng.randrange(self.plan.users)}"
        return {"counter": counter, "key": f"{prefix}:{rank}", "id": event_id, "user": user,
                "ts": rfc3339(ts)}

    def event(self, now: float) -> dict:
        """One event: a retry of a recent one (same id) or a fresh one."""
        if self.recent and self.rng.random() < self.plan.duplicate_share:
            return dict(self.rng.choice(self.recent))
        event = self._fresh(now)
        self.recent.append(event)
        return event

    def batch(self, now: float, size: int | None = None) -> list[dict]:
        """A batch of events as the ingest API takes them."""
        return [self.event(now) for _ in range(size or self.plan.batch_size)]


@dataclass
class Summary:
    """What a demo run sent and what the API answered."""

    batches: int = 0
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    failed_batches: int = 0

    def line(self, seconds: float) -> str:
        """One human-readable line."""
        return (f"sent {self.sent} events in {self.batches} batches over {seconds:.1f}s: "
                f"{self.accepted} accepted, {self.duplicates} duplicates, "
                f"{self.failed_batches} batches refused")


def post_batch(session: requests.Session, url: str, events: list[dict], summary: Summary) -> None:
    """POST one batch and add the answer to the summary."""
    try:
        response = session.post(url, json=events, timeout=10)
    except requests.RequestException as exc:
        raise ServiceError(f"ingest at {url} did not answer: {exc}") from None
    summary.batches += 1
    summary.sent += len(events)
    if response.status_code != 200:
        summary.failed_batches += 1
        return
    body = response.json()
    summary.accepted += body["accepted"]
    summary.duplicates += body["duplicates"]


def run(url: str, token: str | None, duration: float, rate: float, plan: DemoPlan = DemoPlan(),
        clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
        ) -> Summary:
    """Post batches at about `rate` events per second for `duration` seconds."""
    if not 0 < duration <= 86_400 or not 0 < rate <= 100_000:
        raise ConfigError("demo --duration must be in (0, 86400] s and --rate in (0, 100000]")
    traffic, summary = Traffic(plan), Summary()
    interval = plan.batch_size / rate
    start = time.monotonic()
    with requests.Session() as session:
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        while time.monotonic() - start < duration:
            post_batch(session, url, traffic.batch(clock()), summary)
            sleep(max(0.0, summary.batches * interval - (time.monotonic() - start)))
    return summary


def main(args, settings: Settings) -> int:
    """Post demo traffic to the local ingest API and print a summary."""
    url = f"http://127.0.0.1:{settings.ingest_port}/v1/events"
    token = settings.write_tokens[0] if settings.write_tokens else None
    started = time.monotonic()
    summary = run(url, token, args.duration, args.rate)
    print(summary.line(time.monotonic() - started))
    return 0 if summary.failed_batches == 0 else 1
