"""How a model provider's error ends an attempt: refused for good, retry later, or failed.

The provider clients retry nothing (models.py), so this is where a provider's
answer meets the task's retry policy:

- 401, 403, 404 (an unknown model) and other 4xx requests it will never accept
  (not 408, 409, 425), and an exhausted quota: :class:`ModelRefusedError`, the task
  fails for good; pydantic-ai refusing the agent itself (a ``UserError``, such as a
  tool named like its output tool): :class:`AgentConfigError`;
- 429: :class:`RetryLaterError` with the provider's ``Retry-After``, a failed
  attempt whose retry waits at least that long;
- 5xx, connection errors and timeouts: the error itself, a failed attempt.

Error text that others read (events, the task hash) goes through
:func:`orbiter_sync.redaction.error_text`: a provider may quote the key it was sent.
"""

from __future__ import annotations

from pydantic_ai import exceptions as x

from orbiter_sync.errors import AgentConfigError, ModelRefusedError, RetryLaterError
from orbiter_sync.redaction import error_text

_REFUSED = (x.ModelRequestRejectedError, x.ModelQuotaExceededError)
# 4xx answers that another try may not get: a timeout, a conflict, "too early"
_TRANSIENT = frozenset({408, 409, 425})
_ACCESS = {401: "check the worker's API key", 403: "check the worker's API key and permissions"}


def sorted_out(exc: Exception) -> Exception:
    """What ends the attempt for ``exc``: ``exc`` itself when it is a plain failure."""
    status = getattr(exc, "status_code", None)
    if isinstance(exc, x.UserError):  # pydantic-ai refusing the agent as built (a tool name)
        return AgentConfigError(f"the agent cannot run on pydantic-ai: {error_text(exc)}")
    if isinstance(exc, x.ModelQuotaExceededError):  # a 429 too, but waiting will not help
        return ModelRefusedError(_explained(exc, status))
    if isinstance(exc, x.ModelRateLimitError) or status == 429:
        retry_after = getattr(exc, "retry_after", None) or 0.0
        return RetryLaterError(_explained(exc, status), float(retry_after))
    refused = isinstance(status, int) and 400 <= status < 500 and status not in _TRANSIENT
    if isinstance(exc, _REFUSED) or refused:
        return ModelRefusedError(_explained(exc, status))
    return exc


def _explained(exc: Exception, status: object) -> str:
    hint = _ACCESS.get(status) if isinstance(status, int) else None
    if isinstance(exc, x.ModelNotFoundError) or status == 404:
        hint = "check the agent's model name"
    said = error_text(exc)
    return f"{said} ({hint})" if hint else said
