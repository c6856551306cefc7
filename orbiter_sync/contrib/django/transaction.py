"""``submit_on_commit``: a run queued only once the transaction that makes its data commits.

A view that creates a row and queues a run reading it must not let the run start
first (it would find no row), nor run at all for a transaction that rolls back::

    with transaction.atomic():
        report = Report.objects.create(...)
        handle = submit_on_commit({"entrypoint": "reports.agents:write"}, str(report.pk))
    return JsonResponse({"task_id": handle.task_id})   # known before the commit

The payload, and so the task id, is made at once; the submit is a
``transaction.on_commit`` callback. Outside ``atomic()`` it runs at once, as Django
runs such callbacks. When Redis refuses the submit after its retries, the error is
raised where the transaction commits (the row is committed by then): a run that must
never be lost needs an outbox row and a sweeper instead.
"""

from __future__ import annotations

import logging
from typing import Any, Unpack

from django.db import transaction

from orbiter_sync.client import RunOptions, TaskHandle, prepare_run
from orbiter_sync.contrib.django.conf import read_setting
from orbiter_sync.web import QUEUE, REDIS_URL

logger = logging.getLogger(__name__)


def submit_on_commit(
    agent: Any, input: str, *, using: str | None = None, **options: Unpack[RunOptions]
) -> TaskHandle:
    """Queue one agent run when the current transaction of database ``using`` commits.

    Takes ``distributed()``'s arguments; the Redis URL and queue default to
    ``ORBITER_REDIS_URL`` and ``ORBITER_QUEUE``. Everything is checked now (a bad
    payload raises ``ValidationError`` here, not at commit). Returns the handle at
    once; its ``status()`` is None until the commit.
    """
    options.setdefault("redis_url", read_setting(REDIS_URL))
    own = agent.submit_defaults() if hasattr(agent, "submit_defaults") else {}
    if not (options.get("queue") or options.get("queue_name") or own.get("queue")):
        options["queue"] = read_setting(QUEUE)  # the app's queue, unless the agent has one
    run = prepare_run(agent, input, **options)

    def submit() -> None:
        run.submit()
        logger.info("task %s submitted to %s on commit", run.payload.task_id, run.queue)

    transaction.on_commit(submit, using=using)
    return run.handle
