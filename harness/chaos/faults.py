"""The nemesis: fault kinds, a seeded schedule of them, and the thread that runs it.

A fault is a pair of actions on a ``ChaosStack`` (``Faults.inject`` and
``Faults.undo``), run at ``at_s`` and ``at_s + duration_s`` of the run.  Every
undo is idempotent (it brings back whatever is missing, and does nothing to
what is already there), so a fault whose injection failed, or an undo that
failed and is tried again, can never leave the stack hurt twice or healed
half-way.

Kinds (``KINDS``):

* ``kill_server`` — SIGKILL of ``serve``, its children with it; undo: start it
  again on the same port.
* ``kill_server_child`` — SIGKILL of one child under ``--processes`` ≥ 2;
  undo: wait until the supervisor has replaced it.
* ``kill_redis`` — SIGKILL of Redis; undo: start it, the AOF (fsync always)
  replayed.
* ``stop_postgres`` — ``pg_ctl stop -m fast``; undo: start.
* ``blackhole_redis`` / ``blackhole_postgres`` — the server's connections to the
  store silenced (no FIN, no RST), new ones too, until released (``hold``).
* ``redis_maxmemory`` — ``CONFIG SET maxmemory`` below the memory Redis uses and
  near what a fresh one uses (``noeviction`` stays: it refuses writes, never
  drops one), checked in force by a write of the nemesis's own; the server
  then answers ingest 503 ``queue_full`` (``accepted_ids`` empty: nothing
  accepted, none in doubt) — not a direct write, which is only for a Redis that
  fails or does not answer (checked in ``tests/harness/test_chaos_faults.py``);
  undo: the value read before.
* ``pause_claiming`` — ``POST /v1/admin/queue/pause``; undo: ``/resume``.  The
  pause is a Redis key: it outlives a server's death, so a resume that fails is
  tried again until it succeeds.
* ``client_cut`` — sets the load's ``cut`` event (uploads in flight are cut
  mid-body and resent); undo: clears it.
* A Redis primary failover is not among them: the chaos stack runs one Redis
  (``tests/test_sentinel*`` cover a failover); with a Sentinel topology it
  would be a kind of its own.

Recovery (``Nemesis``): from a fault's end (its undo's first attempt), every
``probe_interval_s`` the nemesis sends one probe point (id
``{run_id}-probe-{n}``, value ``probe_value_base + n``: no load sends those)
while any ended fault has not seen ingest recover, and reads the admin queue.
``ingest_recovered_s`` is the time from the end to the answer of the first
probe, sent after the end, that got a 2xx; ``commits_recovered_s`` the time
until the queue's ``throughput.committed`` (summed over shards, kept in Redis:
it survives every fault here) exceeds its value at the end (read just before
the undo; when the queue cannot be read then — the server or Redis down — the
last value read before, at the injection at the latest: the queue commits
nothing while either is down, so that value still stands), or the queue is
empty (``depth`` and ``inflight`` 0: nothing waits to be committed).  Both are
measured, never assumed; a fault not recovered within ``recovery_timeout_s``
keeps ``None``.  Every probe is reported (``probes``, and ``on_probe``) with
what its answer said, so the checker counts it as it counts the load's points.

The nemesis thread is the only caller of the stack's fault methods during a
run; an action blocks it while it runs (a restart takes a second or two), so
probes pause meanwhile: recovery times are measured on the answer's clock, not
the probe's pace, and stay true to within the blocked time.
"""

from __future__ import annotations

import heapq
import http.client
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.exceptions

from harness.chaos.stack import ChaosError, ChaosStack, Store
from harness.server import api

KINDS = ("kill_server", "kill_server_child", "kill_redis", "stop_postgres", "blackhole_redis",
         "blackhole_postgres", "redis_maxmemory", "pause_claiming", "client_cut")
