"""``redis+cluster://`` URLs through connect(): real Redis Cluster nodes, no fakes.

One three-master cluster serves the tests that leave its topology alone; the failover test
has a replicated cluster of its own, and TLS, passwords and the CLI share one single-node
cluster that wants both.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import redis
from helpers import CLI, make_certificate, wait_for
from redis.exceptions import ClusterCrossSlotError, RedisClusterException
from test_connection import PASSWORDS, pieces

from orbiter_sync.connection import RetryPolicy, connect, is_cluster, is_transient, shared_client
from orbiter_sync.embedded import EmbeddedRedis, free_port
from orbiter_sync.embedded_cluster import BUS_PORT_OFFSET, EmbeddedCluster
from orbiter_sync.errors import ConfigurationError, RedisUnavailableError
from orbiter_sync.urls import is_cluster_url, mask_url, parse_cluster_url, resolve_redis_url

PASSWORD = "Qr1?St2#Uv3/Wx4@Yz5"  # every delimiter a URL has, unencoded


def node_client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port)


def cluster_node_port() -> int:
    """A free port whose cluster bus port, 10000 higher, is free too."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
            except (OSError, OverflowError):  # taken, or over 65535
                continue
        return port


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    """Three masters, no replicas, for the tests that do not change the topology."""
    with EmbeddedCluster(masters=3) as started:
        yield started


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A one-node cluster on TLS (self-signed) wanting PASSWORD, and a user ``orbiter``
    with the same password; yields its TLS port."""
    directory = tmp_path_factory.mktemp("tls-cluster")
    key, cert = make_certificate(directory)
    tls_port = cluster_node_port()  # with --tls-cluster, the bus is 10000 above the TLS port
    args = ("--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--tls-cluster", "yes",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(directory / "nodes.conf"))  # fmt: skip
    with EmbeddedRedis(extra_args=args) as server:
        plain: Any = redis.Redis(port=server.port, decode_responses=True)  # raw CLUSTER calls
        plain.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_for(lambda: "cluster_state:ok" in str(plain.execute_command("CLUSTER", "INFO")))
        # (the password comes last: EmbeddedRedis waits seconds for a server that wants one)
        plain.acl_setuser("orbiter", enabled=True, passwords=[f"+{PASSWORD}"],
                          keys=["*"], channels=["*"], commands=["+@all"])  # fmt: skip
        plain.config_set("requirepass", PASSWORD)
        plain.close()
        yield tls_port


# -- URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "hosts", "username", "password", "ssl", "cert_reqs"),
    [
        ("redis+cluster://h1:7000,h2:7001", (("h1", 7000), ("h2", 7001)), None, None, False, None),
        ("redis+cluster://h1,h2:7001/0", (("h1", 6379), ("h2", 7001)), None, None, False, None),
        ("redis+cluster://:pw@h1:7000/", (("h1", 7000),), None, "pw", False, None),
        ("redis+cluster://token@h1", (("h1", 6379),), "token", None, False, None),
        (
            "rediss+cluster://default:p@ss/w?x#y@h1:7000,h2?ssl_cert_reqs=NONE",
            (("h1", 7000), ("h2", 6379)), "default", "p@ss/w?x#y", True, "none",
        ),
        ("REDISS+CLUSTER://u:p%40x@[::1]:7000,[::2]", (("::1", 7000), ("::2", 6379)),
         "u", "p@x", True, None),
    ],
)  # fmt: skip
def test_cluster_url_parts(
    url: str,
    hosts: tuple[tuple[str, int], ...],
    username: str | None,
    password: str | None,
    ssl: bool,
    cert_reqs: str | None,
) -> None:
    parsed = parse_cluster_url(url)
    assert parsed.hosts == hosts
    assert (parsed.username, parsed.password) == (username, password)
    assert (parsed.ssl, parsed.ssl_cert_reqs) == (ssl, cert_reqs)
    assert is_cluster_url(url) and resolve_redis_url(url, {}) == url


def test_only_cluster_urls_are_cluster_urls() -> None:
    for url in ("redis://h:7000", "redis+sentinel://s1/m", "unix:///tmp/r.sock", "cluster://h"):
        assert not is_cluster_url(url)
    with pytest.raises(ConfigurationError, match=r"redis\+cluster://host1:port1,host2:port2"):
        resolve_redis_url("redis-cluster://:pw@h1", {})


CLUSTER_TEMPLATES = ["redis+cluster://:{pw}@127.0.0.1:7000,127.0.0.1:7001",
                     "rediss+cluster://user:{pw}@h1,h2:7001/0?ssl_cert_reqs=none"]  # fmt: skip


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("template", CLUSTER_TEMPLATES)
def test_a_password_of_any_shape_is_read_whole_and_masked(template: str, password: str) -> None:
    url = template.format(pw=password)
    parsed = parse_cluster_url(url)
    assert parsed.password == unquote(password)
    assert len(parsed.hosts) == 2
    masked = mask_url(url)
    assert masked == template.format(pw="***")
    for piece in {*pieces(password), *pieces(unquote(password))}:
        assert piece not in masked


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://:Xq7?Zk9@", "expected redis\\+cluster://host1:port1"),
        ("redis+cluster://", "expected redis\\+cluster://host1:port1"),
        ("redis+cluster://u:Ab3#Cd4@h1:70x0,h2", "bad cluster node address"),
        ("redis+cluster://:Ef5/Gh6@h1:0", "bad cluster node address"),
        ("rediss+cluster://:Ij7@Kl8@h1:70000", "bad cluster node address"),
        ("redis+cluster://:Mn9:Op0@h1:7000/3", "database 0 only"),
        ("redis+cluster://:Qr1?St2@h1/0/1", "database 0 only"),
        ("redis+cluster://:Uv3@h1?password=Wx4", "ssl_cert_reqs is its only query option"),
        ("rediss+cluster://:Yz5@h1?ssl_cert_reqs=maybe", "ssl_cert_reqs is one of none"),
    ],
)
def test_a_bad_cluster_url_is_refused_without_any_piece_of_its_password(url: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why) as info:
        connect(url)
    message = str(info.value)
    assert message.startswith(("bad cluster URL '", "bad cluster node address in '"))
    assert mask_url(url) in message
    secret = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
    for piece in pieces(secret) if secret else []:
        assert piece not in message, message


# -- connecting ------------------------------------------------------------------------------


def test_connect_gives_a_cluster_client_whose_keys_land_on_every_master(
    cluster: EmbeddedCluster,
) -> None:
    # Given a client from the cluster's URL
    client: Any = connect(cluster.startup_url)
    assert is_cluster(client) and not is_cluster(connect("redis://127.0.0.1:1/0"))
    # When it writes 60 keys, one of them bytes that are not UTF-8 (read as surrogates)
    for i in range(60):
        client.set(f"spread:{i}", i)
    client.set("raw", "\udcff\udcfe{")
    # Then each reads back, and every master holds some
    assert [client.get(f"spread:{i}") for i in range(60)] == [str(i) for i in range(60)]
    holders = {cluster.master_of(f"spread:{i}").port for i in range(60)}
    assert holders == {node.port for node in cluster.masters()}
    # and the node of a key holds it, the surrogates as the very bytes they stand for
    assert node_client(cluster.master_of("spread:7").port).get("spread:7") == b"7"
    assert node_client(cluster.master_of("raw").port).get("raw") == b"\xff\xfe{"
    client.close()


def test_a_client_first_used_by_many_threads_at_once_serves_them_all(
    cluster: EmbeddedCluster,
) -> None:
    # Given a client not used yet (it reads the cluster's layout at its first command)
    client = connect(cluster.startup_url)
    # When 16 threads use it at the same moment
    with ThreadPoolExecutor(16) as pool:
        done = list(pool.map(lambda i: client.set(f"thread:{i}", i), range(16)))
    # Then every call is served
    assert done == [True] * 16
    assert [client.get(f"thread:{i}") for i in range(16)] == [str(i) for i in range(16)]
    client.close()


@pytest.mark.parametrize("variable", ["ORBITER_REDIS_URL", "REDIS_URL"])
def test_a_cluster_url_in_the_environment_is_used(
    cluster: EmbeddedCluster, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.delenv("ORBITER_REDIS_URL", raising=False)
    monkeypatch.setenv(variable, cluster.startup_url)
    client = connect(None)
    assert is_cluster(client)
    assert client.set(f"from:{variable}", "1") and client.get(f"from:{variable}") == "1"
    client.close()
    # and shared_client gives every caller of one URL the one cluster client
    shared = shared_client(cluster.startup_url)
    assert is_cluster(shared) and shared is shared_client(cluster.startup_url)
    assert shared.get(f"from:{variable}") == "1"


def test_a_cluster_that_is_down_is_waited_for_until_the_deadline() -> None:
    # Given a client of nodes that do not listen: connect() itself opens nothing
    client = connect(f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}")
    # When a call goes through a short policy, Then it is retried, and gives up on time
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match="unreachable after retrying for 0.5s"):
        RetryPolicy(deadline=0.5).call(client.get, "k")
    assert 0.5 <= time.monotonic() - started < 1.5


def test_a_cluster_url_to_a_standalone_redis_is_a_configuration_error(redis_url: str) -> None:
    port = redis_url.rpartition(":")[2].partition("/")[0]
    client = connect(f"redis+cluster://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="cluster mode is off"):
        RetryPolicy(deadline=5).call(client.ping)
    assert time.monotonic() - started < 1


def test_tls_a_password_and_a_user(secured: int, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"rediss+cluster://:{PASSWORD}@127.0.0.1:{secured}?ssl_cert_reqs=none"
    client = connect(url)
    assert client.set("tls", "1") and client.get("tls") == "1"
    as_user = connect(
        f"rediss+cluster://orbiter:{PASSWORD}@127.0.0.1:{secured}/0?ssl_cert_reqs=none"
    )
    assert as_user.get("tls") == "1"
    # a wrong password is refused at once, as by a standalone Redis
    wrong = connect(f"rediss+cluster://:nope@127.0.0.1:{secured}?ssl_cert_reqs=none")
    started = time.monotonic()
    with pytest.raises(redis.AuthenticationError):
        RetryPolicy(deadline=5).call(wrong.get, "tls")
    assert time.monotonic() - started < 1
    # the self-signed certificate is refused unless the URL or the environment says none
    strict = connect(f"rediss+cluster://:{PASSWORD}@127.0.0.1:{secured}")
    with pytest.raises(RedisUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
        RetryPolicy(deadline=0.3).call(strict.get, "tls")
    monkeypatch.setenv("ORBITER_REDIS_SSL_CERT_REQS", "none")
    assert connect(f"rediss+cluster://:{PASSWORD}@127.0.0.1:{secured}").get("tls") == "1"
    for each in (client, as_user, wrong, strict):
        each.close()


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_the_cli_never_shows_a_cluster_password(secured: int, tmp_path: Path) -> None:
    # Given a cluster URL whose password holds every delimiter, to a live cluster and a dead one
    urls = {
        "live": f"rediss+cluster://:{PASSWORD}@127.0.0.1:{secured}?ssl_cert_reqs=none",
        "dead": f"redis+cluster://u:{PASSWORD}@127.0.0.1:{free_port()},127.0.0.1:{free_port()}",
    }
    env = {"PATH": str(Path(CLI).parent) + ":/usr/bin:/bin", "HOME": "/tmp"}
    # When `worker list` and `start worker` run on each
    commands = {"list": ["worker", "list"], "worker": ["start", "worker", "--concurrency", "1"]}
    logs = {(u, c): tmp_path / f"{u}-{c}.log" for u in urls for c in commands}
    runs = {(u, c): spawn([CLI, *commands[c], "--redis-url", urls[u]], env, log)
            for (u, c), log in logs.items()}  # fmt: skip
    # (a worker runs until stopped: once it has shown its banner or a retry, it has said enough)
    for run, said in ((("live", "worker"), "imports:"), (("dead", "worker"), "retry 1")):
        wait_for(lambda: said in logs[run].read_text(), timeout=10)  # noqa: B023
        runs[run].send_signal(signal.SIGKILL)
    for process in runs.values():
        process.wait(timeout=10)  # `worker list` ends within the CLI's 5 s budget
    # Then the live worker shows its URL masked, and no piece of the password shows anywhere
    outputs = {run: log.read_text() for run, log in logs.items()}
    masked = f"rediss+cluster://:***@127.0.0.1:{secured}?ssl_cert_reqs=none"
    assert masked in outputs["live", "worker"]
    assert "unreachable after retrying" in outputs["dead", "list"]
    for output in outputs.values():
        for piece in pieces(PASSWORD):
            assert piece not in output, (piece, output)


# -- retrying --------------------------------------------------------------------------------


def test_cross_slot_calls_are_raised_at_once(cluster: EmbeddedCluster) -> None:
    client: Any = connect(cluster.startup_url)
    calls: list[str] = []

    def counted(name: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return getattr(client, name)(*args, **kwargs)

    policy = RetryPolicy(deadline=5)
    started = time.monotonic()
    # refused by redis-py (not a RedisError), and by the node itself (CROSSSLOT)
    with pytest.raises(RedisClusterException, match="same key slot"):
        policy.call(counted, "mget", "a", "b")
    with pytest.raises(RedisClusterException, match="same key slot"):
        policy.call(counted, "eval", "return redis.call('get', KEYS[2])", 2, "a", "b")
    node = client.get_node_from_key("a")
    with pytest.raises(ClusterCrossSlotError):
        policy.call(counted, "execute_command", "MGET", "a", "b", target_nodes=node)
    assert calls == ["mget", "eval", "execute_command"]
    assert time.monotonic() - started < 1
    assert client.mget("{t}a", "{t}b") == [None, None]  # one slot: fine
    client.close()


def caused(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (redis.exceptions.ClusterError("TTL exhausted."), True),
        (redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"), True),
        (redis.exceptions.SlotNotCoveredError('Slot "7" not covered by the cluster.'), True),
        (redis.exceptions.MaxConnectionsError("Too many connections"), True),
        (RedisClusterException("All slots are not covered after query all startup_nodes."), True),
        (caused(RedisClusterException("Redis Cluster cannot be connected. Please ..."),
                redis.ConnectionError("Error 111 connecting")), True),
        (caused(RedisClusterException("Redis Cluster cannot be connected. Please ..."),
                redis.AuthenticationError("invalid username-password pair")), False),
        (RedisClusterException("MGET - all keys must map to the same key slot"), False),
        (ClusterCrossSlotError("Keys in request don't hash to the same slot"), False),
    ],
)  # fmt: skip
def test_which_cluster_failures_are_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


@pytest.fixture
def replicated() -> Iterator[EmbeddedCluster]:
    """Three masters with a replica each, of this test's own: its topology will change."""
    with EmbeddedCluster(masters=3, replicas_per_master=1) as started:
        yield started


def test_a_client_keeps_writing_when_a_master_is_killed(replicated: EmbeddedCluster) -> None:
    # Given a client that wrote a key, and the key's master and replica
    client = connect(replicated.startup_url)
    client.set("{t}a", "before")
    old = replicated.master_of("{t}a")
    (replica,) = replicated.replicas(of=old)
    # When the master crashes, and the same client writes at once through the policy
    started = time.monotonic()
    replicated.kill(old)
    assert RetryPolicy(deadline=20).call(client.set, "{t}a", "after")
    # Then the write succeeds once the replica has taken over, and lands on it
    assert time.monotonic() - started < 15
    replicated.wait_ok(timeout=15)
    assert replicated.master_of("{t}a") is replica
    assert node_client(replica.port).get("{t}a") == b"after"
    assert client.get("{t}a") == "after"
    # When every node is dead, Then a call gives up at the policy's deadline
    for node in replicated.nodes:
        replicated.kill(node)
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match="unreachable after retrying for 1s"):
        RetryPolicy(deadline=1).call(client.get, "{t}a")
    assert 1 <= time.monotonic() - started < 3
    client.close()
