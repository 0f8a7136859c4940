"""The batch layer's commands: `tally rebuild` (and `tally import`, importer.py)."""

from __future__ import annotations

import os
import re
import sys

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


class _Counted:
    """A binary file's lines, counting the bytes read (for the progress bar)."""

    def __init__(self, stream):
        self.stream, self.read = stream, 0

    def __iter__(self):
        for raw in self.stream:
            self.read += len(raw)
            yield raw


def import_main(args, settings) -> int:
    """Entry point of `tally import`: 0 when every line was imported, 1 with bad lines."""
    from tally.ingest.batch.importer import import_events

    if args.chunk < 1:
        raise ConfigError(f"--chunk {args.chunk} must be at least 1 line")
    if args.file == "-":
        stream, size = sys.stdin.buffer, 0
    else:
        try:
            stream = open(args.file, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ConfigError(f"cannot read {args.file}: {exc.strerror}") from None
        size = os.fstat(stream.fileno()).st_size
    lines = _Counted(stream)
    bar = Progress("import", size)

    def show(report, read: int) -> None:
        note = f"{report.staged} events, {bar.rate(report.staged):,.0f}/s"
        bar.update(read if size else report.lines, note)

    days = Progress("rebuild", 0, bar.stream)

    def show_day(day: DayDone) -> None:
        days.total = day.days
        days.update(day.done, day_text(day.day))

    try:
        report = import_events(settings, lines, on_error=args.on_error, chunk=args.chunk,
                               progress=show, bytes_read=lambda: lines.read,
                               rebuild_progress=show_day)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    out = bar.stream
    for problem in report.problems:
        print(problem, file=out)
    if report.bad > len(report.problems):
        print(f"... and {report.bad - len(report.problems)} more bad lines", file=out)
    rebuilt = report.rebuild
    days.finish(f"imported {report.loaded} of {report.staged} valid events from "
                f"{report.lines} lines ({report.staged - report.loaded} already in the log) in "
                f"{report.seconds:.1f} s; rebuilt {rebuilt.days} days ("
                + ", ".join(f"{name} {s:.1f} s" for name, s in report.phases.items()) + ")")
    if report.stopped_at is not None and args.on_error == "stop":
        print(f"stopped at line {report.stopped_at}: its chunk and the rest were not imported; "
              "fix the line and run the import again", file=out)
    return 1 if report.bad else 0
