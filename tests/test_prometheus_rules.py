"""promtool accepts the configs and rules, and the rule unit tests cover every alert."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tally.settings import PROJECT_ROOT

PROM = PROJECT_ROOT / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yml"))


def promtool(*args: str) -> subprocess.CompletedProcess:
    """Run promtool; output text in stdout + stderr."""
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.compose.yml"])
def test_check_config(config):
    done = promtool("check", "config", str(PROM / config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in done.stdout


def test_check_rules():
    done = promtool("check", "rules", *map(str, RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(re.findall(r"SUCCESS: \d+ rules found", done.stdout)) == len(RULE_FILES)


def test_rule_unit_tests_pass():
    done = promtool("test", "rules", *map(str, TEST_FILES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAILED" not in done.stdout and done.stdout.count("SUCCESS") == len(TEST_FILES)


def _alerts() -> set[str]:
    return {rule["alert"] for path in RULE_FILES for group in yaml.safe_load(path.read_text())
            ["groups"] for rule in group["rules"] if "alert" in rule}


def _alert_cases() -> list[dict]:
    return [case for path in TEST_FILES for test in yaml.safe_load(path.read_text())["tests"]
            for case in test.get("alert_rule_test", [])]


def test_every_alert_is_tested_firing_and_silent():
    cases = _alert_cases()
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert _alerts() == firing == silent


def test_scrape_jobs_match_alerts_and_interval():
    for name in ("prometheus.yml", "prometheus.compose.yml"):
        config = yaml.safe_load((PROM / name).read_text())
        assert config["global"]["scrape_interval"] == "15s"
        jobs = {job["job_name"] for job in config["scrape_configs"]}
        assert jobs == {"tally-exporter", "tally-ingest", "tally-statsd"}
