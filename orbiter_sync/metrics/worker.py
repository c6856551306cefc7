"""A worker's own metrics: the ``orbiter_distributed_*`` series its ``/metrics`` serves.

Off by default, and then free: slots, the maintenance loop and the event publisher
report to :func:`recorder`, whose default does nothing (prometheus-client is not even
imported). :func:`serve` puts a recording one in its place and serves the default
registry (with its process and GC metrics, and any an agent's code registers) on
``0.0.0.0:port``; :meth:`MetricsServer.close` undoes it.

Labels: ``queue``, and ``agent`` (the payload's ``name``, else its entrypoint; at most
``MAX_AGENT_LABELS`` names a process, the rest as ``other``). Completed, failed (for
good), cancelled and retried count what the settle script wrote, so an attempt is
counted once, by the worker that settled it; the duration histogram observes those
attempts. The wait histogram observes ``created_at`` to the start of a task's first
attempt (begin.lua says which attempt it is): not retries, nor entries taken over from
a dead worker. Gauges are read when scraped; an unreadable Redis costs only the depth.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import redis

from orbiter_sync.cluster_client import REDIS_FAILURES
from orbiter_sync.connection import Budget, connect
from orbiter_sync.errors import ConfigurationError
from orbiter_sync.metrics import names
from orbiter_sync.metrics.snapshot import queue_depths

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

    from orbiter_sync.queue import Delivery, QueueSettings

logger = logging.getLogger(__name__)

# Agent runs last from well under a second (a tool call, a cached answer) to many
# minutes (an LLM agent's steps; the default timeout is 5 minutes).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# Waits are milliseconds on a fleet that keeps up, minutes on one that does not; the
# wait-time alert fires past 60 s.
WAIT_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
MAX_AGENT_NAME = 100  # characters of an agent's name kept in its label
SCRAPE_BUDGET = Budget(2.0)  # a scrape reads Redis once, for at most a second
SERVER_POLL = 0.1  # seconds: how soon the HTTP server notices it must stop

# the settle script's answer -> the counter it adds to
_ENDS = {"completed": names.TASKS_COMPLETED, "failed": names.TASKS_FAILED,
         "cancelled": names.TASKS_CANCELLED, "retrying": names.TASKS_RETRIED}  # fmt: skip
_COUNTERS = (  # name, help, labels
    (names.TASKS_COMPLETED, "Tasks this worker completed.", ("queue", "agent")),
    (names.TASKS_FAILED, "Tasks that failed for good on this worker.", ("queue", "agent")),
    (names.TASKS_CANCELLED, "Runs this worker stopped, cancelled.", ("queue", "agent")),
    (names.TASKS_RETRIED, "Failed attempts here that will be retried.", ("queue", "agent")),
    (names.EVENTS_PUBLISHED, "Events runs on this worker published.", ()),
    (names.DEAD_LETTERS, "Entries this worker dead-lettered.", ("queue",)),
    (names.RECLAIMS, "Entries this worker took over from dead workers.", ("queue",)),
    (names.REDIS_ERRORS, "Redis calls that failed, retries spent.", ("operation",)),
)
UNREADABLE: tuple[type[Exception], ...] = (*REDIS_FAILURES, OSError)  # the depth gauge
Histograms = dict[tuple[str, ...], list[float]]  # labels -> a count per bucket (+Inf last), sum


class WorkerMetrics:
    """What a worker reports as it goes; this one records nothing (metrics off).

    A claimed task ``started``; the settle script wrote ``status`` after an attempt
    that ran ``seconds`` (``settled``); an entry was dead-lettered; ``count`` entries
    were taken over from dead workers; a run published an event; a Redis call of
    ``operation`` failed with its retries spent.
    """

    enabled = False

    def started(self, delivery: Delivery, attempt: int) -> None: ...
    def settled(self, delivery: Delivery, status: str | None, seconds: float) -> None: ...
    def dead_lettered(self, queue: str) -> None: ...
    def reclaimed(self, queue: str, count: int) -> None: ...
    def published(self) -> None: ...
    def redis_error(self, operation: str) -> None: ...


_NOTHING = WorkerMetrics()
_active: WorkerMetrics = _NOTHING
_serving = threading.Lock()


def recorder() -> WorkerMetrics:
    """This process's recorder: the recording one while :func:`serve` is on."""
    return _active


class redis_errors:  # noqa: N801 - used as a statement: with redis_errors("claim"): ...
    """Counts a Redis error raised inside the block for ``operation``, and lets it go on."""

    __slots__ = ("operation",)

    def __init__(self, operation: str) -> None:
        self.operation = operation

    def __enter__(self) -> None:
        pass

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and isinstance(exc, REDIS_FAILURES):
            _active.redis_error(self.operation)


