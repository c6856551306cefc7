"""The Django app (orbiter_sync/contrib/django/) in the project under tests/django_project:
its views through Django's test client, ``manage.py orbiter_worker`` as a real
subprocess, and ``submit_on_commit`` with a row the worker reads through the ORM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
import redis
from helpers import TESTS, Spawn, wait_for

PROJECT = TESTS / "django_project"


def forget_databases() -> None:
    """Make Django read DATABASES again: it keeps them, and each connection, once made."""
    from django.db import connections

    for alias in list(connections.settings):
        try:
            del connections[alias]
        except AttributeError:
            pass  # never connected in this thread
    vars(connections).pop("settings", None)  # a cached property
    connections._settings = None


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test project configured in this process, on an SQLite file of its own.

    Django's settings are global and configured once: ``examples/django_view.py`` (whose
    test may run before or after these) configures its own. So the settings found are
    put back at the end, as are the installed apps and the database settings.
    """
    import django_project.settings as project
    from django.apps import apps
    from django.conf import settings
    from django.db import connection, connections
    from django.utils.functional import empty

    path = tmp_path_factory.mktemp("django") / "db.sqlite3"
    values = {name: getattr(project, name) for name in dir(project) if name.isupper()}
    values["DATABASES"] = {"default": {**project.DATABASES["default"], "NAME": str(path)}}
    saved = settings._wrapped
    settings._wrapped = empty
    settings.configure(**values)
    was_ready = apps.ready
    if was_ready:
        apps.set_installed_apps(values["INSTALLED_APPS"])
    else:
        django.setup()
    forget_databases()
    from django_project.notes.models import Note

    with connection.schema_editor() as editor:
        editor.create_model(Note)
    yield path
    connections.close_all()
    forget_databases()
    if was_ready:
        apps.unset_installed_apps()
    settings._wrapped = saved


@pytest.fixture
def client(database: Path, redis_url: str) -> Iterator[Any]:
    from django.test import Client, override_settings

    with override_settings(ORBITER_REDIS_URL=redis_url):
        yield Client()


def parse_sse(body: str) -> list[dict[str, str]]:
    blocks = (block.splitlines() for block in body.split("\n\n"))
    messages = [dict(line.split(": ", 1) for line in b if not line.startswith(":")) for b in blocks]
    return [m for m in messages if m]


def test_views_submit_stream_poll_and_show_status(
    client: Any, redis_url: str, spawn_worker: Spawn
) -> None:
    # Given the project's views and a worker
    spawn_worker(redis_url)

    # When a declared agent is submitted by name
    submitted = client.post("/orbiter/tasks", {"agent": "words", "input": "django streams too"},
                            content_type="application/json")  # fmt: skip

    # Then its events stream to the terminal status, resumable from Last-Event-ID
    assert submitted.status_code == 202
    task = submitted.json()
    assert task["events_url"] == f"/orbiter/tasks/{task['task_id']}/events"
    response = client.get(task["events_url"])
    assert response["Content-Type"] == "text/event-stream"
    messages = parse_sse(b"".join(response.streaming_content).decode())
    assert json.loads(messages[-1]["data"])["status"] == "completed"
    resumed = client.get(task["events_url"], headers={"last-event-id": messages[0]["id"]})
    resumed_ids = [m["id"] for m in parse_sse(b"".join(resumed.streaming_content).decode())]
    assert resumed_ids == [m["id"] for m in messages[1:]]

    # And polling returns the same events, then ended
    page = client.get(task["poll_url"], {"after": messages[0]["id"]}).json()
    assert [e["id"] for e in page["events"]] == resumed_ids and page["ended"]

    # And the status shows the result
    state = client.get(task["status_url"]).json()
    assert state["status"] == "completed"
    assert state["result"] == {"output": f"3 words for {task['task_id']}"}


