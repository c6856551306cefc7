"""Connections: clients and their pools, time budgets, and the retry policy.

URLs are urls.py's: ``redis://``, ``rediss://`` (TLS; add ``?ssl_cert_reqs=none``, or set
``ORBITER_REDIS_SSL_CERT_REQS=none``, for Heroku's self-signed certificates), ``unix://``,
``redis+sentinel://`` and ``redis+cluster://`` (a :class:`~redis.cluster.RedisCluster`, see
cluster_client.py, typed as the :class:`redis.Redis` whose commands it has).

Every long-lived object owns one :class:`redis.Redis` client, and so one thread-safe connection
pool (per node, in a cluster). The pool is unbounded, so a slot blocked in ``XREADGROUP`` holds
its own connection and never starves the heartbeat or the publisher of one. redis-py's own retry
is switched off: :class:`RetryPolicy` (tenacity) is the single place where dropped connections
are retried. Short-lived callers (the CLI) bound each call with a :class:`Budget`.

In a cluster too, the client's ``retry`` allows no retry: redis-py's cluster client would
repeat a failed command at once, with no backoff, each try lasting up to a socket timeout, so
a :class:`Budget` could not bound a call. That costs no failover: on a ConnectionError or a
TimeoutError (on CLUSTERDOWN, a quarter second later) the client reloads the cluster's layout
before it raises, whatever its retry says, so RetryPolicy's next attempt, after its backoff,
goes to the replica promoted meanwhile. What it raises while a master is replaced (refused
connections, CLUSTERDOWN, "TTL exhausted", no node reachable or slots uncovered when it
reloads the layout) is transient; keys of several slots (CROSSSLOT) are raised at once.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import redis
import tenacity
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.connection import HiredisRespSerializer
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis

from orbiter_sync.cluster_client import REDIS_ERRORS, connect_cluster
from orbiter_sync.env import CERT_REQS_ENV
from orbiter_sync.errors import ConfigurationError, RedisUnavailableError
from orbiter_sync.urls import (
    CERT_REQS,
    bad_url,
    is_cluster_url,
    parse_sentinel_url,
    resolve_redis_url,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

UNBOUNDED_POOL = 2**31 - 1


def connect(
    url: str | None = None, *, budget: Budget | None = None, **overrides: Any
) -> redis.Redis:
    """A client with its own thread-safe pool, for one long-lived object.

    ``url`` defaults to ``ORBITER_REDIS_URL``, then ``REDIS_URL``. ``budget`` (or that of an
    enclosing :meth:`Budget.scope`) sets the timeouts; ``overrides`` win. Bytes that are not
    UTF-8 read as lone surrogates (surrogateescape) and are written back as the same bytes."""
    budget = budget or _SCOPED_BUDGET.get()
    options: dict[str, Any] = {
        "decode_responses": True,
        "encoding_errors": "surrogateescape",
        "socket_timeout": 15.0,
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": Retry(NoBackoff(), 0),
        # redis-py 8 caps a pool at 100 connections by default; a worker needs one per
        # slot blocked in XREADGROUP, and gevent workers run hundreds of slots.
        "max_connections": UNBOUNDED_POOL,
        **(budget.options() if budget else {}),
        **overrides,
    }
    options.update(_driver_info())
    if HIREDIS_AVAILABLE and "command_packer" not in options:
        # hiredis packs str arguments as strict UTF-8, ignoring encoding_errors
        options["command_packer"] = _SurrogateSafePacker()
    url = resolve_redis_url(url)
    if url.lower().startswith("rediss") and "ssl_cert_reqs" not in url:
        cert_reqs = _cert_reqs_from_env()
        if cert_reqs:
            options.setdefault("ssl_cert_reqs", cert_reqs)
    if url.lower().startswith("unix://"):
        options.pop("socket_keepalive")  # not a TCP socket
    if is_cluster_url(url):
        return connect_cluster(url, options)
    if "+sentinel://" in url.lower():
        parsed = parse_sentinel_url(url)
        timeout = options["socket_connect_timeout"]
        sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout, "decode_responses": True,
                                           "socket_connect_timeout": timeout}  # fmt: skip
        if parsed.sentinel_password:
            sentinel_kwargs["password"] = parsed.sentinel_password
        sentinel = Sentinel(list(parsed.hosts), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        master_options = {k: v for k, v in options.items() if k != "health_check_interval"}
        if parsed.ssl:
            master_options["ssl"] = True
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            parsed.master,
            db=parsed.db,
            username=parsed.username,
            password=parsed.password,
            **master_options,
        )
        return client
    try:
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise bad_url(url, exc) from None


@functools.cache
def _driver_info() -> dict[str, Any]:
    """redis-py's client name and version, read once: redis-py 8 reads its version from
    the package metadata for every new connection (a millisecond each, which a gevent
    worker opening hundreds of connections pays at once)."""
    parameters = inspect.signature(redis.connection.AbstractConnection.__init__).parameters
    if "driver_info" not in parameters:
        return {}
    from redis.driver_info import DriverInfo
    from redis.utils import get_lib_version

    version = get_lib_version()  # type: ignore[no-untyped-call]
    return {"driver_info": DriverInfo(name="redis-py", lib_version=version)}


class _SurrogateSafePacker(HiredisRespSerializer):
    """hiredis' command packer, given str arguments encoded as UTF-8 with surrogateescape."""

    def pack(self, *args: Any) -> Any:
        command = args[0]
        if isinstance(command, str) and " " not in command:
            try:  # the common case, straight to hiredis: no surrogates, no bytearrays
                return [hiredis.pack_command(args)]
            except (UnicodeEncodeError, TypeError):
                pass
        as_bytes = (a.encode("utf-8", "surrogateescape") if isinstance(a, str) else a for a in args)
        return super().pack(*as_bytes)  # type: ignore[arg-type]


