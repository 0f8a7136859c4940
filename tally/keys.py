"""The Redis key scheme: the single owner of every key name Tally uses.

A counter's keyspace is split into `shards` groups, each under its own hash
tag `{t:<counter>:<shard>}`. A key (what is counted) lives in the shard given
by CRC32 of its UTF-8 bytes, so everything one event touches (dedup mark,
buckets, HyperLogLogs, unique-view set, top-k set, dirty mark) shares one
cluster slot, while a big counter spreads over the whole cluster. Hot keys
may be spread over several shards; readers then merge those shards.

Inside a tag, keys are `<tag><kind>:<time index>:<key>`. The counter is
`[a-z0-9_]` and time indexes are integers, so the only free text is the
key, and it always comes last: no two (kind, time, key) triples can produce
the same name, and no brace in a key can change the hash slot (Redis hashes
the first `{...}`, which is always the tag). Hash fields and set members
carry keys as raw bytes. See docs/redis-keys.md for the full table.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from string import Formatter

from tally.resolutions import DAY, HOUR, MINUTE, RESOLUTIONS  # noqa: F401 - re-exported

# Every name, as a template: `{field}` parts are filled in, the rest is
# literal. Python (ShardKeys and the functions below), the Lua prelude
# (`lua_prelude`) and the patterns of every name (`patterns`) are all made
# from these tables, so a name is spelled here and nowhere else.
SHARD_NAMES = {  # after the shard's tag
    "bucket": "{resolution}:{index}",  # hash of key -> count in one minute/hour/day
    "total": "total",  # hash of key -> all-time count
    "hll": "u:{resolution}:{index}:{key}",  # HyperLogLog of a key's users in one bucket
    "counter_hll": "cu:{resolution}:{index}",  # HyperLogLog of the shard's users (exporter)
    "viewers": "uv:{day}:{key}",  # exact set of a key's users on one UTC day
    "unique_views": "uvc:{day}",  # hash of key -> unique views that day
    "unique_views_all": "uvc:all",  # hash of key -> unique views of all time
    "top": "top:{day}",  # sorted set of keys by count that day
    "top_all": "top:all",  # sorted set of keys by all-time count
    "dedup_ids": "ids:{generation}",  # exact dedup: members seen in one generation
    "bloom": "bloom:{generation}",  # bloom dedup: filter bitmap of one generation
    "stats": "stats",  # hash of events/duplicates/value (exporter) and log_backlog
    "log": "log",  # stream: the shard's event log, one entry per accepted group (archiver)
    "absent": "absent",  # never created: apply.lua's type check of viewer sets
    "dirty": "dirty:{sink}",  # sorted set of dirty marks not yet in one sink
    "inflight": "inflight:{sink}:{token}",  # marks taken by one flusher run
    "leases": "leases:{sink}",  # sorted set of in-flight tokens by lease deadline
    "featured": "featured:{resolution}:{index}",  # keys written to InfluxDB as own series
}
GLOBAL_NAMES = {  # outside any counter tag
    "counters": "tally:counters",  # set of counter names seen (discovery only)
    "leaderboards": "tally:leaderboards",  # set of leaderboard names (discovery only)
    "flusher_health": "tally:flusher:{sink}",  # hash of a sink's flusher health
    "flusher_lock": "tally:flusher:lock:{sink}",  # token of the one run writing a sink
    "leaderboard": "lb:{{{board}}}",  # sorted set of one board, scores negated
    "leaderboard_idempotency": "lb:{{{board}}}:idem:{digest}",  # one Idempotency-Key's record
    "rate_limit": "rl:{{{limit}:{digest}}}",  # sliding-window set of one (limit, subject)
    "rate_limit_seq": "rl:{{{limit}:{digest}}}:seq",  # that window's sequence counter
}
# What each field may hold, as a regular expression (`key` is free text and
# always comes last, so it may hold anything).
FIELD_PATTERNS = {
    "counter": "[a-z0-9_]+", "shard": "[0-9]+", "resolution": "[mhd]", "index": "-?[0-9]+",
    "day": "-?[0-9]+", "generation": "-?[0-9]+", "sink": "[a-z0-9_]+", "token": "[^:]+",
    "board": "[^{}]+", "limit": "[^{}:]+", "digest": "[0-9a-f]{40}", "key": "(?s:.*)",
}
TAG = "{{t:{counter}:{shard}}}"
DIRTY_MEMBER = "{minute}:{key}"  # a dirty mark: set member, not a key name

COUNTERS = GLOBAL_NAMES["counters"]
LEADERBOARDS = GLOBAL_NAMES["leaderboards"]


def _tag_literals() -> tuple[str, str, str]:
    texts, fields = [""], []
    for literal, field in _pieces(TAG):
        texts[-1] += literal
        if field:
            fields.append(field)
            texts.append("")
    assert fields == ["counter", "shard"]
    return texts[0], texts[1], texts[2]


def tag(counter: str, shard: int) -> str:
    """Hash tag shared by all keys of one counter shard (once per event: no str.format)."""
    return f"{_TAG_HEAD}{counter}{_TAG_MIDDLE}{shard}{_TAG_TAIL}"


def key_shard(key: str, shards: int) -> int:
    """Home shard of a key: stable across processes and Python versions."""
    return zlib.crc32(key.encode()) % shards


def spread_shard(key: str, shards: int, spread: int, discriminator: str) -> int:
    """Shard for one event of a hot key spread over `spread` consecutive shards."""
    return (key_shard(key, shards) + zlib.crc32(discriminator.encode()) % spread) % shards


def key_shards(key: str, shards: int, spread: int = 1) -> list[int]:
    """Every shard that may hold data of a key."""
    home = key_shard(key, shards)
    return [(home + i) % shards for i in range(min(spread, shards))]


@dataclass(frozen=True)
class ShardKeys:
    """Key names inside one counter shard (one hash tag, so one cluster slot)."""

    tag: str

    def bucket(self, resolution: str, index: int) -> str:
        """Hash of key -> count for one minute/hour/day."""
        return self.tag + SHARD_NAMES["bucket"].format(resolution=resolution, index=index)

    @property
    def total(self) -> str:
        """Hash of key -> all-time count."""
        return self.tag + SHARD_NAMES["total"]

    def hll(self, resolution: str, index: int, key: str) -> str:
        """HyperLogLog of users of one key in one minute/hour/day."""
        return self.tag + SHARD_NAMES["hll"].format(resolution=resolution, index=index, key=key)

    def counter_hll(self, resolution: str, index: int) -> str:
        """HyperLogLog of users of the whole counter shard in one hour/day (for the exporter)."""
        return self.tag + SHARD_NAMES["counter_hll"].format(resolution=resolution, index=index)

    def viewers(self, day: int, key: str) -> str:
        """Exact set of users who touched a key on a UTC day (unique views)."""
        return self.tag + SHARD_NAMES["viewers"].format(day=day, key=key)

    def unique_views(self, day: int | None) -> str:
        """Hash of key -> unique views for a day (or all time when day is None)."""
        if day is None:
            return self.tag + SHARD_NAMES["unique_views_all"]
        return self.tag + SHARD_NAMES["unique_views"].format(day=day)

    def top(self, day: int | None) -> str:
        """Sorted set of keys by count for a day (or all time when day is None)."""
        if day is None:
            return self.tag + SHARD_NAMES["top_all"]
        return self.tag + SHARD_NAMES["top"].format(day=day)

    def dedup_ids(self, generation: int) -> str:
        """Set of dedup members seen in one dedup generation (window / 2 seconds), exact mode."""
        return self.tag + SHARD_NAMES["dedup_ids"].format(generation=generation)

    def bloom(self, generation: int) -> str:
        """Bloom filter bitmap of one dedup generation, bloom mode."""
        return self.tag + SHARD_NAMES["bloom"].format(generation=generation)

    @property
    def stats(self) -> str:
        """Hash of events/duplicates/value counted in this shard (for the exporter)."""
        return self.tag + SHARD_NAMES["stats"]

    @property
    def log(self) -> str:
        """Stream of accepted events not yet archived to TimescaleDB (see docs/flusher.md)."""
        return self.tag + SHARD_NAMES["log"]

    def dirty(self, sink: str) -> str:
        """Sorted set of "<minute>:<key>" marks not yet in one sink, scored by first-dirty time."""
        return self.tag + SHARD_NAMES["dirty"].format(sink=sink)

    def inflight(self, sink: str, token: str) -> str:
        """Marks taken by one flusher run for one sink, until its writes succeed."""
        return self.tag + SHARD_NAMES["inflight"].format(sink=sink, token=token)

    def leases(self, sink: str) -> str:
        """Sorted set of in-flight tokens by lease deadline (epoch seconds)."""
        return self.tag + SHARD_NAMES["leases"].format(sink=sink)

    def featured(self, resolution: str, index: int) -> str:
        """Set of keys already written to InfluxDB as their own series for one bucket."""
        return self.tag + SHARD_NAMES["featured"].format(resolution=resolution, index=index)


def shard_keys(counter: str, shard: int) -> ShardKeys:
    """Key names of one counter shard."""
    return ShardKeys(tag(counter, shard))


def dedup_member(event_id: str, key: str) -> str:
    """Dedup identity of an event inside its counter: id and key (no newline occurs in either)."""
    return f"{event_id}\n{key}"


def dirty_member(minute: int, key: str) -> str:
    """Encode a dirty mark: the minute index, a colon, the key."""
    return DIRTY_MEMBER.format(minute=minute, key=key)


def parse_dirty_member(member: bytes) -> tuple[int, str]:
    """Decode a dirty mark (the key may contain colons; the minute never does)."""
    minute, _, key = member.partition(b":")
    return int(minute), key.decode()


def flusher_health(sink: str) -> str:
    """Hash of a sink's flusher health (lag, duration, rows, errors) for the exporter."""
    return GLOBAL_NAMES["flusher_health"].format(sink=sink)


