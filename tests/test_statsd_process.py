"""`tally statsd` as a real process, and batches the batch step refuses for now being retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import redis
import requests

from tally.ingest.counting import reads
from tally.ingest.counting.config import CountingConfig
from tally.settings import PROJECT_ROOT
from tally.stack import services
from tally.stack.process import free_ports
from tests.statsd_support import (
    lines_seen,
    listening,
    logged_events,
    send_tcp,
    send_udp,
    statsd_settings,
    wait_until,
)
from tests.test_event_log import archive_all


def _env(**settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    return env | {f"TALLY_{k.upper()}": str(v) for k, v in settings.items()}


def test_tally_statsd_counts_udp_and_tcp_and_applies_the_rest_when_stopped(redis_url,
                                                                            redis_client,
                                                                            tmp_path):
    port, metrics = free_ports(2)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[[mapping]]\nmatch = "mapped.*"\ncounter = "via_file"\nkey = "$1"\n')
    env = _env(redis_url=redis_url, statsd_port=port, statsd_metrics_port=metrics,
               statsd_interval=0.2, shards=2, sinks="", statsd_mapping_file=mapping)
    config = CountingConfig.from_settings(statsd_settings(redis_url))
    log = open(tmp_path / "statsd.log", "wb")  # noqa: SIM115 (the process outlives this line)
    proc = subprocess.Popen([sys.executable, "-m", "tally.stack.cli", "statsd"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{metrics}/metrics"
        wait_until(lambda: _answers(url), 20)
        send_udp(port, b"proc.udp:3|c\nproc.udp:1|c|@0.5", b"proc.timing:3|ms")
        send_tcp(port, b"proc.tcp:2|c\nmapped.x:1|c\n")
        wait_until(lambda: reads.total(redis_client, config, "proc", "udp") == 5
                   and reads.total(redis_client, config, "proc", "tcp") == 2
                   and reads.total(redis_client, config, "via_file", "x") == 1)
        text = requests.get(url, timeout=5).text
        assert 'tally_statsd_samples_total{type="c"} 4.0' in text
        assert 'tally_statsd_refused_total{type="ms"} 1.0' in text
        send_udp(port, b"proc.last:1|c")  # counted by the flush at the stop
        wait_until(lambda: 'tally_statsd_samples_total{type="c"} 5.0' in
                   requests.get(url, timeout=5).text)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, (tmp_path / "statsd.log").read_text()
        log.close()
    assert reads.total(redis_client, config, "proc", "last") == 1


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.ConnectionError:
        return False


def test_a_batch_refused_while_the_event_log_is_full_is_retried(redis_url, redis_client,
                                                                pg_dsn):
    settings = statsd_settings(redis_url, postgres_dsn=pg_dsn, shards=1, event_log_max=2)
    config = CountingConfig.from_settings(settings)
    with listening(redis_client, settings) as (listener, (udp, _tcp)):
        send_udp(udp, b"full.a:1|c\nfull.b:1|c\nfull.c:1|c")  # the log holds 3 after this
        wait_until(lambda: lines_seen(listener) == 3)
        listener.flush()
        send_udp(udp, b"full.a:4|c")
        wait_until(lambda: lines_seen(listener) == 4)
        listener.flush()
        assert listener.stats.apply_failures == {"EventLogFullError": 1}
        assert listener.stats.pending_events == 1
        assert reads.total(redis_client, config, "full", "a") == 1
        archive_all(redis_client, settings)
        listener.flush()
    assert reads.total(redis_client, config, "full", "a") == 5
    assert listener.stats.pending_events == 0 and listener.stats.events_applied == 4


def test_counts_received_while_redis_is_down_are_applied_once_it_is_back(tmp_path):
    port = free_ports(1)[0]
    settings = statsd_settings(f"redis://127.0.0.1:{port}/0")
    config = CountingConfig.from_settings(settings)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
    with listening(client, settings) as (listener, (udp, tcp)):
        send_udp(udp, b"outage.k:2|c\noutage.u:alice|s")
        wait_until(lambda: lines_seen(listener) == 2)
        listener.flush()
        assert sum(listener.stats.apply_failures.values()) == 1
        send_tcp(tcp, b"outage.k:3|c\n")  # summed beside the pending chunk
        wait_until(lambda: lines_seen(listener) == 3)
        with services.running(services.redis(port, tmp_path / "redis"), tmp_path / "log"):
            listener.flush()
            assert reads.total(client, config, "outage", "k") == 5
            assert reads.unique_views(client, config, "outage", "u") == 1
    client.close()
    assert listener.stats.pending_events == 0 and listener.stats.events_applied == 3


def test_the_readme_statsd_snippet_counts_as_it_says(redis_client, redis_url):
    """README's "Count from your code" StatsD line, run as written (the port aside)."""
    section = (PROJECT_ROOT / "README.md").read_text().split("## Count from your code\n", 1)[1]
    snippet = section.split("```bash\n", 1)[1].split("```", 1)[0]
    settings = statsd_settings(redis_url)
    config = CountingConfig.from_settings(settings)
    with listening(redis_client, settings) as (listener, (udp, _tcp)):
        assert "/dev/udp/127.0.0.1/8125" in snippet
        subprocess.run(["bash", "-c", snippet.replace("/8125", f"/{udp}")], check=True,
                       timeout=10)
        wait_until(lambda: lines_seen(listener) == 3)
        listener.flush()
    assert [reads.total(redis_client, config, "app", key)
            for key in ("signups", "logins", "visitors")] == [1, 10, 1]
    assert reads.unique_views(redis_client, config, "app", "visitors") == 1
    props = [e["props"] for e in logged_events(redis_client, settings, "app")
             if e["key"] == "signups"]
    assert props == ['{"plan":"pro"}']
