"""The Celery contestant: an app on the private Redis (``$PEERS_REDIS_URL``) as broker.

Started as ``celery -A benchmarks.peers.celery_app worker --pool threads ...``.
``task_acks_late=True`` (a task is acknowledged after it ran, as orbiter-sync settles
after the run) and no result backend (``ignore_result``): a job marks that it ran
with the INCR in :mod:`benchmarks.peers.jobs`. ``worker_prefetch_multiplier`` stays at
its default (4): Celery's optimizing guide asks for 1 only for long tasks, and keeps
the default for many short ones, which is what the throughput scenario runs.
Imported only when Celery runs (the CI installs no Celery).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_ready

from benchmarks.peers import jobs

app = Celery("peers", broker=jobs.redis_url(), set_as_current=True)
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    result_backend=None,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

# Plain calls rather than decorators: Celery has no type hints.
noop = app.task(name="peers.noop", ignore_result=True)(jobs.noop)
sleep = app.task(name="peers.sleep", ignore_result=True)(jobs.sleep)
latency = app.task(name="peers.latency", ignore_result=True)(jobs.latency)


def _ready(sender: Any = None, **kwargs: Any) -> None:
    jobs.mark_ready()  # this worker process consumes now


worker_ready.connect(_ready, weak=False)