def agent_of(agent_config: dict[str, Any]) -> str:
    """The agent's name as its payload gives it: ``name``, else the entrypoint, else
    ``swarm`` for a swarm dict (a task id is never one of them)."""
    name = agent_config.get("name") or agent_config.get("entrypoint")
    if isinstance(name, str) and name:
        return name[:MAX_AGENT_NAME]
    return "swarm" if "agents" in agent_config else "unknown"


class AgentLabels:
    """The agent label of a name: itself for the first ``most`` names seen, then ``other``
    (names come from payloads: a label per name would let them grow without end)."""

    def __init__(self, most: int = names.MAX_AGENT_LABELS) -> None:
        self.most = most
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, name: str) -> str:
        if name in self._seen:
            return name
        with self._lock:
            if len(self._seen) < self.most:
                self._seen.add(name)
                return name
        return names.OTHER_AGENT


class _Tally:
    """One thread's (or greenlet's) counts: only it writes them, so it takes no lock
    (prometheus-client's metrics take one per update, which busy slots turn into a
    convoy that cost a tenth of the no-op throughput); a scrape adds them all up."""

    __slots__ = ("counts", "runs", "waits")

    def __init__(self) -> None:
        self.runs: Histograms = {}  # (status, queue, agent): run times, and so their count
        self.waits: Histograms = {}  # (queue,)
        self.counts: dict[tuple[str, ...], float] = {}  # (name, *label values) of _COUNTERS


def _observe(
    table: Histograms, key: tuple[str, ...], bounds: Sequence[float], value: float
) -> None:
    counts = table.get(key)
    if counts is None:
        counts = table[key] = [0.0] * (len(bounds) + 2)
    counts[bisect_left(bounds, value)] += 1  # the first bucket whose bound is >= value
    counts[-1] += value


def _add(into: Histograms, key: tuple[str, ...], counts: list[float]) -> None:
    into[key] = [a + b for a, b in zip(into[key], counts, strict=True)] if key in into else counts


class _Recording(WorkerMetrics):
    enabled = True

    def __init__(self) -> None:
        self._local = threading.local()  # greenlet-local once gevent has patched it
        self.tallies: list[_Tally] = []
        self._adding = threading.Lock()
        self._agents = AgentLabels()

    def _tally(self) -> _Tally:
        try:
            tally: _Tally = self._local.tally
        except AttributeError:
            tally = self._local.tally = _Tally()
            with self._adding:
                self.tallies.append(tally)
        return tally

    def _count(self, *key: str, by: float = 1) -> None:
        counts = self._tally().counts
        counts[key] = counts.get(key, 0) + by

    def started(self, delivery: Delivery, attempt: int) -> None:
        # submit to first start: not a retry (its wait includes the failed attempt and
        # the backoff), nor an entry taken over (counted where it began)
        if attempt == 1 and delivery.deliveries == 1:
            wait = max(0.0, time.time() - delivery.payload.created_at)
            _observe(self._tally().waits, (delivery.queue,), WAIT_BUCKETS, wait)

    def settled(self, delivery: Delivery, status: str | None, seconds: float) -> None:
        if status in _ENDS:  # not released, say
            agent = self._agents(agent_of(delivery.payload.agent_config))
            key = (str(status), delivery.queue, agent)
            _observe(self._tally().runs, key, DURATION_BUCKETS, max(0.0, seconds))

    def dead_lettered(self, queue: str) -> None:
        self._count(names.DEAD_LETTERS, queue)

    def reclaimed(self, queue: str, count: int) -> None:
        self._count(names.RECLAIMS, queue, by=count)

    def published(self) -> None:
        self._count(names.EVENTS_PUBLISHED)

    def redis_error(self, operation: str) -> None:
        self._count(names.REDIS_ERRORS, operation)

    def totals(self) -> tuple[Histograms, Histograms, dict[tuple[str, ...], float]]:
        """Every tally added up: runs, waits, counts."""
        runs: Histograms = {}
        waits: Histograms = {}
        counts: dict[tuple[str, ...], float] = {(names.EVENTS_PUBLISHED,): 0}  # no labels: 0
        for tally in list(self.tallies):
            # list() copies at once (under the GIL): its thread may add to it meanwhile
            for table, into in ((tally.runs, runs), (tally.waits, waits)):
                for key, values in list(table.items()):
                    _add(into, key, list(values))
            for key, value in list(tally.counts.items()):
                counts[key] = counts.get(key, 0) + value
        return runs, waits, counts


@dataclass(frozen=True)
class WorkerState:
    """What a scrape reads from the worker it serves, when it is scraped."""

    slots: int
    busy: Callable[[], int]  # slots running a task now
    in_progress: Callable[[], int]  # deliveries claimed and not yet settled
    queues: Sequence[QueueSettings]
    redis_url: str


