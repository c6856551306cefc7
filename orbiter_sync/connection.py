"""Redis URLs, connection pools, password masking and the retry policy for Redis calls.

Supported URLs: ``redis://``, ``rediss://`` (TLS; add ``?ssl_cert_reqs=none``, or set
``ORBITER_REDIS_SSL_CERT_REQS=none``, for Heroku's self-signed certificates), ``unix://`` and
``redis+sentinel://[:password@]host1:port1,host2:port2/mastername[/db]``
(``rediss+sentinel://`` for TLS to the master; ``?sentinel_password=`` when the
sentinels themselves require a password).

Every long-lived object owns one :class:`redis.Redis` client, and so one
thread-safe connection pool. The pool is unbounded, so a slot blocked in
``XREADGROUP`` holds its own connection and never starves the heartbeat or the
publisher of one. redis-py's own retry is switched off: :class:`RetryPolicy`
(tenacity) is the single place where dropped connections are retried.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote

import redis
import tenacity
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from orbiter_sync.env import CERT_REQS_ENV, HEROKU_URL_ENV, URL_ENV
from orbiter_sync.errors import ConfigurationError, RedisUnavailableError

logger = logging.getLogger(__name__)

T = TypeVar("T")

_CERT_REQS = ("none", "optional", "required")
DEFAULT_SENTINEL_PORT = 26379
UNBOUNDED_POOL = 2**31 - 1

_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
_SECRET_QUERY = re.compile(
    r"((?:^|[?&;])[^=&;]*(?:password|passwd|token|secret)[^=&;]*=)[^&;]*", re.I
)


def resolve_redis_url(url: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The URL to use: ``url`` if given, else ``ORBITER_REDIS_URL``, else ``REDIS_URL``."""
    env = os.environ if env is None else env
    chosen = url or env.get(URL_ENV) or env.get(HEROKU_URL_ENV)
    if not chosen:
        raise ConfigurationError(
            f"no Redis URL: pass --redis-url / redis_url=, or set {URL_ENV} (or {HEROKU_URL_ENV})"
        )
    scheme = chosen.split("://", 1)[0].lower() if "://" in chosen else ""
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"unsupported Redis URL {mask_url(chosen)!r}: use redis://, rediss://, unix:// "
            "or redis+sentinel://host1:port1,host2:port2/mastername[/db]"
        )
    return chosen


def mask_url(url: str) -> str:
    """The URL with any password (in the user part or the query) replaced by ``***``."""
    if "://" not in url:
        return _SECRET_QUERY.sub(r"\1***", url)
    scheme, rest = url.split("://", 1)
    query_at = rest.find("?")
    head, query = (rest, "") if query_at < 0 else (rest[:query_at], rest[query_at:])
    at = head.rfind("@")
    if at >= 0:
        userinfo, host = head[:at], head[at + 1 :]
        user, sep, password = userinfo.partition(":")
        masked = f"{user}:***" if sep and password else (userinfo if sep else "***")
        head = f"{masked}@{host}"
    return f"{scheme}://{head}" + _SECRET_QUERY.sub(r"\1***", query)


@dataclass(frozen=True)
class SentinelURL:
    """The parts of a ``redis+sentinel://`` URL."""

    hosts: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse ``redis+sentinel://[[user]:password@]h1:p1,h2:p2/mastername[/db]``."""
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        userinfo, hostpart = "", rest
    netloc, _, path = hostpart.partition("/")
    hosts: list[tuple[str, int]] = []
    for item in filter(None, netloc.split(",")):
        host, colon, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        try:
            hosts.append((host or item, int(port) if colon else DEFAULT_SENTINEL_PORT))
        except ValueError:
            raise ConfigurationError(f"bad sentinel address {item!r} in {mask_url(url)}") from None
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts or len(parts) > 2:
        raise ConfigurationError(
            f"bad sentinel URL {mask_url(url)!r}: expected "
            "redis+sentinel://host1:port1,host2:port2/mastername[/db]"
        )
    try:
        db = int(parts[1]) if len(parts) == 2 else 0
    except ValueError:
        raise ConfigurationError(f"bad database number in {mask_url(url)!r}") from None
    user, _, password = userinfo.partition(":")
    params = parse_qs(query)
    return SentinelURL(
        hosts=tuple(hosts),
        master=unquote(parts[0]),
        db=db,
        username=unquote(user) or None,
        password=unquote(password) or None,
        sentinel_password=(params.get("sentinel_password") or [""])[0] or None,
        ssl=scheme.lower().startswith("rediss"),
    )


def connect(url: str | None = None, **overrides: Any) -> redis.Redis:
    """A client with its own thread-safe pool, for one long-lived object.

    ``url`` defaults to ``ORBITER_REDIS_URL``, then ``REDIS_URL``."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": 15.0,
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": Retry(NoBackoff(), 0),
        # redis-py 8 caps a pool at 100 connections by default; a worker needs one per
        # slot blocked in XREADGROUP, and gevent workers run hundreds of slots.
        "max_connections": UNBOUNDED_POOL,
        **overrides,
    }
    url = resolve_redis_url(url)
    if url.lower().startswith("rediss") and "ssl_cert_reqs" not in url:
        cert_reqs = _cert_reqs_from_env()
        if cert_reqs:
            options.setdefault("ssl_cert_reqs", cert_reqs)
    if url.lower().startswith("unix://"):
        options.pop("socket_keepalive")  # not a TCP socket
    if "+sentinel://" in url.lower():
        parsed = parse_sentinel_url(url)
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": options["socket_connect_timeout"],
            "decode_responses": True,
        }
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
        raise ConfigurationError(f"bad Redis URL {mask_url(url)!r}: {exc}") from None


def _cert_reqs_from_env() -> str | None:
    value = os.environ.get(CERT_REQS_ENV, "").strip().lower()
    if not value:
        return None
    if value not in _CERT_REQS:
        raise ConfigurationError(f"{CERT_REQS_ENV}={value!r} is not one of {', '.join(_CERT_REQS)}")
    return value


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


class RetryPolicy:
    """How Redis calls are retried when the connection drops (tenacity).

    Waits grow exponentially with jitter from ``initial`` to ``max_wait`` seconds;
    after ``deadline`` seconds of failures the call raises
    :class:`RedisUnavailableError`. Callers that must run forever (the worker's
    loops) catch that and go on.
    """

    def __init__(
        self, deadline: float = 30.0, initial: float = 0.05, max_wait: float = 2.0
    ) -> None:
        self.deadline = deadline
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(RETRYABLE_ERRORS)
            & tenacity.retry_if_not_exception_type(PERMANENT_ERRORS),
            wait=tenacity.wait_exponential(multiplier=initial, max=max_wait)
            + tenacity.wait_random(0, initial),
            stop=tenacity.stop_after_delay(deadline),
            before_sleep=_log_retry,
            reraise=True,
        )

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)``, retrying it on dropped connections."""
        try:
            return self._retrying.copy()(fn, *args, **kwargs)
        except PERMANENT_ERRORS:
            raise
        except RETRYABLE_ERRORS as exc:
            raise RedisUnavailableError(
                f"Redis unreachable after retrying for {self.deadline:g}s: {exc}"
            ) from exc


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


DEFAULT_RETRY = RetryPolicy()


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
