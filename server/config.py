"""One frozen settings object, parsed once from the environment and CLI flags.

Every variable is read, every problem is collected, and all of them are reported
together (name, value, what is wrong) so that a misconfigured deployment is fixed
in one round instead of one restart per typo.  The entry point turns a
``ConfigError`` into exit code 2.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from server.sentinel_url import SENTINEL_SCHEME, is_sentinel_url, parse_sentinel_url

NAIVE = "naive"
PIPELINED = "pipelined"
INGEST_PATHS = (NAIVE, PIPELINED)  # every spelling of an ingest path's name comes from here
LOG_FORMATS = ("auto", "json", "text")
QUEUE_FSYNC_MODES = ("always", "everysec")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(Exception):
    """Raised with every configuration problem found, one line each.

    ``settings`` holds what did parse (defaults standing in for the rest), so that
    checks beyond the settings (``preflight``) can still run and report in the
    same round.
    """

    def __init__(self, problems: list[str], settings: Settings | None = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.settings = settings


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment; built once, passed down."""

    data_dir: Path = Path("./.data")
    database_url: str | None = field(default=None, repr=False)  # credentials
    database_read_url: str | None = field(default=None, repr=False)  # credentials
    # Reads go to the primary while the replica is further behind than this.
    database_read_max_lag_s: float = 5.0
    redis_url: str | None = field(default=None, repr=False)  # credentials
    redis_max_connections: int = 10
    redis_timeout_s: float = 5.0
    # The operator vouches for AOF on and noeviction on a Redis that refuses CONFIG GET.
    redis_durability_vouched: bool = False
    pg_pool_min: int = 2
    pg_pool_max: int = 10
    db_conn_max_age_s: float = 600.0
    pg_connect_timeout_s: float = 10.0
    pg_statement_timeout_ms: int = 30000
    queue_workers: int = 4
    queue_batch_size: int = 1000
    queue_shards: int = 1  # independent queues, each in one Redis Cluster slot
    queue_lease_s: float = 10.0
    queue_max_attempts: int = 8
    queue_max_handbacks: int = 5
    queue_max_points: int = 2_000_000
    queue_fsync: str = "always"
    # An enqueue waits (WAIT) until this many replicas have its write, at most
    # QUEUE_WAIT_REPLICAS_MS; short of them, its points go to PostgreSQL directly.
    # None: 1 under redis+sentinel (a 202 must survive a failover), else 0.
    queue_wait_replicas: int | None = None
    queue_wait_replicas_ms: int = 100
    retry_base_s: float = 0.5
    retry_max_s: float = 60.0
    dlq_max_entries: int = 100_000
    dlq_max_age_s: float = 7 * 86400.0
    points_max_batch: int = 10000
    bulk_max_bytes: int = 1 << 30
    bulk_chunk_points: int = 5000
    http_bodies_max_bytes: int = 256 << 20  # request bodies held at once, per process
    http_body_idle_s: float = 30.0  # a body that sends no byte for this long is cut
    ack_timeout_s: float = 5.0
    idempotency_ttl_s: float = 86400.0
    idempotency_lease_s: float = 10.0
    rate_limit_per_token: float = 0.0
    rate_limit_401_per_address: float = 5.0
    auth_cache_ttl_s: float = 5.0
    request_store_wait_s: float = 1.0
    log_dir: Path | None = None
    log_level: str = "INFO"
    log_format: str = "auto"  # auto: text on a terminal, JSON lines otherwise
    log_max_bytes: int = 50 * 1024 * 1024
    log_backups: int = 10
    access_log: bool = True
    sentry_dsn: str | None = field(default=None, repr=False)  # credentials
    shutdown_timeout_s: float = 30.0
    results_dir: Path = Path("./results")  # benchmark runs the dashboard lists
    prod: bool = False
    # Flags (CLI overrides; also settable from the environment for containers).
    port: int = 8000
    address: str = "127.0.0.1"
    processes: int = 1
    # --processes N: a crash loop is this many children's deaths within the window.
    process_deaths_max: int = 5
    process_deaths_window_s: float = 60.0
    ingest_path: str = PIPELINED

    @property
    def uses_embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def enqueue_wait_replicas(self) -> int:
        """QUEUE_WAIT_REPLICAS, its default resolved: 1 behind Sentinel, else 0."""
        if self.queue_wait_replicas is not None:
            return self.queue_wait_replicas
        return 1 if self.redis_url and is_sentinel_url(self.redis_url) else 0

    @property
    def redis_maxmemory_bytes(self) -> int:
        """The embedded Redis's memory cap: room for QUEUE_MAX_POINTS on the costlier
        path (measured: ~240 B a point with one point per chunk, ~80 B in chunks of
        1,000) plus a full dead-letter queue, caches and headroom."""
        return (256 << 20) + self.queue_max_points * 320 + self.dlq_max_entries * 1024

    @property
    def http_body_max_bytes(self) -> int:
        """The HTTP server's bound on a body no route streams (every route that takes
        a body sets its own: ``json_body_max_bytes``, ``bulk_max_bytes``)."""
        return 1 << 20

    @property
    def json_body_max_bytes(self) -> int:
        """Largest JSON body accepted: room for a full batch of verbose points."""
        return max(1 << 20, self.points_max_batch * 512)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


