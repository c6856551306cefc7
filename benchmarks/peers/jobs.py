"""The jobs every contestant runs, and how each marks that it ran.

A job ends with an INCR of :data:`DONE` on this module's own Redis connection (one
``redis.Redis`` per process, made on first use), never through a library's result
backend, so the benchmark waits on the same signal for every library. The Redis URL
comes from ``$PEERS_REDIS_URL``. This module imports nothing but redis-py: the Celery
and Dramatiq modules wrap these functions, RQ enqueues them as they are, and
orbiter-sync runs the ``orbiter_*`` agents (an agent gets its input string).
"""

from __future__ import annotations

import os
import threading
import time

import redis

URL_ENV = "PEERS_REDIS_URL"
DONE = "peers:done"  # INCR'd by every job when it has run
LATENCY = "peers:latency"  # list of submit-to-start delays in seconds (latency job)
READY = "peers:ready"  # INCR'd by a Celery worker process once it consumes
# redis-py 8 caps a pool at 100 connections; a gevent pool runs 500 jobs at once.
MAX_CONNECTIONS = 1024

_client: redis.Redis | None = None
_client_pid = 0
_lock = threading.Lock()


def redis_url() -> str:
    url = os.environ.get(URL_ENV)
    if not url:
        raise RuntimeError(f"${URL_ENV} is not set: the benchmark sets it for its workers")
    return url


def client() -> redis.Redis:
    """This process's connection (a forked child makes its own)."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        with _lock:
            if _client is None or _client_pid != os.getpid():
                _client = redis.Redis.from_url(redis_url(), max_connections=MAX_CONNECTIONS)
                _client_pid = os.getpid()
    return _client


def noop() -> None:
    client().incr(DONE)


def sleep(seconds: float) -> None:
    """An I/O-bound job: it waits (a greenlet switch under a gevent pool)."""
    time.sleep(seconds)
    client().incr(DONE)


def latency(submitted_at: float) -> None:
    """Records how long after its submit the job started."""
    delay = time.time() - submitted_at
    pipe = client().pipeline(transaction=False)
    pipe.rpush(LATENCY, repr(delay))
    pipe.incr(DONE)
    pipe.execute()


def mark_ready() -> None:
    client().incr(READY)


# orbiter-sync agents: plain functions of the input string.


def orbiter_noop(input: str) -> str:
    noop()
    return ""


def orbiter_sleep(input: str) -> str:
    sleep(float(input))
    return ""


def orbiter_latency(input: str) -> str:
    latency(float(input))
    return ""