def test_views_refuse(client: Any, r: redis.Redis) -> None:
    from django.test import override_settings

    post = {"path": "/orbiter/tasks", "content_type": "application/json"}
    task = client.post(data={"agent": "words", "input": "x"}, **post).json()

    # unknown tasks are 404 (JSON, not a stream); bad submits 400; wrong methods 405
    for path in ("nope", "nope/events", "nope/poll"):
        response = client.get(f"/orbiter/tasks/{path}")
        assert response.status_code == 404 and not response.streaming, path
        assert response.json() == {"error": "no such task"}
    assert client.post(data={"agent": "shell", "input": "x"}, **post).status_code == 400
    assert client.post(data={"agent": "words", "input": "x", "agent_config": {}},
                       **post).status_code == 400  # fmt: skip
    assert client.post(data="not json", **post).status_code == 400
    assert client.get("/orbiter/tasks").status_code == 405
    assert client.post(task["status_url"]).status_code == 405
    assert r.xlen("orbiter:tasks") == 1

    # the permission hook a setting names decides; refusal is 403
    with override_settings(ORBITER_PERMISSION="django_project.notes.permissions.by_header"):
        assert client.get(task["status_url"]).status_code == 403
        assert client.get(task["status_url"], headers={"X-Allow": "status"}).status_code == 200
        assert client.get(task["poll_url"], headers={"X-Allow": "status"}).status_code == 403
        assert client.get(task["events_url"], headers={"X-Allow": "poll"}).status_code == 403
        refused = client.post(data={"agent": "words", "input": "x"}, **post)
        assert refused.status_code == 403 and refused.json() == {"error": "forbidden"}
    assert r.xlen("orbiter:tasks") == 1


def test_each_task_runs_between_close_old_connections(database: Path) -> None:
    from django.db import connection

    from orbiter_sync import hooks

    # Given an open database connection that is past its CONN_MAX_AGE (0: every request)
    connection.ensure_connection()
    assert connection.connection is not None

    # When a worker of this process runs a task, the app's hook closes it around the task
    with hooks.around_task("w1", "t1"):
        assert connection.connection is None
        connection.ensure_connection()
    assert connection.connection is None


def test_manage_py_worker_runs_a_task_submitted_on_commit(
    database: Path, redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    from django.db import transaction
    from django.test import override_settings
    from django_project.notes.models import Note

    from orbiter_sync.contrib.django import submit_on_commit

    # Given `manage.py orbiter_worker` with the worker's own flags, Redis from the settings
    env = {**os.environ, "PYTHONPATH": str(TESTS), "ORBITER_TEST_DB": str(database),
           "TEST_PROJECT_REDIS_URL": redis_url}  # fmt: skip
    env.pop("ORBITER_REDIS_URL", None)
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, str(PROJECT / "manage.py"), "orbiter_worker", "--worker-id", "dj-1",
         "--allow-import", "django_project.notes.agents", "--concurrency", "2",
         "--heartbeat-ttl", "3", "--settings", "django_project.settings"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: worker.poll() is not None or r.exists("orbiter:workers:dj-1"), 15)
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        agent = {"entrypoint": "django_project.notes.agents:read_note"}

        # When a run that reads a row is submitted in the transaction that creates it
        with override_settings(ORBITER_REDIS_URL=redis_url), transaction.atomic():
            note = Note.objects.create(body="written in the same transaction")
            handle = submit_on_commit(agent, str(note.pk))
            # Then nothing is queued before the commit, though the task id is known
            assert handle.task_id and handle.status() is None
            assert r.xlen("orbiter:tasks") == 0 and r.scard("orbiter:task:index") == 0

        # And after it the worker reads the row through the ORM
        assert handle.result(timeout=15) == {"output": "written in the same transaction"}

        # And a transaction that rolls back queues nothing
        with pytest.raises(RuntimeError), transaction.atomic():
            rolled_back = submit_on_commit(agent, "1", redis_url=redis_url)
            raise RuntimeError("roll back")
        assert rolled_back.status() is None and r.scard("orbiter:task:index") == 1

        # When the worker gets SIGTERM, it stops cleanly
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0, (tmp_path / "worker.log").read_text()
        assert r.hget("orbiter:registry:worker:dj-1", "status") == "stopped"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()


def test_manage_py_worker_passes_help_and_errors_through(database: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "ORBITER_TEST_DB": str(database)}
    for name in ("ORBITER_REDIS_URL", "REDIS_URL", "TEST_PROJECT_REDIS_URL"):
        env.pop(name, None)
    run = [sys.executable, str(PROJECT / "manage.py"), "orbiter_worker"]

    shown = subprocess.run([*run, "--help"], env=env, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert "Usage: manage.py orbiter_worker [OPTIONS]" in shown.stdout
    assert "--allow-import" in shown.stdout and "--concurrency" in shown.stdout

    failed = subprocess.run(run, env=env, capture_output=True, text=True, timeout=30)
    assert failed.returncode == 2 and "no Redis URL" in failed.stderr
