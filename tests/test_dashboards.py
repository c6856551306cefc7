"""The monitoring files: the exported Prometheus rules, the Grafana dashboard and the
compose profile ``monitoring`` name only metrics we export, and fit together.

Alert expressions may name only the fleet exporter's series (a Prometheus that scrapes
nothing else must be able to judge them); dashboard queries may name those and the
workers' own series. Metric names are read from PromQL as identifiers that start with
``orbiter_``.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_support import run
from helpers import ROOT
from test_deploy import parse_invocation

from orbiter_sync.alerts import MEASURES, AlertRule, prometheus_rules, register_distributed_alerts
from orbiter_sync.cli.alerts import rules_yaml
from orbiter_sync.metrics import names

DOCKER = ROOT / "docker"
RULES_FILE = DOCKER / "prometheus" / "orbiter-alerts.yml"
DASHBOARD = DOCKER / "grafana" / "orbiter-sync.json"
METRIC = re.compile(r"\borbiter_[A-Za-z0-9_:]*")
DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")


def metrics_in(promql: str) -> set[str]:
    return set(METRIC.findall(promql))


def balanced(promql: str) -> bool:
    depth = 0
    for char in re.sub(r'"[^"]*"', "", promql):
        depth += {"(": 1, ")": -1, "[": 1, "]": -1, "{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def exported(*args: str) -> str:
    result = run("alerts", "export", "--format", "prometheus", *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_metric_reader_finds_names() -> None:
    # the checks below must be able to fail
    assert metrics_in('sum by (queue) (rate(orbiter_x_total[5m])) / orbiter_y{state="a"}') == {
        "orbiter_x_total",
        "orbiter_y",
    }
    assert not balanced("sum(rate(orbiter_x[5m])")


# -- the alert rules ----------------------------------------------------------------------


def test_the_rules_file_has_prometheus_shape() -> None:
    document = yaml.safe_load(exported())
    assert list(document) == ["groups"]
    [group] = document["groups"]
    assert set(group) == {"name", "rules"} and group["name"]
    assert [rule["alert"] for rule in group["rules"]] == [
        r.name for r in register_distributed_alerts()
    ]
    for rule in group["rules"]:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
        assert all(isinstance(rule[k], str) and rule[k] for k in ("alert", "expr", "for"))
        assert DURATION.fullmatch(rule["for"])
        assert rule["labels"] == {"severity": rule["labels"]["severity"]}
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert set(rule["annotations"]) == {"summary", "description"}
        assert balanced(rule["expr"]), rule["expr"]
    assert document == prometheus_rules(register_distributed_alerts())


def test_alert_expressions_name_only_fleet_series() -> None:
    # the built-in rules, and a rule on every measure an application may use
    rules = [*register_distributed_alerts(), *(AlertRule(f"any_{m}", m, 1) for m in MEASURES)]
    for rule in prometheus_rules(rules)["groups"][0]["rules"]:
        found = metrics_in(rule["expr"])
        assert found, rule["expr"]
        assert found <= set(names.FLEET_SERIES), found - set(names.FLEET_SERIES)


def test_the_guides_expressions() -> None:
    exprs = {r["alert"]: r["expr"] for r in yaml.safe_load(exported())["groups"][0]["rules"]}
    assert exprs["dist_queue_depth_warning"] == "orbiter_fleet_queue_depth > 100"
    assert exprs["dist_queue_depth_critical"] == "orbiter_fleet_queue_depth > 500"
    assert exprs["dist_worker_count_critical"] == 'orbiter_fleet_workers{state="alive"} == 0'
    assert exprs["dist_wait_time_warning"] == "orbiter_fleet_oldest_waiting_age_seconds > 60"
    failure = exprs["dist_failure_rate_warning"]
    assert "increase(orbiter_fleet_tasks_failed_total[5m])" in failure
    assert "increase(orbiter_fleet_tasks_completed_total[5m])" in failure
    assert failure.split(" and ")[0].endswith("> 0.1")  # the rate, then the guard
    assert failure.endswith(">= 10")


def test_thresholds_from_the_command_line_reach_the_export() -> None:
    text = exported("--threshold", "dist_queue_depth_warning=250")
    assert "orbiter_fleet_queue_depth > 250" in text


def test_the_checked_in_rules_file_is_the_export() -> None:
    assert RULES_FILE.read_text() == exported(), (
        "regenerate it: orbiter-sync alerts export --format prometheus "
        "> docker/prometheus/orbiter-alerts.yml"
    )
    assert rules_yaml(register_distributed_alerts()) == exported()


# -- the dashboard ------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def queries(document: dict[str, Any]) -> list[str]:
    """Every PromQL text of the dashboard: panel targets and template variables."""
    found = [
        target["expr"]
        for panel in document["panels"]
        for target in panel.get("targets", [])
    ]  # fmt: skip
    for variable in document["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            found += [query["query"] if isinstance(query, dict) else query]
            found += [variable.get("definition", "")]
    return found


def test_dashboard_queries_name_only_our_series() -> None:
    texts = queries(dashboard())
    assert len(texts) > 20
    named: set[str] = set()
    for text in texts:
        assert balanced(text), text
        named |= metrics_in(text)
    assert named <= set(names.ALL_SERIES), named - set(names.ALL_SERIES)


def test_dashboard_shows_what_operators_look_for() -> None:
    texts = " ".join(queries(dashboard()))
    for series in names.FLEET_SERIES:
        if series != f"{names.FLEET_QUEUE_LENGTH}":  # depth, lag and pending say more
            assert series in texts, series
    for counter in (names.FLEET_TASKS_COMPLETED, names.FLEET_TASKS_FAILED,
                    names.FLEET_TASKS_CANCELLED, names.FLEET_TASKS_RETRIED):  # fmt: skip
        assert f"rate({counter}_total" in texts  # throughput by status
    for histogram in (names.TASK_DURATION, names.TASK_WAIT_TIME):
        assert re.search(rf"histogram_quantile\(0\.\d+, sum by \(le\) \(rate\({histogram}_bucket",
                         texts), histogram  # fmt: skip


def test_dashboard_shape() -> None:
    document = dashboard()
    assert (document["uid"], document["title"]) == ("orbiter-sync", "orbiter-sync")
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in document["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"


# -- the compose profile ------------------------------------------------------------------


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    return document


def mounts(service: dict[str, Any]) -> dict[str, Path | str]:
    """Container path -> host path (a Path, relative to docker/) or named volume."""
    found: dict[str, Path | str] = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        found[target] = DOCKER / source if source.startswith(".") else source
    return found


def test_the_monitoring_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    document = compose()
    services = document["services"]
    monitoring = {name for name, s in services.items() if "monitoring" in s.get("profiles", [])}
    assert monitoring == {"exporter", "prometheus", "grafana"}
    assert {"prometheus-data", "grafana-data"} <= set(document["volumes"])

    # the exporter: the project's image, running `metrics serve` against compose's Redis
    exporter = services["exporter"]
    assert exporter["build"] == services["worker"]["build"]
    assert "ORBITER_REDIS_URL=redis://redis:6379" in exporter["environment"]
    assert exporter["depends_on"]["redis"]["condition"] == "service_healthy"
    monkeypatch.delenv("ORBITER_REDIS_URL", raising=False)
    ctx = parse_invocation(shlex.split(exporter["command"]))
    assert ctx.command.name == "serve" and ctx.params["port"] == 9100

    # Prometheus scrapes the exporter and loads the checked-in rules file
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus")
    files = mounts(prometheus)
    assert files["/etc/prometheus/orbiter-alerts.yml"] == RULES_FILE
    config_path = files["/etc/prometheus/prometheus.yml"]
    assert isinstance(config_path, Path)
    config = yaml.safe_load(config_path.read_text())
    assert config["rule_files"] == ["/etc/prometheus/orbiter-alerts.yml"]
    targets = [t for job in config["scrape_configs"] for s in job.get("static_configs", [])
               for t in s["targets"]]  # fmt: skip
    assert targets == ["exporter:9100"]

    # Grafana: the Prometheus datasource and the dashboard, provisioned
    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana")
    files = mounts(grafana)
    provisioning = files["/etc/grafana/provisioning"]
    assert isinstance(provisioning, Path) and provisioning.is_dir()
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    [provider] = yaml.safe_load((provisioning / "dashboards" / "orbiter-sync.yml").read_text())[
        "providers"
    ]
    dashboard_target = f"{provider['options']['path']}/orbiter-sync.json"
    assert files[dashboard_target] == DASHBOARD
    for service in (prometheus, grafana):
        for host in mounts(service).values():
            assert not isinstance(host, Path) or host.exists(), host
