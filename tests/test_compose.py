"""docker-compose.yml: its text, and what `docker-compose config` makes of it (no engine needed).

Debian's docker-compose (1.29) validates and resolves the file without a
Docker engine; scripts/bootstrap installs it, so these tests run wherever the
suite does. Exposure is asserted on that resolved output: published ports,
networks, pinned image tags.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml

from tally.settings import PROJECT_ROOT, Settings

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
COMPOSE_TEXT = "\n".join(line for line in (PROJECT_ROOT / "docker-compose.yml").read_text()
                         .splitlines() if not line.lstrip().startswith("#"))
SERVICES = COMPOSE["services"]
DATASOURCES = {d["uid"]: d for d in yaml.safe_load(
    (PROJECT_ROOT / "grafana/provisioning/datasources/tally.yml").read_text())["datasources"]}
ENV_EXAMPLE = dict(line.split("=", 1) for line in (PROJECT_ROOT / ".env.example").read_text()
                   .splitlines() if line and not line.startswith("#"))
EXPECTED = {"redis", "timescaledb", "influxdb", "prometheus", "alertmanager", "grafana",
            "tally-migrate",
            "tally-ingest", "tally-flusher", "tally-exporter", "tally-statsd"}
OURS = {name for name in EXPECTED if name.startswith("tally-")}
EXACT_TAG = re.compile(r"v?\d+\.\d+\.\d+(-pg\d+|-slim-\w+)?")  # major.minor.patch, no float
# What compose may publish: the ingest paths and Grafana (service -> {(port, protocol)}).
PUBLISHED = {"tally-ingest": {(8080, "tcp")}, "tally-statsd": {(8125, "udp"), (8125, "tcp")},
             "grafana": {(3000, "tcp")}}
# Also on the `edge` network: the publishers, and Alertmanager to reach its webhook.
ON_EDGE = set(PUBLISHED) | {"alertmanager"}


def test_every_service_is_there():
    assert set(SERVICES) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED - OURS))
def test_official_images_pinned_to_a_version(name):
    image = SERVICES[name]["image"]
    repo, _, tag = image.rpartition(":")
    assert repo and EXACT_TAG.fullmatch(tag), image


@pytest.mark.parametrize("name", sorted(OURS))
def test_tally_services_build_from_the_repo(name):
    assert SERVICES[name]["build"] == "." and (PROJECT_ROOT / "Dockerfile").exists()
    assert SERVICES[name]["command"][0] in ("tally", "sh")


def test_the_image_installs_the_wheel_not_a_checkout():
    """The last Dockerfile stage pip-installs the wheel an earlier stage built, nothing editable."""
    stages = re.split(r"^FROM ", (PROJECT_ROOT / "Dockerfile").read_text(), flags=re.M)[1:]
    builder, image = stages[0], stages[-1]
    assert re.search(r"^RUN pip wheel .*--no-deps -w /wheels \.$", builder, re.M)
    assert "COPY --from=wheel /wheels /wheels" in image
    assert re.search(r"pip install .*/wheels/tally-\*\.whl", image)
    assert " -e " not in image and not re.search(r"^COPY (?!--from)", image, re.M)


@pytest.mark.parametrize("name", sorted(EXPECTED - {"tally-migrate"}))
def test_long_running_services_have_healthchecks(name):
    assert SERVICES[name]["healthcheck"]["test"][0] == "CMD"


def test_stateful_services_use_named_volumes():
    mounts = {"redis": "/data", "timescaledb": "/var/lib/postgresql/data",
              "influxdb": "/var/lib/influxdb", "prometheus": "/prometheus",
              "alertmanager": "/alertmanager", "grafana": "/var/lib/grafana"}
    for name, target in mounts.items():
        volume = next(v.split(":")[0] for v in SERVICES[name]["volumes"]
                      if v.split(":")[1] == target)
        assert volume in COMPOSE["volumes"], name


def test_redis_appends_only():
    assert SERVICES["redis"]["command"][1:3] == ["--appendonly", "yes"]


def test_config_folders_are_mounted():
    assert "./prometheus:/etc/prometheus:ro" in SERVICES["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.compose.yml" in \
        SERVICES["prometheus"]["command"]
    grafana = SERVICES["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana


def test_secrets_come_from_env_without_defaults():
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_TEXT))
    assert used == set(ENV_EXAMPLE)
    assert re.findall(r"\$\{\w+:-", COMPOSE_TEXT) == []  # no default values
    assert all(f"${{{name}:?" in COMPOSE_TEXT for name in used)


def test_grafana_datasources_match_services_and_ports():
    defaults = Settings()
    prom = urlsplit(DATASOURCES["tally-prometheus"]["url"])
    assert (prom.hostname, prom.port) == ("prometheus", defaults.prometheus_port)
    host, port = DATASOURCES["tally-timescale"]["url"].split(":")
    assert (host, int(port)) == ("timescaledb", defaults.postgres_port)
    influx = urlsplit(DATASOURCES["tally-influx"]["url"])
    assert (influx.hostname, influx.port) == ("influxdb", defaults.influx_port)
    assert set(SERVICES) >= {"prometheus", "timescaledb", "influxdb"}


def test_grafana_database_users_and_passwords_match_compose():
    pg, influx = DATASOURCES["tally-timescale"], DATASOURCES["tally-influx"]
    reader = re.search(r"CREATE ROLE (\w+)", (PROJECT_ROOT / "timescale/0002_reader.sql")
                       .read_text())[1]
    assert pg["user"] == reader and pg["jsonData"]["timescaledb"] is True
    assert influx["user"] == SERVICES["influxdb"]["environment"]["INFLUXDB_READ_USER"]
    grafana_env = SERVICES["grafana"]["environment"]
    for source in (pg, influx):
        variable = source["secureJsonData"]["password"].lstrip("$")
        assert variable in grafana_env and variable in ENV_EXAMPLE
    migrate_env = SERVICES["tally-migrate"]["environment"]
    assert migrate_env["TALLY_READER_PASSWORD"] == grafana_env["TALLY_GRAFANA_DB_PASSWORD"]


def test_prometheus_compose_targets_are_services():
    config = yaml.safe_load((PROJECT_ROOT / "prometheus/prometheus.compose.yml").read_text())
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]}
    defaults = Settings()
    assert targets == {f"tally-exporter:{defaults.exporter_port}",
                       f"tally-ingest:{defaults.ingest_port}",
                       f"tally-statsd:{defaults.statsd_metrics_port}"}
    assert "ports" not in SERVICES["tally-exporter"]  # reached on the internal network only


def test_statsd_publishes_its_port_over_udp_and_tcp_but_not_its_metrics():
    port = Settings().statsd_port
    assert set(SERVICES["tally-statsd"]["ports"]) == {f"{port}:{port}/udp", f"{port}:{port}/tcp"}
    assert SERVICES["tally-statsd"]["environment"]["TALLY_STATSD_HOST"] == "0.0.0.0"


@pytest.fixture(scope="module")
def resolved() -> dict:
    """`docker-compose config` of the file, with .env.example's values as the secrets."""
    # bootstrap installs Debian's docker-compose, so a missing binary is a failure, not a skip.
    assert shutil.which("docker-compose"), "docker-compose is missing: run `bash scripts/bootstrap`"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")} | ENV_EXAMPLE
    done = subprocess.run(["docker-compose", "--project-directory", str(PROJECT_ROOT), "-f",
                           str(PROJECT_ROOT / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_config_publishes_only_the_ingest_paths_and_grafana(resolved):
    published = {name: {(p["published"], p.get("protocol", "tcp")) for p in svc["ports"]}
                 for name, svc in resolved["services"].items() if svc.get("ports")}
    assert published == PUBLISHED
    for name in published:
        assert all(p["published"] == p["target"] for p in resolved["services"][name]["ports"])


def test_config_keeps_everything_else_on_the_internal_network(resolved):
    assert resolved["networks"]["internal"] == {"internal": True}
    for name, svc in resolved["services"].items():
        expected = {"internal", "edge"} if name in ON_EDGE else {"internal"}
        assert set(svc["networks"]) == expected, name


def test_config_pins_every_image_to_an_exact_version(resolved):
    images = {name: svc["image"] for name, svc in resolved["services"].items()}
    assert {images[name] for name in OURS} == {"tally:local"}  # built from the Dockerfile
    for name in set(images) - OURS:
        repo, _, tag = images[name].rpartition(":")
        assert repo and EXACT_TAG.fullmatch(tag), images[name]
    bases = re.findall(r"^FROM (\S+)", (PROJECT_ROOT / "Dockerfile").read_text(), re.M)
    assert bases and all(EXACT_TAG.fullmatch(base.split(":")[1]) for base in bases), bases


def test_config_has_no_lifecycle_api(resolved):
    commands = [arg for svc in resolved["services"].values() for arg in svc.get("command", [])]
    assert "--web.enable-lifecycle" not in commands and commands


def test_config_mounts_the_committed_alertmanager_config(resolved):
    am = resolved["services"]["alertmanager"]
    config = f"{PROJECT_ROOT}/prometheus/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro"
    assert config in am["volumes"]
    assert "--cluster.listen-address=" in am["command"]
    assert "tally-exporter" in am["depends_on"]
