"""The archiver: the flusher's worker that moves the event log from Redis into TimescaleDB.

The batch step appends each group of events it counted to its shard's log
stream (`<tag>log`, one entry per group: `n` events, `e` their lines in COPY
text). A run of the archiver, under the flusher lock of sink "events",
repeats rounds of:

1. read: up to ENTRIES_PER_STREAM entries from the head of every stream;
2. store: one transaction that locks the streams' rows of
   event_log_positions (FOR UPDATE, in stream order), COPYs the entries past
   each stream's position into `events` as they are, and moves the positions
   to the last entry stored;
3. trim: only after the commit, delete the entries read (lua/log_trim.lua,
   which also takes their events off the shard's backlog).

A crash between 2 and 3 leaves entries in the stream that the database
already holds; the next run finds them at or below the position, stores
nothing and trims them. Two archivers racing (a lost lock) meet at the
position rows: the second waits for the first to commit, then sees the new
positions and skips. So every entry reaches `events` exactly once, and an
entry leaves Redis only once it is in the database.

Fencing, as for the counts (fence.py): a run records its lock's fence in
sink_fence (row 'events') when it starts and checks it as the last
statement of each store transaction, so an archiver that lost its lock
rolls back instead of committing; it trims only after checking that the
lock is still its own.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import NamedTuple

import psycopg

from tally.backends import EVENT_COLUMNS
from tally.errors import SinkError
from tally.ingest.counting import loader
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import fence, handoff, lock
from tally.ingest.flusher.deadline import SocketDeadline
from tally.ingest.flusher.flush import RunResult, claim
from tally.ingest.flusher.timescale import connect, statement_timeout_sql

NAME = "events"  # the archiver's name as a flusher worker: its lock, health hash and logs
ENTRIES_PER_STREAM = 64  # per stream and round; an entry holds one batch's events of a shard
MAX_ROUNDS = 200  # bound one run, like the sinks' runs
INTERVAL = 1.0  # seconds between runs at most (TALLY_FLUSH_INTERVAL when shorter)
COLUMN_LIST = ", ".join(f'"{column}"' for column in EVENT_COLUMNS)  # "user" is a keyword
COPY_EVENTS = f"COPY events ({COLUMN_LIST}) FROM STDIN"
ENSURE_POSITIONS = """INSERT INTO event_log_positions (stream, last_ms, last_seq)
SELECT stream, 0, 0 FROM unnest(%s::text[]) AS stream ORDER BY stream
ON CONFLICT (stream) DO NOTHING"""
LOCK_POSITIONS = """SELECT stream, last_ms, last_seq FROM event_log_positions
WHERE stream = ANY(%s) ORDER BY stream FOR UPDATE"""
MOVE_POSITION = "UPDATE event_log_positions SET last_ms = %s, last_seq = %s WHERE stream = %s"
log = logging.getLogger(__name__)


class Entry(NamedTuple):
    """One log entry: the events one batch counted in one shard."""

    shard: handoff.Shard
    id: bytes  # the stream entry ID, b"<ms>-<seq>"
    events: int
    text: bytes  # COPY text, one line per event

    @property
    def position(self) -> tuple[int, int]:
        """The entry ID as a comparable (ms, seq)."""
        ms, _, seq = self.id.partition(b"-")
        return int(ms), int(seq)


def _entry(shard: handoff.Shard, entry_id: bytes, fields: dict) -> Entry:
    """An entry from XRANGE's reply; refuses an entry Tally did not write."""
    events, text = fields.get(b"n"), fields.get(b"e")
    if events is None or text is None or not events.isdigit():
        raise SinkError(f"log stream {shard.keys.log} holds entry {entry_id.decode()} that "
                        "Tally did not write (no n and e fields); delete it to go on")
    return Entry(shard, entry_id, int(events), text)


def read_entries(client, shards: Sequence[handoff.Shard], count: int) -> list[Entry]:
    """Up to `count` oldest entries of each shard's log, in stream order."""
    return read_round(client, shards, count)[0]


def read_round(client, shards: Sequence[handoff.Shard],
               count: int) -> tuple[list[Entry], list[handoff.Shard]]:
    """(entries as read_entries, the shards whose empty log still claims a backlog)."""
    if not shards:
        return [], []
    pipe = client.pipeline(transaction=False)
    for shard in shards:
        pipe.xrange(shard.keys.log, count=count)
        pipe.hget(shard.keys.stats, "log_backlog")
    replies = pipe.execute()
    entries, stale = [], []
    for shard, reply, backlog in zip(shards, replies[::2], replies[1::2], strict=True):
        entries += [_entry(shard, entry_id, fields) for entry_id, fields in reply]
        if not reply and int(backlog or 0):
            stale.append(shard)
    return entries, stale


def trim(client, entries: Sequence[Entry], settle: Sequence[handoff.Shard] = ()) -> int:
    """Delete stored entries from their streams; return the events taken off the backlog.

    `settle`: shards with no entry whose backlog is reset if their log is still empty.
    """
    by_shard: dict[handoff.Shard, list] = {shard: [] for shard in settle}
    for entry in entries:
        by_shard.setdefault(entry.shard, []).extend([entry.id, entry.events])
    pipe = client.pipeline(transaction=False)
    for shard, args in by_shard.items():
        loader.queue_eval(pipe, loader.FLUSHER, "log_trim", [shard.keys.log, shard.keys.stats],
                          args)
    return int(sum(pipe.execute())) if by_shard else 0


