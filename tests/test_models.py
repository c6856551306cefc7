import json
import time
import uuid

import pytest

from orbiter_sync.errors import ValidationError
from orbiter_sync.models import TaskPayload, TaskResult, TaskStatus


def test_payload_defaults_match_the_wire_contract() -> None:
    payload = TaskPayload(input="hi", agent_config={"entrypoint": "m:f"})

    assert uuid.UUID(payload.task_id).version == 4
    assert len(payload.task_id) == 32
    assert payload.messages == [] and payload.metadata == {}
    assert payload.model is None and payload.detailed is False
    assert payload.timeout_seconds == 300.0
    assert abs(payload.created_at - time.time()) < 5
    assert set(payload.to_dict()) == {
        "task_id",
        "agent_config",
        "input",
        "messages",
        "model",
        "detailed",
        "metadata",
        "created_at",
        "timeout_seconds",
    }


def test_payload_round_trip_keeps_unknown_fields() -> None:
    # Given a payload from a newer peer with fields we do not know
    wire = {
        "task_id": "abc123",
        "agent_config": {"name": "a"},
        "input": "x",
        "messages": [{"role": "user", "content": "x"}],
        "model": "openai:gpt-4o",
        "detailed": True,
        "metadata": {"k": 1},
        "created_at": 1700000000,
        "timeout_seconds": 12,
        "retry_policy": {"max": 2},
        "timeouts": None,
    }
    # When it is read and written back
    payload = TaskPayload.from_json(json.dumps(wire))
    again = json.loads(payload.to_json())
    # Then nothing was lost and numbers became floats
    assert payload.extra == {"retry_policy": {"max": 2}, "timeouts": None}
    assert again == {**wire, "created_at": 1700000000.0, "timeout_seconds": 12.0}
    assert TaskPayload.from_dict(again) == payload


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task_id", 7),
        ("task_id", ""),
        ("task_id", "index"),  # the task index's own key name
        ("task_id", "a{b}"),  # a Redis Cluster hash tag
        ("task_id", "a b"),
        ("task_id", "x" * 201),
        ("agent_config", "not an object"),
        ("input", None),
        ("messages", {"role": "user"}),
        ("messages", ["just a string"]),
        ("model", 4),
        ("detailed", "yes"),
        ("metadata", []),
        ("created_at", "yesterday"),
        ("created_at", True),
        ("timeout_seconds", 0),
        ("timeout_seconds", float("inf")),
    ],
)
def test_bad_payload_field_is_named(field: str, value: object) -> None:
    data = {"task_id": "t1", "input": "x", "agent_config": {}, field: value}
    with pytest.raises(ValidationError) as info:
        TaskPayload.from_dict(data)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_payload_must_be_json_data() -> None:
    with pytest.raises(ValidationError, match="metadata: must be JSON data"):
        TaskPayload(input="x", metadata={"when": object()})


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"str"', "null"])
def test_payload_that_is_not_an_object_is_rejected(raw: str) -> None:
    with pytest.raises(ValidationError):
        TaskPayload.from_json(raw)


def test_result_from_hash_parses_the_async_store_format() -> None:
    result = TaskResult.from_hash(
        "t1",
        {
            "task_id": "t1",
            "status": "completed",
            "result": '{"output": "done"}',
            "error": "",
            "started_at": "10.5",
            "completed_at": "12.0",
            "worker_id": "w1",
            "retries": "2",
            "created_at": "9.0",
        },
    )
    assert result.status is TaskStatus.COMPLETED
    assert result.result == {"output": "done"}
    assert result.error is None
    assert result.duration == 1.5
    assert result.retries == 2
    assert result.created_at == 9.0
    assert result.to_dict()["status"] == "completed"


def test_result_with_unknown_status_is_rejected() -> None:
    with pytest.raises(ValidationError, match="status"):
        TaskResult.from_hash("t1", {"status": "exploded"})


def test_status_values_and_terminal_set() -> None:
    assert [s.value for s in TaskStatus] == [
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
        "retrying",
    ]
    assert {s for s in TaskStatus if s.is_terminal} == {
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
    }
