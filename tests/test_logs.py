"""Logs an operator can use: JSON lines with the request's id, one access line per
request (buffered and written off the loop, none lost at a clean stop), a bug logged
once with its traceback, rotation at LOG_MAX_BYTES."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from server.config import Settings
from server.errors import StoreUnavailable
from server.handlers.base import BaseHandler
from server.ops import access_log
from server.ops.logs import (
    JsonFormatter,
    TextFormatter,
    close_access_log,
    configure_logging,
    drain_access_log,
    log_request,
    request_id_from,
)
from server.runtime.prepare import Stores
from tests.support import Api, call, make_settings, served, serving, until, until_sync

log = logging.getLogger("tests.logs")


class _Chatty(BaseHandler):
    """Logs from inside the request, after an await: the id must follow the task."""

    async def get(self) -> None:
        await asyncio.sleep(0)
        log.info("inside the request")
        self.write_json({"ok": True})


class _Broken(BaseHandler):
    async def get(self) -> None:
        raise RuntimeError("a bug with a secret=hunter2 in its text")


class _Outage(BaseHandler):
    async def get(self) -> None:
        raise StoreUnavailable("postgres", "connection refused", retry_after_s=2)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:  # one path: logging does not depend on it
    return make_settings(log_dir=tmp_path / "logs", log_max_bytes=1024 * 1024)


@contextlib.contextmanager
def configured(settings: Settings, process: int | None = None) -> Iterator[None]:
    """This process's logging as ``serve`` sets it, restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("tornado.access",)}
    try:
        configure_logging(settings, process=process)
        yield
    finally:
        close_access_log()
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def logged(settings: Settings) -> Iterator[Path]:
    with configured(settings):
        yield settings.log_dir  # type: ignore[misc]


@pytest.fixture
def routes(service, logged: Path) -> Path:  # type: ignore[no-untyped-def]
    service.http.request_callback.add_handlers(r".*", [
        (r"/test/chatty", _Chatty, {"deps": service.deps, "route": "/test/chatty"}),
        (r"/test/broken", _Broken, {"deps": service.deps, "route": "/test/broken"}),
        (r"/test/outage", _Outage, {"deps": service.deps, "route": "/test/outage"}),
    ])
    return logged


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_text().splitlines()]


def _access(path: Path) -> list[dict]:
    return [e for e in _lines(path) if e["logger"] == "points.access"]


async def _access_lines(path: Path, count: int) -> list[dict]:
    """The file's access lines once it has ``count`` (the flush task writes them
    within its interval; a wait that runs out raises)."""
    await until(lambda: len(_access(path)) >= count, f"{count} access lines in {path}")
    return _access(path)


async def test_a_request_id_is_echoed_and_on_every_line_of_its_request(
        api: Api, routes: Path) -> None:
    response = await api.http.fetch(api.base_url + "/test/chatty",
                                    headers={"X-Request-ID": "judge-7-req-42"})
    assert response.headers["X-Request-ID"] == "judge-7-req-42"
    access = await _access_lines(routes / "app.log", 1)
    inside = [e for e in _lines(routes / "app.log") if e["msg"] == "inside the request"]
    assert [e["request_id"] for e in inside] == ["judge-7-req-42"]
    assert len(access) == 1
    assert access[0]["request_id"] == "judge-7-req-42"
    assert access[0]["route"] == "/test/chatty"
    assert access[0]["status"] == 200 and access[0]["method"] == "GET"
    assert access[0]["duration_ms"] >= 0


async def test_a_missing_or_unusable_request_id_is_replaced_by_a_new_one(
        api: Api, routes: Path) -> None:
    made = set()
    for header in ({}, {"X-Request-ID": "x" * 129}):
        response = await api.http.fetch(api.base_url + "/health", headers=header)
        request_id = response.headers["X-Request-ID"]
        assert len(request_id) == 32 and int(request_id, 16) >= 0
        made.add(request_id)
    assert len(made) == 2


