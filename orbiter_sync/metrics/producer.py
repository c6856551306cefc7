"""Submissions, counted in the submitting process's default prometheus-client registry.

``TaskProducer.submit`` and ``submit_many`` (and so ``distributed()``) count the tasks
they queued, a task submitted again under the same id not twice, as
``orbiter_distributed_tasks_submitted_total{queue}``. A Django or Flask app that
serves prometheus-client's default registry on ``/metrics`` shows them without a line
of setup; under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` adds up its workers' counts.

This module imports prometheus-client, so the producer imports it on the first task
it queues: a worker process, which submits nothing, never loads it.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from orbiter_sync.metrics import names

logger = logging.getLogger(__name__)

SUBMITTED = Counter(names.TASKS_SUBMITTED, "Tasks this process queued.", ("queue",))


def count_submitted(queue: str, count: int = 1) -> None:
    """Add ``count`` tasks queued on ``queue``."""
    SUBMITTED.labels(queue).inc(count)
