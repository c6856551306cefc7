"""Redis Cluster clients: what :func:`~orbiter_sync.connection.connect` makes of a
``redis+cluster://`` URL.

A :class:`ClusterClient` is redis-py's :class:`~redis.cluster.RedisCluster` with two changes:

- It reads the cluster's layout at its first command, not when it is made. ``connect()``
  touches no network, as for one server, and a cluster that cannot be reached fails
  that command, which :class:`~orbiter_sync.connection.RetryPolicy` waits out. If no node
  answered, that first command raises what the last one did, as a client of one server
  would (a ConnectionError, an AuthenticationError), not redis-py's wrapper of it.
- Its nodes' connections get every option ``connect()`` chose. RedisCluster hands its
  nodes only the keywords in redis-py's ``REDIS_ALLOWED_KEYS`` (``cleanup_kwargs``),
  which leaves out ``health_check_interval`` and ``command_packer``; built from a URL,
  it makes each node's pool with ``connection_pool_class``, which carries them.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, cast

import redis
from redis._parsers import CommandsParser
from redis.cluster import REDIS_ALLOWED_KEYS, ClusterNode, RedisCluster
from redis.connection import Connection, ConnectionPool, SSLConnection
from redis.exceptions import RedisClusterException

from orbiter_sync.errors import ConfigurationError, RedisUnavailableError
from orbiter_sync.urls import parse_cluster_url

# What a Redis call can raise: redis-py's errors, and those of its cluster client, which
# are not RedisErrors (no node reachable, a cross-slot call ...).
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)
# ... and a RetryPolicy's call, which gives up with a RedisUnavailableError
REDIS_FAILURES: tuple[type[Exception], ...] = (*REDIS_ERRORS, RedisUnavailableError)

# connect()'s options that RedisCluster drops before they reach a node's connections
_POOL_OPTIONS = ("health_check_interval", "command_packer")


def connect_cluster(url: str, options: dict[str, Any]) -> redis.Redis:
    """A :class:`ClusterClient` for ``url`` with ``options`` (``connect()``'s, ``retry``
    included), typed as the :class:`redis.Redis` it stands in for."""
    parsed = parse_cluster_url(url)
    pool_options = {key: options[key] for key in _POOL_OPTIONS if key in options}
    node_options = {k: v for k, v in options.items() if k in REDIS_ALLOWED_KEYS or k == "retry"}
    cert_reqs = node_options.pop("ssl_cert_reqs", None)  # connect()'s, from the environment
    if parsed.ssl:
        node_options["ssl_cert_reqs"] = parsed.ssl_cert_reqs or cert_reqs or "required"
    (host, port), *others = parsed.hosts
    first = f"[{host}]" if ":" in host else host  # an IPv6 address
    return cast(
        redis.Redis,
        ClusterClient(
            # only the host and port: RedisCluster lets a URL's options win over keywords
            url=f"redis://{first}:{port}",
            startup_nodes=[ClusterNode(h, p) for h, p in others],  # type: ignore[no-untyped-call]
            username=parsed.username,
            password=parsed.password,
            connection_pool_class=functools.partial(
                ConnectionPool,
                connection_class=SSLConnection if parsed.ssl else Connection,
                **pool_options,
            ),
            **node_options,
        ),
    )


class ClusterClient(RedisCluster):
    """A :class:`~redis.cluster.RedisCluster` that reads the cluster's layout at its first
    command (or any other use of its state), from the nodes it was given."""

    def __init__(self, **options: Any) -> None:  # RedisCluster's own runs at first use
        self.__dict__.update(_lazy_options=options, _lazy_lock=threading.Lock(), _lazy_by=None)

    def __getattr__(self, name: str) -> Any:
        # Only for an attribute not set yet: every RedisCluster method reads one of those
        # RedisCluster.__init__ sets (nodes_manager, ...), so the first use starts it.
        state = self.__dict__
        starting_here = state.get("_lazy_by") == threading.get_ident()  # in __init__ itself
        if "_lazy_options" not in state or starting_here or name.startswith("__"):
            raise AttributeError(name)
        with state["_lazy_lock"]:
            if "_lazy_options" in state:
                self._start(state)
        return getattr(self, name)

    def _start(self, state: dict[str, Any]) -> None:
        before = dict(state)
        state["_lazy_by"] = threading.get_ident()
        try:
            RedisCluster.__init__(self, **state["_lazy_options"])
        except BaseException as exc:
            for key in state.keys() - before.keys():  # not started: the next use tries again
                del state[key]
            state.update(before)
            error = _unwrapped(exc)
            if error is exc:
                raise
            raise error from None
        self.commands_parser.__class__ = _StreamKeysParser  # (its command table is kept)
        del state["_lazy_by"], state["_lazy_options"]  # the options last: others wait for it

    def close(self) -> None:
        if "_lazy_options" not in self.__dict__:  # a client never used has nothing open
            super().close()


def _unwrapped(exc: BaseException) -> BaseException:
    """For "Redis Cluster cannot be connected", the last node's own error."""
    cause = exc.__cause__
    unreachable = str(exc).startswith("Redis Cluster cannot be connected")
    if not isinstance(exc, RedisClusterException) or not unreachable or cause is None:
        return exc
    if "Cluster mode is not enabled" in str(cause):
        return ConfigurationError("a redis+cluster:// URL names a Redis whose cluster mode is off")
    return cause if isinstance(cause, redis.RedisError) else exc


class _StreamKeysParser(CommandsParser):
    """redis-py's parser of a command's keys, reading the streams of ``XREADGROUP`` and
    ``XREAD`` itself: for a command whose keys move, redis-py asks a node (``COMMAND
    GETKEYS``), which cost every claim a round trip of its own."""

    def get_keys(self, redis_conn: Any, *args: Any) -> Any:
        if args and str(args[0]).upper() in ("XREADGROUP", "XREAD"):
            keys = _stream_keys(args)
            if keys is not None:
                return keys
        return super().get_keys(redis_conn, *args)  # type: ignore[no-untyped-call]


def _stream_keys(args: tuple[Any, ...]) -> list[Any] | None:
    """The stream keys of an ``XREADGROUP GROUP g c [COUNT n] [BLOCK ms] [NOACK] STREAMS
    k... id...`` or ``XREAD [COUNT n] [BLOCK ms] STREAMS k... id...``, or None."""
    i = 4 if str(args[0]).upper() == "XREADGROUP" else 1
    while i < len(args):
        token = args[i].decode() if isinstance(args[i], bytes) else str(args[i])
        if token.upper() == "STREAMS":
            rest = args[i + 1 :]
            return list(rest[: len(rest) // 2]) if rest and len(rest) % 2 == 0 else None
        i += 2 if token.upper() in ("COUNT", "BLOCK") else 1
    return None