async def test_access_lines_name_the_route_template_not_the_path(
        api: Api, routes: Path) -> None:
    status, _ = await api.get("/v1/competitions/123456")
    assert status == 404
    status, _ = await api.get("/no/such/thing")
    assert status == 404
    access = await _access_lines(routes / "app.log", 2)
    assert [(e["route"], e["path"], e["status"]) for e in access] == [
        ("/v1/competitions/{competition_id}", "/v1/competitions/123456", 404),
        ("unmatched", "/no/such/thing", 404)]


async def test_a_bug_is_logged_once_with_its_traceback_and_answered_without_it(
        api: Api, routes: Path) -> None:
    response = await api.http.fetch(api.base_url + "/test/broken", raise_error=False,
                                    headers={"X-Request-ID": "req-bug"})
    assert response.code == 500
    body = orjson.loads(response.body)
    assert body["error"]["code"] == "internal_error"
    assert b"hunter2" not in response.body and b"Traceback" not in response.body
    errors = _lines(routes / "error.log")
    assert len(errors) == 1
    assert errors[0]["level"] == "ERROR" and errors[0]["request_id"] == "req-bug"
    assert "Traceback" in errors[0]["exc"] and "RuntimeError" in errors[0]["exc"]
    app_errors = [e for e in _lines(routes / "app.log") if e["level"] == "ERROR"]
    assert len(app_errors) == 1  # and tornado's own access logger said nothing more


async def test_an_outage_is_one_warning_line_without_a_traceback(
        api: Api, routes: Path) -> None:
    response = await api.http.fetch(api.base_url + "/test/outage", raise_error=False)
    assert response.code == 503
    warnings = [e for e in _lines(routes / "app.log") if e["level"] == "WARNING"]
    assert len(warnings) == 1 and "exc" not in warnings[0]
    assert warnings[0]["request_id"] == response.headers["X-Request-ID"]
    assert not (routes / "error.log").read_text()


def test_files_rotate_at_the_size_and_keep_the_set_number(tmp_path: Path) -> None:
    settings = make_settings(log_dir=tmp_path, log_max_bytes=1024, log_backups=2)
    with configured(settings, process=3):
        for n in range(200):
            log.warning("line %d of a log that outgrows its file", n)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["app-3.log", "app-3.log.1", "app-3.log.2", "error-3.log"]
    for name in names[:3]:
        path = tmp_path / name
        assert 0 < path.stat().st_size <= 1024
        assert all(e["logger"] == "tests.logs" for e in _lines(path))
    newest = _lines(tmp_path / "app-3.log")[-1]
    assert newest["msg"] == "line 199 of a log that outgrows its file"


def test_text_lines_for_a_terminal_carry_the_request_id() -> None:
    record = logging.LogRecord("points.access", logging.INFO, __file__, 1, "GET /health 200",
                               None, None)
    record.request_id = "abc"
    assert TextFormatter().format(record).endswith("GET /health 200 [abc]")
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["msg"] == "GET /health 200" and entry["request_id"] == "abc"


def test_each_serving_process_writes_its_own_files(serve_dir: Path, tmp_path: Path) -> None:
    # One file rotated by two processes would lose lines: each has its own pair.
    logs = tmp_path / "logs"
    sent = 0

    def health_lines(name: str) -> int:  # complete lines only: the file is being written
        text = (logs / name).read_text() if (logs / name).exists() else ""
        return sum(e["logger"] == "points.access" and e["route"] == "/health"
                   for e in map(orjson.loads, text[:text.rfind("\n") + 1].splitlines()))

    def both_answered() -> bool:  # new connections: the kernel spreads them over both
        nonlocal sent
        assert call(server.url, "GET", "/health", None)[0] == 200
        sent += 1
        return health_lines("app-1.log") > 0 and health_lines("app-2.log") > 0

    with served(serve_dir, "--processes", "2", env={"LOG_DIR": str(logs)}) as server:
        until_sync(both_answered, "a /health logged by each process in its own file",
                   interval_s=0.01)
        assert server.terminate(60) == 0
    names = sorted(p.name for p in logs.iterdir())
    assert {"app-1.log", "app-2.log", "error-1.log", "error-2.log"} <= set(names)
    access = [e for name in ("app-1.log", "app-2.log") for e in _lines(logs / name)
              if e["logger"] == "points.access"]
    assert len(access) == sent and {e["route"] for e in access} == {"/health"}


