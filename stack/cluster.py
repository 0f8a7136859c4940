"""Join running Redis nodes into a cluster of primaries and wait until it serves every slot."""

from __future__ import annotations

import os
import subprocess
import time

from tally.errors import ServiceError


def _cli(args: list[str], password: str) -> subprocess.CompletedProcess:
    # REDISCLI_AUTH rather than -a: argv is visible to every user through ps.
    env = dict(os.environ, REDISCLI_AUTH=password) if password else None
    return subprocess.run(["redis-cli", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=env)


def cluster_info(port: int, password: str = "") -> dict[str, str]:
    """Return CLUSTER INFO of the node on port as a dict."""
    done = _cli(["-p", str(port), "cluster", "info"], password)
    done.check_returncode()
    return dict(line.split(":", 1) for line in done.stdout.split() if ":" in line)


def _healthy(port: int, size: int, password: str) -> bool:
    info = cluster_info(port, password)
    return (info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == "16384"
            and info.get("cluster_known_nodes") == str(size))


def create_cluster(ports: list[int], timeout: float = 30.0, password: str = "") -> None:
    """Create a cluster of primaries (no replicas) on 127.0.0.1 and wait for cluster_state:ok."""
    nodes = [f"127.0.0.1:{port}" for port in ports]
    done = _cli(["--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                password)
    if done.returncode:
        raise ServiceError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
    deadline = time.monotonic() + timeout
    while not all(_healthy(port, len(ports), password) for port in ports):
        if time.monotonic() > deadline:
            raise ServiceError(f"Redis cluster on {nodes} did not reach cluster_state:ok")
        time.sleep(0.1)
