"""``orbiter-sync dead-letters list|requeue|purge`` against real Redis and a real worker.

Dead letters are made the way workers make them: an entry that cannot be decoded is
dead-lettered on the way to the next claim, and one whose workers keep dying is
dead-lettered after ``max_deliveries`` deliveries.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import redis
from cli_support import HUMAN_TIME, agent, run
from helpers import CLI, Spawn, claim_as_worker, stream_entries, terminal_events, wait_for

from orbiter_sync import TaskPayload
from orbiter_sync.admin import QueueAdmin
from orbiter_sync.consumer import TaskConsumer
from orbiter_sync.producer import TaskProducer
from orbiter_sync.queue import QueueSettings

pytestmark = pytest.mark.usefixtures("no_redis_env")

DEAD = "orbiter:tasks:dead"


def kill_its_workers(redis_url: str, payload: TaskPayload) -> None:
    """Submit ``payload`` and let every worker that takes it "die" until it is a dead letter."""
    TaskProducer(redis_url).submit(payload)
    settings = QueueSettings(visibility_timeout=0.05, max_deliveries=1)
    for n in range(5):
        if claim_as_worker(TaskConsumer(redis_url, f"doomed-{n}", settings), 0.3) is None:
            return
        time.sleep(0.1)
    pytest.fail("the task never reached the dead letters")


def undecodable(redis_url: str, r: redis.Redis, fields: dict[str, str]) -> None:
    """Queue a raw entry; a claim dead-letters it on the way (and takes nothing else)."""
    r.xadd("orbiter:tasks", fields)  # type: ignore[arg-type]
    assert TaskConsumer(redis_url, "w1").claim(timeout=0.2) is None


def letter_ids(r: redis.Redis) -> list[str]:
    return [letter_id for letter_id, _ in stream_entries(r, DEAD)]


def test_list_shows_id_task_reason_when_and_size(redis_url: str, r: redis.Redis) -> None:
    # Given an empty dead-letter stream, then two dead letters
    empty = run("dead-letters", "list", "--redis-url", redis_url)
    kill_its_workers(redis_url, TaskPayload(task_id="poison", agent_config=agent("echo")))
    undecodable(redis_url, r, {"payload": "{not json"})

    table = run("dead-letters", "list", "--redis-url", redis_url)
    newest = run("dead-letters", "list", "--redis-url", redis_url, "--limit", "1", "--json")

    assert empty.exit_code == 0 and empty.stdout == "No dead letters on orbiter:tasks.\n"
    assert table.exit_code == 0, table.output
    header = [c.strip() for c in table.stdout.splitlines()[1].strip("│").split("│")]
    assert header == ["ID", "Task ID", "Reason", "When", "Size", "Worker"]
    rows = table.stdout.splitlines()[3:-1]
    old_id, new_id = letter_ids(r)
    assert rows[0].split("│")[1].strip() == new_id  # newest first
    assert "undecodable payload" in rows[0] and " B " in rows[0]
    assert "poison" in rows[1] and "delivered 2 times" in rows[1] and HUMAN_TIME.search(rows[1])
    [letter] = json.loads(newest.stdout)
    assert letter["id"] == new_id and letter["task_id"] == ""
    assert json.loads(letter["entry"]) == {"payload": "{not json"}
    assert letter["entry_length"] == len(letter["entry"]) and letter["truncated"] is False
    assert abs(letter["dead_at"] - time.time()) < 30


def test_requeue_puts_the_task_back_fresh_and_a_worker_runs_it(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    # Given a task dead-lettered after its workers died: failed, with a terminal event
    payload = TaskPayload(task_id="poison", agent_config=agent("echo"), input="again")
    kill_its_workers(redis_url, payload)
    assert r.hget("orbiter:task:poison", "status") == "failed"
    [letter_id] = letter_ids(r)

    # When it is requeued
    result = run("dead-letters", "requeue", letter_id, "--redis-url", redis_url)

    # Then the dead letter is gone, and the task is queued afresh under its id
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Requeued task poison (dead letter {letter_id}) on orbiter:tasks.\n"
    assert r.xlen(DEAD) == 0
    task = r.hgetall("orbiter:task:poison")
    assert task["status"] == "pending" and task["retries"] == "0"
    assert "error" not in task and "worker_id" not in task
    assert float(task["created_at"]) > time.time() - 30
    assert r.sismember("orbiter:task:index", "poison")
    assert not r.exists("orbiter:stream:poison")  # the dead run's events are gone
    [(_, fields)] = stream_entries(r, "orbiter:tasks")
    assert TaskPayload.from_json(fields["payload"]) == payload
    # and a worker runs it to the end
    spawn_worker(redis_url)
    wait_for(lambda: r.hget("orbiter:task:poison", "status") == "completed", timeout=20)
    assert terminal_events(r, "poison") == ["completed"]


def test_an_undecodable_dead_letter_is_kept(redis_url: str, r: redis.Redis) -> None:
    # Given a dead letter whose task id could be read but whose payload is invalid
    undecodable(redis_url, r, {"payload": json.dumps({"task_id": "typed", "input": 5})})
    [letter_id] = letter_ids(r)

    # When it is requeued, by an operator in a shell
    done = subprocess.run([CLI, "dead-letters", "requeue", letter_id, "--redis-url", redis_url],
                          capture_output=True, text=True, timeout=60)  # fmt: skip

    # Then one line says why, and nothing changed
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: dead letter {letter_id} cannot be requeued: its payload cannot be decoded "
        "(input: must be a string, got int)"
    ]
    assert letter_ids(r) == [letter_id]
    assert r.xlen("orbiter:tasks") == 0
    assert r.hget("orbiter:task:typed", "status") == "failed"


def test_a_truncated_dead_letter_is_kept(redis_url: str, r: redis.Redis) -> None:
    # Given a dead letter that keeps only a prefix of a long entry, as dead_letter.lua does
    big = TaskPayload(task_id="big", agent_config=agent("echo"), input="x" * 70_000)
    r.xadd(DEAD, {"entry_id": "1-0", "task_id": "big", "reason": "test",
                  "entry": json.dumps({"payload": big.to_json()})[:65536],
                  "entry_length": "70200", "worker_id": "w1", "dead_at": "1"})  # fmt: skip
    [truncated] = letter_ids(r)

    result = run("dead-letters", "requeue", truncated, "--redis-url", redis_url)

    assert result.exit_code == 1
    assert "keeps only the first 65536 of the entry's 70200 characters" in result.stderr
    assert truncated in letter_ids(r)


def test_requeue_all_requeues_what_it_can_and_keeps_the_rest(
    redis_url: str, r: redis.Redis
) -> None:
    # Given two requeueable dead letters around an undecodable one
    kill_its_workers(redis_url, TaskPayload(task_id="a", agent_config=agent("echo")))
    undecodable(redis_url, r, {"payload": "{not json"})
    kill_its_workers(redis_url, TaskPayload(task_id="b", agent_config=agent("echo")))
    first, bad, last = letter_ids(r)

    result = run("dead-letters", "requeue", "--all", "--redis-url", redis_url, "--json")

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["queue"] == "orbiter:tasks"
    assert report["requeued"] == [{"id": first, "task_id": "a"}, {"id": last, "task_id": "b"}]
    [kept] = report["kept"]
    assert kept["id"] == bad and kept["task_id"] == ""
    assert kept["error"].startswith(f"dead letter {bad} cannot be requeued: its payload cannot")
    assert letter_ids(r) == [bad]
    assert [r.hget(f"orbiter:task:{t}", "status") for t in "ab"] == ["pending", "pending"]
    assert r.xlen("orbiter:tasks") == 2
    again = run("dead-letters", "requeue", "--all", "--redis-url", redis_url)
    assert again.exit_code == 1
    assert again.stdout == "0 requeued, 1 kept.\n"
    assert again.stderr.startswith(f"Kept: dead letter {bad} cannot be requeued")


def test_a_task_queued_again_is_not_requeued_twice(redis_url: str, r: redis.Redis) -> None:
    # Given a dead letter whose task is live again (requeued, and the dead letter left
    # behind by a crash before it was deleted)
    payload = TaskPayload(task_id="again", agent_config=agent("echo"))
    kill_its_workers(redis_url, payload)
    [letter_id] = letter_ids(r)
    r.delete("orbiter:task:again")
    TaskProducer(redis_url).submit(payload)

    result = run("dead-letters", "requeue", letter_id, "--redis-url", redis_url)

    assert result.exit_code == 1
    assert "task again is pending, not ended (requeued already?)" in result.stderr
    assert letter_ids(r) == [letter_id] and r.xlen("orbiter:tasks") == 1


def test_a_task_a_zombie_worker_still_runs_is_not_requeued(redis_url: str, r: redis.Redis) -> None:
    # Given a dead letter whose task a worker judged dead still runs (its heartbeat says so)
    payload = TaskPayload(task_id="zombie", agent_config=agent("echo"))
    kill_its_workers(redis_url, payload)
    [letter_id] = letter_ids(r)
    r.hset("orbiter:workers:slow-1", mapping={"running_task_ids": "other,zombie"})

    result = run("dead-letters", "requeue", letter_id, "--redis-url", redis_url)

    # Then it is kept: a requeue would run the task twice at once
    assert result.exit_code == 1
    assert "worker slow-1 still runs task zombie" in result.stderr
    assert letter_ids(r) == [letter_id] and r.xlen("orbiter:tasks") == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["1-0"], 1, f"Error: no dead letter 1-0 in {DEAD}"),
        (["nope"], 2, "'nope' is not a dead letter id"),
        ([], 2, "give exactly one of ID and --all"),
        (["1-0", "--all"], 2, "give exactly one of ID and --all"),
    ],
)
def test_requeue_usage(redis_url: str, args: list[str], code: int, message: str) -> None:
    result = run("dead-letters", "requeue", *args, "--redis-url", redis_url)
    assert result.exit_code == code
    assert message in result.stderr


def old_letter(r: redis.Redis, task_id: str, age: float) -> None:
    """A dead letter Redis stamped ``age`` seconds ago."""
    stamp = int((time.time() - age) * 1000)
    r.xadd(DEAD, {"entry_id": "1-0", "task_id": task_id, "reason": "old", "entry": "{}",
                  "entry_length": "2", "worker_id": "w1", "dead_at": repr(stamp / 1000)},
           id=f"{stamp}-0")  # fmt: skip


def test_purge_asks_first_and_deletes_everything(redis_url: str, r: redis.Redis) -> None:
    for n in range(3):
        old_letter(r, f"t{n}", age=3600 - n)

    declined = run("dead-letters", "purge", "--redis-url", redis_url, input="n\n")
    assert declined.exit_code == 1 and r.xlen(DEAD) == 3
    assert "Delete the dead letters of orbiter:tasks (3 in all)? [y/N]" in declined.stderr
    confirmed = run("dead-letters", "purge", "--redis-url", redis_url, input="y\n")
    assert confirmed.exit_code == 0
    assert confirmed.stdout == "Purged 3 dead letters of orbiter:tasks.\n"
    assert r.xlen(DEAD) == 0


def test_purge_older_than_keeps_the_newer_ones(redis_url: str, r: redis.Redis) -> None:
    old_letter(r, "old", age=7200)
    old_letter(r, "new", age=60)

    result = run("dead-letters", "purge", "--older-than", "3600", "--yes", "--json",
                 "--redis-url", redis_url)  # fmt: skip

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"queue": "orbiter:tasks", "purged": 1}
    assert [f["task_id"] for _, f in stream_entries(r, DEAD)] == ["new"]
    assert QueueAdmin(redis_url).purge_dead_letters() == 1


def test_purge_without_a_terminal_deletes_nothing(redis_url: str, r: redis.Redis) -> None:
    old_letter(r, "kept", age=10)
    command = [CLI, "dead-letters", "purge", "--redis-url", redis_url]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 1 and "Aborted!" in done.stderr
    assert r.xlen(DEAD) == 1


def test_dead_letters_of_another_queue(redis_url: str, r: redis.Redis) -> None:
    settings = QueueSettings(name="q2", visibility_timeout=0.05, max_deliveries=1)
    TaskProducer(redis_url, settings).submit(TaskPayload(task_id="elsewhere", input="x"))
    while claim_as_worker(TaskConsumer(redis_url, "w1", settings), 0.3) is not None:
        time.sleep(0.1)
    [(letter_id, _)] = stream_entries(r, "q2:dead")

    listed = json.loads(run("dead-letters", "list", "--queue", "q2", "--json",
                            "--redis-url", redis_url).stdout)  # fmt: skip
    requeued = run("dead-letters", "requeue", letter_id, "--queue", "q2", "--redis-url", redis_url)

    assert [letter["task_id"] for letter in listed] == ["elsewhere"]
    assert requeued.exit_code == 0, requeued.output
    assert r.xlen("q2") == 1 and r.xlen("q2:dead") == 0 and r.xlen("orbiter:tasks") == 0
    assert r.hget("orbiter:task:elsewhere", "status") == "pending"
