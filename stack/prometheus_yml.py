"""The Prometheus configurations of the local stack and of docker-compose.

Every Prometheus configuration Tally uses comes from one function,
tally.stack.services.prometheus_config (scrape jobs and rule files in, the
config out): the test fixtures call it with their own targets, and this
module with Tally's three jobs (locally a fourth, the supervisor's). `tally
up` writes its copy into the data folder at each start (loopback, the
configured ports, the rule path made absolute because the copy does not sit
beside prometheus/rules/). Compose mounts a
static file, so prometheus/prometheus.compose.yml and prometheus.yml (the
local stack at the default settings) are committed output:
`python -m tally.stack.prometheus_yml` rewrites them, and
tests/test_smoke_prometheus.py fails when they differ from what it would write.
Both send alerts to the Alertmanager beside them (loopback, or the compose
service `alertmanager`); `main` also rewrites prometheus/alertmanager.yml
(tally.stack.alertmanager).
"""

from __future__ import annotations

from pathlib import Path

from tally.settings import PROJECT_ROOT, Settings
from tally.stack import alertmanager, rundir, services

PROMETHEUS_DIR = PROJECT_ROOT / "prometheus"
RULES = "rules/*.yml"  # Prometheus resolves it from the config file's folder
# The alert rules' `for:` durations and their promtool tests assume this interval.
SCRAPE_INTERVAL = "15s"
HEADER = ("# Written by `python -m tally.stack.prometheus_yml` (JSON, which is YAML too);\n"
          "# change that module and rerun it rather than editing this file.\n")
# Committed file -> the hosts its exporter, ingest and statsd targets are reached by.
COMMITTED = {"prometheus.yml": ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
             "prometheus.compose.yml": ("tally-exporter", "tally-ingest", "tally-statsd")}
# Committed file -> the host its Alertmanager is reached by.
ALERTMANAGER_HOSTS = {"prometheus.yml": "127.0.0.1", "prometheus.compose.yml": "alertmanager"}


def tally_jobs(settings: Settings, exporter_host: str, ingest_host: str,
               statsd_host: str) -> dict[str, list[str]]:
    """Tally's scrape jobs, by the job names the alert rules select on."""
    return {"tally-exporter": [f"{exporter_host}:{settings.exporter_port}"],
            "tally-ingest": [f"{ingest_host}:{settings.ingest_port}"],
            "tally-statsd": [f"{statsd_host}:{settings.statsd_metrics_port}"]}


def supervisor_job(settings: Settings) -> dict[str, list[str]]:
    """The local stack's supervisor (restarts per process); compose has none, Docker restarts."""
    return {"tally-stack": [f"127.0.0.1:{settings.supervisor_port}"]}


def render(settings: Settings, hosts: tuple[str, str, str], rules: str,
           alertmanager_host: str, local: bool = False) -> str:
    """The config text scraping Tally's processes on `hosts`, loading `rules`, alerting there."""
    jobs = tally_jobs(settings, *hosts) | (supervisor_job(settings) if local else {})
    alertmanagers = (f"{alertmanager_host}:{settings.alertmanager_port}",)
    return HEADER + services.prometheus_config(jobs, SCRAPE_INTERVAL, (rules,),
                                               alertmanagers) + "\n"


def stack_config(settings: Settings) -> str:
    """The local stack's config: loopback, the configured ports, the rules by absolute path."""
    return render(settings, COMMITTED["prometheus.yml"], str(PROMETHEUS_DIR / RULES),
                  ALERTMANAGER_HOSTS["prometheus.yml"], local=True)


def committed_config(name: str) -> str:
    """What prometheus/<name> must contain: Tally's default ports, the rules by relative path."""
    return render(Settings(), COMMITTED[name], RULES, ALERTMANAGER_HOSTS[name],
                  local=name == "prometheus.yml")


def write_config(settings: Settings) -> Path:
    """Write the local stack's config into the data folder and return its path."""
    return rundir.write_generated(settings, "prometheus.yml", stack_config(settings))


def main() -> None:
    """Rewrite the committed configs under prometheus/, Alertmanager's included."""
    for name in COMMITTED:
        (PROMETHEUS_DIR / name).write_text(committed_config(name))
    alertmanager.write_committed()


if __name__ == "__main__":
    main()
