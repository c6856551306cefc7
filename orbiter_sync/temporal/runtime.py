"""The Temporal client and worker of one orbiter-sync worker process, on a thread of their own.

temporalio runs on asyncio; the slots are sync. One native thread runs an event
loop holding the client and the Temporal worker (the workflow, and the activity on
a thread pool as large as ``--concurrency``); the slots hand it coroutines
(:meth:`TemporalRuntime.submit`) and wait on the futures. A server that cannot be
reached when the worker starts is a ``ConfigurationError`` (the CLI exits 2).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.worker import Worker

from orbiter_sync.errors import ConfigurationError
from orbiter_sync.temporal import TemporalSettings
from orbiter_sync.temporal.activity import AgentActivity
from orbiter_sync.temporal.workflow import AgentExecutionWorkflow

logger = logging.getLogger(__name__)

T = TypeVar("T")
CONNECT_TIMEOUT = 10.0


class TemporalRuntime:
    """The client, and (given an ``agent``) a Temporal worker running ``slots`` activities
    at once; without one, only the client: another process runs the workflows.
    ``drain`` is the seconds running activities get to finish when the worker stops,
    before they are told of the shutdown (see :meth:`stop`)."""

    def __init__(
        self,
        settings: TemporalSettings,
        agent: AgentActivity | None,
        slots: int,
        *,
        drain: float = 0.0,
    ) -> None:
        self.settings = settings
        self._agent = agent
        self._slots = slots
        self._drain = drain
        self._loop = asyncio.new_event_loop()
        self._ready = concurrent.futures.Future[Client]()
        self._stopped = asyncio.Event()
        self._thread = threading.Thread(target=self._main, name="orbiter-temporal", daemon=True)
        self.client: Client | None = None
        self.failure = ""  # why the Temporal worker stopped by itself, once it did

    def start(self) -> None:
        """Connect and start serving; ``ConfigurationError`` when the server is away."""
        self._thread.start()
        try:
            self.client = self._ready.result(CONNECT_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any way of not reaching it says the same
            self.stop(timeout=0)  # a failed connect has ended the loop already, or will
            raise ConfigurationError(
                f"cannot reach the Temporal server at {self.settings.host} (namespace "
                f"{self.settings.namespace}): {type(exc).__name__}: {exc}"
            ) from None

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the runtime has stopped (False: still running after ``timeout``)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def begin_stop(self) -> None:
        """Ask the Temporal worker to stop, without waiting: it stops polling, running
        activities get ``drain`` seconds, then Temporal cancels them (the cancel says
        worker shutdown) and retries them on another worker."""
        if self._thread.is_alive():
            # the thread may close its loop between the check and the call: then it is over
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stopped.set)

    def stop(self, timeout: float = 10.0) -> None:
        """:meth:`begin_stop`, then wait up to ``timeout`` seconds for it."""
        self.begin_stop()
        self._thread.join(timeout)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except Exception as exc:  # noqa: BLE001 - logged; the slots' calls fail and are retried
            self.failure = f"{type(exc).__name__}: {exc}"
            logger.exception("the Temporal worker stopped")
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        try:
            client = await Client.connect(self.settings.host, namespace=self.settings.namespace)
            # a namespace the server does not know fails here, not later in the worker
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=self.settings.namespace)
            )
        except Exception as exc:  # noqa: BLE001 - handed to start()
            self._ready.set_exception(exc)
            return
        if self._agent is None:  # a client only: it waits until stopped
            self._ready.set_result(client)
            await self._stopped.wait()
            return
        pool = concurrent.futures.ThreadPoolExecutor(self._slots, "orbiter-activity")
        worker = Worker(
            client,
            task_queue=self.settings.task_queue,
            workflows=[AgentExecutionWorkflow],
            activities=[self._agent.run],
            activity_executor=pool,
            max_concurrent_activities=self._slots,
            # a cancel reaches an activity with its heartbeat's answer: at most a second
            max_heartbeat_throttle_interval=timedelta(seconds=1),
            default_heartbeat_throttle_interval=timedelta(seconds=1),
            graceful_shutdown_timeout=timedelta(seconds=self._drain),
        )
        self._ready.set_result(client)
        async with worker:
            await self._stopped.wait()
        pool.shutdown(wait=False)
