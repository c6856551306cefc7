"""The orbiter-sync exception tree.

Every error the library raises on purpose derives from :class:`OrbiterError`, so
``except OrbiterError`` catches all of them and nothing else::

    OrbiterError
     +-- ConfigurationError        bad settings: no Redis URL, unknown URL scheme, bad option
     +-- RedisUnavailableError     Redis still unreachable after the retry policy gave up
     +-- ValidationError           a payload, result or event that does not fit the wire contract
     +-- TaskError                 about one task (carries ``task_id``)
     |    +-- TaskNotFoundError    no status hash for that id (never submitted, or expired)
     |    +-- TaskFailedError      the task ended in ``failed``; ``error`` holds the reason
     |    +-- TaskCancelledError   the task ended in ``cancelled``
     |    +-- TaskTimeoutError     a wait for the task (result, stream) ran out of time
     +-- AgentConfigError          an agent_config that can never run (not retried)
     |    +-- ImportNotAllowedError  it names what the import allowlist does not allow
     |    +-- ModelRefusedError    the model provider refused for good (401/403, unknown model)
     +-- RetryLaterError           a failed attempt to retry no sooner than ``retry_after`` (429)
 +-- DeadLetterError           a dead letter that cannot be requeued (it is kept)
 +-- DurableRunFailed          a Temporal workflow failed after its own retries (not retried)
     +-- EmbeddedRedisError        the private redis-server of tests and the demo did not start

Not errors, and not here: ``RunInterrupted`` (outcome.py, beside ``StopReason``),
a ``BaseException`` raised into a run stopped from outside (cancel, timeout,
shutdown, lost), so agent code's ``except Exception`` cannot swallow it; and
shutdown requests, which reach the worker through ``Worker.stop()`` (the CLI
turns signals into that call).
"""

from __future__ import annotations

import math

# What an AgentConfigError about a missing pydantic-ai says to do.
AGENTS_EXTRA_HINT = "install the agents extra: pip install 'orbiter-sync[agents]'"


class OrbiterError(Exception):
    """Root of every error raised by orbiter-sync."""


class ConfigurationError(OrbiterError):
    """A setting is missing or invalid."""


class RedisUnavailableError(OrbiterError):
    """Redis could not be reached, even after retrying with backoff."""


class ValidationError(OrbiterError, ValueError):
    """Data that does not fit the wire contract.

    ``field`` names the offending field (``""`` when the whole document is wrong).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class TaskError(OrbiterError):
    """An error about one task."""

    def __init__(self, task_id: str, message: str) -> None:
        self.task_id = task_id
        super().__init__(message)


class TaskNotFoundError(TaskError):
    """No status is stored for the task id."""

    def __init__(self, task_id: str) -> None:
        super().__init__(
            task_id, f"task {task_id} not found (never submitted, or its record expired)"
        )


class TaskFailedError(TaskError):
    """The task ended in the ``failed`` state."""

    def __init__(self, task_id: str, error: str) -> None:
        self.error = error
        super().__init__(task_id, f"task {task_id} failed: {error or 'unknown error'}")


class TaskCancelledError(TaskError):
    """The task was cancelled."""

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id, f"task {task_id} was cancelled")


class TaskTimeoutError(TaskError, TimeoutError):
    """Waiting for the task took longer than the caller allowed."""

    def __init__(self, task_id: str, waited: float, what: str = "result") -> None:
        self.waited = waited
        super().__init__(
            task_id, f"timed out after {waited:g}s waiting for the {what} of task {task_id}"
        )


class EmbeddedRedisError(OrbiterError):
    """The private redis-server could not be started."""


class AgentConfigError(OrbiterError):
    """An agent_config that can never run: invalid, not importable, or not allowed.

    Tasks failing with it are not retried.
    """


class ImportNotAllowedError(AgentConfigError):
    """A payload named something the import allowlist does not let it reach: a module
    outside it, or in an allowed module anything but a function, class or tool defined
    there (a module, a re-export, a builtin, a bound method, a private or dunder name)."""


class ModelRefusedError(AgentConfigError):
    """A model provider refused a request for good (bad credentials, unknown model, a
    request it will never accept): retrying would be refused the same way."""


class RetryLaterError(OrbiterError):
    """A failed attempt that says when to try again: a provider's 429 ``Retry-After``.

    The task's retries apply as for any failed attempt; the wait before the next one is
    at least ``retry_after`` seconds.
    """

    MOST = 3600.0  # a provider asking for more is not waited on longer than an hour

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = 0.0 if math.isnan(retry_after) else min(max(retry_after, 0.0), self.MOST)
        super().__init__(message)


class DeadLetterError(OrbiterError):
    """A dead letter that cannot be requeued (unknown, undecodable, or its task is live);
    the dead letter is kept."""


class DurableRunFailed(OrbiterError):
    """A durable (Temporal) run failed after the retries Temporal gave its activity: the
    task fails for good, the message names the activity's error (``Class: message``)."""
