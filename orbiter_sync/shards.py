"""The deployment's key layout, found from its client: standalone, or a cluster's shards.

On a Redis Cluster the number of shards every queue is split into is one setting for
the whole deployment (a task is found from its id alone, so producers, workers and
readers must agree on it). The first worker or producer records it in
``orbiter:queue-shards``; anyone asking for another number is refused with a
:class:`ConfigurationError`, and readers that ask for none use the recorded one.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping

import redis

from orbiter_sync.connection import DEFAULT_RETRY, RetryPolicy, is_cluster
from orbiter_sync.env import QUEUE_SHARDS_ENV
from orbiter_sync.errors import ConfigurationError
from orbiter_sync.layout import MAX_SHARDS, SHARDS_KEY, STANDALONE, KeyLayout

_known: weakref.WeakKeyDictionary[object, KeyLayout] = weakref.WeakKeyDictionary()


def shards_from_env(env: Mapping[str, str] | None = None) -> int | None:
    """``ORBITER_QUEUE_SHARDS`` as a number, or None when it is not set."""
    raw = (os.environ if env is None else env).get(QUEUE_SHARDS_ENV, "").strip()
    if not raw:
        return None
    count = _count(raw)
    if count is None:
        raise ConfigurationError(
            f"{QUEUE_SHARDS_ENV} must be a whole number from 1 to {MAX_SHARDS}, got {raw!r}"
        )
    return count


def _count(text: str) -> int | None:
    """``text`` as a shard count (ASCII digits, 1 to MAX_SHARDS), or None."""
    short = len(text) <= len(str(MAX_SHARDS))  # (int() refuses a 5000-digit string)
    valid = short and text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_SHARDS
    return int(text) if valid else None


def check_shards(shards: int | None) -> None:
    if shards is not None and not 1 <= shards <= MAX_SHARDS:
        raise ConfigurationError(f"queue shards must be from 1 to {MAX_SHARDS}, got {shards}")


def layout_of(
    client: redis.Redis,
    shards: int | None = None,
    *,
    record: bool = False,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> KeyLayout:
    """The layout of the deployment ``client`` reaches, with ``shards`` (None: that of
    ``ORBITER_QUEUE_SHARDS``, else the recorded one, else 1).

    ``record`` (workers and producers) records the number when none is; a number that
    differs from the recorded one is refused. Outside a cluster only 1 is allowed.
    Once a number is recorded it is kept with the client: one read per client (until
    then every call reads, so a reader started before the first worker sees its number)."""
    check_shards(shards)
    wanted = shards if shards is not None else shards_from_env()
    if not is_cluster(client):
        if wanted not in (None, 1):
            raise ConfigurationError(
                f"queue shards ({wanted}) need a Redis Cluster: use a redis+cluster:// URL, "
                "or leave --queue-shards / ORBITER_QUEUE_SHARDS unset"
            )
        return STANDALONE
    known = _known.get(client)
    if known is not None and wanted in (None, known.shards):
        return known
    if record and wanted is not None:
        retry.call(client.set, SHARDS_KEY, wanted, nx=True)
    raw = retry.call(client.get, SHARDS_KEY)
    recorded = _recorded(raw)
    if record and recorded is None:  # nothing asked for: record the default
        retry.call(client.set, SHARDS_KEY, 1, nx=True)
        recorded = _recorded(retry.call(client.get, SHARDS_KEY))
    if wanted is not None and recorded is not None and wanted != recorded:
        raise ConfigurationError(
            f"this cluster's queues have {recorded} shard(s) (recorded in {SHARDS_KEY}), but "
            f"{wanted} were asked for (--queue-shards / {QUEUE_SHARDS_ENV}): every worker and "
            f"client must use the same number; to change it, drain the queues and delete "
            f"{SHARDS_KEY} (then restart every worker and client)"
        )
    layout = KeyLayout(cluster=True, shards=recorded or wanted or 1)
    if recorded is not None:
        _known[client] = layout
    return layout


def _recorded(raw: object) -> int | None:
    if raw is None:
        return None
    count = _count(str(raw))
    if count is None:
        raise ConfigurationError(
            f"{SHARDS_KEY} holds {str(raw)[:40]!r}, not a shard count from 1 to {MAX_SHARDS}"
        )
    return count


def workers_layout(client: redis.Redis) -> KeyLayout:
    """A layout good for worker keys only (they do not depend on the shards): no read."""
    return KeyLayout(cluster=True) if is_cluster(client) else STANDALONE


class LayoutUser:
    """Mixin of a :class:`RedisUser` that finds tasks from their id: its ``layout``, that
    of its client (:func:`layout_of`)."""

    _client: redis.Redis
    _retry: RetryPolicy

    @property
    def layout(self) -> KeyLayout:
        return layout_of(self._client, retry=self._retry)