def _cert_reqs_from_env() -> str | None:
    value = os.environ.get(CERT_REQS_ENV, "").strip().lower()
    if not value:
        return None
    if value not in CERT_REQS:
        raise ConfigurationError(f"{CERT_REQS_ENV}={value!r} is not one of {', '.join(CERT_REQS)}")
    return value


def is_cluster(client: redis.Redis) -> bool:
    """True for a Redis Cluster's client (``connect()`` of a ``redis+cluster://`` URL)."""
    return isinstance(client, RedisCluster)


_shared: dict[str, redis.Redis] = {}
_shared_lock = threading.Lock()


def shared_client(url: str) -> redis.Redis:
    """One client per URL for short-lived callers (task handles), so creating many is cheap."""
    with _shared_lock:
        client = _shared.get(url)
        if client is None:
            client = _shared[url] = connect(url)
        return client


RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a demoted master during a sentinel failover
)

# redis-py files these under ConnectionError, but retrying cannot fix a wrong password.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.AuthenticationError,
    redis.exceptions.AuthorizationError,
)

# Error replies that say Redis cannot serve right now, not that the command is wrong:
# out of memory, busy running a script, loading its data, a replica or a master that
# lost its link, a cluster slot moving or down, too few replicas, a failing save.
# They are waited out like a dropped connection.
TRANSIENT_REPLIES = (
    "OOM",
    "BUSY",
    "LOADING",
    "READONLY",
    "MASTERDOWN",
    "TRYAGAIN",
    "NOREPLICAS",  # min-replicas-to-write not met
    "MISCONF",  # a failing RDB save stops writes
    "CLUSTERDOWN",
)
# redis-py turns some of them into classes of their own and drops the prefix
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterError,  # CLUSTERDOWN; "TTL exhausted" by redirects mid-resharding
)
# redis-py's cluster client raises RedisClusterException, not a RedisError, when it cannot
# find who serves a slot: a master being replaced, or every node it knows unreachable.
TRANSIENT_CLUSTER_ERRORS = (
    "Redis Cluster cannot be connected",  # transient if its cause is (not a wrong password)
    "All slots are not covered",
    "startup_nodes could not agree",
)


def is_transient(exc: BaseException) -> bool:
    """True for failures that retrying later can fix (see RETRYABLE_ERRORS, TRANSIENT_REPLIES)."""
    if isinstance(exc, PERMANENT_ERRORS):
        return False
    if isinstance(exc, RETRYABLE_ERRORS):
        return True
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    if isinstance(exc, redis.exceptions.ResponseError):
        return str(exc).split(" ", 1)[0] in TRANSIENT_REPLIES
    if isinstance(exc, redis.exceptions.SlotNotCoveredError):
        return True
    if isinstance(exc, RedisClusterException) and str(exc).startswith(TRANSIENT_CLUSTER_ERRORS):
        return exc.__cause__ is None or is_transient(exc.__cause__)
    return False


