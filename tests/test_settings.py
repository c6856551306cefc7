"""One source for settings: WorkerSettings, Worker keywords, the CLI's options; executors and
agent kinds chosen by name."""

from __future__ import annotations

import typing

import click
import pytest

from orbiter_sync.agents import ImportPolicy, resolve_agent
from orbiter_sync.cli.worker import worker_command
from orbiter_sync.errors import AgentConfigError, ConfigurationError
from orbiter_sync.executors import LocalExecutor, make_executor
from orbiter_sync.settings import WorkerOptions, WorkerSettings
from orbiter_sync.worker import Worker


def test_settings_or_keywords_but_never_both(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="not both .*concurrency"):
        Worker(redis_url, settings=WorkerSettings(), concurrency=4)
    with pytest.raises(ConfigurationError, match="unknown worker setting.*concurency"):
        Worker(redis_url, concurency=4)  # type: ignore[call-arg]

    by_keywords = Worker(redis_url, concurrency=4)
    given = WorkerSettings(concurrency=3, max_retries=1)
    by_settings = Worker(redis_url, settings=given)
    assert by_keywords.settings == WorkerSettings(concurrency=4)
    assert by_settings.settings is given
    assert by_settings.consumers[0].settings.max_retries == 1
    for worker in (by_keywords, by_settings):
        worker.client.close()


def test_keywords_and_settings_fields_are_the_same_names() -> None:
    assert set(typing.get_type_hints(WorkerOptions)) == set(WorkerSettings.names())


def test_bad_settings_are_refused() -> None:
    for bad in ({"concurrency": 0}, {"max_retries": -1}, {"max_deliveries": 0},
                {"visibility_timeout": 0}, {"claim_timeout": -1}, {"pool": "fork"},
                {"metrics_port": 0}, {"metrics_port": 65536}):  # fmt: skip
        with pytest.raises(ConfigurationError):
            WorkerSettings(**bad)


def test_allow_imports_are_kept_as_a_tuple() -> None:
    assert WorkerSettings(allow_imports=["a", "b"]).allow_imports == ("a", "b")


def test_the_cli_exposes_every_setting_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORBITER_POOL", raising=False)
    monkeypatch.delenv("TEMPORAL_HOST", raising=False)
    monkeypatch.delenv("ORBITER_METRICS_PORT", raising=False)
    options = {p.name: p for p in worker_command.params if isinstance(p, click.Option)}

    for name in WorkerSettings.names():
        if name == "also_queues":  # the second and later --queue
            continue
        assert name in options, f"start worker has no option for {name}"
        default = options[name].get_default(click.Context(worker_command), call=True)
        if name == "allow_imports":
            default = tuple(default or ())  # type: ignore[arg-type]
        if name == "queue_name":  # --queue, repeatable: the first one
            [default] = default  # type: ignore[misc]
        assert default == WorkerSettings.default_of(name), name
    help_text = worker_command.get_help(click.Context(worker_command))
    for flag in ("--max-retries", "--max-deliveries", "--claim-timeout", "--retry-backoff",
                 "--metrics-port", "ORBITER_METRICS_PORT"):  # fmt: skip
        assert flag in help_text


def test_executors_are_made_by_name() -> None:
    executor = make_executor("local", policy=ImportPolicy())
    assert isinstance(executor, LocalExecutor) and executor.name == "local"
    durable = make_executor("temporal", policy=ImportPolicy(), redis_url="redis://127.0.0.1:1",
                            worker_id="w1", slots=2, max_retries=3, event_ttl=60)  # fmt: skip
    assert durable.name == "temporal"  # it connects when the worker starts it
    with pytest.raises(ConfigurationError, match="unknown executor"):
        make_executor("celery", policy=ImportPolicy())


def test_resolve_agent_names_its_kind_and_agent() -> None:
    policy = ImportPolicy(("sample_agents",))

    plain = resolve_agent({"entrypoint": "sample_agents:echo"}, policy)
    named = resolve_agent({"entrypoint": "sample_agents.echo", "name": "echoer"}, policy)

    assert (plain.kind, plain.name) == ("entrypoint", "sample_agents:echo")
    assert (named.kind, named.name) == ("entrypoint", "echoer")
    assert plain.runnable("hi") == "echo: hi"
    llm = resolve_agent({"name": "bot", "model": "test"}, policy)
    swarm = resolve_agent({"agents": [{"name": "a"}, {"name": "b"}], "flow": "b >> a"}, policy)
    assert (llm.kind, llm.name) == ("llm", "bot")
    assert (swarm.kind, swarm.name) == ("swarm", "swarm(b...)")
    with pytest.raises(AgentConfigError, match="agents must be a non-empty list"):
        resolve_agent({"agents": [], "flow": "a >> b"}, policy)
    with pytest.raises(AgentConfigError, match="has no 'entrypoint'"):
        resolve_agent({"what": "ever"}, policy)