# Pairs that never overlap (besides a kind with itself): both take the server down;
# or one is injected (and undone) through the admin API, which needs the server and
# Redis up and writable — a pause tried while Redis is silent is refused (503), and
# the fault would not happen at all (seen in the first full chaos run).
# A restart of serve while a store is black-holed would wait out its connect timeouts
# in the nemesis's one thread, and every later fault would slip behind it.
_NEEDS_REDIS = ("kill_server", "kill_redis", "blackhole_redis", "redis_maxmemory")
# A Redis capped while unreachable is refused nothing (and one restarted from its
# files forgets the cap), nor while no server sends it writes; a cut finds no upload
# while the server is down: neither fault could bite.
_EXCLUSIVE = {frozenset({"kill_server", "kill_server_child"}),
              *(frozenset({"pause_claiming", kind}) for kind in _NEEDS_REDIS),
              *(frozenset({"kill_server", kind})
                for kind in ("blackhole_redis", "blackhole_postgres")),
              *(frozenset({"redis_maxmemory", kind})
                for kind in ("kill_redis", "blackhole_redis", "kill_server")),
              frozenset({"client_cut", "kill_server"})}


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    at_s: float  # from the run's start
    duration_s: float

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s


def _conflict(a: str, b: str) -> bool:
    return a == b or frozenset({a, b}) in _EXCLUSIVE


def schedule(seed: int, kinds: list[str], duration_s: float, *, count: int, min_s: float,
             max_s: float, max_overlap: int = 2, start_s: float = 0.0,
             gap_s: float = 2.0) -> list[FaultSpec]:
    """``count`` faults drawn from ``kinds`` with ``random.Random(seed)``, by start time.

    Every kind appears at least once (``count`` ≥ ``len(kinds)``); each lasts
    ``min_s``–``max_s``; all lie within ``[start_s, duration_s]``; at no moment
    are more than ``max_overlap`` active; a kind never overlaps itself (nor a
    ``kill_server`` a ``kill_server_child``), and such a pair is ``gap_s`` apart
    at least, so each one's recovery is seen.  The same arguments give the same
    schedule.  ``ValueError`` when the faults cannot fit.
    """
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(KINDS)}")
    if not kinds or count < len(set(kinds)):
        raise ValueError(f"count {count} cannot give each of {len(set(kinds))} kinds a turn")
    if not 0 < min_s <= max_s or max_overlap < 1 or start_s + max_s > duration_s:
        raise ValueError(f"faults of {min_s:g}–{max_s:g} s cannot fit in "
                         f"{start_s:g}–{duration_s:g} s")
    rng = random.Random(seed)
    distinct = sorted(set(kinds))  # a stable order: the set's would vary with hashing
    order = distinct + [rng.choice(distinct) for _ in range(count - len(distinct))]
    rng.shuffle(order)
    placed: list[FaultSpec] = []
    for kind in order:
        for _ in range(2000):
            length = round(rng.uniform(min_s, max_s), 1)
            at = round(rng.uniform(start_s, duration_s - length), 1)
            candidate = FaultSpec(kind, at, length)
            if _fits(candidate, placed, max_overlap, gap_s):
                placed.append(candidate)
                break
        else:
            raise ValueError(f"cannot fit {count} faults of {min_s:g}–{max_s:g} s into "
                             f"{duration_s - start_s:g} s with at most {max_overlap} at once")
    return sorted(placed, key=lambda spec: (spec.at_s, spec.kind))


def _fits(new: FaultSpec, placed: list[FaultSpec], max_overlap: int, gap_s: float) -> bool:
    for other in placed:
        if _conflict(new.kind, other.kind) and (new.at_s < other.end_s + gap_s
                                                and other.at_s < new.end_s + gap_s):
            return False
    # The most faults active at once within ``new`` is reached at a start: its own, or
    # one of those starting inside it.
    for moment in [new.at_s, *(o.at_s for o in placed if new.at_s < o.at_s < new.end_s)]:
        active = sum(1 for o in placed if o.at_s <= moment < o.end_s)
        if active + 1 > max_overlap:
            return False
    return True


def max_active(specs: list[FaultSpec]) -> int:
    """The most faults of ``specs`` active at one moment."""
    return max((sum(1 for o in specs if o.at_s <= s.at_s < o.end_s) for s in specs), default=0)


