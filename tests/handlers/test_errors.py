"""The one error table: every domain error has an HTTP rendering, none is a 500."""

from __future__ import annotations

import pytest

from server import errors
from server.handlers.errors import HttpError, http_error_for


def _all(cls: type) -> list[type]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _all(direct))]


def _instance(kind: type) -> errors.ServiceError:
    down = errors.StoreUnavailable("redis", "down")
    if kind is errors.PartiallyAccepted:
        return kind(down, accepted_ids=["a"], unknown_ids=["b"])
    if kind is errors.RateLimited:
        return kind("slow down", limit=2, remaining=0, reset_s=1.5, retry_after_s=0.5)
    samples = {errors.StoreUnavailable: ("redis", "down"), errors.PoolTimeout: ("postgres", "x"),
               errors.WriteConflict: ("postgres", "deadlock detected"),
               errors.CommitUnknown: ("postgres", "link lost during COMMIT"),
               errors.ReplicasShort: ("redis", "0 of 1 replica(s) confirmed an enqueue"),
               errors.CommandRefused: ("redis", "ERR unknown command 'CONFIG'"),
               errors.SlugTaken: ("cup",), errors.NotPermitted: ("read", "admin")}
    if kind is errors.MalformedInput:
        return kind("not JSON", code="malformed_json")
    if kind is errors.IdConflict:
        return kind([(0, "judge-7", 1)], queued=False)
    return kind(*samples.get(kind, ("something",)))


# Not for clients: EnqueueInterrupted is caught by ingest (which turns it into
# PartiallyAccepted); the bases are never raised themselves.
INTERNAL = (errors.ServiceError, errors.InputError, errors.EnqueueInterrupted)


@pytest.mark.parametrize("kind", [k for k in _all(errors.ServiceError) if k not in INTERNAL],
                         ids=lambda k: k.__name__)
def test_every_domain_error_a_client_can_meet_has_a_status_below_500_or_a_503(
        kind: type) -> None:
    rendered = http_error_for(_instance(kind))
    assert isinstance(rendered, HttpError)
    assert rendered.status < 500 or rendered.status == 503
    body = rendered.body()["error"]
    assert {"code", "message", "details"} <= set(body) and body["code"].islower()
    assert set(body) - {"code", "message", "details"} <= {"accepted_ids", "unknown_ids"}


def test_every_store_outage_is_one_code_with_retry_after() -> None:
    for exc in (errors.StoreUnavailable("redis", "down", retry_after_s=3),
                errors.PoolTimeout("postgres", "busy"),
                errors.WriteConflict("postgres", "deadlock detected")):
        rendered = http_error_for(exc)
        assert rendered is not None and rendered.status == 503
        assert rendered.code == "unavailable" and int(rendered.headers["Retry-After"]) >= 1


def test_rate_limited_is_429_with_retry_after_and_ratelimit_headers_rounded_up() -> None:
    rendered = http_error_for(errors.RateLimited("slow down", limit=20, remaining=0,
                                                 reset_s=1.2, retry_after_s=0.01))
    assert rendered is not None and (rendered.status, rendered.code) == (429, "rate_limited")
    assert rendered.headers == {"Retry-After": "1", "RateLimit-Limit": "20",
                                "RateLimit-Remaining": "0", "RateLimit-Reset": "2"}
    assert rendered.body() == {"error": {"code": "rate_limited", "message": "slow down",
                                         "details": []}}


def test_anything_else_is_a_bug_and_has_no_rendering() -> None:
    assert http_error_for(KeyError("x")) is None


def test_a_partial_acceptance_renders_its_cause_with_what_was_accepted() -> None:
    exc = errors.PartiallyAccepted(errors.QueueFull("full"), accepted_ids=["a"],
                                   unknown_ids=["b"])
    rendered = http_error_for(exc)
    assert rendered is not None and (rendered.status, rendered.code) == (503, "queue_full")
    body = rendered.body()["error"]
    assert (body["accepted_ids"], body["unknown_ids"]) == (["a"], ["b"])
