"""How a model provider's error ends an attempt: refused for good, retry later, or failed.

The provider clients retry nothing (models.py), so this is where a provider's
answer meets the task's retry policy:

- 401, 403, 404 (an unknown model) and other 4xx requests it will never accept,
  and an exhausted quota: :class:`ModelRefusedError`, the task fails for good;
- 429: :class:`RetryLaterError` with the provider's ``Retry-After``, a failed
  attempt whose retry waits at least that long;
- 5xx, connection errors and timeouts: the error itself, a failed attempt.
"""

from __future__ import annotations

import os

from pydantic_ai import exceptions as x

from orbiter_sync.errors import ModelRefusedError, RetryLaterError
from orbiter_sync.models import describe

_REFUSED = (x.ModelRequestRejectedError, x.ModelQuotaExceededError)
_SECRETS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
_ACCESS = {401: "check the worker's API key", 403: "check the worker's API key and permissions"}


def sorted_out(exc: Exception) -> Exception:
    """What ends the attempt for ``exc``: ``exc`` itself when it is a plain failure."""
    status = getattr(exc, "status_code", None)
    if isinstance(exc, x.ModelRateLimitError) or status == 429:
        retry_after = getattr(exc, "retry_after", None) or 0.0
        return RetryLaterError(_message(exc, status), float(retry_after))
    if isinstance(exc, _REFUSED) or (isinstance(status, int) and 400 <= status < 500):
        return ModelRefusedError(_message(exc, status))
    return exc


def _message(exc: Exception, status: object) -> str:
    said = describe(exc) or type(exc).__name__
    for name in _SECRETS:  # a provider may quote the key it was given: it never goes to Redis
        secret = os.environ.get(name, "")
        if len(secret) >= 8:
            said = said.replace(secret, "***")
    hint = _ACCESS.get(status) if isinstance(status, int) else None
    if isinstance(exc, x.ModelNotFoundError) or status == 404:
        hint = "check the agent's model name"
    return f"{said} ({hint})" if hint else said
