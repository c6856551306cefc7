import json
import threading

import pytest
import redis
from helpers import ConnectionKiller, Spawn, events_of, stream_entries, wait_for

from orbiter_sync.client import distributed
from orbiter_sync.errors import TaskTimeoutError, ValidationError
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
    UnknownEvent,
    Usage,
    UsageEvent,
    coerce_event,
    event_from_dict,
    event_from_json,
    for_the_stream,
)

EXAMPLES: list[StreamEvent] = [
    TextEvent(text="hello", agent_name="a"),
    ToolCallEvent(tool_name="search", tool_call_id="c1"),
    ToolResultEvent(
        tool_name="search",
        tool_call_id="c1",
        arguments={"q": "x"},
        result="found",
        error=None,
        success=True,
        duration_ms=12.5,
    ),
    StepEvent(
        step_number=1, status="completed", started_at=1.0, completed_at=2.0, usage=Usage(1, 2, 3)
    ),
    ReasoningEvent(text="thinking"),
    ErrorEvent(error="boom", error_type="RuntimeError", step_number=2, recoverable=True),
    StatusEvent(status="waiting_for_tool", message="m"),
    UsageEvent(
        usage=Usage(input_tokens=5, output_tokens=7, total_tokens=12), step_number=1, model="test"
    ),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.type)
def test_events_round_trip_through_json(event: StreamEvent) -> None:
    data = json.loads(event.to_json())
    assert data["type"] == event.type and "agent_name" in data
    assert event_from_json(event.to_json()) == event


def test_wire_shapes_match_the_contract() -> None:
    step = json.loads(EXAMPLES[3].to_json())
    assert step == {
        "type": "step",
        "agent_name": "",
        "step_number": 1,
        "status": "completed",
        "started_at": 1.0,
        "completed_at": 2.0,
        "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
    }
    assert json.loads(EXAMPLES[5].to_json()) == {
        "type": "error",
        "agent_name": "",
        "error": "boom",
        "error_type": "RuntimeError",
        "step_number": 2,
        "recoverable": True,
    }


def test_unknown_types_are_kept_and_bad_events_rejected() -> None:
    unknown = event_from_json('{"type": "mcp_progress", "progress": 3}')
    assert isinstance(unknown, UnknownEvent) and unknown.to_dict()["progress"] == 3

    with pytest.raises(ValidationError) as info:
        event_from_json('{"type": "text"}')
    assert info.value.field == "text"
    with pytest.raises(ValidationError):
        event_from_json('{"type": "status", "status": "exploded"}')
    with pytest.raises(ValidationError):
        event_from_json("[]")


def test_coerce_turns_strings_and_dicts_into_events() -> None:
    assert coerce_event("hi", agent_name="a") == TextEvent(text="hi", agent_name="a")
    assert coerce_event({"type": "reasoning", "text": "t"}) == ReasoningEvent(text="t")
    with pytest.raises(ValidationError):
        coerce_event(42)


def test_publish_writes_stream_with_ttl_and_pubsub(
    publisher: EventPublisher, r: redis.Redis
) -> None:
    listener = r.pubsub()  # type: ignore[no-untyped-call]
    listener.subscribe("orbiter:events:t1")
    wait_for(lambda: listener.get_message(timeout=0.1))

    entry_id = publisher.publish("t1", TextEvent(text="hi"))

    [(stored_id, fields)] = stream_entries(r, "orbiter:stream:t1")
    assert stored_id == entry_id
    assert json.loads(fields["event"]) == {"type": "text", "text": "hi", "agent_name": ""}
    assert 3590 < r.ttl("orbiter:stream:t1") <= 3600
    message = wait_for(lambda: listener.get_message(timeout=0.1))
    assert json.loads(message["data"])["text"] == "hi"
    listener.close()


def test_subscribe_replays_then_follows_without_gap_or_duplicate(
    publisher: EventPublisher, subscriber: EventSubscriber
) -> None:
    # Given three events already stored
    for n in range(3):
        publisher.publish("t1", TextEvent(text=f"early {n}"))
    received: list[StreamEvent] = []
    reader = threading.Thread(
        target=lambda: received.extend(subscriber.subscribe("t1", timeout=10))
    )
    reader.start()
    wait_for(lambda: len(received) == 3)
    # When more arrive while the subscriber follows, then the terminal one, then a straggler
    for n in range(3):
        publisher.publish("t1", TextEvent(text=f"live {n}"))
    publisher.publish("t1", StatusEvent(status="completed"))
    reader.join(timeout=10)
    publisher.publish("t1", TextEvent(text="after the end"))
    # Then it saw each once, in order, and stopped at the terminal event
    assert not reader.is_alive()
    assert [getattr(e, "text", e.type) for e in received] == [
        "early 0",
        "early 1",
        "early 2",
        "live 0",
        "live 1",
        "live 2",
        "status",
    ]


