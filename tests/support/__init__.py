"""What the tests share: waits that fail loudly, store helpers, a JSON client, ``serve``.

Test modules import from here (``from tests.support import ...``) and get
fixtures from ``tests/conftest.py``; no test module imports another.

* ``waits.py`` — ``until`` (async) and ``until_sync`` (blocking, for tests that
  drive a subprocess) poll a predicate and raise ``AssertionError`` naming what
  they waited for, and the last value seen, when the time runs out.  A sleep is
  never a sync point.
* ``stores.py`` — ``sql`` runs one query for exact counts; ``locked`` holds
  tables in ACCESS EXCLUSIVE mode from a connection of its own (a slow or stuck
  PostgreSQL, on demand), ``lock_waiters`` counts the sessions it holds up and
  ``running`` shows their statements; ``register`` writes a competition through a
  ``Database`` (storage tests); ``assert_exact`` is the exactly-once check, per
  participant; ``copy_cluster`` gives a test a PostgreSQL cluster copied from the
  session's template (``initdb`` and migrations once per session).
* ``service.py`` — ``make_settings``, ``Api`` (a small JSON client), ``serving``,
  ``seed``, ``batch``, ``drained``, ``assert_settled_cleanly`` (nothing retried
  or dead-lettered), ``plant_chunk`` (a chunk no producer of ours writes),
  ``BOTH_PATHS`` (for the tests whose behaviour depends on the ingest path),
  ``TOKENS``, ``conformance_checks`` (schemathesis's), ``key_state`` (an
  Idempotency-Key's record).
* ``serve.py`` — ``serve`` starts ``run.py serve`` with the harness's launcher
  (``harness.server.ServeProcess``) on a data directory holding a template copy,
  with short leases; ``served`` is ``serve`` for a block (killed, and its stores
  stopped, after it); ``call`` is one JSON call to it; ``setup_competition`` and
  ``send`` give it a competition and points.
* ``sentinel.py`` — ``SentinelGroup``: a Redis primary, its replica and three
  sentinels as real processes on free ports (fixtures ``sentinels``, and
  ``replicated`` without sentinels); its ``url`` is a ``redis+sentinel://`` one.
* ``proxy.py`` — ``BlackHoleProxy``, a loopback proxy that can silence its
  connections (no FIN, no RST), re-exported from ``harness/proxy.py`` (the
  chaos scenario's nemesis uses it too; ``ThreadedProxy`` for blocking callers).
* ``replica.py`` — ``replica_of``: a streaming hot standby of a test's own
  PostgreSQL (``pg_basebackup -R``) on a free port, for a block, stopped by pid.
"""

from harness.server import ROOT
from tests.support.proxy import BlackHoleProxy
from tests.support.serve import (
    SERVE_ENV,
    call,
    queue_state,
    send,
    serve,
    served,
    setup_competition,
)
from tests.support.service import (
    BOTH_PATHS,
    TOKENS,
    Api,
    assert_settled_cleanly,
    batch,
    conformance_checks,
    drained,
    key_state,
    make_settings,
    plant_chunk,
    seed,
    seed_every_shard,
    serving,
)
from tests.support.stores import (
    assert_exact,
    copy_cluster,
    lock_waiters,
    locked,
    register,
    running,
    sql,
)
from tests.support.waits import until, until_sync

__all__ = [
    "BOTH_PATHS",
    "ROOT",
    "SERVE_ENV",
    "TOKENS",
    "Api",
    "BlackHoleProxy",
    "assert_exact",
    "assert_settled_cleanly",
    "batch",
    "call",
    "conformance_checks",
    "copy_cluster",
    "drained",
    "key_state",
    "lock_waiters",
    "locked",
    "make_settings",
    "plant_chunk",
    "queue_state",
    "register",
    "running",
    "seed",
    "seed_every_shard",
    "send",
    "serve",
    "served",
    "serving",
    "setup_competition",
    "sql",
    "until",
    "until_sync",
]
