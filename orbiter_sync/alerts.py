"""The worker guide's alert rules: what they are, judging them against the fleet now, and
the same rules for Prometheus.

``register_distributed_alerts()`` returns the five built-in rules (an application may
change their thresholds and add rules of its own); ``evaluate(rules, fleet)`` judges them
against a :class:`~orbiter_sync.metrics.snapshot.FleetSnapshot` (``orbiter-sync alerts
check``); ``prometheus_rules(rules)`` writes them as a Prometheus rule group on the fleet
exporter's series (``orbiter-sync alerts export``), so both judge the same numbers.

A rule compares one measure (see :data:`MEASURES`) with its threshold. Measures of a
queue give a result per queue; measures of the fleet give one.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Literal

from orbiter_sync.errors import ConfigurationError
from orbiter_sync.metrics import names
from orbiter_sync.metrics.snapshot import RECENT_WINDOW, FleetSnapshot, QueueSnapshot

RULE_QUEUE_DEPTH_WARNING = "dist_queue_depth_warning"
RULE_QUEUE_DEPTH_CRITICAL = "dist_queue_depth_critical"
RULE_FAILURE_RATE_WARNING = "dist_failure_rate_warning"
RULE_WORKER_COUNT_CRITICAL = "dist_worker_count_critical"
RULE_WAIT_TIME_WARNING = "dist_wait_time_warning"

# A failure rate over fewer finished tasks says little (one failure in three is 33%).
MIN_FINISHED = 10

State = Literal["ok", "firing", "insufficient data"]


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class Comparator(StrEnum):
    """How a measured value is compared with a rule's threshold (PromQL's operators)."""

    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    EQ = "=="

    def holds(self, value: float, threshold: float) -> bool:
        return bool(_OPERATORS[self](value, threshold))


_OPERATORS: dict[Comparator, Callable[[float, float], bool]] = {
    Comparator.GT: operator.gt,
    Comparator.GE: operator.ge,
    Comparator.LT: operator.lt,
    Comparator.LE: operator.le,
    Comparator.EQ: operator.eq,
}

Unit = Literal["tasks", "seconds", "ratio", "workers"]


@dataclass(frozen=True)
class Measure:
    """A number a rule can judge: how to read it from a snapshot, and the same number in
    PromQL on the fleet exporter's series (``promql``, kept to the ``queue`` label for
    measures of a queue, so every queue alerts on its own)."""

    name: str
    unit: Unit
    promql: str
    title: str  # for the alert's summary; may use {{ $labels.queue }}
    of_queue: Callable[[QueueSnapshot], float | None] | None = None
    of_fleet: Callable[[FleetSnapshot], float | None] | None = None
    # when a queue's numbers are too few to judge, and that condition in PromQL
    enough: Callable[[QueueSnapshot], bool] | None = None
    enough_promql: str = ""

    @property
    def per_queue(self) -> bool:
        return self.of_queue is not None


def _increase(metric: str) -> str:
    window = f"{int(RECENT_WINDOW // 60)}m"  # the window alerts check judges: one truth
    return f"sum by (queue) (increase({metric}_total[{window}]))"


_FAILED = _increase(names.FLEET_TASKS_FAILED)
_FINISHED = f"({_increase(names.FLEET_TASKS_COMPLETED)} + {_FAILED})"
_QUEUE_TITLE = "queue {{ $labels.queue }}"

MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure(
            "queue_depth", "tasks", names.FLEET_QUEUE_DEPTH, f"{_QUEUE_TITLE} depth",
            of_queue=lambda q: q.depth,
        ),
        Measure(
            "wait_time", "seconds", names.FLEET_OLDEST_WAITING_AGE,
            f"{_QUEUE_TITLE} oldest waiting task", of_queue=lambda q: q.oldest_waiting_age,
        ),
        Measure(
            "failure_rate", "ratio", f"({_FAILED} / {_FINISHED})",
            f"{_QUEUE_TITLE} failure rate", of_queue=lambda q: q.recent.failure_rate,
            enough=lambda q: q.recent.finished >= MIN_FINISHED,
            enough_promql=f"{_FINISHED} >= {MIN_FINISHED}",
        ),
        Measure(
            "worker_count", "workers", f'{names.FLEET_WORKERS}{{state="alive"}}',
            "the live worker count", of_fleet=lambda f: f.workers_alive,
        ),
        Measure(
            "pending_age", "seconds", names.FLEET_OLDEST_PENDING_AGE,
            f"{_QUEUE_TITLE} oldest claimed task", of_queue=lambda q: q.oldest_pending_age,
        ),
        Measure(
            "dead_letters", "tasks", names.FLEET_DEAD_LETTERS, f"{_QUEUE_TITLE} dead letters",
            of_queue=lambda q: q.dead_letters,
        ),
        Measure(
            "dead_workers", "workers", f'{names.FLEET_WORKERS}{{state="dead"}}',
            "the dead worker count", of_fleet=lambda f: f.workers_dead,
        ),
    )
}  # fmt: skip

_RULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+\Z")  # Prometheus's duration syntax


@dataclass(frozen=True)
class AlertRule:
    """Fire when ``measure`` (a key of :data:`MEASURES`) ``comparator`` ``threshold``.

    ``for_duration`` is Prometheus's ``for``: how long the condition must hold before the
    exported alert fires. ``alerts check`` judges the fleet at one moment and ignores it.
    """

    name: str
    measure: str
    threshold: float
    comparator: Comparator = Comparator.GT
    severity: Severity = Severity.WARNING
    description: str = ""
    for_duration: str = "5m"

    def __post_init__(self) -> None:
        if not _RULE_NAME.match(self.name):
            raise ConfigurationError(f"alert rule name {self.name!r}: use letters, digits and _")
        if self.measure not in MEASURES:
            known = ", ".join(MEASURES)
            raise ConfigurationError(f"alert rule {self.name}: unknown measure "
                                     f"{self.measure!r} (one of {known})")  # fmt: skip
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float):
            raise ConfigurationError(f"alert rule {self.name}: the threshold must be a number")
        if not math.isfinite(self.threshold):
            raise ConfigurationError(f"alert rule {self.name}: the threshold must be finite")
        if not _DURATION.match(self.for_duration):
            raise ConfigurationError(
                f"alert rule {self.name}: for_duration {self.for_duration!r} is not a "
                "Prometheus duration (5m, 30s, 1h30m)"
            )
        # rules read from a configuration file say ">" and "warning": keep the enums
        try:
            object.__setattr__(self, "comparator", Comparator(self.comparator))
            object.__setattr__(self, "severity", Severity(self.severity))
        except ValueError as exc:
            raise ConfigurationError(f"alert rule {self.name}: {exc}") from None

    @property
    def per_queue(self) -> bool:
        return MEASURES[self.measure].per_queue

    @property
    def unit(self) -> Unit:
        return MEASURES[self.measure].unit

    def holds(self, value: float) -> bool:
        return self.comparator.holds(value, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "measure": self.measure, "threshold": self.threshold,
                "comparator": str(self.comparator), "severity": str(self.severity),
                "description": self.description, "for": self.for_duration}  # fmt: skip


def _builtin_rules() -> list[AlertRule]:
    return [
        AlertRule(
            RULE_QUEUE_DEPTH_WARNING, "queue_depth", 100, Comparator.GT, Severity.WARNING,
            "More than 100 tasks wait (not yet delivered, or delayed retries): add workers "
            "if it keeps growing.",
        ),
        AlertRule(
            RULE_QUEUE_DEPTH_CRITICAL, "queue_depth", 500, Comparator.GT, Severity.CRITICAL,
            "More than 500 tasks wait: the workers are far behind, or not reading this queue.",
        ),
        AlertRule(
            RULE_FAILURE_RATE_WARNING, "failure_rate", 0.1, Comparator.GT, Severity.WARNING,
            f"Over 10% of the tasks that finished in the last 5 minutes failed (judged once "
            f"{MIN_FINISHED} finished); look at the errors before adding workers.", "1m",
        ),
        AlertRule(
            RULE_WORKER_COUNT_CRITICAL, "worker_count", 0, Comparator.EQ, Severity.CRITICAL,
            "No worker has a live heartbeat: nothing runs the queued tasks.", "1m",
        ),
        AlertRule(
            RULE_WAIT_TIME_WARNING, "wait_time", 60, Comparator.GT, Severity.WARNING,
            "The oldest task not yet started was created over 60 seconds ago: add capacity.",
            "2m",
        ),
    ]  # fmt: skip


def register_distributed_alerts(
    overrides: Mapping[str, float] | None = None,
    extra: Iterable[AlertRule] = (),
) -> list[AlertRule]:
    """The guide's five rules, then ``extra``.

    ``overrides`` maps a built-in rule's name to a new threshold (a failure rate as a
    fraction: 0.2 for 20%); ``extra`` adds an application's own rules. To change more
    than a threshold, ``dataclasses.replace`` a returned rule. Nothing is kept globally:
    pass the list to :func:`evaluate` or :func:`prometheus_rules`. An unknown name in
    ``overrides``, or two rules of one name, is a ``ConfigurationError``.
    """
    rules = _builtin_rules()
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {rule.name for rule in rules})
    if unknown:
        raise ConfigurationError(f"no built-in alert rule named {', '.join(unknown)}")
    rules = [replace(r, threshold=overrides[r.name]) if r.name in overrides else r for r in rules]
    rules.extend(extra)
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise ConfigurationError(f"two alert rules are named {rule.name}")
        seen.add(rule.name)
    return rules


# -- judging the fleet now -------------------------------------------------------------


@dataclass(frozen=True)
class AlertResult:
    """One rule judged against one queue (``queue`` None for a rule on the whole fleet).

    ``value`` None: nothing to measure (no waiting task, nothing finished lately): "ok".
    "insufficient data": too few tasks finished to judge a failure rate; not firing.
    """

    rule: AlertRule
    queue: str | None
    value: float | None
    state: State

    @property
    def firing(self) -> bool:
        return self.state == "firing"

    def to_dict(self) -> dict[str, Any]:
        rule = self.rule
        return {"rule": rule.name, "queue": self.queue, "value": self.value,
                "threshold": rule.threshold, "comparator": str(rule.comparator),
                "severity": str(rule.severity), "state": self.state, "unit": rule.unit,
                "description": rule.description}  # fmt: skip


def _judge(rule: AlertRule, queue: str | None, value: float | None, enough: bool) -> AlertResult:
    if not enough:
        return AlertResult(rule, queue, value, "insufficient data")
    firing = value is not None and rule.holds(value)
    return AlertResult(rule, queue, value, "firing" if firing else "ok")


def evaluate(rules: Sequence[AlertRule], fleet: FleetSnapshot) -> list[AlertResult]:
    """Judge every rule against ``fleet``: a result per queue for rules on a queue (in
    the snapshot's queue order), one for rules on the fleet; in the order of ``rules``."""
    results: list[AlertResult] = []
    for rule in rules:
        measure = MEASURES[rule.measure]
        if measure.of_queue is not None:
            for q in fleet.queues:
                enough = measure.enough(q) if measure.enough else True
                results.append(_judge(rule, q.queue, measure.of_queue(q), enough))
        elif measure.of_fleet is not None:
            results.append(_judge(rule, None, measure.of_fleet(fleet), True))
    return results


def worst_firing(results: Iterable[AlertResult]) -> Severity | None:
    """CRITICAL when a critical rule fires, else WARNING when one fires, else None."""
    firing = {result.rule.severity for result in results if result.firing}
    for severity in (Severity.CRITICAL, Severity.WARNING):
        if severity in firing:
            return severity
    return None


# -- the same rules for Prometheus -------------------------------------------------------

_HUMANIZE = {"tasks": "", "workers": "", "seconds": " | humanizeDuration",
             "ratio": " | humanizePercentage"}  # fmt: skip


def promql_number(value: float) -> str:
    """A threshold as PromQL reads it: ``100``, ``0.1``, ``1e+20``."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def threshold_text(rule: AlertRule) -> str:
    """``> 100``, ``> 60s``, ``> 10%``, ``== 0``: for people."""
    value = rule.threshold
    if rule.unit == "ratio":
        text = f"{value * 100:g}%"
    elif rule.unit == "seconds":
        text = f"{value:g}s"
    else:
        text = f"{value:g}"
    return f"{rule.comparator} {text}"


def promql(rule: AlertRule) -> str:
    """The rule's alerting expression, on the fleet exporter's series only."""
    measure = MEASURES[rule.measure]
    expr = f"{measure.promql} {rule.comparator} {promql_number(rule.threshold)}"
    if measure.enough_promql:
        expr = f"{expr} and {measure.enough_promql}"
    return expr


def prometheus_rules(rules: Sequence[AlertRule], group: str = "orbiter-sync") -> dict[str, Any]:
    """A Prometheus alerting-rules document (``rule_files`` format) for ``rules``."""
    entries = []
    for rule in rules:
        measure = MEASURES[rule.measure]
        summary = (f"{measure.title} is {{{{ $value{_HUMANIZE[rule.unit]} }}}} "
                   f"({threshold_text(rule)})")  # fmt: skip
        entries.append(
            {"alert": rule.name, "expr": promql(rule), "for": rule.for_duration,
             "labels": {"severity": str(rule.severity)},
             "annotations": {"summary": summary, "description": rule.description}}
        )  # fmt: skip
    return {"groups": [{"name": group, "rules": entries}]}
