"""Logs an operator can use: JSON lines with the request's id, one access line per
request, a bug logged once with its traceback, rotation at LOG_MAX_BYTES."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from server.config import Settings
from server.errors import StoreUnavailable
from server.handlers.base import BaseHandler
from server.ops.logs import JsonFormatter, TextFormatter, configure_logging, request_id_from
from tests.support import Api, call, make_settings, served, until_sync

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
    levels = {name: logging.getLogger(name).level for name in ("tornado.access",
                                                                 "points.access")}
    try:
        configure_logging(settings, process=process)
        yield
    finally:
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


async def test_a_request_id_is_echoed_and_on_every_line_of_its_request(
        api: Api, routes: Path) -> None:
    response = await api.http.fetch(api.base_url + "/test/chatty",
                                    headers={"X-Request-ID": "judge-7-req-42"})
    assert response.headers["X-Request-ID"] == "judge-7-req-42"
    lines = _lines(routes / "app.log")
    inside = [e for e in lines if e["msg"] == "inside the request"]
    access = [e for e in lines if e["logger"] == "points.access"]
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
    access = [e for e in _lines(routes / "app.log") if e["logger"] == "points.access"]
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