class _Collector:
    """A scrape: the tallies added up, the worker's gauges, and each queue's depth from
    Redis (left out when Redis cannot be read)."""

    def __init__(self, recording: _Recording, state: WorkerState) -> None:
        self.recording = recording
        self.state = state
        self._client: redis.Redis | None = None
        self._failing = False

    def describe(self) -> list[Metric]:
        return []  # registering must not read Redis (the names are ours alone)

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        runs, waits, counts = self.recording.totals()
        durations: Histograms = {}
        for (end, *labels), values in runs.items():
            counts[(_ENDS[end], *labels)] = sum(values[:-1])
            _add(durations, tuple(labels), values)
        for name, doc, label in _COUNTERS:
            family = CounterMetricFamily(name, doc, labels=label)
            for (counter, *labels), value in counts.items():
                if counter == name:
                    family.add_metric(labels, value)
            yield family
        yield _histogram(names.TASK_DURATION, "Run time of an attempt, in seconds.",
                         ("queue", "agent"), DURATION_BUCKETS, durations)  # fmt: skip
        yield _histogram(names.TASK_WAIT_TIME, "Seconds from a task's created_at to the start "
                         "of its run here.", ("queue",), WAIT_BUCKETS, waits)  # fmt: skip
        s = self.state
        yield GaugeMetricFamily(names.SLOTS_TOTAL, "Task slots of this worker.", s.slots)
        yield GaugeMetricFamily(names.SLOTS_BUSY, "Slots running a task now.", s.busy())
        yield GaugeMetricFamily(names.TASKS_IN_PROGRESS, "Tasks claimed and not settled "
                                "(running, or claimed ahead).", s.in_progress())  # fmt: skip
        depth = GaugeMetricFamily(names.QUEUE_DEPTH, "Entries no worker has claimed yet, plus "
                                  "delayed retries.", labels=("queue",))  # fmt: skip
        for queue, value in self._depths().items():
            depth.add_metric((queue,), value)
        yield depth

    def _depths(self) -> dict[str, int]:
        try:
            if self._client is None:
                self._client = connect(self.state.redis_url, budget=SCRAPE_BUDGET)
            depths = queue_depths(self._client, self.state.queues)
        except UNREADABLE as exc:
            if not self._failing:
                logger.warning("metrics: queue depth not read from Redis: %s", exc)
            self._failing = True
            return {}
        self._failing = False
        return depths

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _histogram(name: str, doc: str, labels: Sequence[str], bounds: Sequence[float],
               table: Histograms) -> Metric:  # fmt: skip
    from prometheus_client.core import HistogramMetricFamily
    from prometheus_client.utils import floatToGoString

    family = HistogramMetricFamily(name, doc, labels=labels)
    edges = [*map(floatToGoString, bounds), "+Inf"]
    for key, counts in table.items():  # the sum comes after the buckets
        cumulative = list(zip(edges, accumulate(counts[:-1]), strict=True))
        family.add_metric(key, cumulative, sum_value=counts[-1])
    return family


class MetricsServer:
    """``/metrics`` served from a daemon thread; :meth:`close` stops it and recording."""

    def __init__(self, port: int, httpd: WSGIServer, collector: _Collector) -> None:
        self.port = port
        self._httpd = httpd
        self._collector = collector
        serving = threading.Thread(target=httpd.serve_forever, args=(SERVER_POLL,),
                                   name="orbiter-metrics", daemon=True)  # fmt: skip
        serving.start()

    def close(self) -> None:
        global _active
        from prometheus_client import REGISTRY

        with _serving:
            _active = _NOTHING
            REGISTRY.unregister(cast("Collector", self._collector))
        self._httpd.shutdown()
        self._httpd.server_close()
        self._collector.close()


def serve(port: int, state: WorkerState) -> MetricsServer:
    """Record this process's worker metrics and serve them on ``0.0.0.0:port``.

    ``ConfigurationError`` when the port cannot be bound (another process has it, say)
    or this process serves worker metrics already.
    """
    global _active
    from prometheus_client import REGISTRY, make_wsgi_app

    with _serving:
        if _active.enabled:
            raise ConfigurationError("this process already serves a worker's metrics")
        try:
            httpd = _http_server(port, make_wsgi_app(REGISTRY))
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on port {port}: {exc.strerror or exc}"
            ) from None
        recording = _Recording()
        collector = _Collector(recording, state)
        # not a Collector subclass, so that prometheus-client is imported only here
        REGISTRY.register(cast("Collector", collector))
        _active = recording
    return MetricsServer(port, httpd, collector)


def _http_server(port: int, app: Any) -> WSGIServer:
    """A threaded WSGI server on ``0.0.0.0:port`` that logs no request lines."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    return make_server("0.0.0.0", port, app, Server, handler_class=QuietHandler)
