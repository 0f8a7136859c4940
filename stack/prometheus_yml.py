"""Render prometheus/prometheus.yml for the local stack's ports and folders.

The file names Tally's default loopback ports; `tally up` swaps in the
configured ones and makes rule file paths absolute, because the rendered copy
lives in the data folder while the rules stay in prometheus/.
"""

from __future__ import annotations

import re
from pathlib import Path

from tally.settings import PROJECT_ROOT, Settings

SOURCE = PROJECT_ROOT / "prometheus" / "prometheus.yml"


def port_map(settings: Settings) -> dict[int, int]:
    """Map each default port named in prometheus.yml to the configured one."""
    return {9841: settings.exporter_port, 9090: settings.prometheus_port,
            8080: settings.ingest_port}


def render(text: str, ports: dict[int, int], base: Path) -> str:
    """Swap 127.0.0.1/localhost ports and make `- path` items under rule_files absolute."""
    text = re.sub(r"\b(127\.0\.0\.1|localhost):(\d+)\b",
                  lambda m: f"{m.group(1)}:{ports.get(int(m.group(2)), m.group(2))}", text)
    lines, in_rules = [], False
    for line in text.splitlines():
        if re.match(r"\S", line):
            in_rules = line.startswith("rule_files:")
        item = re.match(r"(\s*-\s*)([\"']?)([^\"'\s/][^\"'\s]*)([\"']?)\s*$", line)
        if in_rules and item:
            line = f"{item.group(1)}{item.group(2)}{base / item.group(3)}{item.group(4)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def write_config(settings: Settings) -> Path:
    """Write the rendered config into the data folder and return its path."""
    target = settings.data_dir / "prometheus.yml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(SOURCE.read_text(), port_map(settings), SOURCE.parent))
    return target
