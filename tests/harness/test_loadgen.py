"""The load generator's schedule, and coordinated-omission correction against a real stall."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import orjson
import pytest
import uvloop

from harness.executors import ConstantClients, ConstantRate, RampingRate, Stage
from harness.loadgen import run_phase, schedule
from harness.metrics import histogram_from
from harness.scenario import Phase, Setup
from harness.workload import Target
from server.embedded import free_port


def test_ramp_down_to_a_zero_target_thins_arrivals_linearly() -> None:
    ramp = RampingRate(start_rate=100, stages=(Stage(2, 0),))
    per_second = Counter(int(t) for t in schedule(ramp, random.Random(1)))
    assert per_second[0] == pytest.approx(75, abs=2)  # 100 → 50 per s: a mean of 75
    assert per_second[1] == pytest.approx(25, abs=2)  # 50 → 0
    assert ramp.scaled(0.5).stages[0].target == 0  # scaling keeps a zero a zero


def test_ramping_rate_schedule_counts_per_second() -> None:
    ramp = RampingRate(start_rate=0, stages=(Stage(10, 100), Stage(5, 100)))
    per_second = Counter(int(t) for t in schedule(ramp, random.Random(1)))
    for second in range(10):  # the rate rises 10/s each second: mean over second i
        expected = 10 * second + 5
        assert abs(per_second[second] - expected) <= 2, (second, per_second[second])
    for second in range(10, 15):
        assert abs(per_second[second] - 100) <= 2
    assert sum(per_second.values()) == pytest.approx(500 + 500, abs=3)


def test_constant_rate_is_exact_and_poisson_is_right_on_average() -> None:
    times = list(schedule(ConstantRate(rate=50, duration_s=4), random.Random(1)))
    assert len(times) == 200 and times == sorted(times)
    assert max(b - a for a, b in pairwise(times)) == pytest.approx(0.02)
    poisson = ConstantRate(rate=200, duration_s=10, arrival="poisson")
    count = sum(1 for _ in schedule(poisson, random.Random(2)))
    assert abs(count - 2000) < 2000 * 0.1


STALLING_SERVER = """
import sys, time
import tornado.ioloop, tornado.web
count = 0
class Health(tornado.web.RequestHandler):
    def get(self):
        global count
        count += 1
        if count == int(sys.argv[2]):
            time.sleep(0.5)  # the whole server stalls once, for half a second
        self.write({"status": "ok"})
app = tornado.web.Application([(r"/health", Health)])
app.listen(int(sys.argv[1]), "127.0.0.1")
print("ready", flush=True)
tornado.ioloop.IOLoop.current().start()
"""


@pytest.fixture
def stalling_server(tmp_path: Path) -> Iterator[str]:
    script = tmp_path / "stall.py"
    script.write_text(STALLING_SERVER)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), str(port), "100"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()


def _p99_ms(url: str, phase: Phase) -> float:
    target = Target(url=url, token="", participants={1: [1]})
    result = uvloop.run(run_phase(phase, Setup(), target, 1, "co", time.time()))
    assert result["errors"] == 0
    return result["latency_ms"]["p99"]


def test_open_model_p99_shows_a_stall_that_a_closed_loop_hides(stalling_server: str) -> None:
    open_model = Phase(name="open", kind="health",
                       executor=ConstantRate(rate=200, duration_s=1.5, connections=8))
    assert _p99_ms(stalling_server, open_model) > 250  # ~100 requests were due in the stall


def test_closed_loop_measurement_hides_the_same_stall(stalling_server: str) -> None:
    closed = Phase(name="closed", kind="health",
                   executor=ConstantClients(vus=2, duration_s=1.5))
    assert _p99_ms(stalling_server, closed) < 100  # only two requests saw it


def test_dropped_requests_count_against_success_and_in_latency() -> None:
    from harness.metrics import PhaseRecorder

    rec = PhaseRecorder("p", "health", warmup_s=0)
    for i in range(98):
        rec.record(i / 100, 0.001, 0.001, 200, True, 0)
    rec.drop(0.5, 1.5)
    rec.drop(0.6, 1.6)
    result = rec.result(wall_s=1.0, cpu_s=0.1)
    assert result["success"] == 0.98 and result["dropped"] == 2
    assert result["latency_ms"]["max"] >= 1600  # the wait of a dropped request is latency
    assert result["generator"]["fell_behind"] is True


def test_prebuilt_upload_files_are_the_bytes_streaming_would_send() -> None:
    """Building files before the clock starts changes when they are made, not what is sent."""
    from harness.executors import BulkUpload
    from harness.workload import Workload

    upload = BulkUpload(points=3000, files=2, chunk_bytes=4096)
    phase = Phase(name="u", kind="bulk", executor=upload)
    target = Target(url="http://x", token="t", participants={1: [1, 2], 2: [3]})
    prebuilt, streamed = (Workload(Setup(duplicate_fraction=0.1), phase, target, 7, "r")
                          for _ in range(2))
    prebuilt.prebuild(upload)
    made = [b"".join(pieces) for pieces in prebuilt.files(upload)]
    assert made == [b"".join(pieces) for pieces in streamed.files(upload)]
    assert len(made) == 2 and made[0].count(b"\n") == 3001  # header + 3000 lines


def test_a_duplicate_resends_an_earlier_point_exactly() -> None:
    """A duplicate is what a retrying client sends: the same id with the same content (a
    reused id with other content would be an id conflict, dead-lettered)."""
    from harness.workload import Workload

    phase = Phase(name="d", kind="batch", batch_size=100,
                  executor=ConstantRate(rate=1, duration_s=1))
    target = Target(url="http://x", token="t", participants={1: [1, 2], 2: [3]})
    workload = Workload(Setup(duplicate_fraction=0.2), phase, target, 7, "r")
    sent: dict[str, set[bytes]] = {}
    for _ in range(20):
        request, _ = workload.next_request()
        body = orjson.loads(request.split(b"\r\n\r\n", 1)[1])
        for point in body["points"]:
            sent.setdefault(point["id"], set()).add(orjson.dumps(point))
    assert 1500 < len(sent) < 1700  # ~20% of 2,000 points were resends
    assert all(len(versions) == 1 for versions in sent.values())


def test_a_rate_never_resolved_from_a_baseline_is_refused_not_guessed() -> None:
    phase = Phase(name="p", kind="health",
                  executor=ConstantRate(rate=None, duration_s=1, rate_of_baseline=0.5))
    target = Target(url="http://127.0.0.1:1", token="", participants={1: [1]})
    with pytest.raises(ValueError, match="rate_of_baseline was never resolved"):
        uvloop.run(run_phase(phase, Setup(), target, 1, "r", time.time()))


def test_latency_from_the_intended_time_is_never_less_than_service_time(
        stalling_server: str) -> None:
    """uvloop's millisecond timers can wake a request's send before it is due: counted
    from the due time, its answer once took "1 µs" (the spectra's 10⁻³ ms plunge)."""
    for arrival in ("poisson", "even"):
        phase = Phase(name="probe", kind="health", executor=ConstantRate(
            rate=300, duration_s=1, connections=8, arrival=arrival))
        target = Target(url=stalling_server, token="", participants={1: [1]})
        result = uvloop.run(run_phase(phase, Setup(), target, 1, "early", time.time()))
        latency = histogram_from(result)
        service = histogram_from(result, "service_hist")
        assert latency.get_total_count() == service.get_total_count() > 200
        assert latency.get_min_value() >= service.get_min_value(), arrival
