"""The private Redis Cluster of the tests and benchmarks: real redis-server processes.

These tests also pin down what redis-py's cluster client does with what orbiter-sync needs
in cluster mode (issue 16): scripts only on keys of one slot, sharded pub/sub, following a
failover. The client uses redis-py's defaults: it follows MOVED by itself, and retries a
ConnectionError at once after reloading the topology (no backoff), so during a takeover
its commands fail until the replica has been elected; the tests wait for that first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from orbiter_sync.embedded_cluster import EmbeddedCluster, redis_server_version
from orbiter_sync.errors import EmbeddedRedisError

TAGGED_SCRIPT = """
redis.call('set', KEYS[1], ARGV[1])
redis.call('set', KEYS[2], ARGV[1])
return redis.call('mget', KEYS[1], KEYS[2])
"""


def client_for(cluster: EmbeddedCluster) -> RedisCluster:
    nodes = [ClusterNode(host, port) for host, port in cluster.startup_nodes]  # type: ignore[no-untyped-call]
    return RedisCluster(startup_nodes=nodes, decode_responses=True)


def node_client(node_port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=node_port, decode_responses=True)


def assert_gone(pids: list[int]) -> None:
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    """Three masters, no replicas, shared by the tests that do not change the topology."""
    with EmbeddedCluster(masters=3) as started:
        yield started


@pytest.fixture
def rc(cluster: EmbeddedCluster) -> Iterator[RedisCluster]:
    client = client_for(cluster)
    yield client
    client.close()


def test_keys_spread_over_every_master(cluster: EmbeddedCluster, rc: RedisCluster) -> None:
    # Given a cluster of three masters
    ports = [port for _, port in cluster.startup_nodes]
    assert cluster.startup_url == "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    assert len(cluster.masters()) == 3 and cluster.replicas() == []
    # When 100 keys are written through the cluster client
    for i in range(100):
        rc.set(f"spread:{i}", i)
    # Then each reads back, from the master master_of names, and every master holds some
    assert [rc.get(f"spread:{i}") for i in range(100)] == [str(i) for i in range(100)]
    holders = {cluster.master_of(f"spread:{i}").port for i in range(100)}
    assert holders == {node.port for node in cluster.masters()}
    for i in range(0, 100, 10):
        key = f"spread:{i}"
        assert node_client(cluster.master_of(key).port).get(key) == str(i)


def test_a_script_takes_keys_of_one_slot_only(cluster: EmbeddedCluster, rc: RedisCluster) -> None:
    # Given a script that touches two keys
    script = rc.register_script(TAGGED_SCRIPT)
    # When its keys share a hash tag, Then it runs
    assert script(keys=["{t}a", "{t}b"], args=["v"]) == ["v", "v"]
    # When they do not, Then redis-py refuses to send it (an Exception, not a RedisError)
    with pytest.raises(RedisClusterException, match="same key slot"):
        script(keys=["a", "b"], args=["v"])
    assert not issubclass(RedisClusterException, redis.RedisError)
    # and the node refuses it too, with CROSSSLOT
    with pytest.raises(ClusterCrossSlotError):
        node_client(cluster.master_of("a").port).eval(TAGGED_SCRIPT, 2, "a", "b", "v")


def test_sharded_pubsub_delivers_on_the_channels_master(
    cluster: EmbeddedCluster, rc: RedisCluster
) -> None:
    if redis_server_version() < (7, 0):
        pytest.skip("sharded pub/sub (SPUBLISH/SSUBSCRIBE) needs redis-server 7.0 or later")
    # Given a sharded subscriber
    pubsub = rc.pubsub()  # type: ignore[no-untyped-call]
    pubsub.ssubscribe("{t}events")
    confirmed = pubsub.get_sharded_message(timeout=5)
    assert confirmed is not None and confirmed["type"] == "ssubscribe"
    # on the master of the channel's slot
    master = node_client(cluster.master_of("{t}events").port)
    assert master.pubsub_shardnumsub("{t}events") == [("{t}events", 1)]
    # When a message is published on that channel
    assert rc.spublish("{t}events", "hello") == 1
    # Then the subscriber receives it
    message = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=5)
    assert message is not None and (message["type"], message["data"]) == ("smessage", "hello")
    pubsub.close()


@pytest.fixture
def replicated() -> Iterator[EmbeddedCluster]:
    """Three masters with a replica each, of this test's own: its topology will change."""
    with EmbeddedCluster(masters=3, replicas_per_master=1) as started:
        yield started


def test_failover_promotes_the_replica_and_the_client_follows(
    replicated: EmbeddedCluster,
) -> None:
    # Given a client that wrote a key and ran a script on its master
    rc = client_for(replicated)
    rc.set("{t}a", "before")
    counter = rc.register_script("return redis.call('incr', KEYS[1])")
    assert counter(keys=["{t}n"]) == 1
    old = replicated.master_of("{t}a")
    (replica,) = replicated.replicas(of=old)
    # When its replica is failed over
    replicated.failover(replica)
    # Then the replica serves the slot, the old master follows it
    assert replicated.master_of("{t}a") is replica
    assert replicated.replicas(of=replica) == [old]
    assert len(replicated.masters()) == 3
    # and the same client reads, writes and runs the script (the new master's script
    # cache is empty: redis-py loads the script again on NOSCRIPT)
    assert rc.get("{t}a") == "before"
    rc.set("{t}a", "after")
    assert rc.get("{t}a") == "after"
    assert counter(keys=["{t}n"]) == 2
    rc.close()


def test_a_killed_master_is_replaced_by_its_replica(replicated: EmbeddedCluster) -> None:
    # Given a write that the master's replica acknowledged (WAIT)
    rc = client_for(replicated)
    rc.set("{t}a", "kept")
    old = replicated.master_of("{t}a")
    (replica,) = replicated.replicas(of=old)
    assert node_client(old.port).wait(1, 5000) == 1
    # When the master crashes
    started = time.monotonic()
    replicated.kill(old)
    # Then within a few node timeouts its replica serves the slot and the cluster is ok
    replicated.wait_ok(timeout=15)
    assert time.monotonic() - started < 10
    assert replicated.master_of("{t}a") is replica
    assert not old.running and old not in replicated.masters()
    # and the same client reads the write (its first try fails over to a fresh topology)
    assert rc.get("{t}a") == "kept"
    # When the old master comes back, Then it rejoins as the replica of the new one
    old.start()
    replicated.wait_ok(timeout=15)
    assert replicated.replicas(of=replica) == [old]
    rc.close()
    # When the cluster is closed, Then every process it started is gone
    pids = [node.process.pid for node in replicated.nodes if node.process]
    assert len(pids) == 6
    replicated.close()
    assert_gone(pids)
    assert not replicated.directory.exists()


def test_a_one_master_cluster_works_and_close_leaves_nothing() -> None:
    # Given a cluster of one master (formed by hand: redis-cli wants three)
    cluster = EmbeddedCluster(masters=1)
    with cluster:
        rc = client_for(cluster)
        rc.set("solo", "1")
        assert rc.get("solo") == "1"
        rc.close()
        pids = [node.process.pid for node in cluster.nodes if node.process]
        assert len(pids) == 1
        # When its only master crashes, Then it never gets ok, and the error says why
        cluster.kill(cluster.nodes[0])
        with pytest.raises(EmbeddedRedisError, match=r"no node is running; logs: node \d+: "):
            cluster.wait_ok(timeout=0.2)
    # When it is closed, Then no process and no directory is left
    assert_gone(pids)
    assert not cluster.directory.exists()
