"""orbiter-sync: a sync-first distributed worker for AI agent runs over Redis Streams.

The public API, by role:

- client: ``distributed`` and ``TaskHandle`` (client.py); ``TaskPayload``,
  ``TaskResult``, ``TaskStatus`` (models.py)
- worker: ``Worker``, ``WorkerSettings`` (worker.py)
- health: ``get_worker_fleet_status``, ``WorkerHealthCheck``, ``WorkerHealth`` (health.py)
- queue and state: ``TaskBroker`` (broker.py), ``TaskStore`` (store.py)
- events: ``EventPublisher``, ``EventSubscriber`` and the event types (events.py)
- connections: ``resolve_redis_url``, ``mask_url`` (connection.py)
- errors: ``OrbiterError`` and its tree (errors.py)
"""

from orbiter_sync.broker import Delivery, NackOutcome, TaskBroker
from orbiter_sync.client import TaskHandle, distributed
from orbiter_sync.connection import mask_url, resolve_redis_url
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
from orbiter_sync.models import TaskPayload, TaskResult, TaskStatus
from orbiter_sync.store import TaskStore
from orbiter_sync.worker import Worker, WorkerSettings

__version__ = "0.1.0"

__all__ = [
    # client
    "distributed",
    "TaskHandle",
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
    # queue and state
    "TaskBroker",
    "Delivery",
    "NackOutcome",
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
