"""Switch each guarantee's mechanism off and see its proving tests fail.

    python -m tests.mutations              # every mutation (~10 minutes on 2 cores)
    python -m tests.mutations fencing ack  # some, by name
    python -m tests.mutations --list

For each mutation: the work tree is copied (tracked files as they are now, not
as committed), one exact piece of code is replaced in the copy, and the tests
named for it run there.  A mutation is *caught* when those tests fail; one they
survive is a test that does not prove its guarantee.  The table it prints is the
one in docs/testing.md.  Not part of the suite: a mutation run takes minutes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SKIP = shutil.ignore_patterns(".git", ".data", "results", "bench-results", "__pycache__",
                               "*.egg-info", ".ruff_cache", ".mypy_cache", ".pytest_cache")


@dataclass(frozen=True)
class Mutation:
    name: str
    guarantee: str  # the row of README's failure table (or the behaviour) it breaks
    what: str  # the mechanism switched off, in words
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


def _m(name: str, guarantee: str, what: str, path: str, old: str, new: str,
       *tests: str) -> Mutation:
    return Mutation(name, guarantee, what, path, old, new, tests)


W, Q, F, S = ("tests/queue/test_worker.py::", "tests/queue/test_redis_queue.py::",
              "tests/test_faults.py::", "tests/test_serve.py::")
D, P, B = "tests/test_durability.py::", "tests/handlers/test_points.py::", \
    "tests/handlers/test_bulk.py::"
A = "tests/access/test_auth.py::"
R = "tests/storage/test_replica.py::"
SV = "tests/test_supervise.py::"
DB = "tests/handlers/test_dashboard.py::"
CH = "tests/harness/test_chaos_checker.py::"
LG = "tests/test_logs.py::"
ST = "tests/test_stores_cli.py::"
CF = "tests/test_config.py::"

MUTATIONS = (
    # --- kill -9 at any moment loses and duplicates nothing -------------------------
    _m("ack-before-commit", "kill -9 loses nothing",
       "a claim is acknowledged before its points are written",
       "server/queue/worker.py",
       "        if chunks:\n            outcome = await self.writer.write(chunks, lease.confirm)",
       "        if chunks:\n            await self.queue.settle(claim, Settlement(acked=claim.ids))\n"  # noqa: E501
       "            outcome = await self.writer.write(chunks, lease.confirm)",
       W + "test_cancelled_worker_hands_its_claim_back",
       S + "test_serve_killed_with_sigkill_three_times_mid_drain_commits_exactly_once"),
    _m("no-reclaim", "kill -9 loses nothing; a killed process's chunks come back",
       "the reclaimer never returns an expired lease",
       "server/queue/scripts.py",
       "local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)",
       "local expired = {}",
       W + "test_claim_reclaims_expired_lease_after_worker_died_before_ack",
       S + "test_serve_killed_with_sigkill_three_times_mid_drain_commits_exactly_once"),
    _m("no-on-conflict", "kill -9 duplicates nothing; a retrying client never doubles",
       "inserts are not idempotent on the point id (no ON CONFLICT DO NOTHING)",
       "server/storage/points.py", "    ON CONFLICT (competition_id, id) DO NOTHING\n", "",
       P + "test_resending_a_batch_leaves_standings_unchanged",
       W + "test_claim_reclaims_expired_lease_after_worker_died_before_ack"),
    _m("deltas-from-input", "kill -9 duplicates nothing (standings)",
       "standings deltas are logged for every written point, not only the inserted rows",
       "server/storage/points.py",
       "    FROM inserted\n    GROUP BY competition_id, participant_id",
       "    FROM (SELECT competition_id, participant_id, value, timestamptz 'epoch'\n"
       "          + recorded_us * interval '1 microsecond' AS recorded_at\n"
       "          FROM checked WHERE refused IS NULL) AS every_point\n"
       "    GROUP BY competition_id, participant_id",
       P + "test_resending_a_batch_leaves_standings_unchanged",
       W + "test_claim_reclaims_expired_lease_after_worker_died_before_ack"),
    # --- SIGTERM / cancellation ---------------------------------------------------------
    _m("cancel-keeps-lease", "SIGTERM: nothing lost, no lease left behind",
       "a cancelled claim is not handed back",
       "server/queue/worker.py",
       "                await self._detached(self.queue.release(claim, error=error))\n",
       "",
       W + "test_cancelled_worker_hands_its_claim_back",
       S + "test_sigterm_during_a_drain_exits_0_and_loses_nothing"),
    _m("stop-cuts-requests", "SIGTERM: in-flight requests finish",
       "the HTTP stop does not wait for requests in flight",
       "server/runtime/lifecycle.py",
       "    while state.inflight and time.monotonic() < end:",
       "    while False:",
       F + "test_health_turns_draining_while_shutdown_waits_for_in_flight_requests"),
    # --- store outages --------------------------------------------------------------------
    _m("outage-spends-attempts", "PostgreSQL down: no point spends an attempt",
       "a claim handed back for a store outage is counted against its chunks",
       "server/queue/worker.py",
       "                await self._detached(self.queue.release(claim))  # never strand the leases",
       "                await self._detached(self.queue.release(claim, error=str(exc)))",
       F + "test_postgres_stopped_mid_ingest_every_request_202_and_drained_after",
       W + "test_a_statement_timeout_costs_nothing_and_kills_no_worker"),
    _m("no-direct-write", "Redis down: ingest writes straight to PostgreSQL",
       "ingest answers 503 instead of writing directly when Redis fails",
       "server/ingest/accept.py",
       "            try:\n                await self._write_directly(points)\n"
       "            except CommitUnknown as direct:\n"
       "                raise PartiallyAccepted(direct, accepted_ids=[], unknown_ids=ids) from direct",  # noqa: E501
       "            try:\n                raise StoreUnavailable(\"postgres\", \"mutated\")\n"
       "            except CommitUnknown as direct:\n"
       "                raise PartiallyAccepted(direct, accepted_ids=[], unknown_ids=ids) from direct",  # noqa: E501
       F + "test_redis_killed_mid_ingest_every_2xx_committed_exactly_once"),
    _m("cut-request-rest-dropped", "a request cut by a Redis failure is accepted whole",
       "the points after a failed call are not written to PostgreSQL",
       "server/ingest/accept.py",
       "                await self._write_directly(points[exc.accepted:], first=exc.accepted)",
       "                pass",
       F + "test_a_naive_request_cut_by_a_redis_kill_is_accepted_whole_and_once"),
    _m("busy-pool-bypasses-queue", "a local pool wait never sends ingest around the queue",
       "a busy Redis pool is treated as Redis down (direct write)",
       "server/ingest/accept.py", "        except (QueueFull, PoolTimeout):",
       "        except QueueFull:",
       D + "test_a_busy_redis_pool_answers_503_without_bypassing_the_queue"),
    _m("pool-wait-opens-breaker", "a local pool wait opens no breaker",
       "a pool timeout or a write conflict opens the store's breaker",
       "server/queue/worker.py", "        if isinstance(exc, PoolTimeout | WriteConflict):",
       "        if False:",
       W + "test_a_local_pool_wait_or_a_conflict_never_opens_a_store_breaker"),
    _m("shared-pools", "workers never wait for request handlers' connections",
       "the workers borrow the request handlers' PostgreSQL pool",
       "server/runtime/lifecycle.py",
       "        pool = Workers(queue.with_client(worker_client), worker_db, strategy, settings,",
       "        pool = Workers(queue.with_client(worker_client), db, strategy, settings,",
       W + "test_workers_drain_on_their_own_connections_when_requests_hold_every_other"),
    _m("cancel-is-a-stop", "a statement timeout costs nothing and kills no task",
       "aiopg's bare CancelledError for a cancelled statement is passed on",
       "server/storage/database.py",
       "        if (isinstance(exc.__context__, psycopg2.extensions.QueryCanceledError)",
       "        if (False",
       W + "test_a_statement_timeout_costs_nothing_and_kills_no_worker"),
    _m("no-client-timeout", "a link that goes silent is given up and replaced",
       "statements have no client-side bound (only PostgreSQL's, which never arrives)",
       "server/storage/database.py",
       "        timeout=settings.pg_statement_timeout_ms / 1000 + CLIENT_SLACK_S,",
       "        timeout=3600,",
       F + "test_connections_silently_dropped_mid_flow_are_given_up_and_replaced"),
    _m("no-preping", "idle connections cut by the server are replaced before use",
       "idle connections are not pinged before use",
       "server/storage/database.py",
       "            if idle_since is None or time.monotonic() - idle_since < self.preping_idle_s:",
       "            if True:",
       F + "test_idle_connections_cut_by_the_server_are_replaced_before_use"),
    _m("probe-kept-at-stop", "a stop never waits for a held probe (SIGTERM in time)",
       "a worker that stops while holding a breaker's probe keeps it",
       "server/queue/worker.py",
       "                if pg_probe:\n                    self.postgres_breaker.release_probe()",
       "                if pg_probe and not self.stopping:\n"
       "                    self.postgres_breaker.release_probe()",
       W + "test_workers_stop_at_once_while_their_stores_breakers_are_open"),
    _m("stop-waits-cool-down", "a stop never waits out a breaker (SIGTERM in time)",
       "a worker waiting for a breaker sleeps through the stop",
       "server/queue/breaker.py",
       "            await (stop.pause(wait_s) if stop is not None else asyncio.sleep(wait_s))",
       "            await asyncio.sleep(wait_s)",
       W + "test_workers_stop_at_once_while_their_stores_breakers_are_open"),
    # --- poison, retries, dead letters -------------------------------------------------------
    _m("no-bisect", "a poison point costs only itself",
       "a group PostgreSQL refuses is dead-lettered whole, not bisected",
       "server/queue/settlement.py",
       "        if len(single) == 1:\n            chunk, (point,) = single[0]\n"
       "            failed.append((point, chunk, \"data_error\", exc.message))\n            return",
       "        for chunk, (point,) in single:\n"
       "            failed.append((point, chunk, \"data_error\", exc.message))\n        return",
       W + "test_poison_point_is_isolated_while_batch_mates_commit"),
    _m("no-retry", "unknown references are retried, then dead-lettered",
       "an unknown reference is dead-lettered at its first attempt",
       "server/queue/settlement.py",
       "            if reason in PERMANENT_REASONS or attempts >= s.queue_max_attempts:",
       "            if True:",
       W + "test_unknown_participant_is_retried_then_dead_lettered"),
    _m("dlq-unbounded", "the dead-letter queue is bounded",
       "the DLQ is not trimmed to DLQ_MAX_ENTRIES",
       "server/queue/scripts.py",
       "local excess = redis.call('ZCARD', KEYS[6]) - dead_max", "local excess = 0",
       Q + "test_dead_letter_queue_is_trimmed_by_count_and_by_age",
       "tests/handlers/test_admin.py::test_dead_letter_queue_keeps_its_bound"),
    _m("handbacks-uncounted", "nothing loops forever",
       "unexpected handbacks are not counted against the chunk",
       "server/queue/scripts.py", "    if ARGV[2] == '1' then", "    if false then",
       W + "test_a_chunk_that_keeps_failing_unexpectedly_is_dead_lettered_not_looped"),
    # --- leases --------------------------------------------------------------------------------
    _m("no-fencing", "a lease belongs to its holder",
       "SETTLE acknowledges chunks another worker holds now",
       "server/queue/scripts.py",
       "  if redis.call('HGET', KEYS[7], ARGV[i + k]) ~= token then return {0, 0} end\n", "",
       Q + "test_a_settle_after_the_chunk_was_reclaimed_and_claimed_again_is_refused"),
    _m("no-renewal", "a live worker keeps its lease",
       "leases are never renewed while their holder works",
       "server/queue/lease.py",
       "        self._timer: asyncio.TimerHandle | None = self._loop.call_later(lease_s / 3, self._due)",  # noqa: E501
       "        self._timer: asyncio.TimerHandle | None = None",
       W + "test_a_slow_live_worker_keeps_its_lease_and_nothing_is_redelivered",
       W + "test_the_lease_is_kept_for_the_rest_of_a_claim_after_a_chunk_is_set_aside"),
    _m("renew-any-holder", "a lease belongs to its holder",
       "RENEW extends leases whoever holds them",
       "server/queue/scripts.py",
       "  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[1] then",
       "  if true then",
       Q + "test_renew_extends_only_the_holders_leases"),
    # --- durability and bounds -----------------------------------------------------------------
    _m("fsync-everysec", "a 202 is on disk (QUEUE_FSYNC=always)",
       "the embedded Redis fsyncs once a second whatever QUEUE_FSYNC says",
       "server/embedded/redis.py", "                f\"appendfsync {self.fsync}\",",
       "                \"appendfsync everysec\",",
       D + "test_embedded_redis_fsyncs_every_write_by_default_and_as_configured"),
    _m("unsafe-redis-accepted", "an unsafe external Redis is refused in PROD",
       "no AOF and an evicting policy are not problems",
       "server/queue/durability.py",
       "        if self.appendonly != \"yes\":", "        if False:",
       D + "test_an_unsafe_external_redis_is_refused_in_prod_and_warned_about_otherwise"),
    _m("no-queue-bound", "memory stays bounded: past the bound, 503 queue_full",
       "ENQUEUE admits whatever the bound",
       "server/queue/scripts.py",
       "  if bound > 0 and queued + total + size > bound then break end", "",
       D + "test_past_the_queue_bound_ingest_answers_503_and_recovers_after_a_drain",
       Q + "test_enqueue_is_refused_whole_past_the_bound"),
    _m("grow-before-free", "a Redis at maxmemory still drains",
       "SETTLE's first write grows memory",
       "server/queue/scripts.py",
       "local token = ARGV[1]\nlocal i = 3",
       "redis.call('HINCRBY', KEYS[4], 'settles', 1)\nlocal token = ARGV[1]\nlocal i = 3",
       D + "test_a_redis_at_maxmemory_refuses_ingest_with_503_while_workers_drain_it"),
    _m("keyed-ids-random", "a retrying client never doubles a point",
       "Idempotency-Key ids are not deterministic",
       "server/points.py", "        return f\"{self.prefix}{position}\"",
       "        return f\"{self.prefix}{position}-{os.urandom(4).hex()}\"",
       P + "test_idempotency_key_makes_a_resent_batch_a_no_op",
       B + "test_an_upload_cut_off_mid_stream_and_resent_with_its_key_doubles_nothing"),
    # --- the request path honours the breakers; unknown tokens are cheap ------------------------
    _m("auth-waits-out-postgres", "a black-holed PostgreSQL costs a request ~1 s",
       "a request waits for its token's lookup however long it takes",
       "server/access/auth.py",
       "            async with asyncio.timeout(max(0.0, flight.deadline - time.monotonic())):",
       "            async with asyncio.timeout(None):",
       A + "test_a_black_holed_postgres_costs_a_request_with_a_cached_token_about_a_second"),
    _m("auth-ignores-breaker", "while PostgreSQL's breaker is open auth does not ask it",
       "token lookups start whatever PostgreSQL's breaker says",
       "server/access/auth.py",
       "        gate = self.breaker.try_pass() if self.breaker is not None else None",
       "        gate = None",
       A + "test_while_the_postgres_breaker_is_open_an_unverified_token_gets_503_at_once",
       A + "test_while_the_postgres_breaker_is_open_a_stale_token_is_not_looked_up"),
    _m("probe-holds-a-stale-token", "stale entries are refreshed in the background",
       "a request whose lookup is the breaker's probe waits for it",
       "server/access/auth.py",
       "        if gate is not None and known is not None and self.cache.in_grace(known,",
       "        if False and known is not None and self.cache.in_grace(known,",
       A + "test_a_half_open_postgres_breaker_refreshes_a_stale_token_in_the_background"),
    _m("no-token-format-check", "an ill-formed token costs no query",
       "tokens are looked up whatever their shape",
       "server/access/auth.py", "        if not TOKEN_FORMAT.fullmatch(token):",
       "        if False:",
       A + "test_an_ill_formed_token_is_refused_before_any_query"),
    _m("lookups-not-single-flight", "one lookup per token in flight",
       "every request starts a lookup of its own",
       "server/access/auth.py", "        flight = self._flights.get(digest)\n",
       "        flight = None\n",
       A + "test_one_lookup_per_token_in_flight_and_unknown_tokens_remembered"),
    _m("unknown-evicts-known", "a flood of unknown tokens never evicts a known one",
       "the token cache is one map, cleared when full (as before issue 17)",
       "server/access/token_cache.py",
       "                del self._unknown[next(iter(self._unknown))]",
       "                self._unknown.clear()\n                self._known.clear()",
       A + "test_a_flood_of_unknown_tokens_never_evicts_a_known_one"),
    _m("no-401-limit", "401s beyond the per-address limit answer 429",
       "401s are not counted per client address",
       "server/access/auth.py", "        if decision.allowed:\n            return",
       "        if True:\n            return",
       A + "test_401s_beyond_the_per_address_limit_answer_429"),
    _m("ingest-ignores-breaker", "while Redis's breaker is open ingest falls back at once",
       "ingest tries Redis whatever its breaker says",
       "server/ingest/accept.py", "        if gate is False:\n            raise breaker.refused()",
       "        if False:\n            raise breaker.refused()",
       "tests/ingest/test_accept.py::"
       "test_while_the_redis_breaker_is_open_ingest_writes_directly_at_once"),
    _m("enqueue-waits-out-redis", "a black-holed Redis costs an ingest request ~1 s",
       "an ENQUEUE call waits for its reply up to REDIS_TIMEOUT_S",
       "server/queue/redis_queue.py", "            async with asyncio.timeout(self.call_wait_s):",
       "            async with asyncio.timeout(None):",
       "tests/ingest/test_accept.py::"
       "test_a_black_holed_redis_costs_an_ingest_request_about_a_second"),
    _m("leaderboard-keyed-by-query", "leaderboard cache keys are bounded whatever the query",
       "leaderboard pages are cached per query string",
       "server/handlers/reads.py",
       "        return await self.deps.cache.get_or_compute(f\"lb:{cid}:p{number}\",",
       "        return await self.deps.cache.get_or_compute(\n"
       "            f\"lb:{cid}:p{number}:{self.request.query}\",",
       "tests/handlers/test_reads.py::"
       "test_leaderboard_cache_keys_stay_bounded_under_many_distinct_query_strings"),
    # --- ids -------------------------------------------------------------------------------
    _m("id-conflict-unseen", "an id taken by other content is never a silent drop",
       "a point whose key is taken is always taken for a repeat (no content check)",
       "server/storage/points.py",
       "    if inserted < passed and not (all_or_nothing and len(refused) > len(batch.refused)):",
       "    if False:",
       P + "test_an_id_taken_by_other_content_answers_409_id_conflict_and_is_dead_lettered",
       P + "test_a_queued_point_whose_id_is_taken_is_dead_lettered_not_counted_as_a_duplicate",
       "tests/storage/test_points.py::test_a_taken_id_is_a_repeat_only_with_the_same_content",
       "tests/storage/test_points.py::test_a_key_a_concurrent_writer_commits_with_other_"
       "content_is_an_id_conflict",
       F + "test_redis_down_an_id_taken_by_other_content_answers_409_and_writes_nothing"),
    _m("in-batch-conflict-unseen", "an id taken by other content is never a silent drop",
       "a point repeating the key of an earlier one of its batch is not compared",
       "server/storage/points.py",
       "            suspects = taken + _later_occurrences(batch, known)",
       "            suspects = taken",
       "tests/storage/test_points.py::test_of_ids_repeated_in_one_write_the_first_wins_and_"
       "other_content_conflicts",
       P + "test_a_queued_point_whose_id_is_taken_is_dead_lettered_not_counted_as_a_duplicate"),
    _m("commit-watch-by-id", "?ack=committed confirms content, not only the id",
       "the commit watch takes any stored point of the key for this one",
       "server/ingest/commit_watch.py",
       "                    if not same:  # its key holds another point",
       "                    if False:  # its key holds another point",
       P + "test_an_id_taken_by_other_content_answers_409_id_conflict_and_is_dead_lettered"),
    _m("server-ids-predictable", "server-assigned ids cannot be guessed",
       "the 80 random bits of a server id come from a counter",
       "server/points.py",
       "            self._pool = os.urandom(max(need // 2, self.BLOCK_BYTES)).hex()",
       "            self._pool = \"\".join(f\"{i:020x}\" for i in range(max(n, 205)))",
       "tests/test_points.py::test_server_ids_are_unique_and_every_one_of_their_80_random_bits_"
       "is_random"),
    _m("server-ids-shared-after-fork", "server-assigned ids cannot collide across processes",
       "a forked process keeps its parent's unused random bits",
       "server/points.py", "        os.register_at_fork(after_in_child=self._reseed)",
       "        pass",
       "tests/test_points.py::test_a_forked_process_never_repeats_its_parents_ids"),
    # --- an Idempotency-Key remembers its request; errors never say "not accepted" wrongly ---
    _m("idempotency-fingerprint-ignored", "an Idempotency-Key remembers its request",
       "a used key takes any request as a repeat",
       "server/ingest/idempotency.py",
       "if r[1] ~= ARGV[1] or (ARGV[2] ~= '' and r[2] ~= '' and r[2] ~= ARGV[2]) then",
       "if false then",
       P + "test_the_same_idempotency_key_with_another_request_is_422_and_accepts_nothing",
       P + "test_after_a_partial_failure_the_key_stays_bound_and_its_request_runs_again"),
    _m("idempotency-in-flight-ignored", "an Idempotency-Key remembers its request",
       "a key whose first request still runs is taken over at once",
       "server/ingest/idempotency.py",
       "  if left > 0 then return {'in_flight', tostring(left)} end", "",
       P + "test_a_request_while_the_first_with_its_key_runs_is_409_with_retry_after",
       B + "test_an_upload_while_the_first_with_its_key_streams_is_409"),
    _m("upload-checkpoints-unchecked", "an Idempotency-Key remembers its request",
       "a resent upload's bytes are not compared with the first's checkpoints",
       "server/ingest/idempotency.py", "        if self.at(offset) != digest:",
       "        if False:",
       B + "test_a_cut_upload_resent_with_another_body_is_refused_where_the_bodies_part"),
    _m("upload-lines-not-held", "an Idempotency-Key remembers its request",
       "a resent upload enqueues lines before the checkpoint that covers them is checked",
       "server/handlers/bulk.py", "            if not self._digest.may_enqueue(end):",
       "            if False:",
       B + "test_lines_of_a_resent_upload_wait_for_the_checkpoint_that_covers_them"),
    _m("bug-after-enqueue-is-nothing", "an error never says \"not accepted\" wrongly",
       "a bug after the enqueue began passes as it is (nothing reported accepted or unknown)",
       "server/ingest/accept.py",
       "        except Exception as exc:  # a bug: whatever had been sent may be in Redis",
       "        except ZeroDivisionError as exc:",
       F + "test_a_bug_after_an_enqueue_whose_reply_was_lost_reports_every_id_unknown"),
    _m("script-error-is-nothing", "an error never says \"not accepted\" wrongly",
       "an ENQUEUE Redis stopped with an error is taken as not run",
       "server/queue/redis_queue.py", "MAYBE_RAN = (CommitUnknown, CommandRefused)",
       "MAYBE_RAN = (CommitUnknown,)",
       F + "test_an_enqueue_script_that_fails_after_writing_reports_its_ids_unknown"),
    _m("idempotency-waits-out-redis", "a black-holed Redis costs a keyed request ~1 s",
       "an Idempotency-Key call waits for its reply up to REDIS_TIMEOUT_S",
       "server/ingest/idempotency.py", "                async with asyncio.timeout(self.wait_s):",
       "                async with asyncio.timeout(None):",
       "tests/ingest/test_accept.py::"
       "test_a_black_holed_redis_costs_an_ingest_request_about_a_second"),
    _m("ready-skips-401-limit", "401s beyond the per-address limit answer 429",
       "/ready looks unknown tokens up without counting them per address",
       "server/handlers/health.py",
       "\"admin\", address=self.request.remote_ip)",
       "\"admin\")",
       "tests/access/test_auth.py::"
       "test_ready_counts_unknown_tokens_against_the_per_address_limit"),
    _m("checkpoint-failure-ignored", "a keyed upload never outruns its record",
       "an upload goes on (directly) past a checkpoint Redis could not record",
       "server/ingest/idempotency.py",
       "            # Not a reason to go on without the record: stop where it ends.\n"
       "            raise StoreUnavailable(",
       "            return\n            raise StoreUnavailable(",
       F + "test_a_keyed_upload_whose_redis_fails_mid_stream_stops_where_its_record_ends"),
    _m("short-replica-hides-queue-full", "an error reply never calls unwritten points unknown",
       "a WAIT that falls short makes the groups the bound refused unknown too",
       "server/queue/redis_queue.py",
       "                reply = exc.reply if isinstance(exc, ReplicasShort) else None",
       "                reply = None",
       "tests/queue/test_redis_queue.py::"
       "test_with_wait_replicas_a_group_the_bound_refused_is_queue_full_not_unknown"),
    # --- tasks and start-up --------------------------------------------------------------------
    _m("no-restart", "a background task that dies is restarted",
       "the supervisor does not restart a task that died",
       "server/supervisor.py", "        return not self.stopping", "        return False",
       "tests/test_supervisor.py::test_a_task_that_raises_is_logged_once_counted_and_restarted"),
    _m("stray-cancel-is-a-stop", "a stray cancellation from below is a failure",
       "every cancellation is taken as the supervisor's stop",
       "server/supervisor.py", "                if task is None or task.cancelling():",
       "                if True:",
       "tests/test_supervisor.py::test_a_stray_cancellation_from_below_is_a_failure_not_a_stop"),
    _m("failed-start-leaves-running", "a failed start leaves nothing running",
       "stores started before a failure are not stopped",
       "server/embedded/__init__.py",
       "        except BaseException:\n            self.stop()\n            raise",
       "        except BaseException:\n            raise",
       "tests/test_lifecycle.py::test_failed_start_exits_1_with_one_line_and_leaves_"
       "nothing_running"),
    # --- nothing public says more than it must; embedded stores closed ------------------------
    _m("driver-text-in-503", "503 bodies carry a generic message",
       "Redis's driver text (host, port, errno) goes into the error's message",
       "server/redis_client.py",
       "    return StoreUnavailable(\"redis\", \"Redis is unavailable\", reason=_first_line(exc))",
       "    return StoreUnavailable(\"redis\", f\"Redis is unavailable ({_first_line(exc)})\")",
       "tests/handlers/test_health.py::test_with_the_stores_down_public_answers_name_no_"
       "address_and_no_driver_text"),
    _m("ready-details-public", "/ready's details need the admin token",
       "everyone gets /ready's checks",
       "server/ops/readiness.py",
       "    return {\"status\": answer[\"status\"], \"failed\": answer[\"failed\"]}",
       "    return answer",
       "tests/handlers/test_health.py::test_ready_tells_everyone_its_status_and_an_admin_"
       "each_check",
       "tests/handlers/test_health.py::test_with_the_stores_down_public_answers_name_no_"
       "address_and_no_driver_text"),
    _m("redis-no-password", "the embedded Redis refuses a client without the password",
       "the embedded Redis's configuration has no requirepass",
       "server/embedded/redis.py", "                f\"requirepass {self.password}\",", "",
       "tests/embedded/test_password.py::test_embedded_redis_refuses_a_client_without_the_"
       "password"),
    _m("trust-kept", "a data directory made before passwords is closed on its next start",
       "a cluster's trust rules are left in place",
       "server/embedded/postgres.py",
       "        if not trusting:\n            return", "        if True:\n            return",
       "tests/embedded/test_password.py::test_a_cluster_made_before_passwords_is_closed_in_"
       "place_on_its_next_start"),
    _m("vouch-ignored", "a managed Redis refusing CONFIG GET is accepted when vouched",
       "REDIS_DURABILITY_VOUCHED is ignored",
       "server/queue/durability.py", "            if self.vouched:", "            if False:",
       D + "test_a_redis_refusing_config_get_is_accepted_in_prod_only_when_its_durability_"
       "is_vouched"),
    # --- bounded work per call, bookkeeping that cannot leak ---------------------------
    _m("commit-counts-kept", "the admin view's commit counts never outlive a quiet gap",
       "per-second commit counts are not trimmed by time",
       "server/queue/scripts.py",
       "    if at == nil or at < second - 60 then stale[#stale + 1] = field end",
       "    if false then stale[#stale + 1] = field end",
       Q + "test_per_second_commit_counts_keep_only_the_last_minute_after_a_quiet_gap"),
    _m("requeue-past-bound", "a DLQ requeue keeps the queue's bound",
       "the requeue admits points past QUEUE_MAX_POINTS",
       "server/queue/dead_letters.py", "        args: list[Any] = [self.max_points]",
       "        args: list[Any] = [0]",
       "tests/queue/test_dead_letters.py::test_requeue_stops_at_the_queue_bound_and_says_"
       "how_many_stayed"),
    _m("requeue-all-rereads", "a DLQ requeue always ends",
       "requeue-all reads the DLQ until it is empty, requeued entries included",
       "server/queue/dead_letters.py",
       "        budget = int(await self.redis.zcard(at.dead_index))\n"
       "        offset = 0  # entries left in place so far, at the front of the range\n"
       "        while budget > 0:\n"
       "            page = cast(list[bytes], await self.redis.zrangebyscore(\n"
       "                at.dead_index, \"-inf\", began_ms, start=offset,",
       "        budget = 10 ** 9\n"
       "        offset = 0  # entries left in place so far, at the front of the range\n"
       "        while budget > 0:\n"
       "            page = cast(list[bytes], await self.redis.zrangebyscore(\n"
       "                at.dead_index, \"-inf\", \"+inf\", start=offset,",
       "tests/queue/test_dead_letters.py::test_requeue_all_ends_while_the_requeued_points_"
       "fail_again"),
    _m("crashed-holder-uncounted", "nothing loops forever: a chunk that kills its holders",
       "an expired lease is not counted against its chunk",
       "server/queue/scripts.py", "  redis.call('HINCRBY', KEYS[6], 'lost:' .. id, 1)\n",
       "",
       W + "test_a_chunk_whose_holders_keep_dying_is_dead_lettered_as_crashed_holder"),
    _m("write-unfenced", "a worker that lost its lease writes nothing more",
       "the write commits without confirming the lease",
       "server/queue/worker.py",
       "            outcome = await self.writer.write(chunks, lease.confirm)",
       "            outcome = await self.writer.write(chunks)",
       W + "test_a_worker_that_lost_its_lease_while_its_write_waited_writes_nothing"),
    _m("enqueue-call-unbounded", "bounded work per call: ENQUEUE",
       "coalesced groups go in one call whatever their number",
       "server/queue/redis_queue.py",
       "            if batch and (chunks + len(group) // 2 > self.call_max_chunks",
       "            if False and (chunks + len(group) // 2 > self.call_max_chunks",
       Q + "test_coalesced_requests_share_calls_within_the_calls_bounds"),
    _m("bodies-unbounded", "bounded work per call: request bodies",
       "a JSON body is not counted against the process's body budget",
       "server/handlers/base.py",
       "        if self.buffers_body and length is not None and length.isascii() "
       "and length.isdigit():",
       "        if False:",
       "tests/handlers/test_base.py::test_a_body_past_what_the_process_may_hold_is_503_"
       "overloaded_until_room_frees"),
    _m("idle-body-kept", "bounded work per call: idle bodies",
       "a streamed body that stops arriving is waited for",
       "server/handlers/base.py",
       "        self.deps.bodies.add(self)  # cut if idle HTTP_BODY_IDLE_S\n",
       "",
       "tests/handlers/test_base.py::test_a_body_that_stops_arriving_is_cut_with_408"),
    _m("idle-connection-kept", "bounded work per call: idle connections",
       "a connection waiting for headers past the idle timeout is kept open",
       "server/runtime/listener.py",
       "                connection.stream.close()  # tornado's own end for a header timeout",
       "                pass",
       "tests/test_listener.py::test_an_idle_keep_alive_connection_is_closed_after_the_"
       "idle_timeout",
       "tests/test_listener.py::test_a_header_block_that_never_completes_is_closed_after_"
       "the_idle_timeout"),
    _m("busy-connection-cut", "bounded work per call: idle connections",
       "a connection whose request is being handled counts as idle",
       "server/runtime/listener.py",
       "            if request._request_start_line is None and now - since >= self.idle_s:",
       "            if now - since >= self.idle_s:",
       "tests/test_listener.py::test_a_connection_whose_request_is_handled_past_the_"
       "timeout_is_kept"),
    _m("nodelay-toggled", "answers are not delayed by Nagle's algorithm",
       "tornado's per-request TCP_NODELAY toggling is left in place",
       "server/runtime/listener.py",
       "        stream.set_nodelay = _kept  # type: ignore[method-assign]", "        pass",
       "tests/test_listener.py::test_tcp_nodelay_stays_on_for_every_request_of_a_connection"),
    _m("stop-closes-unbounded", "the whole stop keeps to SHUTDOWN_TIMEOUT",
       "a pool's close waits its own 10 s for connections still out",
       "server/runtime/lifecycle.py",
       "        await asyncio.wait_for(close(max(0.0, left - 0.1)), left)",
       "        await close(10.0)",
       "tests/test_lifecycle.py::test_the_whole_stop_keeps_to_shutdown_timeout_though_a_"
       "connection_is_kept"),
    # --- the read replica (DATABASE_READ_URL) ----------------------------------------
    _m("replica-unused", "reads are served by the read replica",
       "every read goes to the primary",
       "server/storage/replica.py",
       "        if self.replica is not None and self.serving():",
       "        if False:",
       R + "test_reads_come_from_the_replica_and_writes_and_tokens_from_the_primary"),
    _m("tokens-on-replica", "token lookups never use the read replica",
       "the request handlers' token lookups go to the replica's pool",
       "server/runtime/lifecycle.py",
       "        auth = Authenticator(db, breaker=pool.postgres_breaker,",
       "        auth = Authenticator(replica_db or db, breaker=pool.postgres_breaker,",
       R + "test_reads_come_from_the_replica_and_writes_and_tokens_from_the_primary"),
    _m("replica-writable", "the replica's pool can never write",
       "the replica's connections are not read-only",
       "server/storage/database.py",
       '        options += " -c default_transaction_read_only=on"', "        pass",
       R + "test_the_replica_s_connections_refuse_writes_whatever_the_url_points_at"),
    _m("replica-needed-at-start", "a replica down at start stops nothing",
       "the replica's pool opens its connections at start",
       "server/runtime/lifecycle.py",
       "            replica_db = await open_database(settings.replace(pg_pool_min=0),",
       "            replica_db = await open_database(settings,",
       R + "test_a_replica_down_at_start_stops_nothing_and_reads_use_the_primary"),
    _m("no-replica-fallback", "replica down: reads answer from the primary",
       "a read the replica fails is not run again on the primary",
       "server/storage/replica.py",
       "            except PoolTimeout:\n                raise",
       "            except StoreUnavailable:\n                raise",
       R + "test_with_the_replica_stopped_reads_answer_from_the_primary"),
    _m("lag-bound-ignored", "replica lagging: reads answer from the primary",
       "the replica serves reads however far behind it is",
       "server/storage/replica.py",
       "                and self.lag_s <= self.max_lag_s and self.checked_at is not None",
       "                and self.checked_at is not None",
       R + "test_a_replica_further_behind_than_the_bound_leaves_reads_to_the_primary"),
    _m("idle-primary-is-lag", "the replica's lag is measured honestly",
       "the lag is the last replayed commit's age alone (an idle primary looks like lag)",
       "server/storage/replica.py",
       "        bounds = [now - self._caught_up_at] if self._caught_up_at is not None else []",
       "        bounds = []",
       R + "test_a_replica_further_behind_than_the_bound_leaves_reads_to_the_primary"),
    # --- serve --processes N: supervised children ----------------------------------------
    _m("dead-child-not-replaced", "a child of serve --processes N that dies is replaced",
       "the parent reaps a dead child and forks no other",
       "server/runtime/supervise.py", "            slot.restart_at = now + backoff_s\n",
       "            slot.restart_at = None\n",
       SV + "test_a_child_killed_with_sigkill_mid_ingest_is_replaced_and_every_point_commits_"
       "once"),
    _m("restart-not-counted", "a child's replacement is counted in /metrics",
       "the parent replaces a child without counting it",
       "server/runtime/supervise.py", "            process_restarted()\n", "            pass\n",
       SV + "test_a_child_killed_with_sigkill_mid_ingest_is_replaced_and_every_point_commits_"
       "once"),
    _m("crash-loop-forever", "a crash loop stops serve loudly (exit 1)",
       "children that die at start are replaced forever",
       "server/runtime/supervise.py",
       "        if len(self.deaths) < self.deaths_max:", "        if True:",
       SV + "test_children_that_die_at_start_every_time_stop_serve_with_one_line_and_exit_1"),
    _m("sigterm-not-forwarded", "SIGTERM stops every child of serve --processes N, exit 0",
       "the parent takes SIGTERM but does not pass it on",
       "server/runtime/supervise.py",
       "            if received is not None and received.si_signo in STOP_SIGNALS:",
       "            if False:",
       SV + "test_a_child_killed_with_sigkill_mid_ingest_is_replaced_and_every_point_commits_"
       "once"),
    # --- Redis Sentinel, WAIT (issue 18) --------------------------------------------
    _m("sentinel-master-pinned", "Redis failover: ingest resumes on the new master",
       "a client keeps the first master the sentinels named",
       "server/redis_client.py",
       "    async def aclose(self) -> None:\n        try:\n            await super().aclose()\n"
       "        finally:\n            await self.sentinel_manager.aclose()",
       "    async def get_master_address(self) -> Any:\n"
       "        if self.master_address is None:\n"
       "            self.master_address = await super().get_master_address()\n"
       "        return self.master_address\n\n"
       "    async def aclose(self) -> None:\n        try:\n            await super().aclose()\n"
       "        finally:\n            await self.sentinel_manager.aclose()",
       "tests/test_redis_client.py::test_a_primary_killed_mid_ingest_fails_over_and_every_"
       "2xx_is_committed_once"),
    _m("no-wait-replicas", "a 202 survives a Redis failover (QUEUE_WAIT_REPLICAS)",
       "an enqueue does not wait for a replica",
       "server/queue/redis_queue.py", "                    if self.wait_replicas:",
       "                    if False:",
       Q + "test_with_wait_replicas_an_enqueue_no_replica_confirms_is_reported_unknown",
       "tests/ingest/test_accept.py::test_with_wait_replicas_and_no_replica_a_202_is_"
       "committed_in_postgres",
       "tests/test_redis_client.py::test_a_primary_killed_mid_ingest_fails_over_and_every_"
       "2xx_is_committed_once"),
    _m("replicas-short-opens-breaker", "a missing replica does not stop the queue",
       "an enqueue too few replicas confirmed opens Redis's circuit breaker",
       "server/queue/breaker.py", " | CommandRefused | ReplicasShort)", " | CommandRefused)",
       "tests/ingest/test_accept.py::test_with_wait_replicas_and_no_replica_a_202_is_"
       "committed_in_postgres"),

    # --- Redis Cluster and queue shards ----------------------------------------------
    _m("cluster-untagged", "a queue shard lives in one Redis Cluster slot",
       "the queue's keys carry no hash tag (a script's keys land in several slots)",
       "server/queue/keys.py", "    base = f\"{PREFIX}{{q{shard}}}:\"",
       "    base = f\"{PREFIX}q{shard}:\"",
       "tests/test_redis_cluster.py::test_three_shards_on_a_cluster_drain_exactly_once_"
       "across_a_primary_failover"),
    _m("shards-unrouted", "a competition's points go to its shard, in order",
       "every point goes to shard 0",
       "server/queue/keys.py", "        return competition_id % count", "        return 0",
       Q + "test_points_go_to_their_competitions_shard_in_their_order"),
    _m("claims-unrotated", "workers claim across shards fairly",
       "every claim tries shard 0 first",
       "server/queue/redis_queue.py",
       "        self._next_shard = (start + 1) % len(self.shards)", "",
       Q + "test_claims_take_the_shards_in_turn_so_a_deep_one_starves_none"),
    _m("shards-all-or-nothing", "a request spanning shards is partially accepted",
       "a failed shard fails the request as if nothing went in",
       "server/queue/redis_queue.py",
       "        raise EnqueueInterrupted(cause, accepted=first,",
       "        raise causes[first]\n        raise EnqueueInterrupted(cause, accepted=first,",
       Q + "test_a_request_spanning_shards_one_of_them_full_is_partially_accepted"),
    _m("stats-one-shard", "the admin view and /metrics sum the shards",
       "the queue's counters are read from shard 0 only",
       "server/queue/redis_queue.py", "            for at in self.shards:\n"
       "                pipe.hgetall(at.stats)",
       "            for at in self.shards[:1]:\n                pipe.hgetall(at.stats)",
       "tests/handlers/test_admin.py::test_the_queue_view_sums_the_shards_and_pause_holds_"
       "every_shard", "tests/test_metrics.py::test_queue_gauges_sum_every_shard"),
    _m("old-keys-stranded", "an upgrade to queue shards strands no queued point",
       "start-up does not adopt the queue's keys named before shards",
       "server/runtime/prepare.py", "            adopt_old_queue(redis_url, settings)\n", "",
       "tests/queue/test_legacy.py::test_a_queue_left_under_the_old_key_names_is_adopted_"
       "by_the_next_start"),
    _m("dlq-one-shard", "the DLQ is listed across shards",
       "the DLQ lists shard 0 only",
       "server/queue/dead_letters.py", "        for n, at in enumerate(self.shards):\n"
       "            first = offset",
       "        for n, at in enumerate(self.shards[:1]):\n            first = offset",
       Q + "test_dead_letters_of_every_shard_are_listed_requeued_and_purged_together"),
    # --- the dashboard ----------------------------------------------------------------
    _m("dashboard-errors-public", "store addresses only to an admin",
       "the dashboard's summary shows error texts to every role",
       "server/ops/dashboard.py",
       "    shown = _without_private(summary) if role != \"admin\" else dict(summary)",
       "    shown = dict(summary)",
       DB + "test_only_an_admin_sees_error_texts",
       DB + "test_redis_down_the_summary_answers_without_the_queue_and_says_so"),
    _m("dashboard-uncached", "a wall of dashboards costs the stores what one does",
       "every summary request builds its own summary",
       "server/ops/dashboard.py", "        return await self._summary.get(SUMMARY_CACHE_S)",
       "        return await self._summary.get(0)",
       DB + "test_a_burst_of_viewers_costs_one_summary_build_a_second"),
    _m("dashboard-chart-escape", "a chart request reads nothing outside a run folder",
       "a chart's resolved path is not checked to lie inside RESULTS_DIR",
       "server/ops/bench_runs.py",
       "        if not resolved.is_relative_to(self.root.resolve()) or not resolved.is_file():",
       "        if not resolved.is_file():",
       DB + "test_run_index_refuses_names_and_links_that_leave_the_results_folder"),
    _m("dashboard-no-csp", "no inline or foreign code runs in the dashboard",
       "the page is served without its Content-Security-Policy",
       "server/handlers/dashboard.py",
       "        self.set_header(\"Content-Security-Policy\", CSP)\n", "",
       DB + "test_page_and_assets_are_public_with_a_policy_allowing_no_inline_or_foreign_"
       "code"),
    # --- chaos (issue 20): what the chaos run found, and the checker itself ------------
    _m("direct-write-unbounded", "a silent PostgreSQL costs a request seconds, not 30 s",
       "a direct write (Redis down) waits for a connection and its BEGIN as long as the "
       "pool's bounds allow",
       "server/ingest/accept.py",
       "            async with self.db.transaction(wait_s=self.wait_s) as cur:",
       "            async with self.db.transaction() as cur:",
       "tests/ingest/test_accept.py::test_redis_down_and_postgres_silent_a_request_is_"
       "refused_within_seconds"),
    _m("pg-stop-only-by-starter", "stores are stopped by pid whoever started them",
       "as root, an EmbeddedPostgres that did not start the server runs pg_ctl as root",
       "server/embedded/postgres.py",
       "        if os.geteuid() == 0 and self._run_as is None:",
       "        if False:",
       "tests/embedded/test_postgres.py::test_a_server_another_object_started_is_stopped_"
       "by_a_fresh_one"),
    _m("checker-blind-to-doubles", "the chaos checker catches a doubled point",
       "the checker does not count a value committed more than once",
       "harness/chaos/checker.py", "        if times > 1:", "        if times > 99:",
       CH + "test_one_value_committed_under_two_ids_is_doubled"),
    _m("checker-blind-to-standings", "the chaos checker catches a wrong standing",
       "the checker compares no standing",
       "harness/chaos/checker.py", "    _check_standings(verdict, rows, standings)\n", "",
       CH + "test_a_standing_that_is_not_the_sum_of_its_committed_points_is_wrong"),
    _m("checker-blind-to-loss", "the chaos checker catches a lost point",
       "the checker takes an acked point that was never committed for fine",
       "harness/chaos/checker.py", '            verdict.fail("lost", asdict(entry))',
       "            pass",
       CH + "test_an_acked_point_never_committed_is_lost"),
    # --- the access line (issue 21): buffered, off the loop, none lost at a stop ------------
    _m("access-no-stop-drain", "a clean stop writes every access line",
       "the lifecycle's stop does not write the buffered access lines",
       "server/runtime/lifecycle.py",
       '        stack.push_async_callback(_within, deadline, "the access log", drain_access_log)',
       "        pass",
       LG + "test_a_clean_stop_writes_every_access_line_of_the_service",
       LG + "test_each_serving_process_writes_its_own_files"),
    _m("access-no-flush-task", "access lines are written while the process serves",
       "the flush task never hands the buffer to the writer",
       "server/ops/logs.py",
       "            if access is not None:\n                access.flush()\n\n    task",
       "            pass\n\n    task",
       LG + "test_a_request_id_is_echoed_and_on_every_line_of_its_request",
       LG + "test_serve_writes_access_lines_while_serving_and_the_last_ones_at_sigterm"),
    _m("access-no-rollover", "app.log rotates at LOG_MAX_BYTES with the access lines in it",
       "access lines are appended to app.log without its handler's rotation",
       "server/ops/access_log.py", "        if handler.maxBytes <= 0:", "        if True:",
       LG + "test_access_lines_reach_app_log_whole_and_in_order_across_rotations"),
    _m("access-log-false-ignored", "ACCESS_LOG=false writes no access line",
       "the access log is on whatever ACCESS_LOG says",
       "server/ops/logs.py",
       "    if settings.access_log and root.isEnabledFor(logging.INFO):",
       "    if root.isEnabledFor(logging.INFO):",
       LG + "test_access_log_false_writes_no_access_line"),
    _m("access-backlog-unbounded", "an output that takes nothing costs bounded memory",
       "batches pile up for a stuck output without bound",
       "server/ops/access_log.py", "        if self._queue.qsize() >= MAX_PENDING:",
       "        if False:",
       LG + "test_an_output_that_takes_nothing_costs_bounded_memory_and_the_drops_are_"
       "reported"),
    # --- the embedded stores: stopped whoever started them, never under a user (issue 22) ---
    _m("stores-lock-not-held", "stores stop never stops the stores under a running serve",
       "a command using the embedded stores does not hold the data directory's lock",
       "server/runtime/prepare.py",
       "            embedded.may_stop = stack.enter_context(using_stores(settings.data_dir))"
       ".alone",
       "            pass",
       ST + "test_stores_stop_is_refused_while_a_serve_uses_the_stores"),
    _m("stores-stop-ignores-users", "stores stop never stops the stores under a running serve",
       "stores stop goes ahead while the lock is held", "server/embedded/control.py",
       "        if not free:", "        if False:",
       ST + "test_stores_stop_is_refused_while_a_serve_uses_the_stores"),
    _m("stores-stop-only-own", "stores stop stops the stores whoever started them",
       "stores stop stops only what its own process started (nothing)",
       "server/embedded/control.py", "            store.stop(even_if_reused=True)",
       "            store.stop()",
       ST + "test_stores_stop_stops_what_a_killed_serve_left_running"),
    _m("serve-silent-on-reused-stores", "serve's last line says which stores it leaves running",
       "the stores a serve reused are left out of its last line",
       "server/embedded/control.py", "        elif state is not None:", "        elif False:",
       ST + "test_serve_s_last_line_says_which_stores_it_leaves_running_and_how_to_stop_them"),
    # --- small things a newcomer meets (issue 22) -------------------------------------------
    _m("json-without-newline", "every JSON answer ends with a newline",
       "answers built per request are sent without their newline",
       "server/handlers/base.py", "    return orjson.dumps(obj, option=_NEWLINE)",
       "    return orjson.dumps(obj)",
       "tests/handlers/test_json_answers.py::"
       "test_every_json_answer_ends_with_one_newline_counted_in_its_length"),
    _m("check-config-python-booleans", "check-config writes booleans as true and false",
       "booleans are written as Python writes them (True, False)",
       "server/config.py", '        return "true" if value else "false"',
       "        return str(value)",
       CF + "test_check_config_writes_booleans_as_true_and_false_and_its_lines_read_back_the_"
       "same"),
    _m("help-without-env", "every --help names the variable behind each flag",
       "flag help texts say neither default nor environment variable",
       "server/config.py", "    return f\"{text} (default {default or 'unset'}; env {name})\"",
       "    return text",
       CF + "test_every_flag_backed_by_a_setting_names_its_variable_and_default_in_help"),
    _m("stop-under-another-user", "a serve never stops the stores under another command",
       "a command stops the stores it started at exit though another still uses them",
       "server/embedded/__init__.py",
       "        if started and self.may_stop is not None and not self.may_stop():",
       "        if False:",
       ST + "test_a_serve_leaves_the_stores_it_started_running_while_another_serve_uses_"
       "them"),
    _m("stale-pid-is-postgres", "stores stop never signals a process that is not its store",
       "any live process whose command line says postgres counts as the cluster's",
       "server/embedded/postgres.py", "        return port if self._is_ours(pid) else None",
       "        return port if pid_alive(pid, 'postgres') else None",
       ST + "test_a_stale_pid_file_naming_another_process_is_not_a_store_and_is_never_"
       "signalled"),
    # --- reports that read at a glance (issue 22) ------------------------------------------
    _m("report-compares-anything", "report A B refuses a percentage between incomparable runs",
       "two runs of different scales, seeds or machines compare as if alike",
       "harness/comparability.py", "    return found\n", "    return []\n",
       "tests/harness/test_report.py::test_runs_of_different_scales_are_refused_a_percentage"),
    _m("progress-per-group", "piped progress lines count what was answered",
       "the progress line counts only the running group, from 0 at each phase",
       "harness/progress.py",
       "            self._done[0] += int(self._counters[0])\n", "",
       "tests/harness/test_progress.py::test_piped_counts_are_the_paths_totals_across_groups"),
)


def apply(mutation: Mutation, tree: Path) -> None:
    target = tree / mutation.path
    text = target.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit(f"{mutation.name}: the code to replace occurs {count} times in "
                         f"{mutation.path} (must be exactly once): update the mutation")
    target.write_text(text.replace(mutation.old, mutation.new))


def run(mutation: Mutation, *, mutate: bool = True) -> tuple[list[str], float, str]:
    """(the tests that failed, seconds, the tail of their output) in a mutated copy."""
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(ROOT, tree, ignore=_SKIP, symlinks=True)
        if mutate:
            apply(mutation, tree)
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "0", "-rf",
             "--timeout", "300", *mutation.tests,
             # its own temporary root: pytest prunes all but the last three sessions'
             # folders in the shared one, stores included, under a run beside it
             "--basetemp", str(Path(tmp) / "pytest")],
            cwd=tree, capture_output=True, text=True, timeout=1200)
        seconds = time.monotonic() - started
    if result.returncode not in (0, 1):  # 2-5: interrupted, usage, collection problems
        raise SystemExit(f"{mutation.name}: pytest exited {result.returncode}:\n"
                         f"{result.stdout[-3000:]}{result.stderr[-2000:]}")
    failed = sorted({line.split()[1].split("[")[0].rsplit("::", 1)[-1]
                     for line in result.stdout.splitlines() if line.startswith("FAILED ")})
    if result.returncode == 1 and not failed:
        raise SystemExit(f"{mutation.name}: pytest failed, but no test did:\n"
                         f"{result.stdout[-3000:]}")
    return failed, seconds, result.stdout[-1500:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutations",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--baseline", action="store_true",
                        help="also run each mutation's tests unmutated: they must pass")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTATIONS}
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"unknown mutation(s): {', '.join(unknown)}; see --list")
    chosen = [known[name] for name in args.names] if args.names else list(MUTATIONS)
    if args.list:
        for m in chosen:
            print(f"{m.name:24} {m.what}")
        return 0
    print("| guarantee | mutation | its tests (each failed, unless marked) | result |")
    print("|---|---|---|---|")
    survived = 0
    for mutation in chosen:
        if args.baseline:
            failed, _, tail = run(mutation, mutate=False)
            if failed:
                print(f"{mutation.name}: its tests fail unmutated:\n{tail}", file=sys.stderr)
                return 2
        failed, seconds, tail = run(mutation)
        caught = bool(failed)
        survived += not caught
        names = [test.rsplit("::", 1)[-1] for test in mutation.tests]
        tests = ", ".join(f"`{name}`" + ("" if name in failed else " (passed)")
                          for name in names)
        verdict = f"caught ({seconds:.0f} s)" if caught else "**SURVIVED**"
        print(f"| {mutation.guarantee} | `{mutation.name}`: {mutation.what} | {tests} | "
              f"{verdict} |", flush=True)
        if not caught:
            print(tail, file=sys.stderr)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
