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
        # tally-stack: the local stack's supervisor (restarts); compose has none.
        local = {"tally-stack"} if name == "prometheus.yml" else set()
        assert jobs == {"tally-exporter", "tally-ingest", "tally-statsd"} | local


def _alert_rules() -> list[dict]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule]


def github_anchors(markdown: str) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces to hyphens.

    Fenced code is skipped (a `# comment` there is no heading); a repeated
    heading gets -1, -2, … as on GitHub.
    """
    anchors: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} (.+)", line)):
            slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
            anchor, n = slug, 0
            while anchor in anchors:
                n += 1
                anchor = f"{slug}-{n}"
            anchors.add(anchor)
    return anchors


@pytest.mark.parametrize("markdown, anchors", [
    ("## Alert delivery (Alertmanager)\n### TallyFlushStale\n```\n# not\n```\n## Logs\n## Logs",
     {"alert-delivery-alertmanager", "tallyflushstale", "logs", "logs-1"}),
])
def test_github_anchors(markdown, anchors):
    assert github_anchors(markdown) == anchors


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_has_summary_description_and_a_runbook_that_exists(rule):
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert all(annotations[name].strip() for name in annotations)
    path, _, anchor = annotations["runbook_url"].partition("#")
    assert anchor == rule["alert"].lower()
    assert anchor in github_anchors((PROJECT_ROOT / path).read_text())


def test_configs_send_alerts_to_the_alertmanager():
    expected = {"prometheus.yml": "127.0.0.1:9093", "prometheus.compose.yml": "alertmanager:9093"}
    for name, target in expected.items():
        alerting = yaml.safe_load((PROM / name).read_text())["alerting"]
        assert alerting == {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
