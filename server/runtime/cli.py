"""``python run.py COMMAND``: serve, migrate, token create|revoke, stores status|stop,
check-config.

This module only parses and calls: the server's commands parse the settings
once (environment, then flags; every problem printed together, exit 2) and
hand them to ``lifecycle``; a start that fails prints one line and exits 1.
``serve`` with PROD=true, and ``check-config --prod``, also probe what
production needs (``preflight``) and report those problems in the same list.
Commands that are not the server's (the harness's ``bench``, ``report``…) never
parse the server's settings, so a broken server environment cannot stop them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.config import (
    INGEST_PATHS,
    ConfigError,
    Settings,
    data_dir_setting,
    describe_settings,
    flag_help,
    load_settings,
)

if TYPE_CHECKING:  # imported where used: a command loads only what it needs
    from server.storage.database import Database


def _data_dir_flag(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``, as every command on the embedded stores takes it."""
    parser.add_argument("--data-dir", help=flag_help("data_dir", "embedded stores directory"))


def build_parser(extra_commands: Callable[[Any], None] | None = None
                 ) -> argparse.ArgumentParser:
    """The CLI; ``extra_commands`` lets run.py add the harness's commands (server never
    imports harness)."""
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Points server: HTTP ingest → Redis queue → batched PostgreSQL writes.",
        epilog="Configuration comes from the environment (see docs/configuration.md); "
               "flags override it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the HTTP server and queue workers",
        description="Run the server. Without DATABASE_URL/REDIS_URL it starts embedded "
                    "PostgreSQL and Redis under --data-dir (reused if already running).")
    serve.add_argument("--port", type=int, help=flag_help("port", "TCP port"))
    serve.add_argument("--address", help=flag_help("address", "bind address"))
    serve.add_argument("--processes", type=int,
                       help=flag_help("processes", "fork N server processes sharing the port"))
    serve.add_argument("--workers", type=int,
                       help=flag_help("workers", "queue workers per process"))
    serve.add_argument("--ingest-path", choices=INGEST_PATHS,
                       help=flag_help("ingest_path", "ingest path: " + " | ".join(INGEST_PATHS)))
    serve.add_argument("--data-dir", help=flag_help("data_dir",
                                                    "embedded stores and admin token"))
    # With PROD=true, serve first probes what production needs (server/runtime/preflight.py).
    serve.set_defaults(func=cmd_serve, probe_production=True)

    migrate = commands.add_parser("migrate", help="apply pending database migrations",
                                  description="Apply pending SQL migrations and exit.")
    _data_dir_flag(migrate)
    migrate.set_defaults(func=cmd_migrate)

    token = commands.add_parser("token", help="create or revoke API tokens",
                                description="Manage bearer tokens (stored as hashes).")
    token_cmds = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_cmds.add_parser("create", help="create a token and print it once",
                                   description="Create a token; it is printed once, "
                                               "only its hash is stored.")
    create.add_argument("--role", required=True, choices=("admin", "ingest", "read"))
    create.add_argument("--name", required=True, help="who or what the token is for")
    _data_dir_flag(create)
    create.set_defaults(func=cmd_token_create)
    revoke = token_cmds.add_parser("revoke", help="revoke tokens by value or by name",
                                   description="Revoke a token (by its value) or all "
                                               "tokens with a name.")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--token", help="the token's value")
    which.add_argument("--name", help="revoke every active token with this name")
    _data_dir_flag(revoke)
    revoke.set_defaults(func=cmd_token_revoke)

    stores = commands.add_parser(
        "stores", help="status of a data directory's embedded PostgreSQL and Redis, or stop them",
        description="The embedded stores of a data directory: whether they run, or stop "
                    "them whoever started them (a serve that reused stores it did not "
                    "start leaves them running, and says so as it exits).")
    store_cmds = stores.add_subparsers(dest="stores_command", required=True, metavar="ACTION")
    status = store_cmds.add_parser(
        "status", help="whether each embedded store runs, its pid and port",
        description="Say whether each embedded store of the data directory runs (pid, "
                    "port) and which command uses them, if any; exit 0.")
    _data_dir_flag(status)
    status.set_defaults(func=cmd_stores_status)
    stop = store_cmds.add_parser(
        "stop", help="stop them, whoever started them",
        description="Stop the embedded PostgreSQL and Redis of the data directory, "
                    "whoever started them.  Refused (exit 1) while a serve, migrate or "
                    "token command uses them; nothing running is not an error (exit 0).")
    _data_dir_flag(stop)
    stop.set_defaults(func=cmd_stores_stop)

    check = commands.add_parser("check-config", help="validate the configuration and exit",
                                description="Parse the environment; print the settings "
                                            "(NAME=value, as the environment would set "
                                            "them) or every problem (exit 2).")
    check.add_argument("--prod", action="store_const", const=True,
                       help=flag_help("prod", "check as PROD=true, and probe what production "
                                      "needs as serve would: the stores answer, Redis cannot "
                                      "lose a 202, LOG_DIR (and DATA_DIR before the first "
                                      "admin token) can be written"))
    check.set_defaults(func=cmd_check_config)
    if extra_commands is not None:
        extra_commands(commands)
    return parser