def test_made_request_ids_never_repeat_within_or_across_forked_processes() -> None:
    ours = {request_id_from(None) for _ in range(1000)}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id, leave at once
        os.write(write, request_id_from(None).encode())
        os._exit(0)
    os.close(write)
    theirs = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(ours) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ours)
    assert theirs not in ours and theirs[:16] != next(iter(ours))[:16]


class _Finished:
    """What the access line reads of a finished tornado request."""

    class request:
        method, path, remote_ip = "POST", "/v1/points", "127.0.0.1"

        @staticmethod
        def request_time() -> float:
            return 0.00125

    route = "/v1/points"

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id

    def get_status(self) -> int:
        return 202


_JSON_FIELDS = ["ts", "level", "logger", "msg", "method", "route", "path", "status",
                "duration_ms", "request_id", "remote"]
_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_TEXT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO points\.access: "
                   r"GET /v1/competitions/77 401 \d+\.\dms \[req-fmt-1\]$")


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_the_access_line_carries_its_fields_on_stderr_and_in_app_log(
        api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        log_format: str) -> None:
    settings = make_settings(log_dir=tmp_path, log_format=log_format)
    with configured(settings):
        response = await api.http.fetch(api.base_url + "/v1/competitions/77",
                                        raise_error=False,
                                        headers={"X-Request-ID": "req-fmt-1"})
        assert response.code == 401  # no token: any status will do
        [line] = await _access_lines(tmp_path / "app.log", 1)
    assert list(line) == _JSON_FIELDS  # app.log: always JSON, the fields in this order
    assert _TS.match(line["ts"])
    method, path, status, took = line["msg"].split()
    assert (method, path, status) == ("GET", "/v1/competitions/77", "401")
    assert took.endswith("ms") and abs(float(took[:-2]) - line["duration_ms"]) <= 0.06
    assert {k: line[k] for k in _JSON_FIELDS[4:]} == {
        "method": "GET", "route": "/v1/competitions/{competition_id}",
        "path": "/v1/competitions/77", "status": 401, "duration_ms": line["duration_ms"],
        "request_id": "req-fmt-1", "remote": "127.0.0.1"}
    assert (line["level"], line["logger"]) == ("INFO", "points.access")
    stderr = [text for text in capsys.readouterr().err.splitlines() if "points.access" in text]
    if log_format == "json":
        assert [orjson.loads(text) for text in stderr] == [line]
    else:
        assert len(stderr) == 1 and _TEXT.match(stderr[0]), stderr


def test_access_lines_reach_app_log_whole_and_in_order_across_rotations(
        tmp_path: Path) -> None:
    # One writer per file: the access lines go through app.log's own handler and its
    # rotation, beside the other lines, so no file outgrows LOG_MAX_BYTES.
    settings = make_settings(log_dir=tmp_path, log_max_bytes=2048, log_backups=200)
    with configured(settings):
        for n in range(600):
            log_request(_Finished(f"req-{n}"))
            if n % 200 == 100:
                log.warning("an ordinary line among the access lines")
    files = sorted(tmp_path.glob("app.log*"),
                   key=lambda p: -int(p.suffix[1:]) if p.suffix != ".log" else 0)
    assert len(files) > 50
    assert all(0 < p.stat().st_size <= 2048 for p in files)
    lines = [e for p in files for e in _lines(p)]  # whole lines: each one parses
    assert [e["request_id"] for e in lines if e["logger"] == "points.access"] == [
        f"req-{n}" for n in range(600)]
    assert sum(e["logger"] == "tests.logs" for e in lines) == 3


