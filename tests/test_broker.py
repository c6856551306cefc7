import json
import threading
import time

import pytest
import redis
import tenacity
from helpers import ConnectionKiller, wait_for

from orbiter_sync.broker import NackOutcome, TaskBroker
from orbiter_sync.events import EventSubscriber
from orbiter_sync.models import TaskPayload, TaskStatus
from orbiter_sync.store import TaskStore


def events_of(r: redis.Redis, task_id: str) -> list[dict]:
    return [json.loads(f["event"]) for _, f in r.xrange(f"orbiter:stream:{task_id}")]


def terminal_events(r: redis.Redis, task_id: str) -> list[str]:
    return [
        e["status"]
        for e in events_of(r, task_id)
        if e["type"] == "status" and e["status"] in ("completed", "error", "cancelled")
    ]


def test_submit_writes_hash_index_and_entry(broker: TaskBroker, r: redis.Redis) -> None:
    payload = TaskPayload(input="hello", agent_config={"entrypoint": "m:f"})

    assert broker.submit(payload) == payload.task_id

    assert r.hgetall(f"orbiter:task:{payload.task_id}") | {"created_at": "x"} == {
        "task_id": payload.task_id,
        "status": "pending",
        "retries": "0",
        "created_at": "x",
    }
    assert r.sismember("orbiter:task:index", payload.task_id)
    [(_, fields)] = r.xrange("orbiter:tasks")
    assert json.loads(fields["payload"]) == payload.to_dict()


def test_submit_is_idempotent(broker: TaskBroker, r: redis.Redis) -> None:
    payload = TaskPayload(input="once")
    broker.submit(payload)
    broker.submit(payload)
    assert r.xlen("orbiter:tasks") == 1


def test_claim_then_ack_deletes_the_entry(broker: TaskBroker, r: redis.Redis) -> None:
    payload = TaskPayload(input="x")
    broker.submit(payload)

    delivery = broker.claim("w1", timeout=1)

    assert delivery is not None and delivery.payload == payload and delivery.deliveries == 1
    assert r.xpending("orbiter:tasks", "orbiter:tasks:group")["pending"] == 1
    assert broker.ack(payload.task_id)
    assert r.xlen("orbiter:tasks") == 0
    assert r.xpending("orbiter:tasks", "orbiter:tasks:group")["pending"] == 0


def test_claim_returns_none_when_the_queue_stays_empty(broker: TaskBroker) -> None:
    started = time.monotonic()
    assert broker.claim("w1", timeout=0.3) is None
    assert time.monotonic() - started >= 0.29


def test_entries_queued_before_any_worker_are_not_skipped(redis_url: str, r: redis.Redis) -> None:
    # Given an entry added by a client before the consumer group exists
    r.xadd("orbiter:tasks", {"payload": TaskPayload(task_id="early", input="x").to_json()})
    # When a worker's broker creates the group and claims
    with_group = TaskBroker(redis_url)
    delivery = with_group.claim("w1", timeout=1)
    # Then it gets that entry
    assert delivery is not None and delivery.task_id == "early"


def test_bad_entries_are_dead_lettered_and_claim_goes_on(
    broker: TaskBroker, r: redis.Redis
) -> None:
    # Given malformed entries ahead of a good one
    r.xadd("orbiter:tasks", {"payload": "{not json"})
    r.xadd("orbiter:tasks", {"something": "else"})
    r.xadd("orbiter:tasks", {"payload": json.dumps({"task_id": "typed", "input": 5})})
    good = TaskPayload(input="fine")
    broker.submit(good)
    # When a worker claims
    delivery = broker.claim("w1", timeout=2)
    # Then the good task comes out, and the bad entries are dead letters with reasons
    assert delivery is not None and delivery.task_id == good.task_id
    dead = list(reversed(broker.dead_letters()))
    assert [d["reason"].split(":")[0] for d in dead] == ["undecodable payload"] * 3
    assert "not valid JSON" in dead[0]["reason"]
    assert "no payload field" in dead[1]["reason"]
    assert "input: must be a string" in dead[2]["reason"]
    assert json.loads(dead[1]["entry"]) == {"something": "else"}
    assert dead[2]["task_id"] == "typed" and dead[2]["worker_id"] == "w1"
    # and they left the queue; the task whose id was readable failed with a reason
    assert r.xlen("orbiter:tasks") == 1
    assert r.hget("orbiter:task:typed", "status") == "failed"
    assert "input: must be a string" in r.hget("orbiter:task:typed", "error")
    assert terminal_events(r, "typed") == ["error"]


