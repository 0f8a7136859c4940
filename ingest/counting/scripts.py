"""Server-side scripts, loaded once per client and called by SHA (EVALSHA, reloaded on NOSCRIPT)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

LUA_DIR = Path(__file__).with_name("lua")


@cache
def source(name: str) -> str:
    """Text of lua/<name>.lua."""
    return (LUA_DIR / f"{name}.lua").read_text()


def script(client, name: str):
    """A redis-py Script for lua/<name>.lua bound to this client (cached on the client)."""
    scripts = client.__dict__.setdefault("_tally_scripts", {})
    if name not in scripts:
        scripts[name] = client.register_script(source(name))
    return scripts[name]
