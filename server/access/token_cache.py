"""What this process knows about tokens: the verified ones and the unknown ones, kept apart.

Two bounded maps, by token hash:

* **known** — tokens PostgreSQL confirmed, with their role and when that was.
  Within ``ttl_s`` an entry answers on its own; after that it is looked up again,
  and while PostgreSQL is away it keeps working for ``grace_s`` after its last
  confirmation (ingest goes on into Redis).  Only a lookup that found the token
  puts it here, so its bound (``KNOWN_MAX``, far above the tokens an operator
  creates) is never reached by clients inventing tokens.
* **unknown** — tokens PostgreSQL did not find (never issued, or revoked),
  remembered for ``ttl_s`` so that a client repeating one costs no query.  A
  flood of made-up tokens fills this map alone: when it is full the oldest entry
  goes (FIFO), never a known token nor its outage grace.

A revoked token moves from known to unknown at its next lookup, so revocation
takes effect within ``ttl_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

KNOWN_MAX = 10_000
UNKNOWN_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Known:
    """A token PostgreSQL confirmed: its role, and when (monotonic seconds)."""

    role: str
    verified_at: float


class TokenCache:
    """The known and the unknown tokens of this process, each bounded on its own."""

    def __init__(self, ttl_s: float, grace_s: float, *, known_max: int = KNOWN_MAX,
                 unknown_max: int = UNKNOWN_MAX) -> None:
        self.ttl_s = ttl_s
        self.grace_s = grace_s
        self.known_max = known_max
        self.unknown_max = unknown_max
        self._known: dict[bytes, Known] = {}
        self._unknown: dict[bytes, float] = {}  # hash -> monotonic time it is forgotten

    def known(self, digest: bytes) -> Known | None:
        return self._known.get(digest)

    def fresh(self, entry: Known, now: float) -> bool:
        """Whether ``entry`` answers without a lookup."""
        return now < entry.verified_at + self.ttl_s

    def in_grace(self, entry: Known, now: float) -> bool:
        """Whether ``entry`` may still answer while PostgreSQL cannot be asked."""
        return now < entry.verified_at + self.grace_s

    def is_unknown(self, digest: bytes, now: float) -> bool:
        """Whether a lookup within the last ``ttl_s`` found no such token."""
        until = self._unknown.get(digest)
        if until is None:
            return False
        if until <= now:
            del self._unknown[digest]
            return False
        return True

    def remember(self, digest: bytes, role: str | None, now: float) -> None:
        """Record what a lookup found: a role, or None (no such token, or revoked)."""
        if role is None:
            self._known.pop(digest, None)
            self._unknown.pop(digest, None)  # re-inserted last: FIFO by lookup time
            if len(self._unknown) >= self.unknown_max:
                del self._unknown[next(iter(self._unknown))]
            self._unknown[digest] = now + self.ttl_s
            return
        self._unknown.pop(digest, None)
        self._known.pop(digest, None)
        if len(self._known) >= self.known_max:
            self._evict_known(now)
        self._known[digest] = Known(role, now)

    def _evict_known(self, now: float) -> None:
        """Make room: forget entries past their grace, else the least recently confirmed."""
        self._known = {k: v for k, v in self._known.items() if self.in_grace(v, now)}
        while len(self._known) >= self.known_max:
            del self._known[next(iter(self._known))]

    def sizes(self) -> tuple[int, int]:
        """(known, unknown) entries held."""
        return len(self._known), len(self._unknown)