def test_nack_retries_with_backoff_then_fails(redis_url: str, r: redis.Redis) -> None:
    broker = TaskBroker(redis_url, max_retries=2, retry_backoff=tenacity.wait_fixed(0.2))
    payload = TaskPayload(input="flaky")
    broker.submit(payload)

    for attempt in (1, 2):
        delivery = broker.claim("w1", timeout=3)
        assert delivery is not None and delivery.payload == payload
        # the worker records the failure first, as in the guide's retry flow
        assert TaskStore(redis_url).set_status(payload.task_id, TaskStatus.FAILED, error="boom")
        assert (
            broker.nack(payload.task_id, error="boom", error_type="RuntimeError")
            == NackOutcome.RETRYING
        )
        assert r.hget(f"orbiter:task:{payload.task_id}", "status") == "retrying"
        assert r.hget(f"orbiter:task:{payload.task_id}", "retries") == str(attempt)
        assert r.xlen("orbiter:tasks") == 0
        assert r.zcard("orbiter:tasks:delayed") == 1

    delivery = broker.claim("w1", timeout=3)
    assert delivery is not None
    assert broker.nack(payload.task_id, error="boom again") == NackOutcome.FAILED

    state = r.hgetall(f"orbiter:task:{payload.task_id}")
    assert (
        state["status"] == "failed" and state["error"] == "boom again" and state["retries"] == "2"
    )
    assert r.xlen("orbiter:tasks") == 0 and r.zcard("orbiter:tasks:delayed") == 0
    events = events_of(r, payload.task_id)
    assert [(e["type"], e.get("recoverable")) for e in events[:2]] == [("error", True)] * 2
    assert events[0]["error_type"] == "RuntimeError"
    assert terminal_events(r, payload.task_id) == ["error"]
    assert events[-1] == {
        "type": "status",
        "status": "error",
        "message": "boom again",
        "agent_name": "",
    }


def test_backoff_comes_from_the_tenacity_strategy(redis_url: str, r: redis.Redis) -> None:
    broker = TaskBroker(redis_url, retry_backoff=tenacity.wait_exponential(multiplier=10))
    broker.submit(TaskPayload(task_id="slow", input="x"))
    assert broker.claim("w1", timeout=1)
    before = time.time()

    broker.nack("slow", error="e")

    [(_, due)] = r.zrange("orbiter:tasks:delayed", 0, -1, withscores=True)
    assert before + 9 < due < time.time() + 11  # attempt 1 of 10 * 2**(n-1)


def test_cancel_pending_task(broker: TaskBroker, r: redis.Redis) -> None:
    payload = TaskPayload(input="x")
    broker.submit(payload)
    listener = r.pubsub()
    listener.subscribe(f"orbiter:cancel:{payload.task_id}")
    wait_for(lambda: listener.get_message(timeout=0.1))  # the subscribe confirmation

    assert broker.cancel(payload.task_id) is True

    message = wait_for(lambda: listener.get_message(timeout=0.1))
    assert message["data"] == "cancel"
    assert r.hget(f"orbiter:task:{payload.task_id}", "status") == "cancelled"
    assert terminal_events(r, payload.task_id) == ["cancelled"]
    listener.close()


def test_cancel_running_task_leaves_the_terminal_event_to_its_worker(
    broker: TaskBroker, r: redis.Redis
) -> None:
    payload = TaskPayload(input="x")
    broker.submit(payload)
    assert broker.claim("w1", timeout=1)
    r.hset(f"orbiter:task:{payload.task_id}", "status", "running")

    assert broker.cancel(payload.task_id)
    assert terminal_events(r, payload.task_id) == []

    # the worker stops the run and finishes it; a finish as completed cannot win
    assert (
        broker.finish(payload.task_id, TaskStatus.COMPLETED, result={"output": "late"})
        == "cancelled"
    )
    assert terminal_events(r, payload.task_id) == ["cancelled"]
    assert r.xlen("orbiter:tasks") == 0
    assert not r.hexists(f"orbiter:task:{payload.task_id}", "result")


def test_cancel_of_finished_or_unknown_task_is_refused(broker: TaskBroker) -> None:
    payload = TaskPayload(input="x")
    broker.submit(payload)
    broker.claim("w1", timeout=1)
    broker.finish(payload.task_id, TaskStatus.COMPLETED, result={"output": 1})

    assert broker.cancel(payload.task_id) is False
    assert broker.cancel("unknown") is False


def test_finish_records_acks_and_ends_the_stream_once(broker: TaskBroker, r: redis.Redis) -> None:
    payload = TaskPayload(input="x")
    broker.submit(payload)
    broker.claim("w1", timeout=1)

    status = broker.finish(
        payload.task_id,
        TaskStatus.COMPLETED,
        message="done",
        result={"output": "hi"},
        completed_at=5.0,
    )
    broker.finish(payload.task_id, TaskStatus.COMPLETED, message="done")  # a retried call

    assert status is TaskStatus.COMPLETED
    state = r.hgetall(f"orbiter:task:{payload.task_id}")
    assert state["status"] == "completed" and json.loads(state["result"]) == {"output": "hi"}
    assert r.xlen("orbiter:tasks") == 0
    assert r.xpending("orbiter:tasks", "orbiter:tasks:group")["pending"] == 0
    assert terminal_events(r, payload.task_id) == ["completed"]


