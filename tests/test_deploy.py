"""The deployment files: Procfile, docker/ and the systemd unit hold valid invocations.

A command is valid when click accepts it down to the last option (types,
choices, required values), without running it. The Procfile's worker line is
also run for real under honcho, against a TLS Redis with a self-signed
certificate, the way Heroku's ``rediss://`` REDIS_URL looks.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import yaml
from helpers import CLI, ROOT, TESTS, make_certificate

from orbiter_sync import distributed
from orbiter_sync.cli.main import cli
from orbiter_sync.embedded import EmbeddedRedis, free_port

DOCKER = ROOT / "docker"


def parse_invocation(argv: list[str]) -> click.Context:
    """Parse ``orbiter-sync ARGS...`` the way the console script would; raise on bad usage."""
    assert Path(argv[0]).name == "orbiter-sync", argv
    ctx: click.Context = cli.make_context("orbiter-sync", argv[1:])
    command: click.Command = cli
    while isinstance(command, click.Group):
        args = [*ctx._protected_args, *ctx.args]
        name, sub, rest = command.resolve_command(ctx, args)
        assert sub is not None, f"no such command {name!r}"
        ctx = sub.make_context(name or "", rest, parent=ctx)
        command = sub
    return ctx


def test_parse_invocation_rejects_bad_usage() -> None:
    # the checker itself must be able to fail
    with pytest.raises(click.UsageError):
        parse_invocation(["orbiter-sync", "start", "worker", "--concurrency", "many"])
    with pytest.raises(click.UsageError):
        parse_invocation(["orbiter-sync", "start", "wroker"])
    with pytest.raises(click.UsageError):
        parse_invocation(["orbiter-sync", "start", "worker", "--pool", "processes"])


def test_compose_file(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    services = compose["services"]

    assert set(services) == {"redis", "worker", "temporal", "temporal-worker",
                             "exporter", "prometheus", "grafana"}  # fmt: skip
    redis_service = services["redis"]
    assert redis_service["image"].startswith("redis:7")
    assert "--appendonly yes" in redis_service["command"]
    assert redis_service["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "redis-data" in compose["volumes"]

    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert (worker["stop_signal"], worker["stop_grace_period"]) == ("SIGTERM", "30s")
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "ORBITER_REDIS_URL=redis://redis:6379" in worker["environment"]
    context = (DOCKER / worker["build"]["context"]).resolve()  # relative to the compose file
    assert context == ROOT
    assert (context / worker["build"]["dockerfile"]).is_file()

    assert services["temporal"]["profiles"] == ["temporal"]
    temporal_worker = services["temporal-worker"]
    assert temporal_worker["profiles"] == ["temporal"]
    env = dict(item.split("=", 1) for item in temporal_worker["environment"])
    assert env["TEMPORAL_HOST"] == "temporal:7233"

    # The worker service runs the image's CMD; the Temporal one its own command, in
    # which executor defaults to temporal because TEMPORAL_HOST is set.
    parse_invocation(dockerfile_cmd())
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ctx = parse_invocation(shlex.split(temporal_worker["command"]))
    assert ctx.params["executor"] == "temporal"
    assert ctx.params["concurrency"] == 4
    # durable tasks have their own queue: the local replicas never take one
    assert ctx.params["queue_name"] == ("orbiter:durable",)
    assert parse_invocation(dockerfile_cmd()).params["queue_name"] == ("orbiter:tasks",)
    assert "temporal-data" in compose["volumes"]


def dockerfile_cmd() -> list[str]:
    text = (DOCKER / "Dockerfile").read_text()
    [cmd] = re.findall(r"^CMD (\[.*\])$", text, re.M)
    argv: list[str] = json.loads(cmd)
    return argv


def test_dockerfile_copies_what_the_package_needs() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) /src/", text, re.M):
        for name in source.split():
            assert (ROOT / name).exists(), name
    assert dockerfile_cmd() == ["orbiter-sync", "start", "worker", "--concurrency", "4"]


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DOCKER / "orbiter-worker@.service")
    service = unit["Service"]

    assert (service["KillSignal"], service["TimeoutStopSec"]) == ("SIGTERM", "30")
    assert service["Restart"] == "always"
    assert service["Environment"].startswith("ORBITER_REDIS_URL=")
    # %H (host) and %i (instance) are filled in by systemd
    exec_start = service["ExecStart"].replace("%H", "web01").replace("%i", "2")
    ctx = parse_invocation(shlex.split(exec_start))
    assert ctx.params["worker_id"] == "web01-worker-2"
    assert ctx.params["concurrency"] == 4


def test_procfile_worker_line_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = (ROOT / "Procfile").read_text().splitlines()
    [line] = [text for text in lines if not text.startswith("#")]  # comments: for people
    kind, command = line.split(":", 1)
    assert kind == "worker"
    monkeypatch.delenv("ORBITER_CONCURRENCY", raising=False)
    expanded = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {command}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert expanded[0] == "ORBITER_REDIS_SSL_CERT_REQS=none"
    ctx = parse_invocation(expanded[1:])
    assert ctx.params["concurrency"] == 4


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[int]:
    key, cert = make_certificate(tmp_path)
    tls_port = free_port()
    tls = ("--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
           "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no")  # fmt: skip
    with EmbeddedRedis(extra_args=tls):
        yield tls_port


def test_procfile_runs_under_honcho_with_herokus_rediss_url(tls_redis: int, tmp_path: Path) -> None:
    # Given Heroku's environment: REDIS_URL is rediss:// with a self-signed certificate
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORBITER_", "TEMPORAL_"))}
    env.update(
        REDIS_URL=f"rediss://127.0.0.1:{tls_redis}",
        ORBITER_ALLOW_IMPORTS="sample_agents",
        ORBITER_CONCURRENCY="2",
        PYTHONPATH=str(TESTS),
        PATH=f"{Path(CLI).parent}:{env['PATH']}",
    )
    honcho = Path(CLI).with_name("honcho")
    process = subprocess.Popen(
        [str(honcho), "-f", str(ROOT / "Procfile"), "-d", str(tmp_path), "start", "worker"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        # When a web app submits a task
        client_url = f"rediss://127.0.0.1:{tls_redis}?ssl_cert_reqs=none"
        handle = distributed(
            {"entrypoint": "sample_agents:echo"}, "from heroku", redis_url=client_url
        )

        # Then the Procfile's worker runs it
        assert handle.result(timeout=30) == {"output": "echo: from heroku"}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert "concurrency: 2" in output
    assert "rediss://127.0.0.1" in output
