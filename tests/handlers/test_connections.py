"""Keep-alive honesty: an answer sent before the request's body was read closes the
connection (tornado does), so it must say ``Connection: close``; others keep it."""

from __future__ import annotations

import asyncio
import http.client

from server.runtime.lifecycle import Service
from tests.support import TOKENS, Api, seed


def _exchange(port: int, requests: list[tuple[str, str, bytes, dict[str, str]]]
              ) -> list[tuple[int, str | None]]:
    """Send ``requests`` one after another on one connection while it stays open."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    answers = []
    try:
        for method, path, body, headers in requests:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            answers.append((response.status, response.getheader("Connection")))
            if response.getheader("Connection") == "close":
                break
    finally:
        conn.close()
    return answers


async def test_an_answer_before_the_body_says_connection_close(service: Service,
                                                              api: Api) -> None:
    cid, (p0, *_) = await seed(api)
    good = {"Authorization": f"Bearer {TOKENS['admin']}", "Content-Type": "application/json"}
    body = b'{"competition_id": %d, "participant_id": %d, "value": 1}' % (cid, p0)
    answers = await asyncio.to_thread(_exchange, service.port, [
        ("POST", "/v1/points", body, good),                               # 202: kept
        ("POST", "/v1/points", b'{"value": "x"}', good),                  # 422 after the body
        ("POST", "/v1/points", body, {**good, "Content-Type": "text/plain"}),  # 415 before it
    ])
    assert answers == [(202, None), (422, None), (415, "close")]
    unauthorized = await asyncio.to_thread(_exchange, service.port, [
        ("POST", "/v1/points", body, {**good, "Authorization": "Bearer nope"})])
    assert unauthorized == [(401, "close")]
