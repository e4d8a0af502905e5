"""The chaos run's mixed load: every client retries as docs/api.md "Retrying safely" says.

Kinds of request, each at its own rate (``LoadPlan``):

* ``single`` — one point with a client id ``{run}-s{n}``;
* ``batch`` — ``batch_size`` points without ids under ``Idempotency-Key: {run}-b{n}``
  (the server's ids, derived from the key, are learnt from the answers);
* ``bulk`` — a CSV upload with client ids ``{run}-u{n}-{line}`` under a key; its
  body is paced over ``bulk_send_s`` so that a cut can find it mid-body: a share
  ``bulk_cut_fraction`` is cut by the client on purpose half-way, and every upload
  in flight while the ``cut`` signal is set is cut once; each is then resent whole;
* ``ack`` — one point with ``?ack=committed``; after a 201 (the point is
  committed) a share ``conflict_fraction`` is followed by a ``conflict``: its id
  again with another value, sent to be refused (409) or dead-lettered (a 202 under
  ``ack=queued``), marked ``expect_dead``;
* reads — a leaderboard, stats, or a committed point (events only).

Retrying: an answer 503, 429, 408, 500, 502, 504 or 409 ``idempotency_key_in_flight``
is resent after ``Retry-After`` (capped, with jitter) or a backoff; a connection
error or timeout likewise.  The same request goes again — the same ids, the same
key, the same body — so a resend is never a new point.  Points named in an error's
``accepted_ids`` (or, for an upload, lines up to ``accepted_through_line``) are
acknowledged at once.  Any other 4xx is a definitive refusal: ``refused`` for what it
did not accept, unless an earlier attempt may have taken it (no answer, or named
unknown) — then ``unknown``.  A request is given up after ``give_up_s``; when the
load stops, what is still retrying may go on for ``drain_s``.

Why raw asyncio streams rather than harness/httpclient.py: a cut upload needs the
socket (half a body, then close), and a retrying client needs the answer's
headers (``Retry-After``) and body; one connection per request keeps it simple at
the few hundred points a second the chaos load offers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from harness.chaos.ledger import ACKED, CLIENT_CUT, NO_ANSWER, READ, REFUSED, Event, Ledger, Sent

RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})


class CutSignal(Protocol):
    """``threading.Event`` or ``multiprocessing.Event``: set while uploads are to be cut."""

    def is_set(self) -> bool: ...


@dataclass
class LoadTarget:
    url: str  # stable across the server's restarts (same port)
    token: str  # ingest or admin
    competitions: dict[int, list[int]]  # competition id → its participants' ids


@dataclass
class LoadPlan:
    """The scenario's ``[chaos.load]``: rates, sizes, and how clients retry."""

    seed: int = 0
    singles_per_s: float = 20.0
    batches_per_s: float = 2.0
    batch_size: int = 20
    bulk_every_s: float = 5.0
    bulk_points: int = 200
    bulk_cut_fraction: float = 0.25
    bulk_send_s: float = 0.5  # an upload's body is paced over this long
    ack_per_s: float = 2.0
    reads_per_s: float = 2.0
    conflict_fraction: float = 0.2
    give_up_s: float = 60.0  # a request retried this long is given up (its points unknown)
    drain_s: float = 30.0  # after the load stops, retries may go on this long
    retry_after_cap_s: float = 2.0
    request_timeout_s: float = 15.0  # above ACK_TIMEOUT_S (5 s), so an ack wait is answered
    max_in_flight: int = 128  # attempts at once: a server outage must not spawn a storm

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LoadPlan:
        """From a TOML table; an unknown key is an error, never silently ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown [chaos.load] key(s): {', '.join(unknown)}")
        return cls(**values)


class NoAnswer(Exception):
    """The connection failed or timed out: the request may or may not have run."""


class Cut(Exception):
    """The client closed the connection mid-body on purpose."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        try:
            doc = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def error(self) -> dict[str, Any]:
        error = self.json().get("error")
        return error if isinstance(error, dict) else {}

    def retry_after(self) -> float | None:
        try:
            return float(self.headers["retry-after"])
        except (KeyError, ValueError):
            return None


