"""StatsD over UDP: packets absorbed and lost by `tally statsd` and by the npm `statsd` daemon.

Both are fed the same offered rates by the same paced sender, one increment
per datagram (`bench.<case>:1|c`), one daemon at a time, median of 3
interleaved rounds. Absorbed means counted: for Tally the key's total in
Redis after the listener's last batch step (SIGTERM flushes it), for npm
statsd its counter read from the management port (flushInterval is an hour,
so nothing is flushed away meanwhile). npm statsd is installed into a cache
folder on first use (`npm install statsd@NPM_STATSD`). It runs twice: stock
(the kernel's default receive buffer) and with a 4 MiB buffer as Tally asks
for (listener.RECEIVE_BUFFER), so buffer size and processing speed can be
told apart.

Run: bench/run -k statsd   (about 2 minutes; needs node and npm)
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

from tally.ingest.counting import reads
from tally.ingest.counting.config import CountingConfig
from tally.redis_connect import connect, disconnect
from tally.stack.process import free_ports

NEEDS = {"redis"}
NPM_STATSD = "0.9.0"
RATES = (10_000, 50_000, 100_000, 200_000)  # offered datagrams per second
SECONDS, ROUNDS, BURST = 3.0, 3, 200
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tally-bench"
BIG_BUFFER_SERVER = """\
// servers/udp.js of statsd, with the receive buffer Tally's listener asks for.
const dgram = require('dgram');
exports.start = function (config, callback) {
  const server = dgram.createSocket({type: 'udp4', recvBufferSize: 4 * 1024 * 1024}, callback);
  server.bind(config.port, config.address);
  this.server = server;
  return true;
};
"""


def npm_statsd() -> Path:
    """The statsd package folder, installed into the cache on first use."""
    prefix = CACHE / f"statsd-{NPM_STATSD}"
    package = prefix / "node_modules" / "statsd"
    if not (package / "stats.js").exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix),
                        f"statsd@{NPM_STATSD}"], check=True, capture_output=True, timeout=600)
    (prefix / "udp_big_buffer.js").write_text(BIG_BUFFER_SERVER)
    return package


def send(port: int, name: bytes, rate: int, seconds: float) -> float:
    """Send `name:1|c` at `rate` per second for `seconds`, paced; return the rate achieved."""
    datagram, sent = name + b":1|c", 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        started = time.perf_counter()
        total = int(rate * seconds)
        while sent < total:
            due = started + sent / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            for _ in range(min(BURST, total - sent)):
                sock.send(datagram)
            sent += min(BURST, total - sent)
        return sent / (time.perf_counter() - started)


def _await(probe, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("daemon did not start")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tally_trial(settings, rate: int, case: str) -> tuple[int, float]:
    """(absorbed datagrams, rate achieved) of one `tally statsd` trial."""
    port, metrics = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")} | {
        "TALLY_REDIS_URL": settings.redis_url, "TALLY_STATSD_PORT": str(port),
        "TALLY_STATSD_METRICS_PORT": str(metrics), "TALLY_SINKS": ""}
    proc = subprocess.Popen([sys.executable, "-m", "tally.stack.cli", "statsd"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _await(lambda: requests.get(f"http://127.0.0.1:{metrics}/metrics", timeout=1).ok)
        achieved = send(port, f"bench.{case}".encode(), rate, SECONDS)
        time.sleep(0.5)  # let the socket buffer drain
    finally:
        _stop(proc)  # the last batch step runs at the stop
    client = connect(settings)
    try:
        return reads.total(client, CountingConfig.from_settings(settings), "bench",
                           case), achieved
    finally:
        disconnect(client)


def _mgmt_counter(port: int, name: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"counters\n")
        reply = b""
        while b"END" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    found = re.search(rf"'{re.escape(name)}': (\d+)", reply.decode())
    return int(found[1]) if found else 0


def npm_trial(package: Path, rate: int, case: str, big_buffer: bool) -> tuple[int, float]:
    """(absorbed datagrams, rate achieved) of one npm statsd trial."""
    port, mgmt = free_ports(2)
    server = str(package.parent.parent / "udp_big_buffer.js") if big_buffer else "./servers/udp"
    config = {"port": port, "address": "127.0.0.1", "mgmt_port": mgmt,
              "mgmt_address": "127.0.0.1", "flushInterval": 3_600_000,
              "backends": ["./backends/console"], "servers": [{"server": server, "port": port,
                                                              "address": "127.0.0.1"}]}
    config_file = package.parent.parent / f"bench-{port}.json"
    config_file.write_text(json.dumps(config))
    proc = subprocess.Popen(["node", "stats.js", str(config_file)], cwd=package,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _await(lambda: _mgmt_counter(mgmt, "statsd.packets_received") >= 0)
        achieved = send(port, f"bench.{case}".encode(), rate, SECONDS)
        time.sleep(0.5)
        return _mgmt_counter(mgmt, f"bench.{case}"), achieved
    finally:
        _stop(proc)
        config_file.unlink(missing_ok=True)


def run(settings) -> list[dict]:
    """One row per daemon and offered rate: absorbed datagrams/s and loss, median of ROUNDS."""
    package = npm_statsd()
    daemons = {"tally statsd": lambda rate, case: tally_trial(settings, rate, case),
               f"npm statsd {NPM_STATSD}": lambda rate, case: npm_trial(package, rate, case,
                                                                        False),
               f"npm statsd {NPM_STATSD}, 4 MiB buffer":
                   lambda rate, case: npm_trial(package, rate, case, True)}
    trials: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for round_ in range(ROUNDS):
        for rate in RATES:
            for index, (name, trial) in enumerate(daemons.items()):
                case = f"r{rate}_{round_}_{index}"
                trials.setdefault((name, rate), []).append(trial(rate, case))
    rows = []
    for (name, rate), results in trials.items():
        sent = int(rate * SECONDS)  # every trial sends this many, at `achieved` per second
        counts = [count for count, _achieved in results]
        median = statistics.median(counts)
        rows.append({"case": name, "target_per_s": rate,
                     "offered_per_s": round(statistics.median(a for _c, a in results)),
                     "absorbed_per_s": round(median / SECONDS),
                     "loss_pct": round(100 * (1 - median / sent), 2),
                     "worst_loss_pct": round(100 * (1 - min(counts) / sent), 2)})
    return rows
