"""Hostile input for every decoder: whatever bytes or JSON arrive, the only error is
``ValidationError`` (payloads, events) or none at all (task hashes).

Property tests with hypothesis over random bytes, random text and random JSON, plus the
shapes that broke the decoders before: integers of 400 digits, JSON nested 100k deep,
bytes that are not UTF-8, NaN and infinities, a task id that is a key name of ours.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orbiter_sync.errors import ValidationError
from orbiter_sync.events import event_from_json
from orbiter_sync.health import WorkerHealth
from orbiter_sync.models import TaskPayload, TaskResult, encode_result
from orbiter_sync.outcome import Outcome

DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "9" * 400
NOT_UTF8 = b'{"task_id": "t1", "input": "\xff\xfe"}'.decode("utf-8", "surrogateescape")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
payload_like = st.fixed_dictionaries(
    {},
    optional={
        "task_id": json_values | st.text(max_size=140),
        "agent_config": json_values,
        "input": json_values,
        "messages": json_values,
        "model": json_values,
        "detailed": json_values,
        "metadata": json_values,
        "created_at": json_values,
        "timeout_seconds": json_values,
    },
)
event_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["text", "tool_call", "tool_result", "step", "reasoning", "error", "status", "usage"]
        )
        | st.text(max_size=10)
    },
    optional={
        name: json_values
        for name in ("text", "tool_name", "tool_call_id", "status", "step_number", "usage",
                     "started_at", "error", "error_type", "arguments", "result", "agent_name")
    },
)  # fmt: skip
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_payload(raw: str | bytes) -> None:
    try:
        TaskPayload.from_json(raw)
    except ValidationError:
        pass


def decode_event(raw: str | bytes) -> None:
    try:
        event_from_json(raw)
    except ValidationError:
        pass


# -- payloads ---------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_never_break_the_payload_decoder(raw: bytes) -> None:
    decode_payload(raw)
    decode_payload(raw.decode("utf-8", "surrogateescape"))


@FUZZ
@given(payload_like)
def test_random_json_never_breaks_the_payload_decoder(data: dict[str, Any]) -> None:
    decode_payload(json.dumps(data))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (f'{{"task_id": "t1", "created_at": {HUGE_INT}}}', "finite"),
        (f'{{"task_id": "t1", "metadata": {DEEP}}}', "not valid JSON"),
        (NOT_UTF8, "not valid JSON"),
        ('{"task_id": "index"}', "reserved"),
        ('{"task_id": "{slot}"}', "task_id"),
        ('{"input": "no id"}', "no task_id"),
    ],
)
def test_hostile_payloads_are_refused_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        TaskPayload.from_json(raw)


# -- events -----------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_never_break_the_event_decoder(raw: bytes) -> None:
    decode_event(raw)
    decode_event(raw.decode("utf-8", "surrogateescape"))


@FUZZ
@given(event_like)
def test_random_json_never_breaks_the_event_decoder(data: dict[str, Any]) -> None:
    decode_event(json.dumps(data))


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "usage", "usage": {"input_tokens": 1e400}}',
        f'{{"type": "usage", "usage": {{"input_tokens": {HUGE_INT}}}}}',
        f'{{"type": "text", "text": {DEEP}}}',
    ],
)
def test_hostile_events_are_refused_with_a_validation_error(raw: str) -> None:
    with pytest.raises(ValidationError):
        event_from_json(raw)


# -- task hashes ------------------------------------------------------------------------


@FUZZ
@given(st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=12))
def test_random_task_hashes_decode_or_are_refused(data: dict[str, str]) -> None:
    try:
        result = TaskResult.from_hash("t1", data)
    except ValidationError:
        return
    json.dumps(result.to_dict(), default=str)


def test_a_task_hash_of_hostile_numbers_and_a_deep_result_still_decodes() -> None:
    result = TaskResult.from_hash(
        "t1",
        {"status": "completed", "result": DEEP, "started_at": "1e400", "completed_at": "nan",
         "retries": HUGE_INT},
    )  # fmt: skip
    assert result.result == {"output": DEEP}
    assert result.started_at is None and result.completed_at is None and result.retries == 0


# -- results ----------------------------------------------------------------------------


@dataclass
class Point:
    x: int
    y: int


def test_results_are_stored_by_the_documented_rules() -> None:
    when = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)
    stored = json.loads(
        encode_result(
            {"when": when, "day": when.date(), "raw": b"caf\xc3\xa9\xff", "tags": {"a"},
             "pair": (1, 2), "price": decimal.Decimal("1.50"), "id": uuid.UUID(int=1),
             "path": PurePosixPath("/tmp/x"), "point": Point(1, 2)}
        )
    )  # fmt: skip
    assert stored == {
        "when": "2026-11-29T12:00:00+00:00",
        "day": "2026-11-29",
        "raw": "café\ufffd",
        "tags": ["a"],
        "pair": [1, 2],
        "price": "1.50",
        "id": "00000000-0000-0000-0000-000000000001",
        "path": "/tmp/x",
        "point": {"x": 1, "y": 2},
    }


@pytest.mark.parametrize(
    ("result", "named"),
    [({"x": object()}, "object"), ({"x": float("nan")}, "JSON"), ({"x": 1j}, "complex")],
)
def test_results_json_cannot_hold_are_refused_naming_the_type(
    result: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        encode_result(result)


# -- heartbeats -------------------------------------------------------------------------


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["status", "hostname", "tasks_processed", "tasks_failed",
                         "current_task_id", "concurrency", "started_at", "last_heartbeat",
                         "running_task_ids", "slots_down"])
        | st.text(max_size=12),
        st.text(max_size=40) | st.sampled_from(["1e400", "-inf", "nan", "9" * 400, "\x1b[31m"]),
        max_size=12,
    )
)  # fmt: skip
def test_random_heartbeats_always_decode(data: dict[str, str]) -> None:
    health = WorkerHealth.from_hash("w1", data)
    json.dumps(health.__dict__, default=str, allow_nan=False)
    assert health.heartbeat_age is None or health.heartbeat_age >= 0


def test_nan_and_infinity_in_data_are_read_as_the_async_library_writes_them() -> None:
    payload = TaskPayload.from_json('{"task_id": "t1", "metadata": {"x": NaN, "y": Infinity}}')
    assert math.isnan(payload.metadata["x"]) and payload.metadata["y"] == math.inf
    with pytest.raises(ValidationError, match="finite"):
        TaskPayload.from_json('{"task_id": "t1", "timeout_seconds": Infinity}')


class Exploding:
    def model_dump(self, **options: Any) -> Any:
        raise RuntimeError("cannot dump")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


def test_whatever_a_result_or_an_error_does_it_becomes_a_plain_failure() -> None:
    with pytest.raises(ValidationError, match="cannot dump"):
        encode_result({"x": Exploding()})
    outcome = Outcome.failed(Unprintable())
    assert outcome.error == "<Unprintable whose message cannot be read>"
    assert outcome.error_type == "Unprintable"