SENTRY_MISSING = ("SENTRY_DSN: set, but sentry-sdk is not installed (pip install "
                  "'points-server[sentry]', or unset SENTRY_DSN)")


def sentry_installed() -> bool:
    """Whether the ``sentry`` extra (sentry-sdk) can be imported, without importing it
    (``ops/error_reports.py`` imports it only when reports are on)."""
    return importlib.util.find_spec("sentry_sdk") is not None


# --- parsers: each returns the parsed value or raises ValueError(reason) -----


def _int(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("must be an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ValueError(f"must be {bound}")
        return value

    return parse


def _float(low: float, *, strict: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError("must be a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be finite")
        if value < low or (strict and value == low):
            raise ValueError(f"must be {'>' if strict else '>='} {low:g}")
        return value

    return parse


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _choice(options: tuple[str, ...], *, upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        scheme = urlsplit(value).scheme
        if scheme not in schemes:
            raise ValueError(f"must be a URL with scheme {' or '.join(schemes)}")
        return value

    return parse


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """(seed nodes, username, password) of a ``redis+cluster://`` URL; ValueError when
    a node is not ``host:port``."""
    netloc = urlsplit(url).netloc
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = []
    for part in hosts.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"cluster nodes must be host:port[,host:port...], "
                             f"not {part.strip()!r}")
        nodes.append((host.strip("[]"), int(port)))
    return nodes, unquote(username) or None, unquote(password) or None


def _path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("must not be empty")
    return Path(raw.strip())


_PG_SCHEMES = ("postgres", "postgresql")
REDIS_CLUSTER_SCHEME = "redis+cluster"  # redis+cluster://[:password@]host:port[,host:port...]
_REDIS_SCHEMES = ("redis", "rediss", REDIS_CLUSTER_SCHEME)


def _redis_url(raw: str) -> str:
    """A Redis URL; a ``redis+sentinel://`` or ``redis+cluster://`` one has its parts
    checked now."""
    if urlsplit(raw.strip()).scheme == SENTINEL_SCHEME:
        parse_sentinel_url(raw)
        return raw.strip()
    try:
        value = _url(_REDIS_SCHEMES)(raw)
    except ValueError:
        raise ValueError(f"must be a URL with scheme {', '.join(_REDIS_SCHEMES)} or "
                         f"{SENTINEL_SCHEME}") from None
    if urlsplit(value).scheme == REDIS_CLUSTER_SCHEME:
        cluster_nodes(value)
    return value


# variable name -> (settings field, parser)
_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "DATA_DIR": ("data_dir", _path),
    "DATABASE_URL": ("database_url", _url(_PG_SCHEMES)),
    "DATABASE_READ_URL": ("database_read_url", _url(_PG_SCHEMES)),
    "DATABASE_READ_MAX_LAG_S": ("database_read_max_lag_s", _float(0)),
    "REDIS_URL": ("redis_url", _redis_url),
    "REDIS_MAX_CONNECTIONS": ("redis_max_connections", _int(1, 10000)),
    "REDIS_TIMEOUT_S": ("redis_timeout_s", _float(0, strict=True)),
    "REDIS_DURABILITY_VOUCHED": ("redis_durability_vouched", _bool),
    "PG_POOL_MIN": ("pg_pool_min", _int(0, 1000)),
    "PG_POOL_MAX": ("pg_pool_max", _int(1, 1000)),
    "DB_CONN_MAX_AGE": ("db_conn_max_age_s", _float(0)),
    "PG_CONNECT_TIMEOUT": ("pg_connect_timeout_s", _float(0, strict=True)),
    "PG_STATEMENT_TIMEOUT_MS": ("pg_statement_timeout_ms", _int(1)),
    "QUEUE_WORKERS": ("queue_workers", _int(0, 256)),
    "QUEUE_BATCH_SIZE": ("queue_batch_size", _int(1, 100000)),
    "QUEUE_SHARDS": ("queue_shards", _int(1, 1024)),
    "QUEUE_LEASE_S": ("queue_lease_s", _float(1)),
    "QUEUE_MAX_ATTEMPTS": ("queue_max_attempts", _int(1, 1000)),
    "QUEUE_MAX_HANDBACKS": ("queue_max_handbacks", _int(1, 1000)),
    "QUEUE_MAX_POINTS": ("queue_max_points", _int(1)),
    "QUEUE_FSYNC": ("queue_fsync", _choice(QUEUE_FSYNC_MODES)),
    "QUEUE_WAIT_REPLICAS": ("queue_wait_replicas", _int(0, 100)),
    "QUEUE_WAIT_REPLICAS_MS": ("queue_wait_replicas_ms", _int(1, 60_000)),
    "RETRY_BASE_S": ("retry_base_s", _float(0, strict=True)),
    "RETRY_MAX_S": ("retry_max_s", _float(0, strict=True)),
    "DLQ_MAX_ENTRIES": ("dlq_max_entries", _int(1)),
    "DLQ_MAX_AGE_S": ("dlq_max_age_s", _float(1)),
    "POINTS_MAX_BATCH": ("points_max_batch", _int(1, 1000000)),
    "BULK_MAX_BYTES": ("bulk_max_bytes", _int(1)),
    "BULK_CHUNK_POINTS": ("bulk_chunk_points", _int(1, 1_000_000)),
    "HTTP_BODIES_MAX_BYTES": ("http_bodies_max_bytes", _int(1)),
    "HTTP_BODY_IDLE_S": ("http_body_idle_s", _float(0, strict=True)),
    "ACK_TIMEOUT_S": ("ack_timeout_s", _float(0, strict=True)),
    "IDEMPOTENCY_TTL_S": ("idempotency_ttl_s", _float(1)),
    "IDEMPOTENCY_LEASE_S": ("idempotency_lease_s", _float(0, strict=True)),
    "RATE_LIMIT_PER_TOKEN": ("rate_limit_per_token", _float(0)),
    "RATE_LIMIT_401_PER_ADDRESS": ("rate_limit_401_per_address", _float(0)),
    "AUTH_CACHE_TTL_S": ("auth_cache_ttl_s", _float(0)),
    "REQUEST_STORE_WAIT_S": ("request_store_wait_s", _float(0, strict=True)),
    "LOG_DIR": ("log_dir", _path),
    "LOG_LEVEL": ("log_level", _choice(LOG_LEVELS, upper=True)),
    "LOG_FORMAT": ("log_format", _choice(LOG_FORMATS)),
    "LOG_MAX_BYTES": ("log_max_bytes", _int(1024)),
    "LOG_BACKUPS": ("log_backups", _int(1, 1000)),
    "ACCESS_LOG": ("access_log", _bool),
    "SENTRY_DSN": ("sentry_dsn", _url(("http", "https"))),
    "SHUTDOWN_TIMEOUT": ("shutdown_timeout_s", _float(0, strict=True)),
    "RESULTS_DIR": ("results_dir", _path),
    "PROD": ("prod", _bool),
    "PORT": ("port", _int(0, 65535)),
    "ADDRESS": ("address", str.strip),
    "PROCESSES": ("processes", _int(1, 256)),
    "PROCESS_DEATHS_MAX": ("process_deaths_max", _int(1, 10_000)),
    "PROCESS_DEATHS_WINDOW_S": ("process_deaths_window_s", _float(0, strict=True)),
    "INGEST_PATH": ("ingest_path", _choice(INGEST_PATHS)),
}

# Flag (as argparse names its destination) -> environment variable it overrides.
FLAG_VARIABLES = {
    "data_dir": "DATA_DIR",
    "port": "PORT",
    "address": "ADDRESS",
    "processes": "PROCESSES",
    "workers": "QUEUE_WORKERS",
    "ingest_path": "INGEST_PATH",
    "prod": "PROD",
}


def _masked(name: str, text: str) -> str:
    """``text`` with its credentials replaced by ``***``: a URL's password, and a
    Sentry DSN's key (its user part)."""
    if not text or not name.endswith(("_URL", "_DSN")):
        return text
    try:
        parts = urlsplit(text.strip())
        secret = parts.username if name.endswith("_DSN") else parts.password
    except ValueError:
        return text
    return text.replace(secret, "***") if secret else text


def _shown(name: str, raw: str) -> str:
    """Render a value for an error message without leaking credentials."""
    return repr(_masked(name, raw))


def load_settings(
    env: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None
) -> Settings:
    """Build Settings from ``env`` (default ``os.environ``) and CLI ``flags``.

    Flags win over the environment.  Raises ConfigError listing every problem.
    """
    env = os.environ if env is None else env
    raw: dict[str, str] = {name: env[name] for name in _VARIABLES if env.get(name, "") != ""}
    for flag, value in (flags or {}).items():
        if value is not None:
            raw[FLAG_VARIABLES[flag]] = str(value)

    problems: list[str] = []
    values: dict[str, Any] = {}
    for name, text in raw.items():
        field, parse = _VARIABLES[name]
        try:
            values[field] = parse(text)
        except ValueError as exc:
            problems.append(f"{name}={_shown(name, text)}: {exc}")

    # Cross-field rules are checked on whatever did parse (defaults standing in
    # for the rest), so one round reports every problem, not one class at a time.
    settings = Settings(**values)
    problems.extend(_cross_checks(settings, given=set(values)))
    if problems:
        raise ConfigError(problems, settings)
    return settings


def setting_text(value: Any) -> str:
    """A setting's value as its environment variable would be written: ``true`` and
    ``false`` for booleans (what the docs write, and what the parser reads back), ''
    for unset."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def data_dir_setting(flag: str | None, env: Mapping[str, str] | None = None) -> Path:
    """DATA_DIR as ``load_settings`` resolves it (the flag, else the environment, else
    the default), parsed alone: a command that needs nothing else (``stores``) is not
    stopped by a problem in another setting.  ConfigError when it is invalid."""
    env = os.environ if env is None else env
    only = {"DATA_DIR": env["DATA_DIR"]} if "DATA_DIR" in env else {}
    return load_settings(only, flags={"data_dir": flag}).data_dir


def describe_settings(settings: Settings) -> list[tuple[str, str]]:
    """(environment variable, value) for every setting, credentials masked: each
    ``NAME=value`` line, set in an environment, gives the same setting back."""
    rows = []
    for name, (attr, _) in _VARIABLES.items():
        rows.append((name, _masked(name, setting_text(getattr(settings, attr)))))
    return rows


def field_of(name: str) -> str:
    """The ``Settings`` field an environment variable sets."""
    return _VARIABLES[name][0]


def flag_help(flag: str, text: str) -> str:
    """A CLI flag's help: ``text``, then its default and the environment variable it
    overrides, from this module's tables (``FLAG_VARIABLES``, ``Settings``), so
    that ``--help`` cannot drift from what the flag does."""
    name = FLAG_VARIABLES[flag]
    value = getattr(Settings(), field_of(name))
    default = setting_text(value)
    if isinstance(value, Path) and not value.is_absolute():
        default = f"./{default}"  # as a user types it: relative to where run.py runs
    return f"{text} (default {default or 'unset'}; env {name})"


def _cross_checks(s: Settings, given: set[str]) -> list[str]:
    """Rules between settings; a rule whose fields all failed to parse is skipped
    (their own problems are already reported)."""
    problems = []
    if {"pg_pool_min", "pg_pool_max"} & given and s.pg_pool_min > s.pg_pool_max:
        problems.append(
            f"PG_POOL_MIN={s.pg_pool_min}: must not exceed PG_POOL_MAX={s.pg_pool_max}"
        )
    if {"retry_base_s", "retry_max_s"} & given and s.retry_base_s > s.retry_max_s:
        problems.append(
            f"RETRY_BASE_S={s.retry_base_s:g}: must not exceed RETRY_MAX_S={s.retry_max_s:g}"
        )
    # A request or chunk larger than the whole queue could never be admitted; nor one
    # larger than a shard's part of it (a competition's points all go to one shard).
    shard_points = -(-s.queue_max_points // s.queue_shards)
    for name, value in (("POINTS_MAX_BATCH", s.points_max_batch),
                        ("BULK_CHUNK_POINTS", s.bulk_chunk_points),
                        ("QUEUE_BATCH_SIZE", s.queue_batch_size)):
        field = _VARIABLES[name][0]
        if {field, "queue_max_points"} & given and value > s.queue_max_points:
            problems.append(f"QUEUE_MAX_POINTS={s.queue_max_points}: must be at least "
                            f"{name}={value}")
        elif {field, "queue_shards"} & given and value > shard_points:
            problems.append(f"QUEUE_SHARDS={s.queue_shards}: each shard admits "
                            f"QUEUE_MAX_POINTS/QUEUE_SHARDS={shard_points} points, fewer "
                            f"than {name}={value}")
    # One JSON body of the largest size must fit in what bodies may hold at once.
    if {"http_bodies_max_bytes", "points_max_batch"} & given and (
            s.http_bodies_max_bytes < s.json_body_max_bytes):
        problems.append(f"HTTP_BODIES_MAX_BYTES={s.http_bodies_max_bytes}: must be at least "
                        f"the largest JSON body, {s.json_body_max_bytes} bytes (set by "
                        f"POINTS_MAX_BATCH={s.points_max_batch})")
    # WAIT must answer before the enqueue call's own bound, or every call would time out.
    if {"queue_wait_replicas", "queue_wait_replicas_ms", "request_store_wait_s",
            "redis_url"} & given and (s.enqueue_wait_replicas and
            s.queue_wait_replicas_ms >= s.request_store_wait_s * 1000):
        problems.append(f"QUEUE_WAIT_REPLICAS_MS={s.queue_wait_replicas_ms}: must be less than "
                        f"REQUEST_STORE_WAIT_S={s.request_store_wait_s:g} (in ms)")
    # WAIT runs on the ENQUEUE call's own connection, which a cluster client does not lend.
    if (s.enqueue_wait_replicas and s.redis_url
            and urlsplit(s.redis_url).scheme == REDIS_CLUSTER_SCHEME):
        problems.append(f"QUEUE_WAIT_REPLICAS={s.enqueue_wait_replicas}: not supported with "
                        "a redis+cluster:// REDIS_URL (set 0, or use Sentinel)")
    # Asked for error reports, but the SDK that sends them is not installed.
    if s.sentry_dsn is not None and not sentry_installed():
        problems.append(SENTRY_MISSING)
    if s.prod:
        if s.database_url is None:
            problems.append("DATABASE_URL: required when PROD=true (no embedded store)")
        if s.redis_url is None:
            problems.append("REDIS_URL: required when PROD=true (no embedded store)")
        if s.log_level == "DEBUG":
            problems.append("LOG_LEVEL='DEBUG': refused when PROD=true (logs payloads)")
        if s.log_dir is None:
            problems.append("LOG_DIR: required when PROD=true (app.log and error.log are "
                            "kept there)")
    return problems