class Faults:
    """Each kind's injection and undo on a stack.

    ``inject(kind)`` returns what it did (JSON-able: pids killed, the memory cap
    set…), which ``undo(kind, detail)`` is given back.  Both raise on failure.
    """

    def __init__(self, stack: ChaosStack, *, cut: threading.Event | None = None,
                 maxmemory_margin_bytes: int = 256 * 1024, api_timeout_s: float = 5) -> None:
        self.stack = stack
        self.cut = cut
        self.maxmemory_margin_bytes = maxmemory_margin_bytes
        self.api_timeout_s = api_timeout_s

    def inject(self, kind: str) -> dict[str, Any]:
        stack = self.stack
        if kind == "kill_server":
            return {"pids": stack.kill_server()}
        if kind == "kill_server_child":
            return {"pids": stack.kill_server(child=True)}
        if kind == "kill_redis":
            return {"pid": stack.kill_redis()}
        if kind == "stop_postgres":
            stack.stop_postgres()
            return {}
        if kind.startswith("blackhole_"):
            stack.blackhole(self._store(kind))
            return {}
        if kind == "redis_maxmemory":
            return self._cap_memory()
        if kind == "pause_claiming":
            self._admin("pause")
            return {}
        if kind == "client_cut":
            if self.cut is None:
                raise ChaosError("client_cut needs the load's cut event")
            self.cut.set()
            return {}
        raise ValueError(f"unknown fault kind {kind!r}")

    def undo(self, kind: str, detail: dict[str, Any]) -> dict[str, Any]:
        stack = self.stack
        if kind == "kill_server":
            if not stack.server_pids():
                stack.restart_server(timeout_s=0)  # one attempt: the nemesis retries
            return {"pids": stack.server_pids()}
        if kind == "kill_server_child":
            return {"pids": stack.wait_children(timeout_s=0.5)}
        if kind == "kill_redis":
            return {"pid": stack.start_redis()}  # reuses a Redis already running
        if kind == "stop_postgres":
            stack.start_postgres()
            return {}
        if kind.startswith("blackhole_"):
            return {"closed": stack.release(self._store(kind))}
        if kind == "redis_maxmemory":
            client = stack.redis_client()
            try:
                client.config_set("maxmemory", str(detail.get("was", 0)))
                # The evidence it bit: commands Redis refused for memory meanwhile.
                return {"oom_refusals": _oom_errors(client) - detail.get("oom_before", 0)}
            finally:
                client.close()
        if kind == "pause_claiming":
            self._admin("resume")
            return {}
        if kind == "client_cut":
            if self.cut is not None:
                self.cut.clear()
            return {}
        raise ValueError(f"unknown fault kind {kind!r}")

    @staticmethod
    def _store(kind: str) -> Store:
        store = kind.removeprefix("blackhole_")
        if store == "redis":
            return "redis"
        if store == "postgres":
            return "postgres"
        raise ValueError(f"unknown fault kind {kind!r}")

    def _cap_memory(self) -> dict[str, Any]:
        client = self.stack.redis_client()
        try:
            was = int(client.config_get("maxmemory").get("maxmemory") or 0)
            memory = client.info("memory")
            used = int(memory["used_memory"])
            cap = used + self.maxmemory_margin_bytes
            startup = int(memory.get("used_memory_startup") or 0)
            if self.maxmemory_margin_bytes < 0 and startup:
                # Below what it uses *and* near what a fresh Redis uses: a drain that
                # frees the backlog (the workers catching up after a kill) cannot bring
                # it back under the cap within the fault — one CI run's cap at "used
                # - 64 kB" refused nothing while the queue drained.
                cap = min(cap, startup - self.maxmemory_margin_bytes)
            oom_before = _oom_errors(client)
            client.config_set("maxmemory", str(cap))
            # One write of the nemesis's own, at once: refused (counted in INFO
            # errorstats) when the cap bites, whatever the load is doing — the
            # server's refusals alone depend on the load's timing (a CI run's load
            # wrote nothing Redis refused in the fault's 4 s).
            try:
                client.set(_CAP_CHECK_KEY, b"x" * 1024)
            except redis.exceptions.ResponseError:
                pass  # OOM: in force
            else:
                client.delete(_CAP_CHECK_KEY)  # not in force: leave nothing behind
        finally:
            client.close()
        return {"was": was, "used": used, "cap": cap, "oom_before": oom_before}

    def _admin(self, action: str) -> None:
        status, body = api(self.stack.url, "POST", f"/v1/admin/queue/{action}",
                           self.stack.token, timeout=self.api_timeout_s)
        if status != 200:
            raise ChaosError(f"queue {action}: {status} {body}")


