"""The one Lua loader: script text from package data, the key prelude, the SHA, NOSCRIPT.

A script is `lua/<name>.lua` of a Tally package (or, for the batch step,
the parts in PARTS concatenated in that order), read through
`importlib.resources` so an installed wheel works like a checkout. The
prelude from `tally.keys.lua_prelude()` goes first, so scripts build every
key name through `K` and spell none of their own; the SHA is taken over the
final text, which is what Redis hashes too.

NOSCRIPT policy, the same for every caller: a NOSCRIPT reply means Redis
did not run the script at all (it checks the SHA before running anything),
so loading the script and sending the same call again cannot apply it
twice. Calls go out as EVALSHA and are resent once after SCRIPT LOAD
(`call`, and scripts.call_many for the batch step). Pipelines use EVAL
(`queue_eval`): redis-py refuses EVALSHA in cluster pipelines, and EVAL
carries the text, so it never meets NOSCRIPT; Redis caches the compiled
script by the same SHA.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from hashlib import sha1
from importlib.resources import files

from redis.exceptions import NoScriptError

from tally import keys

COUNTING = "tally.ingest.counting"
FLUSHER = "tally.ingest.flusher"
# Scripts made of parts, each a screen or so: concatenated in this order,
# each part's locals at its top, run-time values passed as parameters.
PARTS = {
    (COUNTING, "apply"): ("apply_common", "apply_hash", "apply_dedup", "apply_aggregate",
                          "apply_plan", "apply_write", "apply"),
}


def _part(package: str, name: str) -> str:
    return (files(package) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


@cache
def source(package: str, name: str) -> str:
    """Final text of a script: the key prelude, then its part or parts."""
    parts = PARTS.get((package, name), (name,))
    return keys.lua_prelude() + "".join(_part(package, part) for part in parts)


@cache
def digest(package: str, name: str) -> str:
    """SHA-1 of a script's final text, as EVALSHA wants it."""
    return sha1(source(package, name).encode()).hexdigest()


def load(client, package: str, name: str) -> None:
    """SCRIPT LOAD the script (on a cluster: every primary)."""
    client.script_load(source(package, name))


def call(client, package: str, name: str, keys_: Sequence[str], args: Sequence):
    """Run a script by SHA; after NOSCRIPT (it did not run) load it and send the call again."""
    try:
        return client.evalsha(digest(package, name), len(keys_), *keys_, *args)
    except NoScriptError:
        load(client, package, name)
        return client.evalsha(digest(package, name), len(keys_), *keys_, *args)


def queue_eval(pipe, package: str, name: str, keys_: Sequence[str], args: Sequence) -> None:
    """Queue a script on a pipeline as EVAL (see the NOSCRIPT policy above)."""
    pipe.execute_command("EVAL", source(package, name), len(keys_), *keys_, *args)