def test_idle_entries_of_a_dead_worker_are_reclaimed(redis_url: str, r: redis.Redis) -> None:
    dead = TaskBroker(redis_url, visibility_timeout=0.3)
    alive = TaskBroker(redis_url, visibility_timeout=0.3)
    payload = TaskPayload(input="x")
    dead.submit(payload)
    assert dead.claim("dead-worker", timeout=1)
    # the dead worker never touches its entry again
    assert alive.claim("alive", timeout=0.1) is None

    delivery = wait_for(lambda: alive.claim("alive", timeout=0.2), timeout=5)

    assert delivery.task_id == payload.task_id and delivery.deliveries == 2
    [pending] = r.xpending_range("orbiter:tasks", "orbiter:tasks:group", "-", "+", 10)
    assert pending["consumer"] == "alive"


def test_touched_entries_of_a_live_worker_are_not_stolen(redis_url: str) -> None:
    owner = TaskBroker(redis_url, visibility_timeout=0.3)
    other = TaskBroker(redis_url, visibility_timeout=0.3)
    payload = TaskPayload(input="long run")
    owner.submit(payload)
    assert owner.claim("owner", timeout=1)

    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert owner.touch("owner", [payload.task_id]) == []
        assert other.reclaim("other") == []
        time.sleep(0.1)

    # once the owner stops touching it, it is reclaimed, and the owner learns it lost it
    wait_for(lambda: other.reclaim("other"), timeout=5)
    assert owner.touch("owner", [payload.task_id]) == [payload.task_id]


def test_entry_delivered_too_often_goes_to_dead_letters(redis_url: str, r: redis.Redis) -> None:
    broker = TaskBroker(redis_url, visibility_timeout=0.05, max_deliveries=3)
    payload = TaskPayload(input="kills its worker")
    broker.submit(payload)
    claims = 0
    # every worker that takes it "dies" (never settles it)
    while broker.claim(f"w{claims}", timeout=0.3) is not None:
        claims += 1
        time.sleep(0.1)

    assert claims == 3
    [dead] = broker.dead_letters()
    assert dead["task_id"] == payload.task_id and "delivered 4 times" in dead["reason"]
    assert r.hget(f"orbiter:task:{payload.task_id}", "status") == "failed"
    assert "delivered 4 times" in r.hget(f"orbiter:task:{payload.task_id}", "error")
    assert r.xlen("orbiter:tasks") == 0
    assert terminal_events(r, payload.task_id) == ["error"]


def test_claim_recreates_a_vanished_group(broker: TaskBroker, r: redis.Redis) -> None:
    broker.submit(TaskPayload(input="first"))
    assert broker.claim("w1", timeout=1)
    # Redis lost everything (a restart without persistence)
    r.flushall()
    payload = TaskPayload(input="second")
    broker.submit(payload)

    delivery = broker.claim("w1", timeout=2)

    assert delivery is not None and delivery.task_id == payload.task_id


def test_exactly_200_tasks_queued_while_connections_are_killed(
    redis_url: str, r: redis.Redis
) -> None:
    broker = TaskBroker(redis_url)
    submitted: list[str] = []
    # When every client connection is killed over and over during the submissions
    with ConnectionKiller(redis_url) as killer:
        for n in range(200):
            submitted.append(broker.submit(TaskPayload(input=f"task {n}")))
    # Then the submissions survived, and none was queued twice
    assert killer.kills >= 5
    entries = r.xrange("orbiter:tasks")
    queued = [json.loads(fields["payload"])["task_id"] for _, fields in entries]
    assert len(queued) == 200
    assert set(queued) == set(submitted) and len(set(queued)) == 200
    assert r.scard("orbiter:task:index") == 200


def test_blocking_claim_does_not_starve_other_callers(redis_url: str) -> None:
    broker = TaskBroker(redis_url, queue_name="orbiter:quiet")
    claimer = threading.Thread(target=broker.claim, args=("w1",), kwargs={"timeout": 3})
    claimer.start()
    time.sleep(0.2)  # let the claim block (there is nothing to wake it)

    # the same broker (same pool) still serves other calls at once
    assert broker.cancel("unknown") is False
    assert broker.promote_due() == 0
    assert claimer.is_alive()
    claimer.join()


def test_subscriber_sees_retry_and_terminal_events_in_order(redis_url: str) -> None:
    broker = TaskBroker(redis_url, max_retries=1, retry_backoff=tenacity.wait_fixed(0))
    payload = TaskPayload(input="x")
    broker.submit(payload)
    broker.claim("w1", timeout=1)
    broker.nack(payload.task_id, error="first")
    broker.claim("w1", timeout=2)
    broker.nack(payload.task_id, error="second")

    events = list(EventSubscriber(redis_url).subscribe(payload.task_id, timeout=5))

    assert [(e.type, getattr(e, "status", None)) for e in events] == [
        ("error", None),
        ("status", "error"),
    ]


@pytest.mark.parametrize(
    "bad", [{"max_retries": -1}, {"max_deliveries": 0}, {"visibility_timeout": 0}]
)
def test_bad_broker_settings_are_rejected(redis_url: str, bad: dict) -> None:
    with pytest.raises(ValueError):
        TaskBroker(redis_url, **bad)
