"""The batch layer's commands: `tally rebuild` (and `tally import`, importer.py)."""

from __future__ import annotations

import re

from tally.errors import ConfigError
from tally.events import parse_timestamp
from tally.ingest.batch.days import day_range, day_text
from tally.ingest.batch.progress import Progress
from tally.ingest.batch.rebuild import DayDone, rebuild

COUNTER = re.compile(r"[a-z0-9_]{1,64}")
EPOCH = re.compile(r"-?\d+(\.\d+)?")


def parse_time(option: str, text: str) -> float:
    """A command-line time, ISO 8601 with a time zone or epoch seconds, as epoch seconds."""
    try:
        return parse_timestamp(float(text) if EPOCH.fullmatch(text.strip()) else text)
    except ValueError as exc:
        raise ConfigError(f"{option} {text!r} {exc}") from None


def parse_range(args) -> tuple[float, float]:
    """(--from, --to) as epoch seconds, --to after --from."""
    start, end = parse_time("--from", args.start), parse_time("--to", args.end)
    if end <= start:
        raise ConfigError(f"--to ({args.end}) must be after --from ({args.start})")
    return start, end


def parse_counter(text: str | None) -> str | None:
    """--counter: a counter name as events carry it."""
    if text is not None and not COUNTER.fullmatch(text):
        raise ConfigError(f"--counter {text!r} must match [a-z0-9_]{{1,64}}")
    return text


def rebuild_main(args, settings) -> int:
    """Entry point of `tally rebuild`."""
    start, end = parse_range(args)
    counter = parse_counter(args.counter)
    bar = Progress("rebuild", len(day_range(start, end)))

    def show(day: DayDone) -> None:
        bar.update(day.done, f"{day_text(day.day)} {day.events} events")

    report = rebuild(settings, start, end, counter, progress=show)
    bar.finish(f"rebuilt {report.days} days from {report.events} events in "
               f"{report.seconds:.1f} s: {report.rows} rows written, {report.deleted} deleted, "
               f"{report.points} InfluxDB points")
    if args.redis:
        from tally.ingest.batch.reseed import reseed

        seeded = reseed(settings)
        print(f"re-seeded Redis: {seeded.totals} all-time totals, {seeded.top} top keys of "
              "today", file=bar.stream, flush=True)
    return 0
