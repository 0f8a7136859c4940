"""Shape a batch for the batch step: events grouped by hash tag, key and (ts, value), as JSON.

The script gets one JSON argument instead of six arguments per event:
redis-py packs each argument in Python, which cost more than the script's
own work, and the script parses the JSON in C (cjson). Grouping per key
and per (ts, value) run also lets the script compute bucket indexes and
sums once per run instead of once per event. A repeat of a dedup identity
(counter, key, id) inside the batch is decided here, first occurrence wins,
as the script would; the script decides repeats of earlier batches.

With the event log on, every event also carries its log line (eventlog.py),
outside the JSON (which would escape every tab and newline, and cost the
script a decode): per group two raw arguments, the lines of events with an
id in the order of the group's members (the JSON gives each line's length,
so the script can leave out those it finds seen before) and the lines of
the others, never duplicates, as one text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from tally import keys
from tally.events import Event
from tally.ingest.counting import eventlog
from tally.ingest.counting.config import CountingConfig


def event_shard(config: CountingConfig, event: Event) -> int:
    """Shard an event goes to; a hot key's events spread by user, else id, else time."""
    spread = config.spread(event.counter, event.key)
    if spread == 1:
        return keys.key_shard(event.key, config.shards)
    # The same user always lands in the same shard, so unique views stay exact,
    # and a retried event (same user and id) meets its own dedup mark.
    discriminator = event.user or event.id or f"{time.time_ns()}"
    return keys.spread_shard(event.key, config.shards, spread, discriminator)


class _Run:
    """Events of one key with the same ts and value, ordered as the script reads them."""

    __slots__ = ("members_user", "users", "members_plain", "plain_users", "plain",
                 "lines_user", "lines_plain")

    def __init__(self) -> None:
        self.members_user: list[str] = []  # with id and user
        self.users: list[str] = []
        self.members_plain: list[str] = []  # with id, no user
        self.plain_users: list[str] = []  # no id, with user
        self.plain = 0  # no id, no user
        self.lines_user: list[bytes] = []  # log lines of members_user, in their order
        self.lines_plain: list[bytes] = []  # log lines of members_plain, in their order

    def add(self, member: str | None, user: str | None, line: bytes | None,
            lines_without_id: list[bytes]) -> None:
        """Append one event (and its log line, when the log is on)."""
        if member is None:
            if user is None:
                self.plain += 1
            else:
                self.plain_users.append(user)
            if line is not None:
                lines_without_id.append(line)
        elif user is None:
            self.members_plain.append(member)
            if line is not None:
                self.lines_plain.append(line)
        else:
            self.members_user.append(member)
            self.users.append(user)
            if line is not None:
                self.lines_user.append(line)


class TagGroup:
    """The events of one hash tag: in-batch duplicates and runs per key."""

    __slots__ = ("duplicates", "keys", "spreads", "received", "lines_without_id")

    def __init__(self, spreads: dict[str, int] | None = None,
                 received: str | None = None) -> None:
        self.duplicates = 0
        self.keys: dict[str, dict[tuple[int, int], _Run]] = {}
        self.spreads = spreads or {}  # the counter's hot keys: shards each is spread over
        self.received = received  # the log's `received` column; None: the log is off
        self.lines_without_id: list[bytes] = []

    def add(self, event: Event, member: str | None) -> None:
        """Append an event that is not a repeat inside the batch."""
        line = None if self.received is None else eventlog.line(event, self.received)
        runs = self.keys.get(event.key)
        if runs is None:
            runs = self.keys[event.key] = {}
        run = runs.get((event.ts, event.value))
        if run is None:
            run = runs[(event.ts, event.value)] = _Run()
        run.add(member, event.user, line, self.lines_without_id)

    def payload(self, tag: str) -> tuple[list, list[bytes]]:
        """The group as apply.lua reads it: ([tag, duplicates, members, [[key, runs], ...]],
        with the log on also the members' line lengths), and its raw log arguments
        ([] with the log off, else [the members' lines, the other lines]).

        A hot key carries its spread: the script bounds each shard's counts by
        the limit / spread, so the sum over the shards stays within 64 bits.
        """
        members, entries, lines = [], [], []
        for key, runs in self.keys.items():
            rows = []
            for (ts, value), run in runs.items():
                members += run.members_user
                members += run.members_plain
                lines += run.lines_user
                lines += run.lines_plain
                rows.append([ts, value, len(run.members_user), len(run.members_plain), run.plain,
                             run.users + run.plain_users])
            spread = self.spreads.get(key)
            entries.append([key, rows] if spread is None else [key, rows, spread])
        if self.received is None:
            return [tag, self.duplicates, members, entries], []
        return ([tag, self.duplicates, members, entries, [len(line) for line in lines]],
                [b"".join(lines), b"".join(self.lines_without_id)])


def hot_spreads(config: CountingConfig, counter: str) -> dict[str, int]:
    """The counter's hot keys and the shards each is spread over."""
    return {key: config.spread(counter, key) for (hot_counter, key) in config.hot_keys
            if hot_counter == counter and config.spread(counter, key) > 1}


def group_by_tag(config: CountingConfig, events: Iterable[Event],
                 received: float | None = None) -> dict[str, TagGroup]:
    """Events grouped by hash tag; repeats of (counter, key, id) inside the batch are counted.

    `received` (epoch seconds) is the log's `received` column of these
    events; None leaves the log lines out (the log is off).
    """
    received_text = None if received is None else eventlog.timestamp_text(received)
    groups: dict[str, TagGroup] = {}
    homes: dict[tuple[str, str], str | None] = {}  # (counter, key) -> tag, None when hot
    seen: set[tuple[str, str]] = set()
    for event in events:
        tag = homes.get((event.counter, event.key), "")
        if tag == "":
            hot = config.spread(event.counter, event.key) > 1
            tag = None if hot else keys.tag(event.counter, event_shard(config, event))
            homes[(event.counter, event.key)] = tag
        if tag is None:
            tag = keys.tag(event.counter, event_shard(config, event))
        group = groups.get(tag)
        if group is None:
            group = groups[tag] = TagGroup(hot_spreads(config, event.counter), received_text)
        member = None if event.id is None else keys.dedup_member(event.id, event.key)
        if member is not None:
            if (event.counter, member) in seen:
                group.duplicates += 1
                continue
            seen.add((event.counter, member))
        group.add(event, member)
    return groups


def arguments(groups: dict[str, TagGroup]) -> list:
    """The script's last arguments for these groups: the JSON (raw UTF-8, compact), then
    each group's raw log arguments in group order."""
    payloads, texts = [], []
    for tag, group in groups.items():
        payload, raw = group.payload(tag)
        payloads.append(payload)
        texts += raw
    return [json.dumps(payloads, ensure_ascii=False, separators=(",", ":")), *texts]
