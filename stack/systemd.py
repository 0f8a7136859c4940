"""`tally systemd`: hardened systemd units for Tally's own services on a production host.

`tally up` is for development; on a server, systemd supervises the four Tally
processes (ingest API, flusher, exporter, StatsD listener) next to Redis,
PostgreSQL and InfluxDB installed and secured as those projects document.
Each unit runs the installed `tally` under a dynamic user with a read-only
file system, no capabilities and only the system calls of an ordinary
service; settings and secrets come from one EnvironmentFile (docs/systemd.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

from tally.errors import ConfigError
from tally.ingest.serve import FILES_BESIDES_CONNECTIONS
from tally.ingest.worker import OVERFLOW
from tally.settings import Settings

ENV_FILE = "/etc/tally/tally.env"
TARGET = "tally.target"
HOMES = ("/home", "/root", "/run/user")

# What every service gets: nothing it does needs more (docs/systemd.md says why each).
HARDENING = """\
DynamicUser=yes
UMask=0077
ProtectSystem=strict
ProtectHome={protect_home}
PrivateTmp=yes
PrivateDevices=yes
PrivateUsers=yes
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
DevicePolicy=closed
KeyringMode=private
"""


class Unit(NamedTuple):
    """One Tally service as systemd runs it."""

    name: str  # the unit file is tally-<name>.service
    description: str
    command: str  # the `tally` subcommand
    extra: str = ""  # service-specific [Service] lines


def open_files_needed(settings: Settings) -> int:
    """File descriptors one ingest worker needs: its connections, their overflow, the rest."""
    return settings.ingest_max_connections + OVERFLOW + FILES_BESIDES_CONNECTIONS


def services(settings: Settings) -> tuple[Unit, ...]:
    """The four Tally services."""
    # gunicorn's master takes SIGTERM and lets requests finish (up to 10 s);
    # KillMode=mixed keeps systemd from signalling the workers behind its back.
    ingest = (f"LimitNOFILE={open_files_needed(settings)}\nKillMode=mixed\n"
              "TimeoutStopSec=30s\n")
    return (
        Unit("ingest", "Tally ingest API (gunicorn)", "serve", ingest),
        Unit("flusher", "Tally flusher (Redis to TimescaleDB and InfluxDB)", "flush",
             "TimeoutStopSec=60s\n"),
        Unit("exporter", "Tally Prometheus exporter", "exporter"),
        Unit("statsd", "Tally StatsD listener (UDP and TCP)", "statsd", "TimeoutStopSec=30s\n"),
    )


def default_tally() -> Path:
    """The `tally` script installed next to the running interpreter (the venv's)."""
    return Path(sys.prefix) / "bin" / "tally"


def service_unit(unit: Unit, tally: Path, env_file: str) -> str:
    """The text of tally-<name>.service."""
    if not tally.is_absolute():
        raise ConfigError(f"tally systemd: --tally must be an absolute path, not {tally}")
    # A venv under a home folder stays readable; ProtectHome=yes would hide it.
    under_home = any(tally.is_relative_to(home) for home in HOMES)
    hardening = HARDENING.format(protect_home="read-only" if under_home else "yes")
    return (f"# Written by `tally systemd`; docs/systemd.md explains each setting.\n"
            f"[Unit]\nDescription={unit.description}\n"
            "After=network-online.target\nWants=network-online.target\n"
            f"PartOf={TARGET}\nStartLimitIntervalSec=60s\nStartLimitBurst=5\n\n"
            f"[Service]\nType=exec\nExecStart={tally} {unit.command}\n"
            f"EnvironmentFile={env_file}\nEnvironment=PYTHONUNBUFFERED=1\n"
            "Restart=on-failure\nRestartSec=2s\n"
            f"{unit.extra}{hardening}\n[Install]\nWantedBy={TARGET}\n")


def target_unit(units: tuple[Unit, ...]) -> str:
    """tally.target: starts and stops the four services together."""
    wants = " ".join(f"tally-{u.name}.service" for u in units)
    return (f"[Unit]\nDescription=Tally event counting services\nWants={wants}\n"
            f"After={wants}\n\n[Install]\nWantedBy=multi-user.target\n")


def render(settings: Settings, tally: Path, env_file: str = ENV_FILE) -> dict[str, str]:
    """{file name: text} of every unit, the target last."""
    units = services(settings)
    files = {f"tally-{u.name}.service": service_unit(u, tally, env_file) for u in units}
    files[TARGET] = target_unit(units)
    return files


def main(args, settings: Settings) -> int:
    """Print the units, or write them into --output."""
    files = render(settings, Path(args.tally) if args.tally else default_tally(), args.env_file)
    if not args.output:
        print("\n".join(f"# {name}\n{text}" for name, text in files.items()), end="")
        return 0
    folder = Path(args.output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text)
    except OSError as exc:
        raise ConfigError(f"tally systemd: cannot write to --output {folder}: {exc}") from None
    for name in files:
        print(folder / name)
    return 0
