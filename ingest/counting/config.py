"""CountingConfig: the counting core's view of Settings, with derived TTLs and Bloom sizing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tally.errors import ConfigError
from tally.keys import DAY, HOUR, MINUTE
from tally.settings import Settings
from tally.settings_rules import SINK_NAMES


def parse_hot_keys(text: str) -> dict[tuple[str, str], int]:
    """Parse "counter=key=spread" lines (keys may contain '='; newlines separate entries)."""
    hot = {}
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        counter, sep, rest = line.partition("=")
        key, sep2, spread = rest.rpartition("=")
        if not (sep and sep2 and spread.isdigit() and int(spread) >= 1 and key):
            raise ConfigError(f"TALLY_HOT_KEYS entry {line!r} is not counter=key=shards")
        hot[(counter, key)] = int(spread)
    return hot


@dataclass(frozen=True)
class CountingConfig:
    """Parameters of the batch step and of reads."""

    shards: int = 16
    dedup_mode: str = "exact"
    dedup_window: int = DAY
    bloom_capacity: int = 1_000_000
    bloom_error_rate: float = 0.001
    accepted_lateness: int = DAY
    outage_budget: int = 2 * DAY
    sinks: tuple[str, ...] = SINK_NAMES
    top_capacity: int = 10_000
    hot_keys: dict[tuple[str, str], int] = field(default_factory=dict)
    event_log: bool = True
    event_log_max: int = 250_000  # unarchived events one log stream (counter shard) may hold

    @classmethod
    def from_settings(cls, settings: Settings) -> CountingConfig:
        """Take the counting fields from Settings."""
        return cls(
            shards=settings.shards,
            dedup_mode=settings.dedup_mode,
            dedup_window=settings.dedup_window,
            bloom_capacity=settings.bloom_capacity,
            bloom_error_rate=settings.bloom_error_rate,
            accepted_lateness=settings.accepted_lateness,
            outage_budget=settings.outage_budget,
            sinks=settings.sinks,
            hot_keys=parse_hot_keys(settings.hot_keys),
            event_log=settings.event_log,
            event_log_max=settings.event_log_max,
        )

    def ttl(self, seconds_per_bucket: int) -> int:
        """TTL of a per-time key: lateness + the sink outage we survive + the bucket itself."""
        return self.accepted_lateness + self.outage_budget + seconds_per_bucket

    @property
    def ttls(self) -> tuple[int, int, int]:
        """TTLs of minute, hour and day keys."""
        return self.ttl(MINUTE), self.ttl(HOUR), self.ttl(DAY)

    @property
    def viewers_ttl(self) -> int:
        """A day's unique-view set lives through that day plus the accepted lateness."""
        return DAY + self.accepted_lateness

    @property
    def bloom_bits(self) -> int:
        """Bits per shard and generation for the configured capacity and error rate."""
        per_shard = max(1, math.ceil(self.bloom_capacity / self.shards))
        return math.ceil(-per_shard * math.log(self.bloom_error_rate) / math.log(2) ** 2)

    @property
    def bloom_hashes(self) -> int:
        """Optimal number of hash functions for bloom_bits."""
        per_shard = max(1, math.ceil(self.bloom_capacity / self.shards))
        return max(1, round(self.bloom_bits / per_shard * math.log(2)))

    def spread(self, counter: str, key: str) -> int:
        """How many shards a key is spread over (1 unless configured hot)."""
        return min(self.hot_keys.get((counter, key), 1), self.shards)