def test_subscribe_resumes_after_last_event_id(
    publisher: EventPublisher, subscriber: EventSubscriber
) -> None:
    ids = [publisher.publish("t1", TextEvent(text=str(n))) for n in range(4)]
    publisher.publish("t1", StatusEvent(status="error", message="x"))

    resumed = list(subscriber.entries("t1", last_event_id=ids[1], timeout=5))

    assert [getattr(e, "text", None) for _, e in resumed] == ["2", "3", None]
    assert resumed[0][0] == ids[2]


def test_subscribe_times_out_when_nothing_ends_the_stream(subscriber: EventSubscriber) -> None:
    with pytest.raises(TaskTimeoutError):
        list(subscriber.subscribe("silent", timeout=0.3))


def test_replay_reads_from_an_id(publisher: EventPublisher, subscriber: EventSubscriber) -> None:
    ids = [publisher.publish("t1", TextEvent(text=str(n))) for n in range(3)]
    assert [e.text for e in subscriber.replay("t1")] == ["0", "1", "2"]  # type: ignore[attr-defined]
    assert [e.text for e in subscriber.replay("t1", from_id=ids[1])] == ["1", "2"]  # type: ignore[attr-defined]


def test_no_event_lost_or_doubled_while_connections_are_killed(
    redis_url: str, r: redis.Redis
) -> None:
    publisher = EventPublisher(redis_url)
    with ConnectionKiller(redis_url) as killer:
        for n in range(200):
            publisher.publish("t1", TextEvent(text=str(n)))
    assert killer.kills >= 5
    texts = [json.loads(f["event"])["text"] for _, f in stream_entries(r, "orbiter:stream:t1")]
    assert texts == [str(n) for n in range(200)]


def test_a_tool_result_holds_a_string_as_the_async_library_does() -> None:
    def result(value: object) -> object:
        return ToolResultEvent(tool_name="t", tool_call_id="c", result=value).result  # type: ignore[arg-type]

    assert result({"found": 2}) == "{'found': 2}"  # str(output), as orbiter-core makes it
    assert result(None) == "" and result(3) == "3" and result("as is") == "as is"
    blocks = [{"type": "text", "text": "hi"}]
    assert result(blocks) == blocks  # content blocks are kept
    assert result([1, 2]) == "[1, 2]"
    assert event_from_json('{"type": "tool_result", "tool_name": "t", "tool_call_id": "c",'
                           ' "result": {"a": 1}}').to_dict()["result"] == "{'a': 1}"  # fmt: skip


def test_only_the_async_librarys_event_types_are_published(
    redis_url: str, publisher: EventPublisher, r: redis.Redis, spawn_worker: Spawn
) -> None:
    with pytest.raises(ValidationError, match="not published"):
        publisher.publish("t1", event_from_json('{"type": "tool_call_delta", "index": 0}'))
    assert r.exists("orbiter:stream:t1") == 0

    # a worker runs an agent that yields the old shapes, whatever its executor
    spawn_worker(redis_url)
    handle = distributed({"entrypoint": "sample_agents:legacy_events"}, "", redis_url=redis_url)
    output = handle.result(timeout=20)
    published = [event_from_dict(e) for e in events_of(r, handle.task_id)]

    assert [e.type for e in published[1:-1]] == ["tool_call", "tool_result", "status", "text"]
    assert published[2].to_dict()["result"] == "{'found': 2}"
    # an agent's terminal status does not end the stream: only settling does
    status = published[3]
    assert isinstance(status, StatusEvent) and not status.is_terminal
    assert (status.status, status.message) == ("running", "completed: lookup")
    assert output == {"output": "done"}
    assert [e.to_dict().get("status") for e in (published[0], published[-1])] == [
        "running",
        "completed",
    ]


def test_a_runs_event_becomes_what_the_async_readers_can_read() -> None:
    assert for_the_stream(TextEvent(text="x")) == TextEvent(text="x")
    assert for_the_stream(event_from_json('{"type": "mcp_progress", "progress": 1}')) is None
    ended = for_the_stream(StatusEvent(status="error", agent_name="a"))
    assert ended == StatusEvent(status="running", message="error", agent_name="a")
