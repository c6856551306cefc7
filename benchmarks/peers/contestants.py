"""The four libraries: how each worker is started, knows it is ready, and is submitted to.

Each is submitted to through its ordinary client call (``distributed()``,
``task.delay()``, ``queue.enqueue()``, ``actor.send()``). A library's own module
(``celery_app``, ``dramatiq_jobs``, rq) is imported only when it runs.
"""

from __future__ import annotations

import importlib.util
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from benchmarks.peers import jobs
from benchmarks.peers.measure import Bench

Job = Literal["noop", "sleep", "latency"]
BIN = Path(sys.executable).parent
NAMES = ("orbiter-sync", "celery", "rq", "dramatiq")


@dataclass(frozen=True)
class Pool:
    """What one worker process runs its jobs on: ``thread`` or ``gevent``, and how many."""

    kind: Literal["thread", "gevent"]
    slots: int


class Contestant:
    name = ""
    label = ""
    modules: tuple[str, ...] = ()  # what must import for it to run
    executable = ""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    def missing(self) -> str | None:
        """Why this contestant cannot run here, or None."""
        for module in self.modules:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install -e '.[bench]')"
        if self.executable and not (BIN / self.executable).exists():
            return f"{BIN / self.executable} is missing"
        return None

    def command(self, pool: Pool, index: int) -> list[str] | None:
        """One worker process's command line; None when the library has no such pool."""
        raise NotImplementedError

    def ready(self, pool: Pool, processes: int) -> bool:
        """Whether ``processes`` worker processes consume from the queue."""
        raise NotImplementedError

    def submit(self, job: Job, arg: float = 0.0) -> None:
        raise NotImplementedError

    def submit_many(self, job: Job, args: Sequence[float]) -> str:
        """Submit them all, in bulk where the library has a bulk call; say how."""
        for arg in args:
            self.submit(job, arg)
        return "one call each"


class OrbiterSync(Contestant):
    name = label = "orbiter-sync"
    modules = ("orbiter_sync",)
    executable = "orbiter-sync"
    AGENTS = {
        "noop": "benchmarks.peers.jobs:orbiter_noop",
        "sleep": "benchmarks.peers.jobs:orbiter_sleep",
        "latency": "benchmarks.peers.jobs:orbiter_latency",
    }

    def command(self, pool: Pool, index: int) -> list[str]:
        return [str(BIN / "orbiter-sync"), "start", "worker", "--redis-url", self.bench.url,
                "--pool", pool.kind, "--concurrency", str(pool.slots),
                "--allow-import", "benchmarks.peers.jobs", "--worker-id", f"peers-{index}",
                "--log-level", "WARNING"]  # fmt: skip

    def ready(self, pool: Pool, processes: int) -> bool:
        keys = [f"orbiter:workers:peers-{index}" for index in range(processes)]
        return int(self.bench.client.exists(*keys)) == processes

    def submit(self, job: Job, arg: float = 0.0) -> None:
        from orbiter_sync import distributed

        distributed({"entrypoint": self.AGENTS[job]}, input=repr(arg), redis_url=self.bench.url)

    def submit_many(self, job: Job, args: Sequence[float]) -> str:
        from orbiter_sync import TaskPayload, TaskProducer

        producer = TaskProducer(self.bench.url)
        if not hasattr(producer, "submit_many"):
            return super().submit_many(job, args) + " (this orbiter-sync has no submit_many)"
        config = {"entrypoint": self.AGENTS[job]}
        producer.submit_many([TaskPayload(agent_config=config, input=repr(a)) for a in args])
        return "TaskProducer.submit_many"


class OrbiterSyncMetrics(OrbiterSync):
    """orbiter-sync with ``--metrics-port``, scraped once it is ready: what recording its
    metrics costs (``--metrics``)."""

    name = "orbiter-sync-metrics"
    label = "orbiter-sync --metrics-port"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.ports: dict[int, int] = {}

    def command(self, pool: Pool, index: int) -> list[str]:
        from orbiter_sync.embedded import free_port

        self.ports[index] = free_port()
        return [*super().command(pool, index), "--metrics-port", str(self.ports[index])]

    def ready(self, pool: Pool, processes: int) -> bool:
        if not super().ready(pool, processes):
            return False
        for index in range(processes):  # serving, and its first scrape is behind it
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[index]}/metrics") as page:
                page.read()
        return True


