"""The alert rules: registering and overriding them, judging constructed snapshots, and
``orbiter-sync alerts check`` against a real Redis and real workers, each rule firing and
clearing with the exit codes cron and container checks act on."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import replace
from typing import Any

import pytest
from cli_support import agent, run
from helpers import CLI, Spawn, wait_for

from orbiter_sync.alerts import (
    MIN_FINISHED,
    AlertResult,
    AlertRule,
    Comparator,
    Severity,
    evaluate,
    register_distributed_alerts,
    worst_firing,
)
from orbiter_sync.embedded import EmbeddedRedis
from orbiter_sync.errors import ConfigurationError
from orbiter_sync.metrics.fleet import read_fleet
from orbiter_sync.metrics.snapshot import FleetSnapshot, QueueSnapshot, RecentCounts
from orbiter_sync.models import TaskPayload
from orbiter_sync.producer import TaskProducer

QUEUE = "orbiter:tasks"
IDLE = "orbiter:idle"  # a live worker reads it, so the worker-count rule stays quiet


def queue(name: str = QUEUE, **fields: Any) -> QueueSnapshot:
    base: dict[str, Any] = dict(length=0, pending=0, waiting=0, delayed=0, dead_letters=0,
                                oldest_pending_age=None, oldest_waiting_age=None)  # fmt: skip
    return QueueSnapshot(queue=name, **{**base, **fields})


def fleet(*queues: QueueSnapshot, alive: int = 1) -> FleetSnapshot:
    return FleetSnapshot(queues=queues or (queue(),), workers_alive=alive, workers_stopped=0,
                         workers_dead=0, slots_total=4 * alive, slots_busy=0,
                         read_at=time.time())  # fmt: skip


def states(results: list[AlertResult]) -> dict[tuple[str, str | None], str]:
    return {(r.rule.name, r.queue): r.state for r in results}


# -- the rules ------------------------------------------------------------------------


def test_the_guides_five_rules() -> None:
    rules = register_distributed_alerts()
    table = [(r.name, r.measure, r.threshold, r.comparator, r.severity) for r in rules]
    assert table == [
        ("dist_queue_depth_warning", "queue_depth", 100, Comparator.GT, Severity.WARNING),
        ("dist_queue_depth_critical", "queue_depth", 500, Comparator.GT, Severity.CRITICAL),
        ("dist_failure_rate_warning", "failure_rate", 0.1, Comparator.GT, Severity.WARNING),
        ("dist_worker_count_critical", "worker_count", 0, Comparator.EQ, Severity.CRITICAL),
        ("dist_wait_time_warning", "wait_time", 60, Comparator.GT, Severity.WARNING),
    ]
    assert all(rule.description for rule in rules)
    assert [r.per_queue for r in rules] == [True, True, True, False, True]


def test_an_application_overrides_thresholds_and_adds_rules() -> None:
    # Given a stricter depth threshold and a rule of the application's own
    mine = AlertRule(
        "dead_letters_piling_up", "dead_letters", 10, Comparator.GE, Severity.CRITICAL, "look"
    )
    rules = register_distributed_alerts({"dist_queue_depth_warning": 20}, extra=[mine])

    # Then the built-in keeps its place with the new threshold, the new rule follows
    assert [r.name for r in rules][-1] == "dead_letters_piling_up"
    assert rules[0].threshold == 20
    results = evaluate(rules, fleet(queue(waiting=21, dead_letters=10)))
    assert states(results)[("dist_queue_depth_warning", QUEUE)] == "firing"
    assert states(results)[("dead_letters_piling_up", QUEUE)] == "firing"
    assert worst_firing(results) is Severity.CRITICAL
    # the defaults are not changed for the next caller: nothing is kept globally
    assert register_distributed_alerts()[0].threshold == 100


@pytest.mark.parametrize(
    "call",
    [
        lambda: register_distributed_alerts({"dist_queue_depth": 5}),
        lambda: register_distributed_alerts(extra=[register_distributed_alerts()[0]]),
        lambda: AlertRule("x", "queue_size", 1),
        lambda: AlertRule("bad name", "queue_depth", 1),
        lambda: AlertRule("x", "queue_depth", float("nan")),
        lambda: AlertRule("x", "queue_depth", 1, for_duration="five minutes"),
        lambda: AlertRule("x", "queue_depth", 1, comparator="~"),  # type: ignore[arg-type]
        lambda: AlertRule("x", "queue_depth", 1, severity="page"),  # type: ignore[arg-type]
    ],
)
def test_bad_rules_are_configuration_errors(call: Any) -> None:
    with pytest.raises(ConfigurationError):
        call()


def test_rules_from_a_configuration_file_may_spell_enums_as_text() -> None:
    rule = AlertRule("x", "queue_depth", 1, ">=", "critical")  # type: ignore[arg-type]
    assert (rule.comparator, rule.severity) == (Comparator.GE, Severity.CRITICAL)


# -- judging snapshots ------------------------------------------------------------------


def test_queue_rules_give_a_row_per_queue() -> None:
    snapshot = fleet(queue("a", waiting=90, delayed=11, delayed_due=11), queue("b", waiting=501),
                     queue("c", oldest_waiting_age=61.0))  # fmt: skip
    got = states(evaluate(register_distributed_alerts(), snapshot))
    assert got[("dist_queue_depth_warning", "a")] == "firing"  # depth counts delayed ones
    assert got[("dist_queue_depth_critical", "a")] == "ok"
    assert got[("dist_queue_depth_critical", "b")] == "firing"
    assert got[("dist_wait_time_warning", "c")] == "firing"
    assert got[("dist_wait_time_warning", "a")] == "ok"  # nothing waiting: no age
    assert got[("dist_worker_count_critical", None)] == "ok"
    assert len(got) == 4 * 3 + 1


@pytest.mark.parametrize(
    ("completed", "failed", "state"),
    [
        (0, 0, "insufficient data"),
        (0, MIN_FINISHED - 1, "insufficient data"),  # all failed, but too few to judge
        (9, 1, "ok"),  # 10% is not over 10%
        (8, 2, "firing"),
        (900, 101, "firing"),
    ],
)
def test_the_failure_rate_is_judged_once_ten_finished(
    completed: int, failed: int, state: str
) -> None:
    recent = RecentCounts(completed=completed, failed=failed, cancelled=50, retried=50)
    [result] = [
        r
        for r in evaluate(register_distributed_alerts(), fleet(queue(recent=recent)))
        if r.rule.name == "dist_failure_rate_warning"
    ]
    assert result.state == state
    assert result.value == (failed / (completed + failed) if completed + failed else None)


def test_no_live_worker_is_critical() -> None:
    results = evaluate(register_distributed_alerts(), fleet(alive=0))
    assert states(results)[("dist_worker_count_critical", None)] == "firing"
    assert worst_firing(results) is Severity.CRITICAL
    assert worst_firing(evaluate(register_distributed_alerts(), fleet())) is None


def test_a_warning_alone_is_a_warning() -> None:
    rules = [replace(r, threshold=0) for r in register_distributed_alerts()[:1]]
    assert worst_firing(evaluate(rules, fleet(queue(waiting=1)))) is Severity.WARNING


# -- alerts check against the fleet -------------------------------------------------------


def check(url: str, *args: str) -> tuple[int, dict[str, Any]]:
    """``alerts check --json``: the exit code, and the report."""
    result = run("alerts", "check", "--json", "--redis-url", url, *args)
    return result.exit_code, json.loads(result.stdout)


def firing(report: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {(a["rule"], a["queue"]) for a in report["alerts"] if a["state"] == "firing"}


def echo_tasks(n: int, **fields: Any) -> list[TaskPayload]:
    return [TaskPayload(agent_config=agent("echo"), input=str(i), **fields) for i in range(n)]


def drained(url: str, name: str = QUEUE) -> bool:
    q = read_fleet(url, queues=[name]).queue(name)
    return q is not None and q.depth == 0 and q.pending == 0


def test_check_a_deep_queue_warns_then_is_critical_then_clears(
    redis_url: str, producer: TaskProducer, spawn_worker: Spawn
) -> None:
    # Given a live worker on another queue, and 101 tasks nobody reads
    spawn_worker(redis_url, "--queue", IDLE)
    producer.submit_many(echo_tasks(101))

    code, report = check(redis_url)
    assert (code, report["status"]) == (1, "warning")
    assert firing(report) == {("dist_queue_depth_warning", QUEUE)}
    [depth] = [a for a in report["alerts"] if a["rule"] == "dist_queue_depth_warning"
               and a["queue"] == QUEUE]  # fmt: skip
    assert depth["value"] == 101

    # When 400 more arrive
    producer.submit_many(echo_tasks(400))
    code, report = check(redis_url)
    assert (code, report["status"]) == (2, "critical")
    assert firing(report) == {("dist_queue_depth_warning", QUEUE),
                              ("dist_queue_depth_critical", QUEUE)}  # fmt: skip

    # Then a worker on the queue drains it, and nothing fires
    spawn_worker(redis_url, "--concurrency", "8")
    wait_for(lambda: drained(redis_url), timeout=60)
    code, report = check(redis_url)
    assert (code, firing(report)) == (0, set())


def test_check_a_stopped_fleet_is_critical(redis_url: str, spawn_worker: Spawn) -> None:
    # Given no worker at all
    code, report = check(redis_url)
    assert code == 2
    assert firing(report) == {("dist_worker_count_critical", None)}
    table = run("alerts", "check", "--redis-url", redis_url)
    assert table.exit_code == 2
    assert "dist_worker_count_critical" in table.stdout and "firing" in table.stdout

    # When a worker starts, the rule clears
    worker = spawn_worker(redis_url)
    assert check(redis_url)[0] == 0

    # and when it stops cleanly, it fires again
    worker.terminate()
    worker.wait(30)
    assert check(redis_url)[0] == 2


def test_check_old_tasks_wait_too_long(
    redis_url: str, producer: TaskProducer, spawn_worker: Spawn
) -> None:
    # Given a task created two minutes ago that no worker has taken
    spawn_worker(redis_url, "--queue", IDLE)
    producer.submit(TaskPayload(agent_config=agent("echo"), created_at=time.time() - 120))

    code, report = check(redis_url)
    assert code == 1
    assert firing(report) == {("dist_wait_time_warning", QUEUE)}
    [wait] = [a for a in report["alerts"] if a["rule"] == "dist_wait_time_warning"
              and a["queue"] == QUEUE]  # fmt: skip
    assert 120 <= wait["value"] < 180

    # Then once a worker ran it, nothing waits
    spawn_worker(redis_url)
    wait_for(lambda: drained(redis_url), timeout=30)
    assert check(redis_url)[0] == 0


def test_check_a_failure_burst(redis_url: str, producer: TaskProducer, spawn_worker: Spawn) -> None:
    # Given ten tasks that fail for good on a real worker
    spawn_worker(redis_url, "--concurrency", "4")
    broken = [TaskPayload(agent_config=agent("broken"), max_retries=0) for _ in range(10)]
    producer.submit_many(broken)
    wait_for(lambda: _recent(redis_url).failed == 10, timeout=30)

    code, report = check(redis_url)
    assert code == 1
    assert firing(report) == {("dist_failure_rate_warning", QUEUE)}
    [rate] = [a for a in report["alerts"] if a["rule"] == "dist_failure_rate_warning"]
    assert rate["value"] == 1.0

    # When 90 tasks complete, 10 failed of 100 is not over 10%: it clears
    producer.submit_many(echo_tasks(90))
    wait_for(lambda: _recent(redis_url).completed == 90, timeout=30)
    code, report = check(redis_url)
    assert code == 0
    [rate] = [a for a in report["alerts"] if a["rule"] == "dist_failure_rate_warning"]
    assert (rate["state"], rate["value"]) == ("ok", 0.1)


def _recent(url: str) -> RecentCounts:
    q = read_fleet(url).queue(QUEUE)
    assert q is not None
    return q.recent


def test_check_exits_3_when_redis_cannot_be_read(private_redis: EmbeddedRedis) -> None:
    url = private_redis.url.replace("redis://", "redis://:hunter2secret@")
    private_redis.stop()

    result = run("alerts", "check", "--redis-url", url)
    assert result.exit_code == 3
    assert result.stdout == ""
    assert "cannot read the fleet" in result.stderr
    assert "hunter2secret" not in result.stderr

    code, report = check(url)
    assert code == 3
    assert report["status"] == "unreadable" and report["alerts"] == []


def test_check_json_shape(redis_url: str, spawn_worker: Spawn) -> None:
    spawn_worker(redis_url)
    code, report = check(redis_url, "--queue", "orbiter:other")
    assert code == 0
    assert set(report) == {"status", "exit_code", "read_at", "alerts"}
    assert (report["status"], report["exit_code"]) == ("ok", 0)
    assert {a["queue"] for a in report["alerts"]} == {QUEUE, "orbiter:other", None}
    for alert in report["alerts"]:
        assert set(alert) == {"rule", "queue", "value", "threshold", "comparator",
                              "severity", "state", "unit", "description"}  # fmt: skip
        assert alert["severity"] in ("warning", "critical")
        assert alert["state"] in ("ok", "firing", "insufficient data")


def test_check_thresholds_from_the_command_line(
    redis_url: str, producer: TaskProducer, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url, "--queue", IDLE)
    producer.submit_many(echo_tasks(3))
    code, report = check(redis_url, "--threshold", "dist_queue_depth_warning=2")
    assert code == 1 and report["alerts"][0]["threshold"] == 2
    failure = check(redis_url, "--threshold", "dist_failure_rate_warning=25%")[1]["alerts"]
    assert {a["threshold"] for a in failure if a["rule"] == "dist_failure_rate_warning"} == {0.25}


def test_usage_errors_print_no_table(redis_url: str) -> None:
    for args in (["--bogus"], ["--threshold", "nonsense"], ["--threshold", "nope=1"]):
        result = run("alerts", "check", "--redis-url", redis_url, *args)
        assert result.exit_code == 2, args
        assert result.stdout == ""
        assert "Error:" in result.stderr


def test_check_runs_as_a_command(redis_url: str) -> None:
    # the console script, as cron or a container check runs it
    done = subprocess.run([CLI, "alerts", "check", "--redis-url", redis_url],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "dist_worker_count_critical" in done.stdout
