"""UTC days: the unit the batch layer rebuilds, seals and imports in."""

from __future__ import annotations

from datetime import UTC, datetime

from tally.resolutions import DAY, Resolution


def day_range(start: float, end: float) -> range:
    """UTC day indexes covering [start, end) (epoch seconds): the range widened to whole days."""
    if end <= start:
        raise ValueError(f"the range's end ({end:g}) must be after its start ({start:g})")
    return range(int(start // DAY), -int(-end // DAY))


def kept(resolution: Resolution, day: int, now: float) -> bool:
    """Whether a resolution still keeps the day: its retention has not passed the day's start.

    Rows older than that would only be dropped again, and InfluxDB refuses
    points older than the retention policy.
    """
    return resolution.keep_days is None or day * DAY >= now - resolution.keep_days * DAY


def when(seconds: float) -> datetime:
    """Epoch seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


def day_text(day: int) -> str:
    """A day index as YYYY-MM-DD."""
    return f"{when(day * DAY):%Y-%m-%d}"
