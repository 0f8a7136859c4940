"""Join running Redis nodes into a cluster of primaries and wait until it serves every slot."""

from __future__ import annotations

import subprocess
import time

from tally.errors import ServiceError


def cluster_info(port: int) -> dict[str, str]:
    """Return CLUSTER INFO of the node on port as a dict."""
    out = subprocess.run(["redis-cli", "-p", str(port), "cluster", "info"],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split(":", 1) for line in out.split() if ":" in line)


def _healthy(port: int, size: int) -> bool:
    info = cluster_info(port)
    return (info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == "16384"
            and info.get("cluster_known_nodes") == str(size))


def create_cluster(ports: list[int], timeout: float = 30.0) -> None:
    """Create a cluster of primaries (no replicas) on 127.0.0.1 and wait for cluster_state:ok."""
    nodes = [f"127.0.0.1:{port}" for port in ports]
    argv = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode:
        raise ServiceError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
    deadline = time.monotonic() + timeout
    while not all(_healthy(port, len(ports)) for port in ports):
        if time.monotonic() > deadline:
            raise ServiceError(f"Redis cluster on {nodes} did not reach cluster_state:ok")
        time.sleep(0.1)
