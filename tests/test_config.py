"""Settings: every problem reported at once, by variable name and value."""

from __future__ import annotations

import pytest

from server.config import ConfigError, Settings, describe_settings, load_settings


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    return info.value.problems


def test_defaults_need_no_environment() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.uses_embedded_postgres and settings.uses_embedded_redis


def test_every_bad_value_is_named_with_its_value_and_problem() -> None:
    found = problems({"QUEUE_WORKERS": "many", "PG_POOL_MIN": "-1", "REDIS_URL": "http://x",
                      "LOG_LEVEL": "LOUD", "RETRY_BASE_S": "nan"})
    assert sorted(found) == sorted([
        "PG_POOL_MIN='-1': must be between 0 and 1000",
        "QUEUE_WORKERS='many': must be an integer",
        "RETRY_BASE_S='nan': must be finite",
        "REDIS_URL='http://x': must be a URL with scheme redis or rediss",
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


def test_settings_are_listed_by_the_variables_users_set() -> None:
    names = [name for name, _ in describe_settings(Settings())]
    assert {"QUEUE_BATCH_SIZE", "DB_CONN_MAX_AGE", "SHUTDOWN_TIMEOUT", "INGEST_PATH"} <= set(names)
    assert not [n for n in names if n != n.upper()]


def test_a_queue_bound_below_one_request_or_chunk_is_refused() -> None:
    found = problems({"QUEUE_MAX_POINTS": "500", "POINTS_MAX_BATCH": "1000",
                      "QUEUE_BATCH_SIZE": "800"})
    assert "QUEUE_MAX_POINTS=500: must be at least POINTS_MAX_BATCH=1000" in found
    assert "QUEUE_MAX_POINTS=500: must be at least QUEUE_BATCH_SIZE=800" in found
    assert "QUEUE_MAX_POINTS=500: must be at least BULK_CHUNK_POINTS=5000" in found
