"""Which counter and key a StatsD name counts into: glob rules from a TOML file, then a default.

In the spirit of statsd_exporter's glob mappings: a rule's `match` is the
dotted name with `*` standing for one or more characters inside one dotted
component; `$1`…`$9` in `counter` and `key` are what the stars matched.
Rules are tried in file order and the first that matches the whole name
wins; `drop = true` discards the name (counted). A name no rule matches goes
to the default mapping: the first component is the counter, the rest the key
(docs/statsd.md).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tally.errors import ConfigError

NOT_COUNTER = re.compile(r"[^a-z0-9_]")
CAPTURE = re.compile(r"\$(\d)")
RULE_FIELDS = {"match", "counter", "key", "drop"}
DROPPED = None  # what map_name answers for a name a rule drops


def normalise_counter(text: str) -> str:
    """A counter name from any text: lower case, every other character `_`, at most 64."""
    return NOT_COUNTER.sub("_", text.lower())[:64]


def default_target(name: str) -> tuple[str, str]:
    """The default mapping: `app.requests.ok` counts into counter `app`, key `requests.ok`."""
    first, dot, rest = name.partition(".")
    return normalise_counter(first), rest if dot and rest else name


@dataclass(frozen=True)
class Rule:
    """One glob rule: a compiled pattern and the templates of counter and key."""

    pattern: re.Pattern
    counter: str
    key: str
    drop: bool

    def target(self, match: re.Match) -> tuple[str, str] | None:
        """(counter, key) with the captures filled in, or DROPPED."""
        if self.drop:
            return DROPPED
        def fill(template: str) -> str:
            return CAPTURE.sub(lambda m: match.group(int(m[1])) if int(m[1]) <= len(
                match.groups()) else m[0], template)
        return normalise_counter(fill(self.counter)), fill(self.key)


def compile_glob(glob: str) -> re.Pattern:
    """`a.*.b` as a regex matching a whole name, each `*` one capture inside one component."""
    return re.compile("".join("([^.]+)" if char == "*" else re.escape(char) for char in glob))


def _rule(index: int, raw: object) -> Rule:
    where = f"statsd mapping rule {index + 1}"
    if not isinstance(raw, dict) or not isinstance(raw.get("match"), str) or not raw["match"]:
        raise ConfigError(f"{where} needs a `match` glob")
    unknown = sorted(set(raw) - RULE_FIELDS)
    if unknown:
        raise ConfigError(f"{where} has unknown field(s): {', '.join(unknown)}")
    drop = raw.get("drop", False)
    if not isinstance(drop, bool):
        raise ConfigError(f"{where}: `drop` must be true or false")
    counter, key = raw.get("counter"), raw.get("key", "$0")
    if not drop and not (isinstance(counter, str) and counter and isinstance(key, str) and key):
        raise ConfigError(f"{where} needs a `counter` (and optionally a `key`), or drop = true")
    return Rule(compile_glob(raw["match"]), counter or "", key, drop)


class Mapping:
    """The rules of a mapping file (none: the default mapping for every name)."""

    def __init__(self, rules: tuple[Rule, ...] = ()):
        self.rules = rules

    @classmethod
    def from_text(cls, text: str, source: str = "mapping") -> Mapping:
        """Rules from TOML text: an array of `[[mapping]]` tables."""
        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"cannot read {source}: {exc}") from None
        unknown = sorted(set(table) - {"mapping"})
        if unknown or not isinstance(table.get("mapping", []), list):
            raise ConfigError(f"{source}: expected only [[mapping]] tables, found "
                              f"{', '.join(unknown) or 'mapping of another type'}")
        return cls(tuple(_rule(i, raw) for i, raw in enumerate(table.get("mapping", []))))

    @classmethod
    def from_file(cls, path: str) -> Mapping:
        """The rules of the file TALLY_STATSD_MAPPING_FILE names; "" for none."""
        if not path:
            return cls()
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"TALLY_STATSD_MAPPING_FILE: cannot read {path}: {exc}") from None
        return cls.from_text(text, path)

    def map_name(self, name: str) -> tuple[str, str] | None:
        """(counter, key) a name counts into, or DROPPED."""
        for rule in self.rules:
            match = rule.pattern.fullmatch(name)
            if match:
                return rule.target(match)
        return default_target(name)