def flusher_lock(sink: str) -> str:
    """String holding the token of the one flusher run writing a sink (see flusher/lock.py)."""
    return GLOBAL_NAMES["flusher_lock"].format(sink=sink)


def leaderboard_key(board: str) -> str:
    """Sorted set of one leaderboard (scores stored negated; see leaderboard.py)."""
    return GLOBAL_NAMES["leaderboard"].format(board=board)


def leaderboard_idempotency_key(board: str, idempotency_key: str) -> str:
    """String recording one Idempotency-Key's request and answer on a board (same slot)."""
    digest = hashlib.sha1(idempotency_key.encode()).hexdigest()
    return GLOBAL_NAMES["leaderboard_idempotency"].format(board=board, digest=digest)


def rate_limit_key(limit: str, subject: str) -> str:
    """Sliding-window set of one (limit, subject); the digest spreads subjects over slots."""
    digest = hashlib.sha1(subject.encode()).hexdigest()
    return GLOBAL_NAMES["rate_limit"].format(limit=limit, digest=digest)


def rate_limit_seq_key(limit: str, subject: str) -> str:
    """Sequence counter of one rate-limit window (same slot), so two requests in one
    microsecond are two entries (see lua/ratelimit.lua)."""
    digest = hashlib.sha1(subject.encode()).hexdigest()
    return GLOBAL_NAMES["rate_limit_seq"].format(limit=limit, digest=digest)


