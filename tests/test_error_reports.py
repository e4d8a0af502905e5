"""Error reports: one Sentry event per unhandled error, tagged with its request id; none
for a client's error; nothing at all without SENTRY_DSN.

Sentry is played by a local HTTP server that keeps every envelope posted to it.
"""

from __future__ import annotations

import gzip
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import sentry_sdk

from server.handlers.base import BaseHandler
from server.ops import error_reports
from server.runtime.lifecycle import Service
from tests.support import Api, make_settings


def envelope_items(body: bytes) -> list[tuple[dict[str, Any], Any]]:
    """(item header, payload) pairs of a Sentry envelope: a header line, then per item a
    header line and its payload (``length`` bytes, or up to the next newline)."""
    _, rest = body.split(b"\n", 1)
    items = []
    while rest.strip():
        raw_header, rest = rest.split(b"\n", 1)
        header = orjson.loads(raw_header)
        if "length" in header:
            payload, rest = rest[:header["length"]], rest[header["length"] + 1:]
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((header, orjson.loads(payload)))
    return items


class Receiver:
    """A stand-in Sentry on 127.0.0.1: keeps the items of every envelope it is sent."""

    def __init__(self) -> None:
        self.envelopes: list[list[tuple[dict[str, Any], Any]]] = []
        envelopes = self.envelopes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                envelopes.append(envelope_items(body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"

    def events(self) -> list[dict[str, Any]]:
        return [payload for items in self.envelopes for header, payload in items
                if header["type"] == "event"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    sentry = Receiver()
    yield sentry
    sentry.close()


@pytest.fixture
def reporting() -> Iterator[None]:
    """Whatever a test starts, Sentry's process-global client is closed after it."""
    yield
    error_reports.close()
    assert not sentry_sdk.is_initialized()


class Boom(BaseHandler):
    """A bug: an exception that nothing maps to an answer."""

    async def get(self) -> None:
        # Built at run time: the source line itself is sent as context, its value must not be.
        database_url = "postgresql://app:" + "-".join(("pw", "in", "a", "local")) + "@db/x"
        assert database_url  # a local of the raising frame
        raise ZeroDivisionError("a bug")


@pytest.fixture
def boom(service: Service) -> str:
    """The running app with a test-only route that raises; returns its path."""
    app = service.http.request_callback
    app.add_handlers(r".*", [(r"/boom", Boom, {"deps": service.deps})])  # type: ignore[attr-defined]
    return "/boom"


async def test_an_unhandled_error_is_reported_once_with_its_request_id(
        api: Api, boom: str, receiver: Receiver, reporting: None) -> None:
    error_reports.init(make_settings(sentry_dsn=receiver.dsn))
    status, body = await api.get(boom, token=None, headers={"X-Request-ID": "req-boom-1"})
    assert (status, body["error"]["code"]) == (500, "internal_error")
    status, _ = await api.get("/v1/competitions/999/leaderboard")  # a client's error: 404
    assert status == 404
    sentry_sdk.flush(timeout=5)
    (event,) = receiver.events()
    assert len(receiver.envelopes) == 1
    assert event["tags"]["request_id"] == "req-boom-1"
    (exception,) = event["exception"]["values"]
    assert (exception["type"], exception["value"]) == ("ZeroDivisionError", "a bug")
    # Frames' locals (settings with store passwords, payloads) are never sent.
    assert "pw-in-a-local" not in orjson.dumps(event).decode()
    assert all("vars" not in frame for frame in exception["stacktrace"]["frames"])


async def test_without_a_dsn_nothing_is_sent(api: Api, boom: str, receiver: Receiver,
                                            reporting: None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK would fall back to this variable; only the settings (no DSN) may decide.
    monkeypatch.setenv("SENTRY_DSN", receiver.dsn)
    error_reports.init(make_settings())
    assert not sentry_sdk.is_initialized()
    status, _ = await api.get(boom, token=None, headers={"X-Request-ID": "req-boom-2"})
    assert status == 500
    sentry_sdk.flush(timeout=1)
    assert receiver.envelopes == []
