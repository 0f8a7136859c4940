"""Send write commands to Redis at most once, and say for each whether it ran.

redis-py retries a command whose connection failed or timed out, even after
the command was sent: a batch that Redis ran but answered late would be
applied twice. Writes go out here instead, one packet per node, never
resent once they may have reached the server. Each command's outcome is
its reply, the error Redis answered (the command did not run, or a script
refused before its first write), `NotSent` (the connection failed before
anything was sent: not applied) or `Lost` (sent, then the connection timed
out or broke: it may or may not have run).

On a Redis Cluster, MOVED and ASK answers (the command did not run) are
followed once, after refreshing the slot table; a node that cannot be
reached makes the client refresh its slot table for the next call.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from typing import NamedTuple

from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ConnectionError,
    MovedError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TimeoutError,
)

NETWORK_ERRORS = (ConnectionError, TimeoutError, OSError)


class NotSent(NamedTuple):
    """The command never left: Redis did not run it."""

    error: Exception


class Lost(NamedTuple):
    """The command was sent but its answer did not come back: it may have run."""

    error: Exception


Command = tuple  # (routing key, (command name, *arguments))


def failed(outcome) -> bool:
    """Whether an outcome is anything but a reply."""
    return isinstance(outcome, NotSent | Lost | ResponseError)


class _Exchange:
    """One node's share of the commands on one checked-out connection."""

    def __init__(self, pool, commands: list[tuple]):
        self.pool, self.commands, self.conn = pool, commands, None
        self.outcomes: list = []

    def open(self) -> bool:
        """Check out a connected, healthy connection; on failure nothing was sent."""
        try:
            self.conn = self.pool.get_connection()
            self.conn.check_health()
        except NETWORK_ERRORS as exc:
            self.close(NotSent(exc))
            return False
        return True

    def write(self) -> None:
        """Send every command in one packet (may have reached Redis even if this fails)."""
        try:
            self.conn.send_packed_command(self.conn.pack_commands(self.commands),
                                          check_health=False)
        except NETWORK_ERRORS as exc:
            self.close(Lost(exc))

    def read(self) -> None:
        """Read one answer per command; a lost connection leaves the rest unknown."""
        if self.conn is None:
            return
        try:
            while len(self.outcomes) < len(self.commands):
                try:
                    self.outcomes.append(self.conn.read_response())
                except ResponseError as exc:
                    self.outcomes.append(exc)
        except NETWORK_ERRORS as exc:
            self.close(Lost(exc))
            return
        except BaseException:
            self.close(None)
            raise
        self.close(None)

    def close(self, rest) -> None:
        """Give the connection back (dropped if answers are pending); fill in the rest."""
        if self.conn is not None:
            if rest is not None:
                self.conn.disconnect()
            self.pool.release(self.conn)
            self.conn = None
        if rest is not None:
            self.outcomes += [rest] * (len(self.commands) - len(self.outcomes))


def _exchange_all(exchanges: Sequence[_Exchange]) -> None:
    """Send to every node before reading from any, as one round trip."""
    opened = [e for e in exchanges if e.open()]
    for exchange in opened:
        exchange.write()
    for exchange in opened:
        exchange.read()


def _send_single(client, commands: Sequence[Command]) -> list:
    exchange = _Exchange(client.connection_pool, [c for _, c in commands])
    _exchange_all([exchange])
    return exchange.outcomes


def _refresh(cluster: RedisCluster) -> None:
    """Reload the slot table; if that fails too, the next call tries again."""
    with suppress(RedisError, RedisClusterException):
        cluster.nodes_manager.initialize()


def _send_cluster(cluster: RedisCluster, commands: Sequence[Command], asking=None) -> list:
    by_node: dict[str, tuple] = {}
    outcomes: list = [None] * len(commands)
    for i, (key, command) in enumerate(commands):
        try:
            node = asking[i] if asking else cluster.get_node_from_key(key)
        except RedisClusterException as exc:  # no node serves the slot: nothing sent
            outcomes[i] = NotSent(exc)
            continue
        pool = cluster.get_redis_connection(node).connection_pool
        entry = by_node.setdefault(node.name, (pool, [], []))
        entry[1].append(i)
        entry[2].extend([("ASKING",), command] if asking else [command])
    exchanges = {name: _Exchange(pool, cmds) for name, (pool, _, cmds) in by_node.items()}
    _exchange_all(list(exchanges.values()))
    for name, (_, indexes, _) in by_node.items():
        got = exchanges[name].outcomes
        if asking:
            got = got[1::2]  # drop the ASKING answers
        for i, outcome in zip(indexes, got, strict=True):
            outcomes[i] = outcome
    if any(isinstance(o, NotSent | Lost) for o in outcomes):
        _refresh(cluster)
    return outcomes


def _redirected(cluster: RedisCluster, commands, outcomes) -> None:
    """Follow MOVED and ASK once: those commands did not run."""
    moved = [i for i, o in enumerate(outcomes) if isinstance(o, MovedError)]
    if moved:
        _refresh(cluster)
        for i, outcome in zip(moved, _send_cluster(cluster, [commands[i] for i in moved]),
                              strict=True):
            outcomes[i] = outcome
    asked = [i for i, o in enumerate(outcomes) if isinstance(o, AskError)]
    targets = [cluster.get_node(outcomes[i].host, outcomes[i].port) for i in asked]
    asked = [i for i, node in zip(asked, targets, strict=True) if node is not None]
    if asked:
        retried = _send_cluster(cluster, [commands[i] for i in asked],
                                asking=[t for t in targets if t is not None])
        for i, outcome in zip(asked, retried, strict=True):
            outcomes[i] = outcome


def send(client, commands: Sequence[Command]) -> list:
    """Send each (routing key, command) once; return one outcome per command, in order."""
    if not isinstance(client, RedisCluster):
        return _send_single(client, commands)
    outcomes = _send_cluster(client, commands)
    _redirected(client, commands, outcomes)
    return outcomes
