"""orbiter-sync: a sync-first distributed worker for AI agent runs over Redis Streams.

The public API, by role:

- client: ``distributed`` and ``TaskHandle`` (client.py); ``agent``, the decorator
  that makes a module-level function an agent (decorator.py); ``Agent`` and ``Swarm``
  (specs.py: LLM agents as data, built without asyncio); ``TaskPayload``,
  ``TaskResult``, ``TaskStatus`` (models.py)
- worker: ``Worker``, ``WorkerSettings`` (worker.py)
- health: ``get_worker_fleet_status``, ``WorkerHealthCheck``, ``WorkerHealth`` (health.py)
- queue: ``TaskProducer`` (producer.py: submit, cancel), ``TaskConsumer``
  (consumer.py: claim, begin, settle; one per worker), ``QueueAdmin`` (admin.py:
  stats, dead letters), ``QueueSettings`` and ``Delivery`` (queue.py), ``Outcome``
  (outcome.py); task state: ``TaskStore`` (store.py)
- events: ``EventPublisher``, ``EventSubscriber`` and the event types (events.py)
- connections: ``resolve_redis_url``, ``mask_url`` (urls.py)
- errors: ``OrbiterError`` and its tree (errors.py)

Names are imported on first use (PEP 562), so ``import orbiter_sync`` is cheap and
imports nothing else: the gevent pool's entry point must patch the standard library
before redis, threading or asyncio are imported, and it lives inside this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orbiter_sync.admin import QueueAdmin, QueueStats
    from orbiter_sync.alerts import AlertRule, register_distributed_alerts
    from orbiter_sync.client import TaskHandle, distributed
    from orbiter_sync.consumer import TaskConsumer
    from orbiter_sync.decorator import AgentFunction, agent
    from orbiter_sync.errors import (
        ConfigurationError,
        OrbiterError,
        RedisUnavailableError,
        TaskCancelledError,
        TaskError,
        TaskFailedError,
        TaskNotFoundError,
        TaskTimeoutError,
        ValidationError,
    )
    from orbiter_sync.events import (
        ErrorEvent,
        EventPublisher,
        EventSubscriber,
        ReasoningEvent,
        StatusEvent,
        StepEvent,
        StreamEvent,
        TextEvent,
        ToolCallEvent,
        ToolResultEvent,
        Usage,
        UsageEvent,
    )
    from orbiter_sync.health import WorkerHealth, WorkerHealthCheck, get_worker_fleet_status
    from orbiter_sync.metrics.fleet import FleetCollector, read_fleet
    from orbiter_sync.models import TaskPayload, TaskResult, TaskStatus
    from orbiter_sync.outcome import Outcome, OutcomeKind, StopReason
    from orbiter_sync.producer import TaskProducer
    from orbiter_sync.queue import Delivery, QueueSettings
    from orbiter_sync.settings import WorkerSettings
    from orbiter_sync.specs import Agent, Swarm
    from orbiter_sync.store import TaskStore
    from orbiter_sync.urls import mask_url, resolve_redis_url
    from orbiter_sync.worker import Worker

__version__ = "0.3.0"

_MODULE_OF = {
    "AlertRule": "orbiter_sync.alerts",
    "register_distributed_alerts": "orbiter_sync.alerts",
    "FleetCollector": "orbiter_sync.metrics.fleet",
    "read_fleet": "orbiter_sync.metrics.fleet",
    "agent": "orbiter_sync.decorator",
    "AgentFunction": "orbiter_sync.decorator",
    "Agent": "orbiter_sync.specs",
    "Swarm": "orbiter_sync.specs",
    "QueueAdmin": "orbiter_sync.admin",
    "QueueStats": "orbiter_sync.admin",
    "TaskHandle": "orbiter_sync.client",
    "distributed": "orbiter_sync.client",
    "mask_url": "orbiter_sync.urls",
    "resolve_redis_url": "orbiter_sync.urls",
    "ConfigurationError": "orbiter_sync.errors",
    "OrbiterError": "orbiter_sync.errors",
    "RedisUnavailableError": "orbiter_sync.errors",
    "TaskCancelledError": "orbiter_sync.errors",
    "TaskError": "orbiter_sync.errors",
    "TaskFailedError": "orbiter_sync.errors",
    "TaskNotFoundError": "orbiter_sync.errors",
    "TaskTimeoutError": "orbiter_sync.errors",
    "ValidationError": "orbiter_sync.errors",
    "ErrorEvent": "orbiter_sync.events",
    "EventPublisher": "orbiter_sync.events",
    "EventSubscriber": "orbiter_sync.events",
    "ReasoningEvent": "orbiter_sync.events",
    "StatusEvent": "orbiter_sync.events",
    "StepEvent": "orbiter_sync.events",
    "StreamEvent": "orbiter_sync.events",
    "TextEvent": "orbiter_sync.events",
    "ToolCallEvent": "orbiter_sync.events",
    "ToolResultEvent": "orbiter_sync.events",
    "Usage": "orbiter_sync.events",
    "UsageEvent": "orbiter_sync.events",
    "TaskConsumer": "orbiter_sync.consumer",
    "WorkerHealth": "orbiter_sync.health",
    "WorkerHealthCheck": "orbiter_sync.health",
    "get_worker_fleet_status": "orbiter_sync.health",
    "TaskPayload": "orbiter_sync.models",
    "TaskResult": "orbiter_sync.models",
    "TaskStatus": "orbiter_sync.models",
    "Outcome": "orbiter_sync.outcome",
    "OutcomeKind": "orbiter_sync.outcome",
    "StopReason": "orbiter_sync.outcome",
    "TaskProducer": "orbiter_sync.producer",
    "Delivery": "orbiter_sync.queue",
    "QueueSettings": "orbiter_sync.queue",
    "WorkerSettings": "orbiter_sync.settings",
    "TaskStore": "orbiter_sync.store",
    "Worker": "orbiter_sync.worker",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'orbiter_sync' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])


__all__ = [
    # client
    "distributed",
    "TaskHandle",
    "agent",
    "AgentFunction",
    "Agent",
    "Swarm",
    "TaskPayload",
    "TaskResult",
    "TaskStatus",
    # worker
    "Worker",
    "WorkerSettings",
    # health
    "get_worker_fleet_status",
    "WorkerHealthCheck",
    "WorkerHealth",
    # metrics and alerts
    "read_fleet",
    "FleetCollector",
    "register_distributed_alerts",
    "AlertRule",
    # queue and task state
    "TaskProducer",
    "TaskConsumer",
    "QueueAdmin",
    "QueueSettings",
    "QueueStats",
    "Delivery",
    "Outcome",
    "OutcomeKind",
    "StopReason",
    "TaskStore",
    # events
    "EventPublisher",
    "EventSubscriber",
    "StreamEvent",
    "TextEvent",
    "ToolCallEvent",
    "ToolResultEvent",
    "StepEvent",
    "ReasoningEvent",
    "ErrorEvent",
    "StatusEvent",
    "UsageEvent",
    "Usage",
    # connections
    "resolve_redis_url",
    "mask_url",
    # errors
    "OrbiterError",
    "ConfigurationError",
    "RedisUnavailableError",
    "ValidationError",
    "TaskError",
    "TaskNotFoundError",
    "TaskFailedError",
    "TaskCancelledError",
    "TaskTimeoutError",
]