class EventArchiver:
    """Stores log entries in TimescaleDB's `events`, each exactly once (see the module doc)."""

    name = NAME
    skipped_total = 0  # the table holds every event

    def __init__(self, dsn: str, *, connect_timeout: float = 5.0, write_timeout: float = 30.0):
        self.dsn, self.connect_timeout, self.write_timeout = dsn, connect_timeout, write_timeout
        self._conn: psycopg.Connection | None = None
        self.fence: fence.Fence | None = None  # set by claim; None = unfenced stores

    @classmethod
    def from_settings(cls, settings) -> EventArchiver:
        """Archiver for settings.postgres_dsn with the sinks' timeouts."""
        return cls(settings.postgres_dsn, connect_timeout=settings.sink_connect_timeout,
                   write_timeout=settings.sink_write_timeout)

    def _connect(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn, self.connect_timeout)
            self._conn.execute(statement_timeout_sql(self.write_timeout))
            self._conn.commit()
        return self._conn

    def claim(self, held: fence.Fence) -> int | None:
        """Record a lock holder's fence; None when accepted, else the larger fence stored."""
        try:
            conn = self._connect()
            with SocketDeadline(conn.fileno(), self.write_timeout):
                stored = fence.claim(conn, held)
        except psycopg.Error as exc:
            self.close()
            raise SinkError(f"TimescaleDB: recording the archiver's fence failed: {exc}") from exc
        self.fence = held if stored is None else None
        return stored

    def store(self, entries: Sequence[Entry]) -> list[Entry]:
        """Commit the entries past their stream's position; return those stored."""
        if not entries:
            return []
        deadline = None
        try:
            conn = self._connect()
            with SocketDeadline(conn.fileno(), self.write_timeout) as deadline, \
                    conn.transaction(), conn.cursor() as cur:
                fresh = self._store(cur, entries)
                fence.check(cur, self.fence)
        except psycopg.Error as exc:
            self.close()
            why = (f"did not finish within {self.write_timeout:g} s"
                   if deadline is not None and deadline.expired else f"failed: {exc}")
            raise SinkError(f"archive of {sum(e.events for e in entries)} events {why}") from exc
        if deadline.expired:  # committed as the deadline shut the socket
            self.close()
        return fresh

    @staticmethod
    def _store(cur: psycopg.Cursor, entries: Sequence[Entry]) -> list[Entry]:
        streams = sorted({entry.shard.keys.log for entry in entries})
        cur.execute(ENSURE_POSITIONS, [streams])
        cur.execute(LOCK_POSITIONS, [streams])
        positions = {stream: (ms, seq) for stream, ms, seq in cur.fetchall()}
        fresh = [e for e in entries if e.position > positions[e.shard.keys.log]]
        if not fresh:
            return []
        with cur.copy(COPY_EVENTS) as copy:
            for entry in fresh:
                copy.write(entry.text)
        last = {entry.shard.keys.log: entry.position for entry in fresh}  # stream order
        cur.executemany(MOVE_POSITION, [(ms, seq, stream) for stream, (ms, seq) in last.items()])
        return fresh

    def close(self) -> None:
        """Close the connection (the next store reconnects)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _noop(point: str) -> None:
    """No checkpoint hook."""


def archive_run(client, config: CountingConfig, archiver: EventArchiver, settings,
                checkpoint: Callable[[str], None] = _noop) -> RunResult:
    """Archive rounds until every log stream is drained (or MAX_ROUNDS), under the lock.

    RunResult: marks = entries read, rows = events stored, recovered =
    entries found already stored (a crash between commit and trim).
    """
    held = lock.acquire(client, NAME, handoff.new_token(), settings.flush_lock_seconds)
    if isinstance(held, lock.Busy):
        return RunResult(0, 0, 0, elsewhere=True, retry_in=held.retry_in)
    entries_read = events_stored = already = 0
    with held:
        claim(archiver, held, checkpoint)
        active = handoff.discover(client, config.shards)
        for _ in range(MAX_ROUNDS):
            if not active:
                break
            held.verify()
            entries, stale = read_round(client, active, ENTRIES_PER_STREAM)
            if not entries:
                trim(client, [], stale)
                break
            checkpoint(f"read:{NAME}")
            fresh = archiver.store(entries)
            checkpoint(f"archived:{NAME}")
            held.verify()  # lost: the holder finds these entries stored and trims them
            trim(client, entries, stale)
            checkpoint(f"trimmed:{NAME}")
            entries_read += len(entries)
            events_stored += sum(entry.events for entry in fresh)
            already += len(entries) - len(fresh)
            # A stream that gave fewer entries than asked is drained for this run.
            read_per_shard = Counter(entry.shard for entry in entries)
            active = [s for s in active if read_per_shard[s] >= ENTRIES_PER_STREAM]
    if already:
        log.info("trimmed log entries archived before", extra={"fields": {"entries": already}})
    return RunResult(entries_read, events_stored, already)
