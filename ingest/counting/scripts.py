"""Server-side scripts: loaded once, called by SHA in pipelines, reloaded on NOSCRIPT."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from hashlib import sha1
from pathlib import Path

from redis.exceptions import NoScriptError

LUA_DIR = Path(__file__).with_name("lua")


@cache
def source(name: str) -> str:
    """Text of lua/<name>.lua."""
    return (LUA_DIR / f"{name}.lua").read_text()


@cache
def digest(name: str) -> str:
    """SHA-1 of a script, as EVALSHA wants it."""
    return sha1(source(name).encode()).hexdigest()


def _pipeline(client, sha: str, calls: Sequence[tuple[str, list]],
              prelude: Sequence[tuple]) -> list:
    pipe = client.pipeline(transaction=False)
    for command in prelude:
        pipe.execute_command(*command)
    for key, args in calls:
        pipe.execute_command("EVALSHA", sha, 1, key, *args)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies[:len(prelude)]:
        if isinstance(reply, Exception):
            raise reply
    return replies[len(prelude):]


def call_many(client, name: str, calls: Sequence[tuple[str, list]],
              prelude: Sequence[tuple] = ()) -> list:
    """Run script `name` once per (key, args) in one pipeline, after the prelude commands.

    EVALSHA goes through execute_command because redis-py refuses Script
    objects and evalsha() in a cluster pipeline, and its plain-pipeline script
    support costs a SCRIPT EXISTS round trip per call. A call that meets
    NOSCRIPT (first use, restart, failover) did not run, so only those are
    retried after SCRIPT LOAD: nothing is ever applied twice.
    """
    sha = digest(name)
    replies = _pipeline(client, sha, calls, prelude)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        client.script_load(source(name))
        retried = _pipeline(client, sha, [calls[i] for i in missing], ())
        for i, reply in zip(missing, retried, strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def call(client, name: str, key: str, args: list, prelude: Sequence[tuple] = ()):
    """Run script `name` once on `key` (one round trip once loaded); return its reply."""
    return call_many(client, name, [(key, args)], prelude)[0]
