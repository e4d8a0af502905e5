"""Who may call what: none/bad/revoked tokens and each role against each endpoint group."""

from __future__ import annotations

import pytest

from tests.support import Api

# (method, path, body, minimum role); None = public.
ENDPOINTS = [
    ("GET", "/health", None, None),
    ("GET", "/ready", None, None),
    ("GET", "/v1/competitions", None, "read"),
    ("GET", "/v1/competitions/1/leaderboard", None, "read"),
    ("GET", "/v1/competitions/1/points/x", None, "read"),
    ("POST", "/v1/competitions", {"slug": "s", "name": "n"}, "ingest"),
    ("POST", "/v1/points", {"competition_id": 1, "participant_id": 1, "value": 1}, "ingest"),
    ("GET", "/v1/admin/queue", None, "admin"),
]
RANK = {"read": 0, "ingest": 1, "admin": 2}


CALLERS = [None, "garbage", "revoked", "read", "ingest", "admin"]


# One service per endpoint, every caller in turn (a service per cell would cost
# five times the checks themselves).
@pytest.mark.parametrize("method, path, body, needed", ENDPOINTS)
async def test_auth_matrix(api: Api, method: str, path: str, body: dict | None,
                           needed: str | None) -> None:
    for token in CALLERS:
        status, answer = await api.request(method, path, json=body, token=token)
        if needed is None:
            assert status in (200, 503), token
        elif token in (None, "garbage", "revoked"):
            assert status == 401, token
            assert answer["error"]["code"] == "unauthorized"
        elif RANK[token] < RANK[needed]:
            assert status == 403, token
            assert answer["error"]["code"] == "forbidden"
        else:
            assert status not in (401, 403), (token, answer)


async def test_malformed_authorization_header_is_401(api: Api) -> None:
    for header in ("Basic abc", "Bearer", "Bearer " + "x" * 300, "pts_test_admin_token"):
        status, body = await api.get("/v1/competitions", token=None,
                                     headers={"Authorization": header})
        assert status == 401, header
        assert body["error"]["code"] == "unauthorized"