class Celery(Contestant):
    name = "celery"
    label = "celery (acks_late)"
    modules = ("celery", "kombu")
    executable = "celery"
    prefetch: int | None = None  # worker_prefetch_multiplier; None: Celery's default (4)

    def command(self, pool: Pool, index: int) -> list[str]:
        kind = "threads" if pool.kind == "thread" else "gevent"
        prefetch = [] if self.prefetch is None else ["--prefetch-multiplier", str(self.prefetch)]
        return [str(BIN / "celery"), "-A", "benchmarks.peers.celery_app", "worker",
                "--pool", kind, "--concurrency", str(pool.slots), "--loglevel", "WARNING",
                "--without-heartbeat", "--without-gossip", "--without-mingle",
                "-n", f"peers{index}@%h", *prefetch]  # fmt: skip

    def ready(self, pool: Pool, processes: int) -> bool:
        return int(self.bench.client.get(jobs.READY) or 0) >= processes

    def submit(self, job: Job, arg: float = 0.0) -> None:
        from benchmarks.peers import celery_app

        task: Any = getattr(celery_app, job)
        if job == "noop":
            task.delay()
        else:
            task.delay(arg)


class Rq(Contestant):
    """``rq worker-pool -n <slots>`` of SimpleWorkers: RQ runs one job per process."""

    name = "rq"
    label = "rq (worker-pool of SimpleWorkers)"
    modules = ("rq",)
    executable = "rq"
    QUEUE = "default"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self._queue: Any = None

    def queue(self) -> Any:
        if self._queue is None:
            import redis
            from rq import Queue

            self._queue = Queue(self.QUEUE, connection=redis.Redis.from_url(self.bench.url))
        return self._queue

    def command(self, pool: Pool, index: int) -> list[str] | None:
        if pool.kind != "thread":
            return None  # RQ has no gevent pool
        return [str(BIN / "rq"), "worker-pool", "--url", self.bench.url,
                "--worker-class", "rq.worker.SimpleWorker", "--num-workers", str(pool.slots),
                "--logging-level", "WARNING", self.QUEUE]  # fmt: skip

    def ready(self, pool: Pool, processes: int) -> bool:
        return int(self.bench.client.scard("rq:workers")) >= pool.slots * processes

    def function(self, job: Job) -> Any:
        return getattr(jobs, job)

    def submit(self, job: Job, arg: float = 0.0) -> None:
        args = () if job == "noop" else (arg,)
        self.queue().enqueue(self.function(job), *args, result_ttl=0)

    def submit_many(self, job: Job, args: Sequence[float]) -> str:
        from rq import Queue

        func = self.function(job)
        data = [
            Queue.prepare_data(func, () if job == "noop" else (arg,), result_ttl=0) for arg in args
        ]
        self.queue().enqueue_many(data)
        return "Queue.enqueue_many"


class RqSingle(Rq):
    """One ``rq worker`` process of the SimpleWorker class: RQ's one-job-at-a-time worker."""

    name = "rq-x1"
    label = "rq (1 SimpleWorker)"

    def command(self, pool: Pool, index: int) -> list[str] | None:
        if pool.kind != "thread":
            return None
        return [str(BIN / "rq"), "worker", "--url", self.bench.url,
                "--worker-class", "rq.worker.SimpleWorker", "--logging_level", "WARNING",
                "--name", f"peers-{index}", self.QUEUE]  # fmt: skip

    def ready(self, pool: Pool, processes: int) -> bool:
        return int(self.bench.client.scard("rq:workers")) >= processes


class Dramatiq(Contestant):
    name = "dramatiq"
    label = "dramatiq"
    modules = ("dramatiq",)
    executable = "dramatiq"

    def command(self, pool: Pool, index: int) -> list[str]:
        program = "dramatiq" if pool.kind == "thread" else "dramatiq-gevent"
        return [str(BIN / program), "benchmarks.peers.dramatiq_jobs",
                "--processes", "1", "--threads", str(pool.slots)]  # fmt: skip

    def ready(self, pool: Pool, processes: int) -> bool:
        return int(self.bench.client.zcard("dramatiq:__heartbeats__")) >= processes

    def submit(self, job: Job, arg: float = 0.0) -> None:
        from benchmarks.peers import dramatiq_jobs

        actor: Any = getattr(dramatiq_jobs, job)
        if job == "noop":
            actor.send()
        else:
            actor.send(arg)


CLASSES: dict[str, type[Contestant]] = {
    "orbiter-sync": OrbiterSync,
    "celery": Celery,
    "rq": Rq,
    "dramatiq": Dramatiq,
}
