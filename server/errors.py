"""Domain errors: what went wrong, in the service's own terms, knowing nothing of HTTP.

Storage, the queue, ingest, auth and the request parsers raise these.  The
handlers turn each into a status, headers and the documented error body in one table
(``server/handlers/errors.py``), the way httpx maps httpcore's exceptions where
they enter.  Driver exceptions (psycopg2, redis-py) are translated into these at
the storage and queue boundaries, so nothing above them sees a driver type.

Hierarchy::

    ServiceError                          .code: a stable snake_case identifier
    ├── StoreUnavailable(store, retry_after_s)   a store cannot take the call now
    │   ├── PoolTimeout                           no pooled connection was free in time
    │   │                                         (local congestion: opens no breaker)
    │   ├── WriteConflict                         PostgreSQL aborted a transaction to break a
    │   │                                         deadlock or serialization conflict (retry
    │   │                                         now: the store is fine, opens no breaker)
    │   ├── CommitUnknown                         the link failed during COMMIT (or a
    │   │                                         Redis call's reply was lost): it may or
    │   │                                         may not have applied
    │   │   └── ReplicasShort                     an enqueue ran, but fewer replicas than
    │   │                                         QUEUE_WAIT_REPLICAS confirmed it in time
    │   └── CommandRefused                        the store answered with an error (a
    │                                             command it refuses, a script's error)
    ├── QueueFull(retry_after_s)                  the queue holds QUEUE_MAX_POINTS, or
    │                                             Redis is at maxmemory: back off
    ├── EnqueueInterrupted(cause, accepted, unknown)
    │                                             an enqueue stopped part-way (queue → ingest)
    ├── PartiallyAccepted(cause, accepted_ids, unknown_ids)
    │                                             a write failed (or a bug struck) after
    │                                             part of the request was (or may have
    │                                             been) accepted
    ├── DataRejected                              PostgreSQL refused the data itself
    ├── InputError(message, details)              the client's request cannot be used
    │   ├── MalformedInput                        bytes that do not parse (JSON, CSV, UTF-8)
    │   ├── InvalidInput                          parsed, but fields are invalid
    │   ├── SlugTaken(slug)                       a competition slug in use
    │   └── IdempotencyKeyReused                  an Idempotency-Key sent with another request
    ├── IdempotencyKeyInFlight(retry_after_s)     the key's first request is still running
    ├── UnknownReferences                         points name competitions or participants
    │                                             that do not exist (direct write only)
    ├── IdConflict(conflicts, queued)             point ids taken in their competition by
    │                                             points of other content
    ├── NotAuthenticated                          no, malformed, unknown or revoked token
    ├── NotPermitted(role, required)              the token's role is too low
    └── RateLimited(limit, remaining, reset_s, retry_after_s)
                                                  the token is over RATE_LIMIT_PER_TOKEN (or
                                                  the address over RATE_LIMIT_401_PER_ADDRESS)

``details`` items always carry ``message`` and, where they apply, ``index``
(position in a JSON batch), ``line`` (in an upload) and ``field``.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base of every domain error; ``code`` names it for clients and logs (``codes``: all
    the names a class's errors can carry, where it is more than one)."""

    code = "service_error"
    codes: tuple[str, ...] = ()

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def __copy__(self) -> ServiceError:
        """The same error with a traceback of its own (one outcome told to many waiters)."""
        clone = self.__class__.__new__(self.__class__, *self.args)
        clone.__dict__.update(self.__dict__)
        return clone


class StoreUnavailable(ServiceError):
    """PostgreSQL or Redis is down, unreachable or timing out; retry later.

    ``message`` is what a client may read ("Redis is unavailable"); ``reason`` is
    the driver's own text, which names hosts, ports and internals: it goes to
    the log (``str()`` of the error holds both), never into a response.
    """

    code = "store_unavailable"

    def __init__(self, store: str, message: str, *, retry_after_s: int = 1,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.store = store
        self.retry_after_s = retry_after_s
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.message} ({self.reason})" if self.reason else self.message


class PoolTimeout(StoreUnavailable):
    """Every pooled connection was busy for the whole wait: this process is congested,
    the store itself may be fine (so no circuit breaker opens on it)."""

    code = "store_busy"


class WriteConflict(StoreUnavailable):
    """PostgreSQL aborted the transaction to break a deadlock or a serialization
    conflict with a concurrent one: nothing was written, a retry will do, and the
    store itself is fine (so no circuit breaker opens on it)."""

    code = "write_conflict"


class CommitUnknown(StoreUnavailable):
    """The link failed while COMMIT (or a Redis call) was in flight: it may have applied."""

    code = "commit_unknown"


class ReplicasShort(CommitUnknown):
    """An enqueue Redis ran, but fewer replicas than QUEUE_WAIT_REPLICAS confirmed it in
    time: its points are on the master alone, which a failover may lose.  Ingest writes
    them to PostgreSQL directly, as for any enqueue whose fate is unknown.  Redis itself
    answers, so it is no reason to open Redis's circuit breaker (the workers would
    stop draining for a missing replica).  ``reply``: the script's own (groups
    admitted, points queued, bound), when it is known."""

    reply: tuple[int, int, int] | None = None


class CommandRefused(StoreUnavailable):
    """The store answered a command with an error: one it refuses (``CONFIG`` renamed on
    a managed Redis), or a script's own error.  Nothing was applied."""

    code = "command_refused"


