"""The key layout (layout.py) and the deployment's shard count (shards.py)."""

from __future__ import annotations

import pytest
import redis
from helpers import Spawn, log_of
from hypothesis import given, settings
from hypothesis import strategies as st

from orbiter_sync import keys
from orbiter_sync.errors import ConfigurationError
from orbiter_sync.layout import CLUSTER_SLOTS, STANDALONE, KeyLayout, key_slot, shard_tag
from orbiter_sync.queue import QueueSettings
from orbiter_sync.shards import layout_of, shards_from_env

ids = st.text(min_size=1, max_size=40)


@given(task_id=ids, queue=ids, worker=ids)
def test_standalone_names_are_exactly_the_wire_contract(
    task_id: str, queue: str, worker: str
) -> None:
    s = QueueSettings(queue)
    assert s.task_keys(task_id) == [queue, keys.task_hash(task_id), keys.task_index(),
                                    keys.event_stream(task_id)]  # fmt: skip
    assert s.delayed_key == keys.delayed_retries(queue) and s.stream == queue
    assert s.dead_letter_key == keys.dead_letters(queue) and s.counts_key == keys.fleet_counts(
        queue
    )
    assert s.event_channel(task_id) == keys.event_channel(task_id)
    assert STANDALONE.cancel_channel(task_id) == keys.cancel_channel(task_id)
    assert STANDALONE.worker_heartbeat(worker) == keys.worker_heartbeat(worker)
    assert STANDALONE.worker_record(worker) == keys.worker_record(worker)
    assert STANDALONE.worker_registry == keys.WORKER_REGISTRY
    assert STANDALONE.shard_of(task_id) == 0


@settings(max_examples=300)
@given(task_id=ids, queue=ids, shards=st.integers(1, 64))
def test_every_key_a_script_touches_shares_its_tasks_slot(
    task_id: str, queue: str, shards: int
) -> None:
    layout = KeyLayout(cluster=True, shards=shards)
    s = QueueSettings(queue, layout=layout).for_task(task_id)
    assert 0 <= s.shard < shards and not s.misplaced(task_id)
    names = [*s.task_keys(task_id), s.delayed_key, s.dead_letter_key, *s.counts_keys(0.0),
             s.event_channel(task_id), layout.cancel_channel(task_id)]  # fmt: skip
    assert {key_slot(name) for name in names} == {key_slot(s.layout.tag(s.shard))}
    assert layout.task_hash(task_id) == s.task_key(task_id)  # found from the id alone
    workers = [layout.worker_heartbeat(task_id), layout.worker_record(task_id),
               layout.worker_registry]  # fmt: skip
    assert len({key_slot(name) for name in workers}) == 1


@given(shards=st.integers(1, 128))
def test_shard_tags_fall_into_their_share_of_the_slots(shards: int) -> None:
    width = CLUSTER_SLOTS / shards
    for shard in range(shards):
        slot = key_slot(shard_tag(shard, shards))
        assert shard * width <= slot < (shard + 1) * width


def test_a_misplaced_task_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    layout = KeyLayout(cluster=True, shards=3)
    task_id = next(str(n) for n in range(100) if layout.shard_of(str(n)) == 2)
    s = QueueSettings("q", layout=layout)
    assert s.misplaced(task_id) == f"task id {task_id!r} belongs to shard 2, not q#0"


@pytest.mark.parametrize("raw", ["0", "x", "-1", "2000", "1.5", "²", "١٢", "9" * 5000])
def test_a_bad_shard_count_in_the_environment_is_refused(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="ORBITER_QUEUE_SHARDS must be a whole number"):
        shards_from_env({"ORBITER_QUEUE_SHARDS": raw})
    assert shards_from_env({}) is None


def test_shards_need_a_cluster(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    # One server: one shard, the wire names, nothing recorded
    assert layout_of(r, record=True) is STANDALONE and layout_of(r, 1) is STANDALONE
    with pytest.raises(ConfigurationError, match=r"queue shards \(3\) need a Redis Cluster"):
        layout_of(r, 3)
    monkeypatch.setenv("ORBITER_QUEUE_SHARDS", "2")
    with pytest.raises(ConfigurationError, match="need a Redis Cluster"):
        layout_of(r)
    assert r.keys("*") == []


def test_a_worker_with_shards_on_one_server_exits_with_the_reason(
    redis_url: str, spawn_worker: Spawn
) -> None:
    worker = spawn_worker(redis_url, "--queue-shards", "3", may_die=True)
    assert worker.wait(timeout=15) == 2
    assert "queue shards (3) need a Redis Cluster: use a redis+cluster:// URL" in log_of(worker)
