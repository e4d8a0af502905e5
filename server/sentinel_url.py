"""``redis+sentinel://`` URLs: which sentinels to ask for which master.

``REDIS_URL=redis+sentinel://[user:password@]host:port[,host:port…]/service_name[/db]``

redis-py has no URL form for Sentinel, so the service reads this one itself:
the hosts are the sentinels (any one that answers names the master), the
path's first part is the name the sentinels monitor (``sentinel monitor
<service_name> …``), the optional second the database.  The userinfo is the
Redis servers' — the master's and, after a failover, the promoted replica's
(``requirepass``/``masterauth``, the same on both) — never the sentinels':
they are asked without a password (a sentinel with ``requirepass`` set is
refused at the first query).  Parsed once, at configuration time, so a wrong
URL is a start-up error (exit 2), not a failure at the first request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    return urlsplit(url.strip()).scheme == SENTINEL_SCHEME


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The parts of a ``redis+sentinel://`` URL; ``ValueError`` says what is wrong."""
    parts = urlsplit(url.strip())
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"must be a URL with scheme {SENTINEL_SCHEME}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = []
    for entry in hosts.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"each sentinel must be host:port, not {entry.strip()!r}")
        sentinels.append((host.strip("[]"), int(port)))
    path = [unquote(piece) for piece in parts.path.split("/")[1:]]
    if path and path[-1] == "":
        path.pop()  # a trailing slash
    if not path or not path[0] or len(path) > 2:
        raise ValueError("its path must be /service_name or /service_name/db (the name the "
                         "sentinels monitor)")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"the database must be a number, not {path[1]!r}")
    if parts.query or parts.fragment:
        raise ValueError("takes no query or fragment")
    return SentinelUrl(tuple(sentinels), path[0], int(path[1]) if len(path) == 2 else 0,
                       unquote(username) or None, unquote(password) or None)