class QueueFull(ServiceError):
    """Admission refused: the queue holds its bound of points (or Redis its memory)."""

    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int = 2) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EnqueueInterrupted(ServiceError):
    """An enqueue of several calls stopped part-way: the first ``accepted`` points are
    in the queue, the next ``unknown`` may or may not be (the call's reply was lost),
    the rest are not.  ``cause`` says why.  Only ingest sees this."""

    def __init__(self, cause: ServiceError, *, accepted: int, unknown: int) -> None:
        super().__init__(cause.message)
        self.cause = cause
        self.accepted = accepted
        self.unknown = unknown
        self.code = cause.code


class PartiallyAccepted(ServiceError):
    """A request failed (``cause``) after some of its points were accepted
    (``accepted_ids``) or may have been (``unknown_ids``).  Re-sending with the same
    ids — or the same ``Idempotency-Key`` — never doubles a point."""

    def __init__(self, cause: BaseException, *, accepted_ids: list[str],
                 unknown_ids: list[str], message: str | None = None) -> None:
        # ``cause`` is a domain error, or a bug (rendered as a 500 that keeps the ids).
        reason = cause.message if isinstance(cause, ServiceError) else "an unexpected error"
        super().__init__(message or (
            f"{reason}; {len(accepted_ids)} point(s) were accepted "
            f"before the failure"
            + (f" and {len(unknown_ids)} may have been" if unknown_ids else "")
            + ": re-send the rest with the same ids (or Idempotency-Key)"))
        self.cause = cause
        self.accepted_ids = accepted_ids
        self.unknown_ids = unknown_ids
        self.code = cause.code if isinstance(cause, ServiceError) else "internal_error"


class DataRejected(ServiceError):
    """PostgreSQL refused the rows themselves (a constraint, an out-of-range value)."""

    code = "data_rejected"


class InputError(ServiceError):
    """The request cannot be used as sent; nothing was changed."""

    code = "invalid_input"


class MalformedInput(InputError):
    """Bytes that do not parse: JSON, CSV, or not UTF-8 at all."""

    codes = ("malformed_json", "malformed_csv", "invalid_encoding")

    def __init__(self, message: str, *, code: str,
                 details: list[dict[str, Any]] | None = None) -> None:
        if code not in self.codes:
            raise ValueError(f"MalformedInput code must be one of {self.codes}, not {code!r}")
        super().__init__(message, details=details)
        self.code = code


class InvalidInput(InputError):
    """Parsed, but some fields are invalid; ``details`` name each index/line and field."""

    code = "invalid_fields"


class SlugTaken(InputError):
    code = "slug_taken"

    def __init__(self, slug: str) -> None:
        super().__init__(f"a competition with slug {slug!r} already exists",
                         details=[{"field": "slug", "message": "already taken"}])
        self.slug = slug


class IdempotencyKeyReused(InputError):
    """An ``Idempotency-Key`` already bound to a request with another fingerprint
    (method, path, query, media type, body); nothing was accepted under it here."""

    code = "idempotency_key_reused"


class IdempotencyKeyInFlight(ServiceError):
    """The first request with this ``Idempotency-Key`` is still being processed."""

    code = "idempotency_key_in_flight"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnknownReferences(ServiceError):
    """A direct write (Redis down) met points whose competition or participant is
    unknown; the queue would have retried them, a direct write cannot."""

    code = "unknown_references"

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class IdConflict(ServiceError):
    """Points whose key — their id in their competition — is taken by a point of other
    content (participant, value or time).  Such a point is never stored and never
    taken for a repeat: a correction needs an id of its own.

    ``conflicts``: (index in the request, id, competition id) of each.  ``queued``:
    the points are in the queue (found while waiting for their commit), where the
    workers dead-letter them as ``id_conflict``; otherwise nothing was written.
    """

    code = "id_conflict"

    def __init__(self, conflicts: list[tuple[int, str, int]], *, queued: bool) -> None:
        names = ", ".join(f"{point_id!r} (competition {competition})"
                          for _, point_id, competition in conflicts[:10])
        more = f" and {len(conflicts) - 10} more" if len(conflicts) > 10 else ""
        fate = ("they stay queued and will be dead-lettered as id_conflict" if queued
                else "nothing was written")
        super().__init__(
            f"point id(s) taken by a point of other content (participant, value or time): "
            f"{names}{more}; {fate}.  Send a correction under a new id.",
            details=[{"index": index, "field": "id",
                      "message": f"{point_id!r} is taken in competition {competition} by a "
                                 "point of other content"}
                     for index, point_id, competition in conflicts[:100]])
        self.conflicts = conflicts
        self.queued = queued


class NotAuthenticated(ServiceError):
    code = "unauthorized"


class NotPermitted(ServiceError):
    code = "forbidden"

    def __init__(self, role: str, required: str) -> None:
        super().__init__(f"this token has role {role!r}; {required!r} is required")
        self.role = role
        self.required = required


class RateLimited(ServiceError):
    """The token sends faster than RATE_LIMIT_PER_TOKEN requests/s and its burst is spent.

    Carries the limiter's figures: ``limit`` (the burst), ``remaining`` (0 here),
    ``reset_s`` (until the whole burst is available again) and ``retry_after_s``
    (until the next request would pass).
    """

    code = "rate_limited"

    def __init__(self, message: str, *, limit: int, remaining: int, reset_s: float,
                 retry_after_s: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.remaining = remaining
        self.reset_s = reset_s
        self.retry_after_s = retry_after_s
