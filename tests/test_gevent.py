"""The gevent pool: patched before imports, refused when unpatched, hundreds of slots.

The worker behaviour tests (test_worker.py) run a second time with the gevent pool
(``ORBITER_TEST_POOL=gevent``, from ``make test``); these are the gevent-only ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import cast

import pytest
import redis
from helpers import ROOT, TESTS, Spawn, wait_for

from orbiter_sync import ConfigurationError, TaskCancelledError, Worker, distributed
from orbiter_sync.cli.entry import wants_gevent
from orbiter_sync.worker import WorkerSettings

SERIAL_SECONDS = 100.0  # 100 tasks of 1 s, one after the other
BOUND = 30.0  # generous: measured about 1.3 s on 2 cores


def agent(name: str) -> dict[str, str]:
    return {"entrypoint": f"sample_agents:{name}"}


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["start", "worker", "--pool", "gevent"], {}, True),
        (["-v", "start", "worker", "--pool=gevent"], {}, True),
        (["start", "worker"], {"ORBITER_POOL": "gevent"}, True),
        (["start", "worker", "--pool", "thread"], {"ORBITER_POOL": "gevent"}, False),
        (["start", "worker"], {}, False),
        (["task", "list", "--pool", "gevent"], {}, False),
        (["worker", "list"], {"ORBITER_POOL": "gevent"}, False),
    ],
)
def test_which_invocations_patch(argv: list[str], env: dict[str, str], expected: bool) -> None:
    assert wants_gevent(argv, env) is expected


def test_an_unpatched_process_refuses_the_gevent_pool(redis_url: str) -> None:
    # this pytest process was not patched by gevent
    with pytest.raises(ConfigurationError, match=r"monkey\.patch_all\(\)") as raised:
        Worker(redis_url, pool="gevent")
    assert "--pool gevent" in str(raised.value)
    with pytest.raises(ConfigurationError, match="patch_all"):
        WorkerSettings(pool="gevent")


def test_a_program_that_patches_first_may_use_the_gevent_pool(redis_url: str) -> None:
    # Given a program of our own that patches before it imports orbiter_sync
    program = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import sys, threading\n"
        "from orbiter_sync import Worker, distributed\n"
        "worker = Worker(sys.argv[1], pool='gevent', concurrency=20,"
        " allow_imports=['sample_agents'])\n"
        "threading.Thread(target=worker.start).start()\n"
        "handles = [distributed({'entrypoint': 'sample_agents:async_nap'}, '0.5',"
        " redis_url=sys.argv[1]) for _ in range(20)]\n"
        "print(sorted({h.result(timeout=30)['output'] for h in handles}))\n"
        "worker.stop(); worker.wait_stopped(10)\n"
    )

    # When it runs 20 async tasks
    done = subprocess.run(
        [sys.executable, "-c", program, redis_url], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(TESTS)}, cwd=ROOT,
    )  # fmt: skip

    # Then they all complete
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['napped']"


def run_hundred(redis_url: str, name: str) -> float:
    started = time.monotonic()
    handles = [distributed(agent(name), "1", redis_url=redis_url) for _ in range(100)]
    assert {h.result(timeout=90)["output"] for h in handles} == {"napped"}
    return time.monotonic() - started


@pytest.mark.parametrize("via", ["flag", "environment"])
def test_a_hundred_slots_overlap_sync_and_async_waits(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn, via: str
) -> None:
    # Given one gevent worker with 100 slots, chosen by flag or by ORBITER_POOL
    if via == "flag":
        spawn_worker(redis_url, "--concurrency", "100", worker_id="g1", pool="gevent")
    else:
        spawn_worker(redis_url, "--concurrency", "100", worker_id="g1", pool=None,
                     env={"ORBITER_POOL": "gevent"})  # fmt: skip
    assert r.hget("orbiter:workers:g1", "pool") == "gevent"

    # When it runs 100 tasks awaiting asyncio.sleep(1), then 100 calling time.sleep(1)
    async_seconds = run_hundred(redis_url, "async_nap")
    sync_seconds = run_hundred(redis_url, "nap")

    # Then each batch takes a small fraction of the 100 s a serial run would
    assert async_seconds < BOUND, async_seconds
    assert sync_seconds < BOUND, sync_seconds


def test_cancelling_one_greenlet_leaves_the_others_running(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    spawn_worker(redis_url, "--concurrency", "100", pool="gevent")
    victim = distributed(agent("sleepy"), "30", redis_url=redis_url)
    others = [distributed(agent("sleepy"), "3", redis_url=redis_url) for _ in range(50)]
    wait_for(lambda: r.hget(f"orbiter:task:{victim.task_id}", "status") == "running")

    cancelled_at = time.monotonic()
    assert victim.cancel()
    with pytest.raises(TaskCancelledError):
        victim.result(timeout=10)
    assert time.monotonic() - cancelled_at < 2.0

    assert {o.result(timeout=30)["output"] for o in others} == {"startedwoke up"}


def test_gevent_worker_stops_gracefully_on_sigterm(
    redis_url: str, r: redis.Redis, spawn_worker: Spawn
) -> None:
    worker = spawn_worker(redis_url, "--concurrency", "50", worker_id="g1", pool="gevent")
    handles = [distributed(agent("sleepy"), "1", redis_url=redis_url) for _ in range(20)]

    def running() -> int:
        ids = cast("str | None", r.hget("orbiter:workers:g1", "running_task_ids"))  # r decodes
        return len((ids or "").split(","))

    wait_for(lambda: running() > 10)

    worker.terminate()

    assert worker.wait(timeout=30) == 0
    assert {h.result(timeout=5)["output"] for h in handles} == {"startedwoke up"}
    assert not r.exists("orbiter:workers:g1")


def test_runs_stopped_from_the_heartbeats_os_thread_are_all_stopped() -> None:
    # Given a gevent process where an OS thread (the heartbeat's) logs and asks the hub
    # to stop runs, as it does for runs whose entries were taken over, while greenlets
    # log too
    program = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import logging, sys, gevent\n"
        "from orbiter_sync import native\n"
        "from orbiter_sync.control import RunControl, RunTracker\n"
        "from orbiter_sync.outcome import StopReason\n"
        "logging.basicConfig(level=logging.INFO, stream=open('/dev/null', 'w'))\n"
        "native.share_logging()  # what the worker does when it starts\n"
        "log, runs, in_hub, done = logging.getLogger('x'), RunTracker('w'),"
        " native.hub_caller(), native.Flag()\n"
        "controls = [RunControl(f't{n}', 'e') for n in range(900)]\n"
        "def beat():\n"
        "    for c in controls:\n"
        "        runs.track(c); log.warning('task %s taken over', c.task_id)\n"
        "        in_hub(lambda c=c: runs.stop(c.task_id, StopReason.LOST, entry_id='e'))\n"
        "        if int(c.task_id[1:]) % 3 == 2: native.sleep(0.002)\n"
        "    done.set()\n"
        "def chatty():\n"
        "    while not done.is_set(): log.info('slot'); gevent.sleep(0.001)\n"
        "gevent.spawn(chatty); native.start_thread(beat, 'hb')\n"
        "while not done.is_set(): gevent.sleep(0.05)\n"
        "gevent.sleep(0.5)\n"
        "print(sum(c.reason is None for c in controls))\n"
    )

    # When it runs, then every stop reaches its run (none is lost to a logging lock)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0", done.stderr[-2000:]
