"""Tally's exceptions: one small family, a plain sentence in each message."""


class TallyError(Exception):
    """Base of every error Tally raises on purpose."""


class ConfigError(TallyError):
    """A setting is missing, unknown or malformed."""


class ValidationError(TallyError):
    """Input that Tally refuses; `problems` lists (index, field, message) triples."""

    def __init__(self, problems: list[tuple[int | None, str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for _, f, m in problems))


class CountOverflowError(TallyError):
    """A batch would carry a count past what 64-bit stores hold; that part of it was not applied.

    On one Redis nothing of the batch was applied. On a Redis Cluster each
    hash tag is its own atomic call: `accepted` and `duplicates` count the
    events of other tags that were counted (0 when none were).
    """

    def __init__(self, message: str, accepted: int = 0, duplicates: int = 0):
        super().__init__(message)
        self.accepted, self.duplicates = accepted, duplicates


class RedisStateError(TallyError):
    """A Tally key in Redis holds data of another kind (written by hand?); nothing was applied."""


class ScriptError(TallyError):
    """A Tally script failed unexpectedly; it checks all before its first write: nothing applied."""


class NotAppliedError(TallyError):
    """Redis refused a write or never received it: nothing of it was applied, retrying is safe.

    `reason` says why, as a problem slug suffix: unavailable, out-of-memory,
    loading, busy, read-only, cluster-unavailable, script-missing, permission-denied.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class OutcomeUnknownError(TallyError):
    """A write was sent but its answer never came back: it may have been applied, or in part."""


class PartiallyAppliedError(TallyError):
    """On a Redis Cluster some hash tags of a batch were counted and others were refused.

    `accepted` and `duplicates` count the events of the tags that were
    counted; `cause` is the refusal of the others.
    """

    def __init__(self, cause: TallyError, accepted: int, duplicates: int):
        super().__init__(f"{cause}; {accepted} events of other hash tags were counted")
        self.cause, self.accepted, self.duplicates = cause, accepted, duplicates


class EventLogFullError(TallyError):
    """The event log holds as many unarchived events as allowed; nothing of the batch counted.

    The archiver drains the log into TimescaleDB; once it has, batches count again.
    """


class IdempotencyKeyReusedError(TallyError):
    """An Idempotency-Key came back with a different request than the one it first applied."""


class ServiceError(TallyError):
    """A backing service (Redis, PostgreSQL, InfluxDB, Prometheus) did not start or answer."""


class SinkError(TallyError):
    """A time-series sink refused or failed a write; the flusher keeps the marks and retries."""