def _pieces(template: str) -> list[tuple[str, str | None]]:
    """(literal text, field name or None) pairs of a template, braces unescaped."""
    return [(literal, field) for literal, field, _, _ in Formatter().parse(template)]


def _pattern(template: str) -> str:
    return "".join(re.escape(literal) + (f"(?:{FIELD_PATTERNS[field]})" if field else "")
                   for literal, field in _pieces(template))


def patterns() -> list[re.Pattern]:
    """A full-match pattern of every name the scheme describes (tagged and global)."""
    tagged = [_pattern(TAG) + _pattern(t) for t in SHARD_NAMES.values()]
    return [re.compile(p) for p in tagged + [_pattern(t) for t in GLOBAL_NAMES.values()]]


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _lua_function(name: str, template: str, tagged: bool) -> str:
    """`function K.<name>(tag, fields...) return <concatenation> end` for one template."""
    args, parts = (["tag"], ["tag"]) if tagged else ([], [])
    for literal, field in _pieces(template):
        if literal:
            parts.append(_lua_string(literal))
        if field:
            args.append(field)
            parts.append(field)
    return f"function K.{name}({', '.join(args)}) return {' .. '.join(parts)} end"


def lua_prelude() -> str:
    """Lua text defining `K`, a function per name of this scheme, put before every script.

    Scripts build names only through K (a prefix: pass '' for the trailing
    key), so no script spells a name of its own. ingest/counting/loader.py prepends
    it when it loads a script; the SHA is taken over the whole text.
    """
    lines = ["-- Key names, generated from tally/keys.py (lua_prelude) when the script loads.",
             "local K = {}", _lua_function("tag", TAG, False),
             _lua_function("dirty_member", DIRTY_MEMBER, False)]
    lines += [_lua_function(name, t, True) for name, t in SHARD_NAMES.items()]
    lines += [_lua_function(name, t, False) for name, t in GLOBAL_NAMES.items()]
    return "\n".join(lines) + "\n"


_TAG_HEAD, _TAG_MIDDLE, _TAG_TAIL = _tag_literals()