async def test_a_clean_stop_writes_every_access_line_of_the_service(
        clean: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access_log, "FLUSH_INTERVAL_S", 3600.0)  # only the stop writes them
    settings = make_settings(log_dir=tmp_path)
    with configured(settings):
        async with serving(settings, clean.database_url, clean.redis_url) as (_, api):
            for n in range(25):
                response = await api.http.fetch(api.base_url + "/health",
                                                headers={"X-Request-ID": f"stop-{n}"})
                assert response.code == 200
        # Stopped: no wait here, every line is in the file already.
        assert [e["request_id"] for e in _access(tmp_path / "app.log")] == [
            f"stop-{n}" for n in range(25)]


async def test_access_log_false_writes_no_access_line(api: Api, tmp_path: Path) -> None:
    with configured(make_settings(log_dir=tmp_path, access_log=False)):
        assert (await api.get("/health"))[0] == 200
        await drain_access_log(5.0)  # what a buffered line would need to be written
        log.warning("after the request")
        lines = _lines(tmp_path / "app.log")
    assert "after the request" in [e["msg"] for e in lines]
    assert not [e for e in lines if e["logger"] == "points.access"]


def test_serve_writes_access_lines_while_serving_and_the_last_ones_at_sigterm(
        serve_dir: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"

    def written() -> list[dict]:  # complete lines only: the file is being written
        text = (logs / "app.log").read_text() if (logs / "app.log").exists() else ""
        return [e for e in map(orjson.loads, text[:text.rfind("\n") + 1].splitlines())
                if e["logger"] == "points.access" and e["route"] == "/health"]

    # The default LOG_FORMAT (auto): stderr is a pipe here, so JSON lines.
    with served(serve_dir, env={"LOG_DIR": str(logs), "LOG_FORMAT": "auto"}) as server:
        for _ in range(10):
            assert call(server.url, "GET", "/health", None)[0] == 200
        until_sync(lambda: len(written()) == 10, "10 access lines written while serving",
                   timeout_s=10)
        for _ in range(10):
            assert call(server.url, "GET", "/health", None)[0] == 200
        assert server.terminate(60) == 0
        stderr = [orjson.loads(line) for line in server.output
                  if line.startswith("{") and '"points.access"' in line]
    lines = written()
    assert len(lines) == 20 and len({e["request_id"] for e in lines}) == 20
    assert [e for e in stderr if e["route"] == "/health"] == lines  # stderr: JSON lines too


class _Stuck(io.StringIO):
    """An output that takes nothing until released: a full pipe nobody reads."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        if not self.release.wait(30):
            raise TimeoutError("the test never released the output")
        return super().write(text)


def test_an_output_that_takes_nothing_costs_bounded_memory_and_the_drops_are_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    stuck = _Stuck()
    access = access_log.AccessLog(json_to=[logging.StreamHandler(stuck)], text_to=[],
                                  flush_bytes=1)  # every line its own batch
    total = access_log.MAX_PENDING + 100
    try:
        for n in range(total):
            access.record(_Finished(f"req-{n}"))
        assert access.dropped >= 99  # one batch in the stuck write, MAX_PENDING waiting
    finally:
        stuck.release.set()
    with caplog.at_level(logging.WARNING, logger="points.access"):
        assert access.close(10)
    written = [orjson.loads(line)["request_id"] for line in stuck.getvalue().splitlines()]
    assert len(written) + access.dropped == total and written == sorted(written, key=lambda
                                                                          r: int(r[4:]))
    assert [r.getMessage() for r in caplog.records] == [
        f"{access.dropped} access lines dropped in all: the log outputs did not keep up"]
