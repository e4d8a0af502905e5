"""The embedded stores are closed: every login needs the data directory's password."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg2
import pytest
import redis
import redis.backoff
import redis.retry

from server.config import Settings
from server.embedded import EmbeddedRedis
from server.embedded.password import password_file
from server.runtime.prepare import StartupError, Stores, stores_ready
from tests.support import copy_cluster, sql


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _login(port: int | None, password: str | None) -> None:
    """A login to the embedded PostgreSQL (raises when refused)."""
    psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                     password=password, connect_timeout=5).close()


def _refused_without_password(port: int | None) -> None:
    for password in (None, "", "not-the-password"):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            _login(port, password)


def _ping(port: int | None, password: str | None) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port or 0, password=password,
                         socket_timeout=5,  # a refusal is not retried (as by default)
                         retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))
    try:
        return bool(client.ping())
    finally:
        client.close()


def test_the_password_file_and_redis_conf_are_readable_by_their_owner_only(
        stores: Stores) -> None:
    assert stores.postgres is not None and stores.redis is not None
    data_dir = stores.postgres.pgdata.parent
    assert _mode(password_file(data_dir)) == 0o600
    assert _mode(stores.redis.dir / "redis.conf") == 0o600  # it holds requirepass
    assert re.fullmatch(r"[0-9a-f]{48}", password_file(data_dir).read_text().strip())


def test_embedded_postgres_refuses_a_login_without_the_password(stores: Stores) -> None:
    assert stores.postgres is not None
    _refused_without_password(stores.postgres.port)
    _login(stores.postgres.port, stores.postgres.password)
    rules = [line.split() for line in (stores.postgres.pgdata / "pg_hba.conf").read_text()
             .splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert rules and {rule[-1] for rule in rules} == {"scram-sha-256"}  # no trust anywhere


def test_embedded_redis_refuses_a_client_without_the_password(stores: Stores) -> None:
    assert stores.redis is not None and stores.redis_url is not None
    for password in (None, "not-the-password"):
        with pytest.raises(redis.exceptions.AuthenticationError):
            _ping(stores.redis.port, password)
    assert _ping(stores.redis.port, stores.redis.password)
    assert f":{stores.redis.password}@" in stores.redis_url  # the URL the server uses carries it


def test_a_cluster_made_before_passwords_is_closed_in_place_on_its_next_start(
        tmp_path: Path, pg_template: Path) -> None:
    # A data directory as every start made it before: no password file, every login
    # trusted (pg_hba.conf), a migrated cluster holding data.
    copy_cluster(pg_template, tmp_path)
    password_file(tmp_path).unlink()
    hba = tmp_path / "postgres" / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    with stores_ready(Settings(data_dir=tmp_path), redis=False) as stores:
        assert stores.postgres is not None
        assert _mode(password_file(tmp_path)) == 0o600
        assert stores.postgres.password == password_file(tmp_path).read_text().strip()
        _refused_without_password(stores.postgres.port)
        assert sql(stores, "SELECT count(*) FROM api_tokens") == [(0,)]  # migrated, served
        assert "trust" not in " ".join(
            line for line in hba.read_text().splitlines() if not line.startswith("#"))


def test_a_cluster_whose_password_file_is_lost_is_refused_with_the_reason(
        tmp_path: Path, pg_template: Path) -> None:
    copy_cluster(pg_template, tmp_path)
    password_file(tmp_path).unlink()
    with pytest.raises(StartupError, match="restore the old file"):
        with stores_ready(Settings(data_dir=tmp_path), redis=False):
            pass
    assert not password_file(tmp_path).exists()  # no wrong password left behind


def test_a_running_redis_started_without_a_password_gets_one_when_reused(
        tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path, fsync="no")
    first.start()
    try:
        client = redis.Redis.from_url(first.url)
        client.config_set("requirepass", "")  # as a Redis started before passwords runs
        client.close()
        assert _ping(first.port, None)
        again = EmbeddedRedis(tmp_path, fsync="no")
        again.start()  # reuses the running server
        assert again.port == first.port
        with pytest.raises(redis.exceptions.AuthenticationError):
            _ping(first.port, None)
        assert _ping(first.port, again.password)
    finally:
        first.stop()