def main(argv: list[str] | None = None,
         extra_commands: Callable[[Any], None] | None = None) -> int:
    args = build_parser(extra_commands).parse_args(argv)
    return args.func(args)


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment and this command's flags; ConfigError lists all."""
    flags = {name: getattr(args, name, None)
             for name in ("port", "address", "processes", "workers", "ingest_path", "data_dir",
                          "prod")}
    return load_settings(flags=flags)


def _problems(args: argparse.Namespace) -> tuple[Settings | None, list[str]]:
    """The settings and every problem with them: the settings' own and, with PROD=true
    for ``serve`` or with ``check-config --prod``, what probing the world finds."""
    settings: Settings | None
    try:
        settings, problems = _settings(args), []
    except ConfigError as exc:
        settings, problems = exc.settings, list(exc.problems)
    probe = getattr(args, "probe_production", False) or getattr(args, "prod", None)
    if settings is not None and settings.prod and probe:
        from server.runtime.preflight import production_problems

        problems += production_problems(settings)
    return settings, problems


def _server_command(run: Callable[[Settings, argparse.Namespace], int]
                    ) -> Callable[[argparse.Namespace], int]:
    """Parse settings first (exit 2 naming every problem); a failed start exits 1."""

    def command(args: argparse.Namespace) -> int:
        from server.runtime.prepare import StartupError

        settings, problems = _problems(args)
        if problems or settings is None:
            print("configuration is invalid:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return 2
        try:
            return run(settings, args)
        except StartupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return command


# --- commands -------------------------------------------------------------------


@_server_command
def cmd_check_config(settings: Settings, args: argparse.Namespace) -> int:
    for name, value in describe_settings(settings):
        print(f"{name}={value}")
    print("configuration ok" + ("; production probes passed" if args.prod else ""))
    return 0


def _stores_command(run: Callable[[Path], tuple[int, list[str]]]
                    ) -> Callable[[argparse.Namespace], int]:
    """``stores ACTION``: only DATA_DIR is read (exit 2 when it is invalid), so that a
    problem in another setting cannot keep a user from stopping the stores."""

    def command(args: argparse.Namespace) -> int:
        try:
            data_dir = data_dir_setting(args.data_dir)
        except ConfigError as exc:
            print("configuration is invalid:", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            return 2
        code, lines = run(data_dir)
        for line in lines:
            print(line)
        return code

    return command


@_stores_command
def cmd_stores_status(data_dir: Path) -> tuple[int, list[str]]:
    from server.embedded.control import status_lines

    return 0, [f"data dir: {data_dir}", *status_lines(data_dir)]


@_stores_command
def cmd_stores_stop(data_dir: Path) -> tuple[int, list[str]]:
    from server.embedded.control import stop

    return stop(data_dir)


def _with_database(settings: Settings, work: Callable[[str], Any]) -> int:
    """Run ``work(database_url)`` with PostgreSQL started (if embedded) and migrated."""
    from server.runtime.prepare import run_sync, stores_ready

    with stores_ready(settings, redis=False) as stores:
        return run_sync(work(stores.database_url))


@_server_command
def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from server.runtime.prepare import stores_ready

    with stores_ready(settings, redis=False) as stores:  # applies what is pending
        applied = stores.migrations_applied
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


async def _open(url: str, settings: Settings) -> Database:
    from server.storage.database import open_database

    return await open_database(settings.replace(pg_pool_min=1, pg_pool_max=2), url)


@_server_command
def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    from server.access.auth import create_token

    async def work(url: str) -> int:
        db = await _open(url, settings)
        try:
            print(await create_token(db, args.role, args.name))
        finally:
            await db.close()
        return 0

    return _with_database(settings, work)


@_server_command
def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from server.access.auth import hash_token
    from server.storage import tokens

    async def work(url: str) -> int:
        db = await _open(url, settings)
        try:
            async with db.cursor() as cur:
                count = await tokens.revoke_tokens(
                    cur, token_hash=hash_token(args.token) if args.token else None,
                    name=args.name)
        finally:
            await db.close()
        print(f"revoked {count} token(s)")
        return 0 if count else 1

    return _with_database(settings, work)


def _shared_metrics(command: Callable[[argparse.Namespace], int]
                    ) -> Callable[[argparse.Namespace], int]:
    """Run ``command`` with its metrics directory set up before anything (the settings'
    checks included) imports the server: see ``server/ops/metrics_dir.py``."""

    def with_metrics_dir(args: argparse.Namespace) -> int:
        from server.ops.metrics_dir import shared_metrics_dir

        with shared_metrics_dir():
            return command(args)

    return with_metrics_dir


@_shared_metrics
@_server_command
def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from server.ops.logs import configure_logging
    from server.runtime.serving import serve

    configure_logging(settings)
    return serve(settings)
