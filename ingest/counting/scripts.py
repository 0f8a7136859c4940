"""Counting scripts called by SHA through `delivery`, so a call is never sent twice.

Text and SHA come from `loader` (its NOSCRIPT policy: a call that met
NOSCRIPT did not run, so it is resent once after SCRIPT LOAD). Calls go
out through `delivery`, so a call that may have reached Redis is
never resent: each outcome is a reply, or a refusal the callers turn into
one of Tally's errors with `error_of`: not applied (safe to retry), the
script's own refusal, or outcome unknown.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence

from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    TryAgainError,
)

from tally.errors import (
    NotAppliedError,
    OutcomeUnknownError,
    RedisStateError,
    ScriptError,
    TallyError,
)
from tally.ingest.counting import delivery, loader
from tally.ingest.counting.delivery import Lost, NotSent, failed

STATE = "TALLY_STATE"  # prefix of a script's refusal: a key holds data of another kind
# Redis appends where a script raised its error; the sentence is ours.
_WHERE = re.compile(r"\s*script: [0-9a-f]{40}, on @user_script:\d+\.$")
log = logging.getLogger("tally.ingest")

# Redis errors that mean the command did not run, by the reason Tally reports.
_NOT_RUN = (
    (OutOfMemoryError, "out-of-memory", "Redis is out of memory (maxmemory, noeviction)"),
    (BusyLoadingError, "loading", "Redis is loading its data set"),
    (ReadOnlyError, "read-only", "the Redis server is a read-only replica"),
    ((ClusterDownError, MasterDownError, TryAgainError, MovedError, AskError),
     "cluster-unavailable", "the Redis Cluster cannot serve this key now"),
    ((AuthenticationError, NoPermissionError), "permission-denied",
     "Redis refused Tally's credentials or permissions"),
    (NoScriptError, "script-missing", "Redis lost Tally's script while it was being reloaded"),
)
_BUSY = "BUSY"
_CLUSTER_WORDS = ("non local key", "cluster is down", "not hash to the same slot")


def message(exc: Exception) -> str:
    """A Redis error's sentence without the script location Redis appends."""
    return _WHERE.sub("", str(exc))


def error_of(outcome, refusals: Mapping[str, Callable[[str], TallyError]] | None = None
             ) -> TallyError:
    """The Tally error for a failed outcome; `refusals` maps a script's own error codes."""
    if isinstance(outcome, Lost):
        return OutcomeUnknownError(f"Redis did not answer after the write was sent "
                                   f"({outcome.error}); it may or may not have been applied")
    if isinstance(outcome, NotSent):
        return NotAppliedError("unavailable", f"Redis could not be reached ({outcome.error}); "
                                              "nothing was applied")
    text = message(outcome)
    for kinds, reason, why in _NOT_RUN:
        if isinstance(outcome, kinds):
            return NotAppliedError(reason, f"{why}: {text}; nothing was applied")
    if text.startswith(_BUSY):
        return NotAppliedError("busy", f"Redis is busy running a script: {text}; "
                                       "nothing was applied")
    if any(words in text for words in _CLUSTER_WORDS):
        return NotAppliedError("cluster-unavailable",
                               f"the Redis Cluster cannot serve this key now: {text}; "
                               "nothing was applied")
    code, _, rest = text.partition(" ")
    if refusals and code in refusals:
        return refusals[code](rest)
    if code == STATE:
        return RedisStateError(rest)
    return ScriptError(text)


def _commands(sha: str, calls: Sequence[tuple[str | list[str], list]],
              prelude: Sequence[tuple]) -> list:
    """(routing key, command) pairs: the prelude, then one EVALSHA per call (keys first)."""
    commands = [(command[1], tuple(command)) for command in prelude]
    for key, args in calls:
        names = [key] if isinstance(key, str) else key
        commands.append((names[0], ("EVALSHA", sha, len(names), *names, *args)))
    return commands


def _reload(client, name: str, commands: list, outcomes: list) -> None:
    """Load the script and resend the calls that met NOSCRIPT (they did not run: loader.py)."""
    missing = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, NoScriptError)]
    if not missing:
        return
    try:
        loader.load(client, loader.COUNTING, name)
    except RedisError as exc:
        for i in missing:
            outcomes[i] = NotSent(exc)
        return
    for i, outcome in zip(missing, delivery.send(client, [commands[i] for i in missing]),
                          strict=True):
        outcomes[i] = outcome


def call_many(client, name: str, calls: Sequence[tuple[str | list[str], list]],
              prelude: Sequence[tuple] = ()) -> list:
    """Run counting script `name` once per (key or keys, args) after the prelude (registry
    commands, not the Lua key prelude); one outcome per call.

    An outcome is the script's reply or a failure (`delivery.failed`) for
    `error_of`. Everything goes out in one round trip once the script is
    loaded. The prelude (idempotent registry writes such as SADD) is resent
    once on its own if it failed while the calls ran.
    """
    commands = _commands(loader.digest(loader.COUNTING, name), calls, prelude)
    outcomes = delivery.send(client, commands)
    _reload(client, name, commands, outcomes)
    head, replies = outcomes[:len(prelude)], outcomes[len(prelude):]
    again = [commands[i] for i, outcome in enumerate(head) if failed(outcome)]
    if again and not any(failed(reply) for reply in replies):
        for outcome in delivery.send(client, again):
            if failed(outcome):
                log.error("registry write failed after a script call applied: %s",
                          error_of(outcome))
    return replies


def call(client, name: str, key: str | list[str], args: list, prelude: Sequence[tuple] = (),
         refusals: Mapping[str, Callable[[str], TallyError]] | None = None):
    """Run script `name` once on `key` (or keys); return its reply or raise its Tally error."""
    reply = call_many(client, name, [(key, args)], prelude)[0]
    if failed(reply):
        raise error_of(reply, refusals)
    return reply
