"""Submissions counted in the submitting process's default prometheus-client registry,
and added up over processes in prometheus-client's multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis
from helpers import ROOT
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from orbiter_sync import TaskPayload, distributed
from orbiter_sync.metrics import names
from orbiter_sync.producer import TaskProducer
from orbiter_sync.queue import QueueSettings

SUBMITTED = f"{names.TASKS_SUBMITTED}_total"
ECHO = {"entrypoint": "sample_agents:echo"}


def submitted(queue: str, registry: CollectorRegistry = REGISTRY) -> float:
    return registry.get_sample_value(SUBMITTED, {"queue": queue}) or 0.0


def test_tasks_queued_are_counted_once_by_queue(redis_url: str, r: redis.Redis) -> None:
    # Given what this process counted so far
    producer = TaskProducer(redis_url, QueueSettings(name="counted"))
    before, before_default = submitted("counted"), submitted("orbiter:tasks")
    first = TaskPayload(agent_config=ECHO, input="one")

    # When tasks are queued one at a time, in bulk, through distributed(), and again
    producer.submit(first)
    producer.submit(first)  # already queued: not queued, not counted
    producer.submit(TaskPayload(agent_config=ECHO, input="later"), delay=60)
    producer.submit_many(TaskPayload(agent_config=ECHO, input=str(n)) for n in range(5))
    producer.submit_many([first])
    distributed(ECHO, "hi", redis_url=redis_url)

    # Then each task queued counts once, on its own queue
    assert submitted("counted") - before == 1 + 1 + 5
    assert submitted("orbiter:tasks") - before_default == 1
    assert r.xlen("counted") + r.zcard("counted:delayed") == 7


PRODUCE = """
import sys
from orbiter_sync import TaskPayload, TaskProducer, distributed
url, count = sys.argv[1], int(sys.argv[2])
config = {"entrypoint": "sample_agents:echo"}
for n in range(count):
    distributed(config, str(n), redis_url=url)
TaskProducer(url).submit_many(TaskPayload(agent_config=config, input=str(n)) for n in range(count))
"""


def test_counts_of_several_processes_add_up_in_multiprocess_mode(
    redis_url: str, tmp_path: Path
) -> None:
    # Given two producing processes, as gunicorn workers with PROMETHEUS_MULTIPROC_DIR
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    processes = [
        subprocess.Popen([sys.executable, "-c", PRODUCE, redis_url, str(count)], env=env)
        for count in (3, 4)
    ]

    # When both have submitted and exited
    assert [p.wait(timeout=30) for p in processes] == [0, 0]

    # Then a scrape registry with the multiprocess collector shows their sum
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert submitted("orbiter:tasks", registry) == 2 * (3 + 4)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # one file per process
