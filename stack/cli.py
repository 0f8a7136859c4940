"""The `tally` command: one subcommand per process or chore.

Each subcommand names the function that runs it as "module:function"; the
module is imported only when that subcommand runs, so `tally --help` stays
fast and a missing optional dependency only breaks its own command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tally.errors import TallyError
from tally.settings import load_settings

# name -> (handler "module:function", help, [(flags, kwargs), ...])
COMMANDS: dict[str, tuple[str, str, list[tuple[tuple[str, ...], dict]]]] = {
    "up": ("tally.stack.runner:up", "start the local stack (Redis, PostgreSQL+TimescaleDB, "
           "InfluxDB, Prometheus, Tally services) in the foreground", [
               (("--detach",), {"action": "store_true",
                                "help": "start in the background and return"}),
               (("--demo",), {"action": "store_true", "help": "also post demo traffic"}),
           ]),
    "down": ("tally.stack.runner:down", "stop a stack started by `tally up`", []),
    "status": ("tally.stack.runner:status", "show which stack processes run, and where", []),
    "logs": ("tally.stack.runner:logs", "print the stack's logs, each line prefixed by its "
             "process (or one process's log)", [
                 (("name",), {"nargs": "?", "metavar": "NAME",
                              "help": "one process (redis, ingest, supervisor, ...)"}),
                 (("-f", "--follow"), {"action": "store_true", "help": "keep printing new lines"}),
                 (("-n", "--lines"), {"type": int, "default": 100,
                                      "help": "lines of each log to print first (default 100)"}),
             ]),
    "migrate": ("tally.ingest.flusher.migrate:main", "apply missing TimescaleDB migrations", []),
    "serve": ("tally.ingest.serve:main", "run the ingest HTTP API under gunicorn", [
        (("--workers",), {"type": int, "default": None, "help": "gunicorn workers"}),
        (("--insecure-no-auth",), {"action": "store_true",
                                   "help": "serve without bearer tokens (logs a warning)"}),
    ]),
    "flush": ("tally.ingest.batch.seal:flush_main", "move dirty buckets from Redis to the sinks", [
        (("--once",), {"action": "store_true", "help": "flush once and exit"}),
    ]),
    "rebuild": ("tally.ingest.batch.commands:rebuild_main", "recompute the counts and "
                "InfluxDB points of whole UTC days from the event log (docs/flusher.md)", [
                    (("--from",), {"dest": "start", "required": True, "metavar": "T1",
                                   "help": "start: ISO 8601 with a time zone, or epoch s"}),
                    (("--to",), {"dest": "end", "required": True, "metavar": "T2",
                                 "help": "end (exclusive), same forms"}),
                    (("--counter",), {"metavar": "C", "help": "only this counter"}),
                    (("--redis",), {"action": "store_true", "help": "then re-seed Redis' "
                                    "all-time totals and today's top keys from the database"}),
                ]),
    "import": ("tally.ingest.batch.commands:import_main", "load NDJSON events of any age into "
               "the event log and rebuild the days they touch (docs/flusher.md)", [
                   (("file",), {"metavar": "FILE", "help": "NDJSON file, or - for stdin"}),
                   (("--on-error",), {"choices": ("stop", "skip"), "default": "stop",
                                      "help": "at a bad line: stop before its chunk (default), "
                                      "or skip the line and go on"}),
                   (("--chunk",), {"type": int, "default": 10_000, "metavar": "N",
                                   "help": "lines per all-or-nothing chunk (default 10000)"}),
               ]),
    "exporter": ("tally.exporter.server:main", "serve Prometheus metrics read from Redis", []),
    "statsd": ("tally.ingest.statsd.server:main", "count StatsD counters and sets sent over "
               "UDP and TCP (docs/statsd.md)", []),
    "systemd": ("tally.stack.systemd:main", "print hardened systemd units for the Tally "
                "services, or write them to a folder (docs/systemd.md)", [
                    (("--output",), {"metavar": "DIR", "help": "write the unit files here"}),
                    (("--tally",), {"metavar": "PATH", "help": "the installed tally script "
                                    "(default: the one next to this Python)"}),
                    (("--env-file",), {"default": "/etc/tally/tally.env", "metavar": "PATH",
                                       "help": "settings and secrets "
                                       "(default /etc/tally/tally.env)"}),
                ]),
    "demo": ("tally.stack.demo:main", "post realistic demo traffic to the ingest API", [
        (("--duration",), {"type": float, "default": 60.0, "help": "seconds (default 60)"}),
        (("--rate",), {"type": float, "default": 200.0, "help": "events per second"}),
    ]),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="tally", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_handler, help_text, options) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        for flags, kwargs in options:
            cmd.add_argument(*flags, **kwargs)
    return parser


def resolve(handler: str):
    """Import "module:function" and return the function."""
    module_name, function_name = handler.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tally` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        return resolve(COMMANDS[args.command][0])(args, settings) or 0
    except TallyError as exc:
        print(f"tally {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
