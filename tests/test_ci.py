"""CI runs what the README tells a person to run: one test command, lint included."""

from __future__ import annotations

import re

from tally.settings import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()
CI = (PROJECT_ROOT / ".ci" / "run").read_text()


def readme_test_command() -> str:
    """The command under the README's "# 2. ... run the tests" comment."""
    return re.search(r"^# 2\..*run the tests.*\n(.+)$", README, re.M | re.I)[1]


def test_ci_runs_the_readme_test_command_verbatim():
    command = readme_test_command()
    assert re.search(rf"^{re.escape(command)} \|\| status=\$\?$", CI, re.M), command


def test_the_test_command_lints_before_testing():
    steps = readme_test_command().split(" && ")
    assert steps[0] == "bash scripts/bootstrap" and steps[-1].startswith(".venv/bin/pytest")
    assert ".venv/bin/ruff check ." in steps[1:-1]
