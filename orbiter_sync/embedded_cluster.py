"""A private Redis Cluster on free ports, for the tests and the benchmarks.

:class:`EmbeddedCluster` starts ``masters * (1 + replicas_per_master)``
:class:`~orbiter_sync.embedded.EmbeddedRedis` nodes with cluster mode on, joins them with
``redis-cli --cluster create`` and waits until every slot is served. Who is master of what is
read live from each node's own line of ``CLUSTER NODES``, because a failover changes it.
Every process is one this object started and is stopped by its PID; nothing here talks to a
server it did not start.

The node timeout is :data:`NODE_TIMEOUT_MS` (1 s; production's default is 15 s). A master
silent for that long is flagged as failing, and its replica is elected within about two
node timeouts, so a crash-and-takeover test takes seconds. Under heavy load (a benchmark on
two cores) a stall that long would trigger a failover nobody asked for: pass a larger
``node_timeout_ms`` there.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.crc import key_slot

from orbiter_sync.embedded import EmbeddedRedis, free_port, redis_server_binary
from orbiter_sync.errors import EmbeddedRedisError

NODE_TIMEOUT_MS = 1000
SLOTS = 16384
BUS_PORT_OFFSET = 10000  # a node's cluster bus listens on its port + 10000
CLUSTER_SCHEME = "redis+cluster"

CLI_HINT = (
    "redis-cli was found neither beside redis-server nor on PATH; it ships with Redis "
    "(Debian/Ubuntu: apt-get install redis-tools, macOS: brew install redis)"
)

# What each node is told on top of EmbeddedRedis's command line, and why:
# - a replica may always stand for election, however long it has been out of touch
#   (the default refuses after ten node timeouts, which is a blink here);
# - a replica syncs at once instead of waiting 5 s for other replicas to share the transfer.
_NODE_ARGS = (
    "--cluster-enabled", "yes",
    "--cluster-replica-validity-factor", "0",
    "--repl-diskless-sync-delay", "0",
)  # fmt: skip


def redis_cli_binary() -> str:
    """``redis-cli`` from the directory of ``redis-server``, else from PATH."""
    beside = Path(redis_server_binary()).with_name("redis-cli")
    if beside.is_file():
        return str(beside)
    found = shutil.which("redis-cli")
    if found is None:
        raise EmbeddedRedisError(CLI_HINT)
    return found


def redis_server_version() -> tuple[int, ...]:
    """The version of ``redis-server``, as ``(7, 0, 15)``."""
    out = subprocess.run(
        [redis_server_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"v=(\d+(?:\.\d+)*)", out)
    if match is None:
        raise EmbeddedRedisError(f"cannot read the version of redis-server from {out!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _node_port(taken: set[int]) -> int:
    """A free port whose bus port is free too, distinct from every port in ``taken``."""
    for _ in range(100):
        port = free_port()
        bus = port + BUS_PORT_OFFSET
        if taken.isdisjoint((port, bus)) and bus <= 65535 and _bindable(bus):
            taken.update((port, bus))
            return port
    raise EmbeddedRedisError("found no free port pair (port, port + 10000) for a cluster node")


@dataclass(frozen=True)
class _Node:
    """One line of ``CLUSTER NODES``: a node as some node (maybe itself) sees it."""

    node_id: str
    port: int
    is_master: bool
    master_id: str | None  # a replica's master
    slots: tuple[tuple[int, int], ...]  # the inclusive slot ranges a master serves

    def serves(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def _parse_nodes(text: str) -> tuple[_Node, dict[str, _Node]]:
    """The ``myself`` line, and every line by node id."""
    lines, myself = {}, None
    for line in text.splitlines():
        fields = line.split()
        flags = fields[2].split(",")
        ranges = [s.partition("-") for s in fields[8:] if not s.startswith("[")]  # [migrating]
        node = _Node(
            node_id=fields[0],
            port=int(fields[1].partition("@")[0].rpartition(":")[2]),
            is_master="master" in flags,
            master_id=None if fields[3] == "-" else fields[3],
            slots=tuple((int(first), int(last or first)) for first, _, last in ranges),
        )
        lines[node.node_id] = node
        myself = node if "myself" in flags else myself
    if myself is None:
        raise EmbeddedRedisError(f"no 'myself' line in CLUSTER NODES: {text!r}")
    return myself, lines


class EmbeddedCluster:
    """A Redis Cluster of private redis-server processes in one temporary directory.

    ``masters`` masters share the 16384 slots; each has ``replicas_per_master`` replicas.
    ``appendonly=True`` turns AOF on in every node. :meth:`start` (or ``with``) forms the
    cluster and returns once it is ok; :meth:`close` stops every process and removes the
    directory. A crashed master is replaced only if most masters are alive to vote, so
    with fewer than three masters only :meth:`failover` promotes a replica.
    """

    def __init__(
        self,
        masters: int = 3,
        replicas_per_master: int = 0,
        appendonly: bool = False,
        *,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
    ) -> None:
        if masters < 1 or replicas_per_master < 0:
            raise EmbeddedRedisError(
                f"no cluster of {masters} masters, {replicas_per_master} replicas"
            )
        self.masters_count = masters
        self.replicas_per_master = replicas_per_master
        self.node_timeout_ms = node_timeout_ms
        self.directory = Path(tempfile.mkdtemp(prefix="orbiter-cluster-"))
        taken: set[int] = set()
        self.nodes: list[EmbeddedRedis] = []
        for _ in range(masters * (1 + replicas_per_master)):
            port = _node_port(taken)
            node_dir = self.directory / f"node-{port}"
            node_dir.mkdir()
            cluster_args = (
                *_NODE_ARGS,
                "--cluster-config-file", str(node_dir / f"nodes-{port}.conf"),
                "--cluster-node-timeout", str(node_timeout_ms),
            )  # fmt: skip
            self.nodes.append(
                EmbeddedRedis(
                    port=port,
                    appendonly=appendonly,
                    extra_args=cluster_args,
                    directory=str(node_dir),
                )
            )
        self._probes: dict[int, redis.Redis] = {}
        self._started = False

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """Every node's ``(host, port)``; a client needs any one of them to find the rest."""
        return [("127.0.0.1", node.port) for node in self.nodes]

    @property
    def startup_url(self) -> str:
        """``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...``, every node listed."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.startup_nodes)
        return f"{CLUSTER_SCHEME}://{hosts}"

    # -- life cycle ------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> EmbeddedCluster:
        """Start every node, form the cluster and wait until it is ok."""
        if self._started:
            return self
        self._started = True
        try:
            for node in self.nodes:
                node.start()
            if self.masters_count >= 3:
                self._create()
            else:
                self._create_by_hand(time.monotonic() + timeout)
            self.wait_ok(timeout)
        except BaseException:
            self.close()  # the error already carries the log tails
            raise
        return self

    def _create(self) -> None:
        command = [
            redis_cli_binary(),
            "--cluster", "create",
            *(f"{host}:{port}" for host, port in self.startup_nodes),
            "--cluster-replicas", str(self.replicas_per_master),
            "--cluster-yes",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedRedisError(f"redis-cli --cluster create hung; {self._logs()}") from exc
        if done.returncode != 0:
            output = " | ".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise EmbeddedRedisError(
                f"redis-cli --cluster create exited with {done.returncode}: {output}; "
                f"{self._logs()}"
            )

    def _create_by_hand(self, deadline: float) -> None:
        """What ``--cluster create`` does, for the one or two masters redis-cli refuses."""
        masters = self.nodes[: self.masters_count]
        bounds = [SLOTS * i // len(masters) for i in range(len(masters) + 1)]
        for node, first, end in zip(masters, bounds, bounds[1:], strict=False):
            self._cluster(node, "ADDSLOTS", *range(first, end))
        for node in self.nodes[1:]:
            self._cluster(node, "MEET", "127.0.0.1", self.nodes[0].port)
        for i, replica in enumerate(self.nodes[self.masters_count :]):
            master_id = self._myself(masters[i % len(masters)]).node_id
            self._wait(partial(self._unknown, replica, master_id), deadline, "CLUSTER MEET")
            self._cluster(replica, "REPLICATE", master_id)

    def _unknown(self, node: EmbeddedRedis, node_id: str) -> str | None:
        known = _parse_nodes(str(self._cluster(node, "NODES")))[1]
        return None if node_id in known else f"node {node.port} does not know {node_id} yet"

    def close(self) -> None:
        """Stop every node by its PID and remove the cluster's directory."""
        for probe in self._probes.values():
            probe.close()
        self._probes.clear()
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self, node: EmbeddedRedis) -> None:
        """SIGKILL one node, as a crash would; its replica takes over after the node timeout.
        ``node.start()`` brings it back, as a replica of whoever took over."""
        node.kill()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- topology, as the running nodes report it now -----------------------------------

    def masters(self) -> list[EmbeddedRedis]:
        """The running nodes that call themselves masters."""
        return [node for node in self._running() if self._myself(node).is_master]

    def replicas(self, of: EmbeddedRedis | None = None) -> list[EmbeddedRedis]:
        """The running replicas (of the master ``of``, if given)."""
        master_id = None if of is None else self._myself(of).node_id
        selves = [(node, self._myself(node)) for node in self._running()]
        return [n for n, me in selves if not me.is_master and master_id in (None, me.master_id)]

    def master_of(self, key: str | bytes) -> EmbeddedRedis:
        """The running master that serves ``key``'s slot now."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        for node in self.masters():
            if self._myself(node).serves(slot):
                return node
        raise EmbeddedRedisError(
            f"no running master serves slot {slot} (after a failover or a kill, wait_ok first)"
        )

    def failover(self, replica: EmbeddedRedis, timeout: float = 15.0) -> None:
        """Promote ``replica`` with ``CLUSTER FAILOVER`` (its master agreeing), then wait
        until it calls itself master and the cluster is ok."""
        if self._myself(replica).is_master:
            raise EmbeddedRedisError(f"node {replica.port} is a master, not a replica")
        deadline = time.monotonic() + timeout
        self._cluster(replica, "FAILOVER")
        self._wait(
            lambda: None if self._myself(replica).is_master else "the replica is not master yet",
            deadline,
            f"CLUSTER FAILOVER on node {replica.port}",
        )
        self.wait_ok(deadline - time.monotonic())

    # -- waiting -----------------------------------------------------------------------

    def wait_ok(self, timeout: float = 15.0) -> None:
        """Wait until every running node says ``cluster_state:ok`` with all slots served,
        they all agree on who is master or replica of whom and serves which slots, and
        every running replica's link is up. Raises with the nodes' log tails otherwise."""
        self._wait(self._not_ok, time.monotonic() + timeout, "cluster ok")

    def _wait(self, not_yet: Callable[[], str | None], deadline: float, what: str) -> None:
        reason = "not checked"
        while True:
            try:
                found = not_yet()
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
                found = f"{type(exc).__name__}: {exc}"
            if found is None:
                return
            reason = found
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(f"timed out waiting for {what}: {reason}; {self._logs()}")
            time.sleep(0.05)

    def _not_ok(self) -> str | None:
        """Why the cluster is not ok yet, or None when it is."""
        running = self._running()
        if not running:
            return "no node is running"
        views = {node.port: _parse_nodes(str(self._cluster(node, "NODES"))) for node in running}
        selves = {myself.node_id: myself for myself, _ in views.values()}
        for node in running:
            info = self._cluster_info(node)
            for field, wanted in (
                ("cluster_state", "ok"),
                ("cluster_slots_ok", str(SLOTS)),
                ("cluster_known_nodes", str(len(self.nodes))),
            ):
                if info.get(field) != wanted:
                    return f"node {node.port}: {field} is {info.get(field)}, not {wanted}"
            # Each node must see every running node as that node sees itself (a master
            # must know its replica before CLUSTER FAILOVER can work) and give no slot
            # to a stopped node.
            lines = views[node.port][1]
            for line in lines.values():
                own = selves.get(line.node_id)
                if line != own and (own is not None or line.slots):
                    return f"node {node.port} has a stale view of node {line.port}"
            if not selves.keys() <= lines.keys():
                return f"node {node.port} does not know every running node yet"
            replication = self._probe(node).info("replication")
            if replication["role"] != "master" and replication["master_link_status"] != "up":
                return f"replica {node.port}: the link to its master is not up"
        return None

    # -- probes ------------------------------------------------------------------------

    def _running(self) -> list[EmbeddedRedis]:
        return [node for node in self.nodes if node.running]

    def _probe(self, node: EmbeddedRedis) -> redis.Redis:
        if node.port not in self._probes:
            self._probes[node.port] = redis.Redis(
                host="127.0.0.1",
                port=node.port,
                decode_responses=True,
                socket_connect_timeout=0.5,
                socket_timeout=2.0,
            )
        return self._probes[node.port]

    def _cluster(self, node: EmbeddedRedis, *args: object) -> Any:
        """``CLUSTER <args>`` on ``node``; the reply as Redis sent it, unparsed by redis-py."""
        probe: Any = self._probe(node)
        return probe.execute_command("CLUSTER", *args)

    def _myself(self, node: EmbeddedRedis) -> _Node:
        return _parse_nodes(str(self._cluster(node, "NODES")))[0]

    def _cluster_info(self, node: EmbeddedRedis) -> dict[str, str]:
        text = str(self._cluster(node, "INFO"))
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def _logs(self) -> str:
        return "logs: " + " || ".join(
            f"node {node.port}: {node.log_tail() or '(empty)'}" for node in self.nodes
        )
