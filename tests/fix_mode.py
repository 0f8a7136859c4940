"""Pick where test servers come from: local processes (default) or containers (needs Docker)."""

from __future__ import annotations

import os
import subprocess

import pytest

MODES = ("local", "containers")


def docker_answers() -> bool:
    """Tell whether a Docker engine answers `docker info`."""
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run, never skip, when the requested server mode cannot work here."""
    mode = os.environ.get("TALLY_TEST_SERVICES", "local")
    if mode not in MODES:
        raise pytest.UsageError(f"TALLY_TEST_SERVICES must be one of {MODES}, not {mode!r}")
    if mode == "containers" and not docker_answers():
        raise pytest.UsageError("TALLY_TEST_SERVICES=containers needs a running Docker engine "
                                "and `docker info` failed; unset it to use local processes "
                                "installed by scripts/bootstrap")
    if mode == "containers":
        raise pytest.UsageError("TALLY_TEST_SERVICES=containers is not implemented yet; unset "
                                "it to use local processes installed by scripts/bootstrap")