@dataclass
class Probe:
    """One point the nemesis sent to see ingest recover, and what its answer said (the
    ledger's ``Sent`` fields, with the outcome as the load would judge it)."""

    competition_id: int
    id: str
    participant_id: int
    value: float
    outcome: str  # "acked", "refused", "unknown"
    status: int  # 0: no answer
    t_sent: float  # wall clock
    t_answered: float
    kind: str = "probe"


@dataclass
class _Active:
    index: int
    spec: FaultSpec
    record: dict[str, Any]
    detail: dict[str, Any] = field(default_factory=dict)
    undo_started: float | None = None  # monotonic: the fault's end
    undone: bool = False
    committed_at_end: int | None = None
    undo_deadline: float = 0.0


class Nemesis(threading.Thread):
    """Runs ``specs`` against ``stack`` from ``t0`` (monotonic; default: when the thread
    starts); ``records`` holds one dict per fault, in schedule order.

    Each record: ``kind``, ``at_s``, ``duration_s`` (scheduled), ``start``/``end``
    (wall times of the injection and of the undo's first attempt), ``injected``,
    ``error`` (the injection's, else the undo's last, if any), ``undone``,
    ``undo_s`` (from the end until the undo succeeded), ``detail``,
    ``ingest_recovered_s`` and ``commits_recovered_s`` (``None``: not recovered
    within ``recovery_timeout_s``, or the run was stopped first).

    ``stop()`` ends the run early: every fault still active is undone at once
    (tried again until ``recovery_timeout_s``), so the stack is never left hurt.
    """

    def __init__(self, stack: ChaosStack, specs: list[FaultSpec], *, run_id: str,
                 probe_point: tuple[int, int], cut: threading.Event | None = None,
                 t0: float | None = None, on_probe: Callable[[Probe], None] | None = None,
                 probe_value_base: float = 900_000_000_000.0, probe_interval_s: float = 0.2,
                 probe_timeout_s: float = 5.0, queue_timeout_s: float = 2.0,
                 retry_s: float = 1.0,
                 recovery_timeout_s: float = 120.0,
                 maxmemory_margin_bytes: int = 256 * 1024) -> None:
        super().__init__(name="nemesis", daemon=True)
        if any(s.kind == "kill_server_child" for s in specs) and stack.processes < 2:
            raise ValueError("kill_server_child needs a server with processes >= 2")
        if any(s.kind == "client_cut" for s in specs) and cut is None:
            raise ValueError("client_cut needs the load's cut event")
        self.stack = stack
        self.specs = list(specs)
        self.faults = Faults(stack, cut=cut, maxmemory_margin_bytes=maxmemory_margin_bytes,
                             api_timeout_s=probe_timeout_s)
        self.run_id = run_id
        self.probe_point = probe_point
        self.t0 = t0
        self.on_probe = on_probe
        self.probe_value_base = probe_value_base
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.queue_timeout_s = queue_timeout_s
        self.retry_s = retry_s
        self.recovery_timeout_s = recovery_timeout_s
        self.records: list[dict[str, Any]] = [
            {"kind": s.kind, "at_s": s.at_s, "duration_s": s.duration_s, "start": None,
             "end": None, "injected": False, "undone": False, "undo_s": None, "detail": {},
             "ingest_recovered_s": None, "commits_recovered_s": None} for s in specs]
        self.probes: list[Probe] = []
        self.errors: list[str] = []  # the thread's own failure, if any
        self._halt = threading.Event()
        self._committed: int | None = None  # the last throughput.committed read
        self._probe_n = 0

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop early (active faults undone) and wait for the thread."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout_s)

    # --- the run ----------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # a bug must not pass silently: the run reports it
            self.errors.append(f"{type(exc).__name__}: {exc}")
            raise

    def _run(self) -> None:
        if self.t0 is None:
            self.t0 = time.monotonic()
        t0 = self.t0
        events: list[tuple[float, int, str]] = []
        for index, spec in enumerate(self.specs):
            heapq.heappush(events, (t0 + spec.at_s, index, "start"))
        active: dict[int, _Active] = {}
        recovering: list[_Active] = []
        next_tick = time.monotonic()
        try:
            self._loop(t0, events, active, recovering, next_tick)
        except BaseException:
            self._abandon(events, active, recovering)  # never leave a fault in place
            raise

    def _loop(self, t0: float, events: list[tuple[float, int, str]],
              active: dict[int, _Active], recovering: list[_Active], next_tick: float
              ) -> None:
        while events or recovering:
            now = time.monotonic()
            if self._halt.is_set():
                self._abandon(events, active, recovering)
                return
            if events and events[0][0] <= now:
                _, index, what = heapq.heappop(events)
                if what == "start":
                    active[index] = self._inject(index)
                    heapq.heappush(events, (t0 + self.specs[index].end_s, index, "end"))
                else:
                    fault = active[index]
                    finished = self._undo(fault)  # sets the fault's end on its first try
                    if fault not in recovering:
                        recovering.append(fault)
                    if finished:
                        del active[index]
                    else:
                        heapq.heappush(events, (time.monotonic() + self.retry_s, index, "end"))
                continue
            if recovering and now >= next_tick:
                self._measure(recovering)
                recovering = [f for f in recovering if not self._settled(f)]
                next_tick = time.monotonic() + self.probe_interval_s
                continue
            waits = [events[0][0] - now] if events else []
            if recovering:
                waits.append(next_tick - now)
            self._halt.wait(max(0.0, min(waits)))

    def _inject(self, index: int) -> _Active:
        spec = self.specs[index]
        record = self.records[index]
        self._read_queue()  # a fresh "committed" before the fault hides the queue
        record["start"] = time.time()
        fault = _Active(index, spec, record)
        try:
            fault.detail = self.faults.inject(spec.kind)
            record["injected"] = True
        except Exception as exc:  # recorded: a fault that could not be injected is data
            record["error"] = f"inject: {type(exc).__name__}: {exc}"
        record["detail"] = dict(fault.detail)
        return fault

    def _undo(self, fault: _Active) -> bool:
        """One attempt at the fault's undo; True when done or given up."""
        now = time.monotonic()
        if fault.undo_started is None:
            fault.undo_started = now
            fault.undo_deadline = now + self.recovery_timeout_s
            self._read_queue()  # "committed" at the end, if the queue can be read now
            fault.record["end"] = time.time()
            fault.committed_at_end = self._committed
        try:
            result = self.faults.undo(fault.spec.kind, fault.detail)
        except Exception as exc:
            fault.record["error"] = f"undo: {type(exc).__name__}: {exc}"
            return now >= fault.undo_deadline
        fault.undone = True
        fault.record.update(undone=True, undo_s=round(time.monotonic() - fault.undo_started, 3))
        if result:
            fault.record["detail"] = {**fault.record["detail"], "after": result}
        return True

    def _settled(self, fault: _Active) -> bool:
        record = fault.record
        measured = (record["ingest_recovered_s"] is not None
                    and record["commits_recovered_s"] is not None)
        assert fault.undo_started is not None
        return (fault.undone or time.monotonic() >= fault.undo_deadline) and (
            measured or time.monotonic() >= fault.undo_started + self.recovery_timeout_s)

    def _abandon(self, events: list[tuple[float, int, str]], active: dict[int, _Active],
                 recovering: list[_Active]) -> None:
        """Stopped: undo every fault injected and not yet undone, retrying to the deadline."""
        pending = [f for f in active.values() if not f.undone]
        for fault in pending:
            while not self._undo(fault):
                time.sleep(self.retry_s)  # a retry's pace; each attempt is checked

    # --- recovery ---------------------------------------------------------------

    def _measure(self, recovering: list[_Active]) -> None:
        waiting_ingest = [f for f in recovering
                          if f.record["ingest_recovered_s"] is None and f.undo_started]
        if waiting_ingest:
            sent, answered, ok = self._probe()
            for fault in waiting_ingest:
                assert fault.undo_started is not None
                if ok and sent >= fault.undo_started:
                    fault.record["ingest_recovered_s"] = round(answered - fault.undo_started, 3)
        queue = self._read_queue()
        if queue is None:
            return
        answered = time.monotonic()
        committed, empty = queue
        for fault in recovering:
            if fault.record["commits_recovered_s"] is not None or fault.undo_started is None:
                continue
            if fault.committed_at_end is None:  # never read before its end: from now on
                fault.committed_at_end = committed
            if empty or committed > fault.committed_at_end:
                fault.record["commits_recovered_s"] = round(answered - fault.undo_started, 3)

    def _read_queue(self) -> tuple[int, bool] | None:
        """(``throughput.committed``, whether nothing waits), or None when unreadable."""
        try:
            status, body = api(self.stack.url, "GET", "/v1/admin/queue", self.stack.token,
                               timeout=self.queue_timeout_s)
        except (OSError, http.client.HTTPException, ValueError):
            return None
        if status != 200:
            return None
        committed = int(body["throughput"]["committed"])
        self._committed = committed
        return committed, body["depth"] == 0 and body["inflight"] == 0

    def _probe(self) -> tuple[float, float, bool]:
        """Send one probe point; (sent, answered) monotonic times and whether it got 2xx."""
        n = self._probe_n
        self._probe_n += 1
        competition_id, participant_id = self.probe_point
        point_id = f"{self.run_id}-probe-{n}"
        value = self.probe_value_base + n
        point: dict[str, object] = {"id": point_id, "competition_id": competition_id,
                 "participant_id": participant_id, "value": value}
        wall, sent = time.time(), time.monotonic()
        status, outcome = 0, "unknown"
        try:
            status, body = api(self.stack.url, "POST", "/v1/points", self.stack.token, point,
                               timeout=self.probe_timeout_s)
            outcome = _outcome(status, body, point_id)
        except (OSError, http.client.HTTPException, ValueError):
            pass  # no answer: the point may or may not be in
        answered = time.monotonic()
        probe = Probe(competition_id, point_id, participant_id, value, outcome,
                      status, wall, wall + (answered - sent))
        self.probes.append(probe)
        if self.on_probe is not None:
            self.on_probe(probe)
        return sent, answered, 200 <= status < 300

    def probes_as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(probe) for probe in self.probes]


_CAP_CHECK_KEY = "chaos:maxmemory-check"


def _oom_errors(client: Any) -> int:
    """How many commands this Redis refused for memory (``INFO errorstats``)."""
    return int(client.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


def _outcome(status: int, body: Any, point_id: str) -> str:
    """What an answer says of one point, as docs/api.md "What an error says was
    accepted" tells a client to read it: an error answer accepted nothing but the
    ids it names in ``accepted_ids`` (and perhaps those in ``unknown_ids``).  A
    probe is never resent, so a probe refused and committed all the same is the
    checker's ``phantom``: the one place a false "nothing was accepted" shows."""
    if 200 <= status < 300:
        return "acked"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):  # no answer, or not the server's error shape
        return "unknown"
    if point_id in (error.get("accepted_ids") or []):
        return "acked"
    if point_id in (error.get("unknown_ids") or []):
        return "unknown"
    return "refused"