class RetryPolicy:
    """How Redis calls are retried when the connection drops, or Redis answers that it
    cannot serve now (OOM, BUSY, LOADING ...: TRANSIENT_REPLIES), with tenacity.

    Waits grow exponentially with jitter from ``initial`` to ``max_wait`` seconds;
    after ``deadline`` seconds of failures the call raises
    :class:`RedisUnavailableError`. Callers that must run forever (the worker's
    loops) catch that and go on.
    """

    def __init__(
        self,
        deadline: float = 30.0,
        initial: float = 0.05,
        max_wait: float = 2.0,
        attempt_timeout: float | None = None,
        quiet: bool = False,
    ) -> None:
        self.deadline = deadline
        self.attempt_timeout = attempt_timeout
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=tenacity.wait_exponential(multiplier=initial, max=max_wait)
            + tenacity.wait_random(0, initial),
            # quiet: one line per failing call (a web request's), not one per retry
            before_sleep=_log_first_retry if quiet else _log_retry,
            reraise=True,
        )

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)``, retrying it on dropped connections and transient
        error replies; other errors (WRONGTYPE, a script error) are raised at once.

        The first attempt is a plain call: tenacity's machinery is set up only once it
        has failed, so a healthy Redis costs nothing more than the call itself."""
        started = time.monotonic()
        try:
            return fn(*args, **kwargs)
        except REDIS_ERRORS as exc:
            if not is_transient(exc):
                raise
            first: BaseException | None = exc

        def attempt() -> T:
            nonlocal first
            if first is not None:  # tenacity sees the first failure as its attempt 1
                failed, first = first, None
                raise failed
            return fn(*args, **kwargs)

        try:
            return self._retrying.copy(stop=self._stop_since(started))(attempt)
        except REDIS_ERRORS as exc:
            if not is_transient(exc):
                raise
            unreachable = isinstance(exc, (*RETRYABLE_ERRORS, RedisClusterException))
            what = "unreachable" if unreachable else "refusing"
            raise RedisUnavailableError(
                f"Redis {what} after retrying for {self.deadline:g}s: {exc}"
            ) from exc

    def _stop_since(self, started: float) -> Callable[[tenacity.RetryCallState], bool]:
        """Stop once ``deadline`` seconds have passed since ``started``; with an
        ``attempt_timeout``, start no attempt that could end after that."""
        if self.attempt_timeout is None:
            return lambda state: time.monotonic() - started >= self.deadline
        last_start = self.deadline - self.attempt_timeout
        return lambda state: (
            time.monotonic() - started + (state.upcoming_sleep or 0.0) >= last_start
        )


def _log_retry(state: tenacity.RetryCallState) -> None:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    logger.warning(
        "Redis call failed (%s: %s); retry %d in %.2fs",
        type(error).__name__,
        error,
        state.attempt_number,
        state.next_action.sleep if state.next_action else 0.0,
    )


def _log_first_retry(state: tenacity.RetryCallState) -> None:
    if state.attempt_number == 1:
        _log_retry(state)


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Budget:
    """How long a short-lived caller (a CLI command) may wait for one Redis call.

    An attempt may take half of it (socket and connect timeouts) and :attr:`retry` starts
    no attempt that could end later, so a call, retries included, ends within ``seconds``.
    Use ``connect(url, budget=b)`` with ``b.retry``, or :meth:`scope` around code that
    connects by itself."""

    seconds: float = 5.0

    @property
    def attempt_timeout(self) -> float:
        return self.seconds / 2

    def options(self) -> dict[str, float]:
        """The :func:`connect` options: socket and connect timeouts of one attempt."""
        return dict.fromkeys(("socket_timeout", "socket_connect_timeout"), self.attempt_timeout)

    @cached_property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(deadline=self.seconds, attempt_timeout=self.attempt_timeout, quiet=True)

    @contextmanager
    def scope(self) -> Iterator[Budget]:
        """Within the block, :func:`connect` calls that pass no budget use this one (and
        so would a :func:`shared_client` first made there: keep those out of it)."""
        token = _SCOPED_BUDGET.set(self)
        try:
            yield self
        finally:
            _SCOPED_BUDGET.reset(token)


_SCOPED_BUDGET: ContextVar[Budget | None] = ContextVar("orbiter_sync_budget", default=None)


class RedisUser:
    """Base of every object that talks to Redis through one client.

    The client is either its own, connected to ``redis_url`` and closed by
    :meth:`close`, or one it was given (shared with others), which it leaves open.
    Every call goes through ``retry``.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        client: redis.Redis | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self._client = client if client is not None else connect(redis_url)
        self._owns_client = client is None
        self._retry = retry

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
