"""The Dramatiq contestant: actors on a RedisBroker on the private Redis.

Started as ``dramatiq benchmarks.peers.dramatiq_jobs --processes 1 --threads 8`` (or
``dramatiq-gevent ... --threads 500``). No result middleware: a job marks that it ran
with the INCR in :mod:`benchmarks.peers.jobs`. ``max_retries=0`` as no job fails. The broker's
connection pool may open as many connections as the jobs' own (redis-py 8 caps a pool
at 100 by default, and 500 greenlets acknowledging at once ran out of them: the worker
stalled with "Too many connections").
Imported only when Dramatiq runs (the CI installs no Dramatiq).
"""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from benchmarks.peers import jobs

connection = redis.Redis.from_url(jobs.redis_url(), max_connections=jobs.MAX_CONNECTIONS)
broker = RedisBroker(client=connection)  # type: ignore[no-untyped-call,unused-ignore]
dramatiq.set_broker(broker)

# Plain calls rather than decorators, so the module checks the same without Dramatiq.
noop = dramatiq.actor(actor_name="peers_noop", max_retries=0)(jobs.noop)
sleep = dramatiq.actor(actor_name="peers_sleep", max_retries=0)(jobs.sleep)
latency = dramatiq.actor(actor_name="peers_latency", max_retries=0)(jobs.latency)
