"""Lines: a connection held by one slot for the scripts it runs on every task.

A worker's slots run two scripts per task (``begin`` and ``settle``). Through
redis-py's client each call checks a connection out of the pool (with a
readiness probe that is a system call of its own), wraps it in redis-py's retry
and parses the reply through its callbacks: about half of the client's CPU per
call. A :class:`Line` sends EVALSHA straight over a connection its slot holds,
whose timeout lives in the kernel rather than in Python (half the system calls and
GIL handovers per round trip); :class:`LineUser` gives an object such lines, one
per thread (or greenlet).
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.commands.core import Script

from orbiter_sync.connection import DEFAULT_RETRY, RedisUser, RetryPolicy, is_cluster
from orbiter_sync.layout import key_slot
from orbiter_sync.native import gevent_active


class Line:
    """One connection held by one caller (a slot) for the scripts it runs on every task.

    EVALSHA goes straight over it: no pool checkout (whose readiness probe is a
    system call of its own), no per-command retry wrapper, no response callbacks,
    which halves the client's CPU per call. Same timeouts, encoding and Sentinel
    handling as ``client``'s other connections; a call that fails leaves the
    connection closed, to be reopened by the next one (retries are the caller's,
    through :class:`RetryPolicy`). :meth:`close` hands it back to the pool.

    On a Redis Cluster it holds one connection per master its scripts go to (the master
    of the slot of their first key, from the client's map of the cluster). A reply that
    says the slot moved or the cluster is down, or a connection that fails, sends that
    call through the cluster client itself, which follows it and reloads its map.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._cluster = client if is_cluster(client) else None
        self._pool: Any = None if self._cluster else client.connection_pool
        self._held: dict[int, tuple[Any, Any]] = {}  # id of a pool -> (pool, connection)
        # gevent's sockets wait in its hub, not in the kernel; 64-bit Linux's timeval only
        self._kernel_timeouts = KERNEL_TIMEOUTS and not gevent_active()

    def evalsha(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run ``script`` with ``keys`` and ``args``, loading it first if Redis lacks it."""
        pool = self._pool if self._cluster is None else self._pool_of(keys)
        if pool is None:  # a cluster whose map does not name the slot's master now
            return script(keys=keys, args=args, client=self._cluster)
        try:
            connection = self._connection(pool)
            try:
                return self._call(connection, script, keys, args)
            except redis.exceptions.NoScriptError:
                self._command(connection, "SCRIPT", "LOAD", script.script)
                return self._call(connection, script, keys, args)
        except _REROUTED:
            if self._cluster is None:
                raise
            self.close()  # the map is changing: what is held may be a master no more
            return script(keys=keys, args=args, client=self._cluster)

    def _pool_of(self, keys: Sequence[Any]) -> Any:
        """The pool of the cluster master serving ``keys[0]``'s slot, or None."""
        try:
            node = self._cluster.nodes_manager.get_node_from_slot(key_slot(str(keys[0])))  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - a slot not covered now: the client's own path
            return None
        client = node.redis_connection
        return None if client is None else client.connection_pool

    def _connection(self, pool: Any) -> Any:
        held = self._held.get(id(pool))
        if held is None:
            try:
                connection = pool.get_connection()
            except TypeError:  # redis-py before 5.3 wants a command name
                connection = pool.get_connection("EVALSHA")
            held = self._held[id(pool)] = (pool, connection)
        return held[1]

    def _call(
        self, connection: Any, script: Script, keys: Sequence[Any], args: Sequence[Any]
    ) -> Any:
        return self._command(connection, "EVALSHA", script.sha, len(keys), *keys, *args)

    def _command(self, connection: Any, *command: Any) -> Any:
        sock = connection._sock
        if (
            self._kernel_timeouts
            and sock is not None
            and connection.__dict__.get(_TUNED) is not sock
        ):
            connection.__dict__[_TUNED] = _kernel_timeouts(sock, connection.socket_timeout)
        try:
            connection.send_command(*command)
            return connection.read_response()
        except redis.exceptions.ResponseError:
            raise  # an error reply: the connection is fine
        except BaseException:
            connection.disconnect()  # half a reply may be left on it
            raise

    def _release(self, pool: Any) -> None:
        held = self._held.pop(id(pool), None)
        if held is not None:
            pool.release(held[1])

    def close(self) -> None:
        for pool, _ in list(self._held.values()):
            self._release(pool)


_TUNED = "_orbiter_tuned"  # a connection's attribute: the socket given kernel-side timeouts
# What sends a cluster call through the cluster client: MOVED and ASK replies (AskError is
# MovedError's base), CLUSTERDOWN, TRYAGAIN, and a connection that failed.
_REROUTED = (
    redis.exceptions.AskError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


KERNEL_TIMEOUTS = sys.platform == "linux" and struct.calcsize("l") == 8


def _kernel_timeouts(sock: Any, timeout: float | None) -> Any:
    """Move ``sock``'s timeout into the kernel (SO_RCVTIMEO / SO_SNDTIMEO) and make it a
    blocking socket for Python; returns ``sock``, or None when left as it was.

    With a Python-level timeout every send and receive is a poll() and then the call,
    each releasing and retaking the GIL: four GIL handovers per round trip, which eight
    busy slots pay in lock contention. A kernel timeout fails the call the same way
    (redis-py reports it as a connection error, which is retried). Plain sockets only,
    outside gevent (whose sockets wait in its hub, not in the kernel)."""
    if timeout is None or timeout < 0.001 or type(sock) is not socket.socket:
        return None  # a zero timeval would mean no timeout at all
    seconds = int(timeout)
    timeval = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        sock.settimeout(None)
    except OSError:
        sock.settimeout(timeout)
        return None
    return sock


class LineUser(RedisUser):
    """A :class:`RedisUser` whose hot scripts can run over a :class:`Line` per caller.

    Inside :meth:`line`, the calling thread (or greenlet: ``threading.local`` is
    patched under gevent) runs :meth:`_run_script` calls over a connection of its own.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        client: redis.Redis | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        super().__init__(redis_url, client=client, retry=retry)
        self._lines = threading.local()

    @contextmanager
    def line(self, shared: Line | None = None) -> Iterator[None]:
        """Hold a connection of its own for the calling thread within the block (a slot
        holds one for its whole life); or use ``shared``, a line its owner closes (one
        slot's line for the consumers of several queues on one client)."""
        line = shared or Line(self._client)
        self._lines.line = line
        try:
            yield
        finally:
            self._lines.line = None
            if shared is None:
                line.close()

    def _run_script(
        self,
        script: Script,
        keys: list[str],
        args: list[Any],
        client: redis.Redis | None = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Run ``script`` through ``retry``: over ``client`` when given, else over the calling
        thread's line when it holds one, else over the shared client."""
        retry = retry or self._retry
        if client is None:  # not from another thread (the heartbeat's, say) on its own client
            line: Line | None = getattr(self._lines, "line", None)
            if line is not None:
                return retry.call(line.evalsha, script, keys, args)
        return retry.call(script, keys=keys, args=args, client=client)
