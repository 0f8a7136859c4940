"""What the client raises: refusals with the server's problem, and events it could not deliver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class TallyError(Exception):
    """Base of every error the client raises."""


class ProblemError(TallyError):
    """The API answered an error (RFC 9457 problem): `status`, `type`, `detail`, `errors`."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type", "")).rpartition(":")[2] or "unknown"
        self.detail = str(problem.get("detail", ""))
        self.errors: list[dict[str, Any]] = list(problem.get("errors") or [])
        super().__init__(f"{status} {self.type}: {self.detail}")


class QueueFull(TallyError):
    """count() found the queue full (at once with on_full="raise", after block_timeout else)."""


class ClientClosed(TallyError):
    """count() after close()."""


@dataclass(frozen=True)
class Failure:
    """One event the server refused for good, with the reason (a problem's message)."""

    event: dict[str, Any]
    status: int | None
    reason: str


class UnsentEvents(TallyError):
    """flush()/close() could not confirm every queued event.

    `failed` are events refused for good (invalid, unauthorized, retries given
    up), each with its reason; `pending` counts events still queued or in
    flight when the wait ended. Nothing in `failed` was counted; a pending
    event may still be delivered by the background thread.
    """

    def __init__(self, failed: list[Failure], pending: int) -> None:
        self.failed = failed
        self.pending = pending
        reasons = sorted({f.reason for f in failed})[:3]
        super().__init__(f"{len(failed)} event(s) not counted, {pending} still unsent"
                         + (f"; e.g. {'; '.join(reasons)}" if reasons else ""))
