"""``redis+sentinel://`` URLs: sentinels, service name, database, the servers' password."""

from __future__ import annotations

import pytest

from server.sentinel_url import SentinelUrl, parse_sentinel_url


def test_a_sentinel_url_names_its_sentinels_service_database_and_password() -> None:
    assert parse_sentinel_url("redis+sentinel://:s%40cret@10.0.0.1:26379,[::1]:26380/"
                              "mymaster/2") == SentinelUrl(
        (("10.0.0.1", 26379), ("::1", 26380)), "mymaster", 2, None, "s@cret")
    assert parse_sentinel_url("redis+sentinel://user:pw@h:1/svc/") == SentinelUrl(
        (("h", 1),), "svc", 0, "user", "pw")


@pytest.mark.parametrize(("url", "problem"), [
    ("redis+sentinel://h:26379", "its path must be /service_name"),
    ("redis+sentinel://h:26379/", "its path must be /service_name"),
    ("redis+sentinel://h:26379/a/b/c", "its path must be /service_name"),
    ("redis+sentinel://h:26379/svc/zero", "the database must be a number"),
    ("redis+sentinel://h/svc", "each sentinel must be host:port, not 'h'"),
    ("redis+sentinel://h:1,:2/svc", "each sentinel must be host:port, not ':2'"),
    ("redis+sentinel://h:99999/svc", "each sentinel must be host:port"),
    ("redis+sentinel://h:1/svc?ssl=true", "takes no query or fragment"),
    ("redis://h:1/0", "must be a URL with scheme redis+sentinel"),
])
def test_a_malformed_sentinel_url_says_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="^" + problem.replace("?", r"\?")
                       .replace("(", r"\(").replace("+", r"\+")):
        parse_sentinel_url(url)
