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
    """A batch would carry a count past what 64-bit stores hold; nothing of it was applied."""


class ServiceError(TallyError):
    """A backing service (Redis, PostgreSQL, InfluxDB, Prometheus) did not start or answer."""


class SinkError(TallyError):
    """A time-series sink refused or failed a write; the flusher keeps the marks and retries."""
