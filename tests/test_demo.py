"""The demo traffic generator (its posting to a live ingest API runs in test_dashboards.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from tally.errors import ConfigError
from tally.events import validate_batch
from tally.stack.demo import DemoPlan, Traffic, run

NOW = 1_795_000_000.0


def sample(plan: DemoPlan, n: int = 4_000) -> list[dict]:
    """n events from a seeded generator."""
    return Traffic(plan).batch(NOW, n)


def test_events_pass_ingest_validation():
    events = sample(DemoPlan(seed=1), 500)
    assert len(validate_batch(events, NOW, 24 * 3600, 300)) == 500


def test_keys_follow_zipf():
    counts = Counter(e["key"].split(":")[1] for e in sample(DemoPlan(seed=2, keys=100)))
    assert counts["1"] > counts["2"] > counts["10"] > 0
    assert counts["1"] > 3 * counts["10"]


def test_duplicates_reuse_ids_at_the_planned_share():
    events = sample(DemoPlan(seed=3, duplicate_share=0.2))
    repeats = len(events) - len({e["id"] for e in events})
    assert 0.15 < repeats / len(events) < 0.25


def test_late_events_are_minutes_old():
    events = sample(DemoPlan(seed=4, late_share=0.1, duplicate_share=0.0))
    late = [e for e in events if e["ts"] != "2026-11-18T11:06:40Z"]
    assert 0.07 < len(late) / len(events) < 0.13
    assert all("2026-11-18T10:36:40Z" <= e["ts"] <= "2026-11-18T11:05:40Z" for e in late)


def test_same_seed_same_traffic():
    assert sample(DemoPlan(seed=5), 50) == sample(DemoPlan(seed=5), 50)


@pytest.mark.parametrize("plan", [{"duplicate_share": 1.0}, {"late_share": -0.1}, {"keys": 0},
                                  {"zipf_s": 0}])
def test_bad_plans_are_refused(plan):
    with pytest.raises(ConfigError):
        DemoPlan(**plan)


def test_run_refuses_unbounded_duration_or_rate():
    with pytest.raises(ConfigError):
        run("http://127.0.0.1:9/v1/events", None, duration=0, rate=10)
    with pytest.raises(ConfigError):
        run("http://127.0.0.1:9/v1/events", None, duration=1, rate=1e9)