async def exchange(host: str, port: int, head: bytes, body: bytes, *, timeout_s: float,
                   pieces: int = 1, pace_s: float = 0.0,
                   cut_before: Callable[[int], bool] | None = None) -> Answer:
    """One request on a connection of its own; the body sent in ``pieces``, ``pace_s``
    apart.  ``cut_before(i)`` true before piece ``i`` closes the connection (``Cut``).
    ``NoAnswer`` when there is none within ``timeout_s``."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(head)
            size = math.ceil(len(body) / pieces) if body else 0
            for i in range(pieces):
                if cut_before is not None and cut_before(i):
                    raise Cut
                if i and pace_s:
                    await asyncio.sleep(pace_s)
                    if cut_before is not None and cut_before(i):
                        raise Cut
                try:
                    writer.write(body[i * size:(i + 1) * size])
                    await writer.drain()
                except (OSError, RuntimeError):
                    # The server answered early and closed (uvloop says so with a
                    # RuntimeError on a closed transport): read what it said.
                    break
            return await _read_answer(reader)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            ValueError) as exc:
        raise NoAnswer(repr(exc)) from None
    finally:
        if writer is not None:
            writer.close()


async def _read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
    return Answer(status, headers, body)


class _Spread:
    """``fraction`` of a sequence, spread evenly and starting with the first: the
    n-th item is chosen when ceil((n+1)·f) > ceil(n·f).  Exact, and without dice, so
    a short run with a fraction > 0 always has one."""

    def __init__(self, fraction: float) -> None:
        self.fraction, self.n = fraction, 0

    def __call__(self) -> bool:
        n, self.n = self.n, self.n + 1
        return math.ceil((n + 1) * self.fraction - 1e-9) > math.ceil(n * self.fraction - 1e-9)


@dataclass
class _Job:
    """One logical request and its points, across its attempts."""

    kind: str
    points: list[Sent]
    maybe: set[int] = field(default_factory=set)  # indexes some attempt may have taken

    def pending(self) -> list[int]:
        return [i for i, p in enumerate(self.points) if p.outcome != ACKED]

    def ack(self, indexes: list[int]) -> int:
        newly = [i for i in indexes if self.points[i].outcome != ACKED]
        for i in newly:
            self.points[i].outcome = ACKED
        return len(newly)

    def refuse(self, indexes: list[int]) -> None:
        """A definitive refusal: refused, unless an earlier attempt may have taken it
        (it then stays unknown)."""
        for i in indexes:
            if self.points[i].outcome != ACKED and i not in self.maybe:
                self.points[i].outcome = REFUSED


class _Load:
    def __init__(self, target: LoadTarget, plan: LoadPlan, ledger: Ledger,
                 cut: CutSignal | None) -> None:
        parts = urlsplit(target.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.netloc = parts.netloc
        self.target, self.plan, self.ledger, self.cut = target, plan, ledger, cut
        self.run_id = ledger.run_id
        self.rng = random.Random(f"{plan.seed}:load")
        self.competitions = sorted(target.competitions)
        self.slots = asyncio.Semaphore(plan.max_in_flight)
        self.tasks: set[asyncio.Task[None]] = set()
        self.counters: dict[str, int] = {}
        self.cut_uploads = _Spread(plan.bulk_cut_fraction)
        self.conflicts = _Spread(plan.conflict_fraction)
        self.committed: list[Sent] = []  # confirmed committed: what reads ask for
        self.hard_stop = math.inf  # monotonic: every retry ends by then
        self._stopping: Callable[[], bool] = lambda: False  # set by run()

    # -- what to send --------------------------------------------------------------

    def _number(self, kind: str) -> int:
        self.counters[kind] = self.counters.get(kind, 0) + 1
        return self.counters[kind]

    def _point(self, kind: str, id: str | None) -> Sent:
        competition = self.rng.choice(self.competitions)
        participant = self.rng.choice(self.target.competitions[competition])
        return self.ledger.add(competition, participant, kind=kind, id=id)

    @staticmethod
    def _body(point: Sent, *, with_id: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {"competition_id": point.competition_id,
                                "participant_id": point.participant_id,
                                "value": int(point.value)}
        if with_id:
            body["id"] = point.id
        return body

    def _head(self, method: str, path: str, body: bytes | None, content_type: str,
              key: str | None = None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.netloc}",
                 f"Authorization: Bearer {self.target.token}", "Connection: close"]
        if body is not None:
            lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        if key is not None:
            lines.append(f"Idempotency-Key: {key}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    # -- the kinds -----------------------------------------------------------------

    async def single(self) -> None:
        n = self._number("single")
        job = _Job("single", [self._point("single", f"{self.run_id}-s{n}")])
        body = orjson.dumps(self._body(job.points[0]))
        head = self._head("POST", "/v1/points", body, "application/json")
        await self._retrying(job, lambda _: self._send(head, body), self._judge_points)

    async def batch(self) -> None:
        n = self._number("batch")
        job = _Job("batch", [self._point("batch", None) for _ in range(self.plan.batch_size)])
        body = orjson.dumps({"points": [self._body(p, with_id=False) for p in job.points]})
        head = self._head("POST", "/v1/points", body, "application/json",
                          key=f"{self.run_id}-b{n}")
        await self._retrying(job, lambda _: self._send(head, body), self._judge_points)

    async def ack(self) -> None:
        n = self._number("ack")
        job = _Job("ack", [self._point("ack", f"{self.run_id}-a{n}")])
        body = orjson.dumps(self._body(job.points[0]))
        head = self._head("POST", "/v1/points?ack=committed", body, "application/json")
        answer = await self._retrying(job, lambda _: self._send(head, body),
                                      self._judge_points)
        if answer is not None and answer.json().get("committed") is True:
            self.committed.append(job.points[0])
            if self.conflicts() and not self._stopping():
                self._spawn(self.conflict(job.points[0]))

    async def conflict(self, original: Sent) -> None:
        """The original's id again, with another value: never to be committed."""
        point = self.ledger.add(original.competition_id, original.participant_id,
                                kind="conflict", id=original.id, expect_dead=True)
        job = _Job("conflict", [point])
        body = orjson.dumps(self._body(point))
        # Half wait for the commit (409 id_conflict), half are queued (202, then the
        # worker dead-letters them).
        path = "/v1/points?ack=committed" if self._number("conflict") % 2 else "/v1/points"
        head = self._head("POST", path, body, "application/json")
        await self._retrying(job, lambda _: self._send(head, body), self._judge_points)

    async def bulk(self) -> None:
        n = self._number("bulk")
        points = [self._point("bulk", None) for _ in range(self.plan.bulk_points)]
        for line, point in enumerate(points, 2):  # line 1 is the header
            point.id = f"{self.run_id}-u{n}-{line}"
        job = _Job("bulk", points)
        body = b"id,competition_id,participant_id,value\n" + b"".join(
            b"%s,%d,%d,%d\n" % (p.id.encode(), p.competition_id, p.participant_id,  # type: ignore[union-attr]
                                int(p.value)) for p in points)
        head = self._head("POST", "/v1/points/bulk", body, "text/csv", key=f"{self.run_id}-u{n}")
        pieces = 8
        # Each cut happens once: the planned one half-way through the first attempt
        # that gets there, the signal's at the first piece boundary while it is set.
        planned, signalled = self.cut_uploads(), False

        def cut_before(piece: int) -> bool:
            nonlocal planned, signalled
            if planned and piece == pieces // 2:
                planned = False
                return True
            if piece and not signalled and self.cut is not None and self.cut.is_set():
                signalled = True
                return True
            return False

        def send(attempt: int) -> Awaitable[Answer]:
            return self._send(head, body, pieces=pieces,
                              pace_s=self.plan.bulk_send_s / pieces, cut_before=cut_before)

        await self._retrying(job, send, self._judge_upload)

    async def read(self) -> None:
        competition = self.rng.choice(self.competitions)
        choice = self.rng.randrange(3)
        if choice == 2 and self.committed:
            point = self.rng.choice(self.committed)
            path = f"/v1/competitions/{point.competition_id}/points/{point.id}"
        else:
            path = f"/v1/competitions/{competition}/" + ("leaderboard", "stats")[choice % 2]
        t_sent, started = time.time(), time.perf_counter()
        try:
            async with self.slots:
                status = (await self._send(self._head("GET", path, None, ""), b"")).status
        except NoAnswer:
            status = NO_ANSWER
        self.ledger.event(Event(t_sent, time.time(), READ, status,
                                time.perf_counter() - started, 0))

    # -- retrying ------------------------------------------------------------------

    def _send(self, head: bytes, body: bytes, **kwargs: Any) -> Awaitable[Answer]:
        return exchange(self.host, self.port, head, body,
                        timeout_s=self.plan.request_timeout_s, **kwargs)

    async def _retrying(self, job: _Job,
                        send: Callable[[int], Awaitable[Answer]],
                        judge: Callable[[_Job, Answer], tuple[bool, int]]) -> Answer | None:
        """Send until an answer settles the job (``judge`` → done), or give up; the
        settling answer.  Every attempt is an event."""
        give_up = time.monotonic() + self.plan.give_up_s
        backoff = 0.1
        attempt = 0
        while time.monotonic() < min(give_up, self.hard_stop):
            t_sent, started = time.time(), time.perf_counter()
            status, accepted, answer, done = NO_ANSWER, 0, None, False
            try:
                async with self.slots:
                    answer = await send(attempt)
            except (NoAnswer, Cut) as exc:
                status = CLIENT_CUT if isinstance(exc, Cut) else NO_ANSWER
                job.maybe.update(job.pending())
            else:
                status = answer.status
                done, accepted = judge(job, answer)
            self.ledger.event(Event(t_sent, time.time(), job.kind, status,
                                    time.perf_counter() - started, len(job.points), accepted))
            attempt += 1
            if done:
                return answer
            if status == CLIENT_CUT:
                delay = 0.05  # resend at once: the cut was ours
            elif answer is not None and answer.retry_after() is not None:
                wait = min(answer.retry_after() or 0.0, self.plan.retry_after_cap_s)
                delay = wait + self.rng.uniform(0, wait / 4)
            else:
                delay = self.rng.uniform(backoff / 2, backoff)
                backoff = min(backoff * 2, self.plan.retry_after_cap_s)
            await asyncio.sleep(max(0.0, min(delay, self.hard_stop - time.monotonic())))
        return None  # given up: what is not acked stays unknown

    @staticmethod
    def _retry(answer: Answer) -> bool:
        return (answer.status in RETRYABLE
                or (answer.status == 409
                    and answer.error().get("code") == "idempotency_key_in_flight"))

    def _judge_points(self, job: _Job, answer: Answer) -> tuple[bool, int]:
        """``POST /v1/points``: 2xx acks all (and names a batch's ids); an error acks
        its ``accepted_ids`` and marks its ``unknown_ids``."""
        if 200 <= answer.status < 300:
            ids = answer.json().get("ids")
            if isinstance(ids, list) and len(ids) == len(job.points):
                for point, point_id in zip(job.points, ids):
                    point.id = point.id or str(point_id)
            return True, job.ack(list(range(len(job.points))))
        error = answer.error()
        ids = error.get("ids")
        accepted = 0
        if isinstance(ids, list) and len(ids) == len(job.points):
            index = {str(point_id): i for i, point_id in enumerate(ids)}
            for point, point_id in zip(job.points, ids):
                point.id = point.id or str(point_id)
            accepted = job.ack([index[str(i)] for i in error.get("accepted_ids") or []
                                if str(i) in index])
            job.maybe.update(index[str(i)] for i in error.get("unknown_ids") or []
                             if str(i) in index)
        elif answer.status >= 500:
            job.maybe.update(job.pending())  # a 5xx that does not say: may have run
        if self._retry(answer):
            return False, accepted
        job.refuse(job.pending())
        return True, accepted

    def _judge_upload(self, job: _Job, answer: Answer) -> tuple[bool, int]:
        """``POST /v1/points/bulk``: lines up to ``accepted_through_line`` not listed
        in ``errors`` are acked; lines up to ``unknown_through_line`` may be."""
        doc = answer.json() if 200 <= answer.status < 300 else answer.error()
        rejected = {int(e["line"]) - 2 for e in doc.get("errors") or []
                    if isinstance(e, dict) and isinstance(e.get("line"), int)}
        if 200 <= answer.status < 300:
            through = len(job.points) + 1
        else:
            said = doc.get("accepted_through_line")
            through = said if isinstance(said, int) else 1
            unknown = doc.get("unknown_through_line")
            if isinstance(unknown, int):
                job.maybe.update(range(max(0, through - 1), min(unknown - 1, len(job.points))))
            elif answer.status >= 500 and "accepted_through_line" not in doc:
                job.maybe.update(job.pending())
        handled = range(min(max(0, through - 1), len(job.points)))
        accepted = job.ack([i for i in handled if i not in rejected])
        job.refuse([i for i in rejected if 0 <= i < len(job.points)])
        if 200 <= answer.status < 300:
            return True, accepted
        if self._retry(answer):
            return False, accepted
        job.refuse(job.pending())
        return True, accepted

    # -- pacing --------------------------------------------------------------------

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[None]) -> None:
        """A client task that raised is a bug of the load: counted in the ledger (a
        threshold fails the run), never dropped — its points would only look
        "unknown", which the checker allows."""
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            self.ledger.errors.append(f"{type(error).__name__}: {error}")

    async def _every(self, interval: Callable[[], float],
                     start: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval())
            if self._stopping():
                return
            self._spawn(start())

    def _poisson(self, kind: str, rate: float) -> Callable[[], float]:
        rng = random.Random(f"{self.plan.seed}:{kind}")
        return lambda: rng.expovariate(rate)

    async def run(self, stop: asyncio.Event | float) -> None:
        if isinstance(stop, asyncio.Event):
            self._stopping = stop.is_set
        else:
            deadline = float(stop)
            self._stopping = lambda: time.time() >= deadline
        plan = self.plan
        generators = [asyncio.ensure_future(self._every(self._poisson(kind, rate), start))
                      for kind, rate, start in (("single", plan.singles_per_s, self.single),
                                                ("batch", plan.batches_per_s, self.batch),
                                                ("ack", plan.ack_per_s, self.ack),
                                                (READ, plan.reads_per_s, self.read))
                      if rate > 0]
        if plan.bulk_every_s > 0:
            generators.append(asyncio.ensure_future(
                self._every(lambda: plan.bulk_every_s, self.bulk)))
        try:
            if isinstance(stop, asyncio.Event):
                await stop.wait()
            else:
                await asyncio.sleep(max(0.0, stop - time.time()))
        finally:
            for generator in generators:
                generator.cancel()
            self.hard_stop = time.monotonic() + plan.drain_s
            while self.tasks and time.monotonic() < self.hard_stop:
                await asyncio.wait(set(self.tasks), timeout=self.hard_stop - time.monotonic())
            for task in list(self.tasks):  # past the drain: their points stay unknown
                task.cancel()
            for task in list(self.tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def run_load(target: LoadTarget, plan: LoadPlan, ledger: Ledger,
                   stop: asyncio.Event | float, cut: CutSignal | None = None) -> None:
    """Offer the plan's load to ``target`` until ``stop`` (an event, or a wall-clock
    deadline ``time.time()`` reaches), then let retries finish for up to
    ``plan.drain_s``; every point and attempt goes to ``ledger``."""
    await _Load(target, plan, ledger, cut).run(stop)


def load_process(target: LoadTarget, plan: LoadPlan, seed: int, run_id: str,
                 deadline_ts: float, out_path: Path, cut: CutSignal | None = None) -> None:
    """``run_load`` in a process of its own (on uvloop), its ledger written to
    ``out_path`` as JSON: the load then never competes with the runner's thread
    for the GIL."""
    import uvloop

    ledger = Ledger(run_id)
    plan = dataclasses.replace(plan, seed=seed)
    uvloop.run(run_load(target, plan, ledger, deadline_ts, cut))
    Path(out_path).write_bytes(ledger.to_json())
