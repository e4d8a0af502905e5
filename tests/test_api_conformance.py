"""Every answer of a live ``run.py serve`` conforms to its own ``/openapi.json``.

schemathesis reads the document the server serves and, for every operation,
sends the document's examples, boundary cases (its coverage phase) and generated
requests (fuzzing) — valid and invalid — with an admin token, then checks each
answer: never a 5xx, a status the operation documents, the documented content
type, a body that fits the documented schema, the documented headers; and that
the document says what the validators take, both ways: a request the document
allows is never refused as invalid (only 2xx, 404 for an id that does not exist,
409 for a slug taken), one it does not allow is refused with a 4xx.  The
server runs on its own data directory with real embedded PostgreSQL and Redis,
seeded so that the examples (competition 1, participant 2, point ``judge-7``, a
dead letter) exist.

schemathesis runs as its command line, ``schemathesis run``, the way a user
would point it at a deployment (its pytest plugin does not work with pytest 9);
``tests/schemathesis_hooks.py`` teaches it the bulk upload's media types, and
leaves out of the valid requests those that may break one of the two rules the
document can state in words only (``ends_at`` before ``starts_at``, a
``recorded_at`` in the future).

Reproducible and bounded: deterministic generation (no randomness, no example
database, nothing learnt from the answers), at most ``MAX_EXAMPLES`` generated
requests per operation and phase, no shrinking, one worker — about 1,000
requests, ~15 s on the 2-core machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

from server.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.support import ROOT, call, conformance_checks, serve, until_sync

# The answer is the one the document describes, and, with both stores up, never a
# 5xx (not even a documented 503); the document's request schemas are the
# validators' rules, no more (positive data accepted), no less (negative refused).
CHECKS = [not_a_server_error, positive_data_acceptance, negative_data_rejection,
          *conformance_checks()]
# A valid request on the seeded server: done, or an id that does not exist, or a slug
# that is taken — never 400, 413, 415 or 422.
ACCEPTED = ["2xx", "404", "409"]
MAX_EXAMPLES = 10  # generated requests per operation and phase
RUN_TIMEOUT_S = 180  # ~15 s expected; a hang is a failure, not a stuck suite

CONFIG = f"""
[generation]
deterministic = true
max-examples = {MAX_EXAMPLES}
# A failure is reported as found: shrinking it against a live server takes long.
no-shrink = true

[phases.stateful]
enabled = false

# Requests are a function of the document alone, not of what earlier answers held
# (ids it would reuse, errors it would steer by): the same requests on every run.
[phases.examples.extra-data-sources]
responses = false
[phases.coverage.extra-data-sources]
responses = false
[phases.fuzzing.extra-data-sources]
responses = false
[phases.fuzzing.error-feedback]
enabled = false

[checks]
enabled = false
""" + "".join(f"{check.__name__}.enabled = true\n" for check in CHECKS) + f"""
positive_data_acceptance.expected-statuses = {ACCEPTED}
""" + """
# The upload's documented examples are text, which schemathesis will not send for
# a media type with a strategy of its own (the hooks'): those bodies come from it.
[[operations]]
include-operation-id = "postPointsBulk"
phases.examples.enabled = false
"""


def _seed(url: str, token: str) -> None:
    """Competition 1 with participants 1..3, committed points (``judge-7`` among
    them) and one dead letter, as the document's examples expect."""
    status, comp = call(url, "POST", "/v1/competitions", token,
                        {"slug": "cup", "name": "The Cup"})
    assert (status, comp["id"]) == (201, 1), comp
    status, _ = call(url, "POST", "/v1/competitions/1/participants", token,
                     {"participants": [{"external_ref": f"p{i}", "display_name": f"Player {i}"}
                                       for i in range(3)]})
    assert status == 201
    points = [{"id": "judge-7", "competition_id": 1, "participant_id": 2, "value": 8.5},
              {"id": "lap-1", "competition_id": 1, "participant_id": 1, "value": 3},
              {"id": "ghost", "competition_id": 1, "participant_id": 999, "value": 1}]
    status, _ = call(url, "POST", "/v1/points", token, {"points": points})
    assert status == 202

    def settled() -> bool:
        _, queue = call(url, "GET", "/v1/admin/queue", token)
        return queue["dead"] >= 1 and queue["depth"] == 0 and queue["inflight"] == 0

    until_sync(settled, "the seed points committed or dead-lettered", timeout_s=60)


@pytest.fixture
def live(serve_dir: Path) -> Iterator[tuple[str, str]]:
    """(base URL, admin token) of a ``run.py serve`` on its own stores."""
    pg, rd = EmbeddedPostgres(serve_dir), EmbeddedRedis(serve_dir)
    server = serve(serve_dir, env={
        "QUEUE_MAX_ATTEMPTS": "1",  # an unknown reference is dead at once
        # Generated points mostly name unknown references and never commit: each
        # ?ack=committed case would otherwise wait the default 5 s for nothing.
        "ACK_TIMEOUT_S": "0.5",
        "ACCESS_LOG": "false"})  # ~900 lines nobody reads
    try:
        token = server.admin_token
        _seed(server.url, token)
        yield server.url, token
        assert server.terminate(60) == 0, "".join(server.output)
    finally:
        server.kill()
        rd.stop(even_if_reused=True)  # the stores this fixture caused, by their pids
        pg.stop(even_if_reused=True)


@pytest.mark.timeout(RUN_TIMEOUT_S + 120)
def test_every_answer_of_a_live_server_conforms_to_its_openapi_document(
        live: tuple[str, str], tmp_path: Path) -> None:
    base_url, token = live
    _, doc = call(base_url, "GET", "/openapi.json", token)
    operations = {f"{method.upper()} {path}" for path, item in doc["paths"].items()
                  for method in item}
    config, junit = tmp_path / "schemathesis.toml", tmp_path / "junit.xml"
    config.write_text(CONFIG)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
         f"{base_url}/openapi.json", "--header", f"Authorization: Bearer {token}",
         # Every operation: left alone, schemathesis skips the one serving the document.
         "--include-path-regex", ".*",
         "--workers", "1", "--no-color", "--report", "junit",
         "--report-junit-path", str(junit)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {case.get("name") for case in ET.parse(junit).iter("testcase")}
    assert tested == operations, result.stdout
