"""How one attempt at a task ended: the single value a slot hands to the consumer to settle.

Running an attempt never raises for what the agent did: it produces an
:class:`Outcome`, and ``TaskConsumer.settle(delivery, outcome)`` records it in one
script call. Why a run was stopped from outside is a :class:`StopReason`; the run
itself learns it from :class:`RunInterrupted`.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, assert_never

from orbiter_sync.models import TaskStatus, encode_result, readable
from orbiter_sync.redaction import error_text, redacted


class StopReason(StrEnum):
    """Why a run was stopped before it ended by itself."""

    CANCELLED = "cancelled"  # a client asked
    TIMEOUT = "timeout"  # its timeout_seconds passed
    SHUTDOWN = "shutdown"  # the worker is stopping; the task goes back to the queue
    LOST = "lost"  # another worker took its entry over


class RunInterrupted(BaseException):  # noqa: N818 - an interrupt, like KeyboardInterrupt
    """Raised into a run stopped from outside: cancelled, timed out, lost, or shutdown.

    A ``BaseException`` so that ``except Exception`` in agent code cannot swallow it.
    """

    def __init__(self, reason: StopReason) -> None:
        self.reason = reason
        super().__init__(reason)


class OutcomeKind(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"  # a failed attempt: retried while retries remain
    FAILED_FOR_GOOD = "failed for good"  # can never succeed (a bad agent_config): not retried
    TIMED_OUT = "timed out"  # a failed attempt too
    CANCELLED = "cancelled"
    RELEASED = "released"  # not an attempt: the worker stopped, the task goes back
    LOST = "lost"  # another worker owns the entry now: nothing is written

    @property
    def is_failure(self) -> bool:
        return self in (OutcomeKind.FAILED, OutcomeKind.FAILED_FOR_GOOD, OutcomeKind.TIMED_OUT)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, with what settling it needs (result or error)."""

    kind: OutcomeKind
    result: dict[str, Any] | None = None
    result_json: str = ""
    """The result as it is stored (``models.encode_result``)."""
    error: str = ""
    error_type: str = ""
    reason: str = ""
    """Why a run was released (shown in the recoverable event readers get)."""
    retry_after: float = 0.0
    """Seconds the next attempt waits at least (a provider's Retry-After), if retried."""
    traceback: str = ""
    """The failed attempt's traceback, its last frames, bounded and redacted."""

    @classmethod
    def completed(cls, result: dict[str, Any]) -> Outcome:
        """A completed attempt; ``ValidationError`` when the result cannot be stored."""
        return cls(OutcomeKind.COMPLETED, result=result, result_json=encode_result(result))

    @classmethod
    def failed(
        cls, exc: BaseException, *, retryable: bool = True, retry_after: float = 0.0
    ) -> Outcome:
        kind = OutcomeKind.FAILED if retryable else OutcomeKind.FAILED_FOR_GOOD
        # the error is str(exc), as the async worker writes it (the class name when that
        # is empty); the class is kept beside it
        name = type(exc).__name__
        error = readable(error_text(exc))
        trace = readable(redacted(_traceback_of(exc)))
        return cls(kind, error=error, error_type=name, retry_after=retry_after, traceback=trace)

    @classmethod
    def timed_out(cls, seconds: float, *, retryable: bool = False) -> Outcome:
        """A run stopped at its timeout: failed for good unless its task asked for
        timeouts to be retried (an LLM run that timed out once would pay again)."""
        return cls(
            OutcomeKind.TIMED_OUT if retryable else OutcomeKind.FAILED_FOR_GOOD,
            error=f"timed out after {seconds:g}s",
            error_type="TimeoutError",
        )

    @classmethod
    def cancelled(cls) -> Outcome:
        return cls(OutcomeKind.CANCELLED)

    @classmethod
    def released(cls, reason: str = "worker stopping") -> Outcome:
        return cls(OutcomeKind.RELEASED, reason=reason)

    @classmethod
    def lost(cls) -> Outcome:
        return cls(OutcomeKind.LOST)

    @classmethod
    def stopped(
        cls, reason: StopReason, timeout_seconds: float, *, retry_timeouts: bool = False
    ) -> Outcome:
        """The outcome of a run stopped from outside for ``reason``."""
        match reason:
            case StopReason.CANCELLED:
                return cls.cancelled()
            case StopReason.TIMEOUT:
                return cls.timed_out(timeout_seconds, retryable=retry_timeouts)
            case StopReason.SHUTDOWN:
                return cls.released()
            case StopReason.LOST:
                return cls.lost()
            case _:
                assert_never(reason)


@dataclass(frozen=True)
class Settled:
    """What settling did: ``verdict`` is ``settled``; ``lost`` (another consumer holds
    the entry, nothing written) or ``gone`` (nobody does: settled before, nothing
    written). ``status`` is the task's status afterwards, when it has one."""

    verdict: str
    status: TaskStatus | None

    @property
    def written(self) -> bool:
        return self.verdict == "settled"


def _traceback_of(exc: BaseException, frames: int = 12, most: int = 4096) -> str:
    """The end of ``exc``'s traceback: where it was raised, which is what a reader needs."""
    try:
        lines = traceback.format_exception(exc, limit=-frames)
    except Exception:  # noqa: BLE001 - an exception whose traceback cannot be formatted
        return ""
    text = "".join(lines)
    return text if len(text) <= most else "…" + text[-(most - 1) :]
