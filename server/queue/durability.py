"""What a 202 is worth on this Redis: its AOF, fsync and eviction settings, judged.

A 202 promises that the points are in Redis and, with ``appendfsync always``,
on its disk.  That promise rests on Redis's own configuration, which an
external ``REDIS_URL`` may not share: without the AOF a restart loses every
queued point, and an evicting ``maxmemory-policy`` drops queued points silently
when Redis fills up.  Start-up reads the settings (``CONFIG GET``): with
``PROD=true`` an unsafe Redis is refused, otherwise each problem is logged.
``/ready`` shows what is in force.

A managed Redis may refuse ``CONFIG`` altogether (renamed or disabled): then
nothing can be read, and PROD refuses it too, unless the operator vouches
(``REDIS_DURABILITY_VOUCHED=true``) that it runs with the AOF on and
``noeviction``.  The vouch stands only for what cannot be read: a Redis whose
settings can be read is judged on them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from server.errors import CommandRefused
from server.redis_client import translated_errors


@dataclass(frozen=True)
class Durability:
    appendonly: str | None  # None: CONFIG GET refused (a managed Redis may rename it)
    appendfsync: str | None
    maxmemory_policy: str | None
    maxmemory: int | None
    vouched: bool = False  # REDIS_DURABILITY_VOUCHED: stands for what cannot be read

    def problems(self, fsync: str | None = None) -> list[str]:
        """Why a 202 on this Redis could be lost, or be worth less than ``fsync``
        (QUEUE_FSYNC) says; empty when it cannot."""
        if self.appendonly is None:
            if self.vouched:
                return []
            return ["cannot read Redis's configuration (CONFIG GET is refused), so what "
                    "a 202 is worth is unknown (if this Redis runs with appendonly yes and "
                    "maxmemory-policy noeviction, say so: REDIS_DURABILITY_VOUCHED=true)"]
        found = []
        if fsync == "always" and self.appendonly == "yes" and self.appendfsync != "always":
            found.append(f"appendfsync is {self.appendfsync!r} but QUEUE_FSYNC=always: a 202 "
                         "would not be on disk (set appendfsync always, or QUEUE_FSYNC="
                         "everysec to accept that)")
        if self.appendonly != "yes":
            found.append("appendonly is 'no': queued points live only in memory and a "
                         "Redis restart loses them (set appendonly yes)")
        if self.maxmemory_policy != "noeviction":
            found.append(f"maxmemory-policy is {self.maxmemory_policy!r}: a full Redis may "
                         "evict queued points (set maxmemory-policy noeviction)")
        return found

    def promise(self) -> str:
        """What a 202 survives, in words (for /ready)."""
        if self.problems():
            return "not durable: " + "; ".join(self.problems())
        if self.appendonly is None:
            return ("unknown here (CONFIG GET is refused); the operator vouches "
                    "(REDIS_DURABILITY_VOUCHED) for appendonly yes and noeviction")
        if self.appendfsync == "always":
            return "a 202 is on Redis's disk: it survives a crash of Redis or of its host"
        if self.appendfsync == "everysec":
            return ("a 202 survives a Redis restart; a host crash can lose up to ~1-2 s "
                    "of 202s")
        return "a 202 survives a Redis restart; a host crash can lose what the OS had not flushed"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "safe": not self.problems(), "promise": self.promise()}


async def read_durability(client: aioredis.Redis, *, vouched: bool = False) -> Durability:
    """Read the settings behind a 202 (None fields when CONFIG is not allowed;
    ``vouched``: REDIS_DURABILITY_VOUCHED); ``StoreUnavailable`` when Redis cannot be
    asked.  On a Redis Cluster every primary is read, and the first whose settings
    put a 202 at risk is the answer (each holds some queue shards)."""
    names = ("appendonly", "appendfsync", "maxmemory-policy", "maxmemory")
    try:
        with translated_errors():
            if isinstance(client, RedisCluster):
                await client.initialize()  # learns the nodes (lazily done on a command)
                nodes = [[await client.config_get(name, target_nodes=node) for name in names]
                         for node in client.get_primaries()]
            else:
                async with client.pipeline(transaction=False) as pipe:
                    for name in names:  # one name per CONFIG GET: Redis 6 takes one pattern
                        pipe.config_get(name)
                    nodes = [await pipe.execute()]
    except CommandRefused:
        return Durability(None, None, None, None, vouched)
    found = [_durability(replies, vouched) for replies in nodes]
    return next((one for one in found if one.problems()), found[0])


def _durability(replies: list[dict], vouched: bool) -> Durability:
    config: dict[str, str] = {}
    for reply in replies:
        for key, raw in reply.items():
            config[key.decode() if isinstance(key, bytes) else key] = (
                raw.decode() if isinstance(raw, bytes) else raw)

    def value(name: str) -> str | None:
        return config.get(name)

    maxmemory = value("maxmemory")
    return Durability(value("appendonly"), value("appendfsync"), value("maxmemory-policy"),
                      int(maxmemory) if maxmemory is not None else None, vouched)
