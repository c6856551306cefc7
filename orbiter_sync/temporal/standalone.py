"""``orbiter-sync start temporal-worker``: Temporal's workflows and activities alone.

For fleets that separate the two: ``start worker --executor temporal
--no-temporal-worker`` processes claim from Redis and start workflows, and these
processes run them (the agents, behind the same import allowlist, publishing the
events to Redis). A stop lets running activities finish within the shutdown
timeout; then they are cancelled (the cancel says worker shutdown) and Temporal
retries them on another worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from orbiter_sync.agents import ImportPolicy
from orbiter_sync.errors import OrbiterError
from orbiter_sync.events import EventPublisher
from orbiter_sync.executors.local import LocalExecutor
from orbiter_sync.heartbeat import default_worker_id
from orbiter_sync.outcome import StopReason
from orbiter_sync.queue import DEFAULT_EVENT_TTL
from orbiter_sync.temporal import TemporalSettings
from orbiter_sync.temporal.activity import AgentActivity
from orbiter_sync.temporal.runtime import TemporalRuntime
from orbiter_sync.urls import mask_url, resolve_redis_url

logger = logging.getLogger(__name__)

TICK = 0.25  # seconds between two looks at the stop switch (signals land between them)
EXTRA_WAIT = 5.0  # seconds past the shutdown timeout for Temporal's own shutdown
NOW_GRACE = 3.0  # seconds runs told to stop now get before they are abandoned


class TemporalWorkerDied(OrbiterError):
    """The Temporal worker stopped by itself (its thread failed): the process must end."""


class TemporalWorker:
    """Runs ``concurrency`` activities at once until :meth:`stop`."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        worker_id: str | None = None,
        concurrency: int = 1,
        allow_imports: Sequence[str] = (),
        events_ttl: int = DEFAULT_EVENT_TTL,
        shutdown_timeout: float = 25.0,
        temporal: TemporalSettings | None = None,
    ) -> None:
        self.redis_url = resolve_redis_url(redis_url)
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency
        self.shutdown_timeout = shutdown_timeout
        self.policy = ImportPolicy.from_settings(allow_imports)
        self.policy.preload()  # a module that cannot be imported stops us here
        self.temporal = temporal or TemporalSettings.from_env()
        self.publisher = EventPublisher(self.redis_url, stream_ttl_seconds=events_ttl)
        self.activity = AgentActivity(LocalExecutor(self.policy), self.publisher, self.worker_id)
        self.runtime = TemporalRuntime(
            self.temporal, self.activity, concurrency, drain=shutdown_timeout
        )
        self._stop = threading.Event()
        self._now_at: float | None = None  # when stop(now=True) was asked

    def start(self) -> bool:
        """Serve until :meth:`stop`. True when every run ended; False when some did not
        stop in time and were abandoned (a plain function that never returns to us):
        the caller must then end the process without waiting for them (``os._exit``),
        and Temporal retries them elsewhere. ``ConfigurationError`` when the server or
        the namespace cannot be used; ``TemporalWorkerDied`` when the Temporal worker
        stops by itself."""
        logger.info(
            "temporal worker %s starting: temporal=%s namespace=%s task_queue=%s redis=%s",
            self.worker_id, self.temporal.host, self.temporal.namespace,
            self.temporal.task_queue, mask_url(self.redis_url),
        )  # fmt: skip
        try:
            self.runtime.start()
            while not self._stop.wait(TICK):
                if self.runtime.wait(0):
                    raise TemporalWorkerDied(
                        f"the Temporal worker stopped by itself: {self.runtime.failure or '?'}"
                    )
            ended = self._drain()
        finally:
            self.publisher.close()
        logger.info("temporal worker %s stopped", self.worker_id)
        return ended

    def _drain(self) -> bool:
        """Stop the Temporal worker; True once its runs ended, False at the deadline."""
        self.runtime.begin_stop()
        deadline = time.monotonic() + self.shutdown_timeout + EXTRA_WAIT
        while not self.runtime.wait(TICK):
            if self._now_at is not None:
                deadline = min(deadline, self._now_at + NOW_GRACE)
            if time.monotonic() >= deadline:
                logger.warning(
                    "temporal worker %s: runs did not stop in time; abandoning them "
                    "(Temporal retries them on another worker)", self.worker_id,
                )  # fmt: skip
                return False
        return True

    def stop(self, *, now: bool = False) -> None:
        """Stop serving: running activities get the shutdown timeout to finish; with
        ``now``, they are stopped at once (a plain function that never returns to us
        is abandoned after a few seconds). Temporal retries what did not finish."""
        if now:
            self._now_at = time.monotonic()
            self.activity.stop_all(StopReason.SHUTDOWN)
        self._stop.set()
