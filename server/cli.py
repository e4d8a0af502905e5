"""``python run.py COMMAND``: serve, migrate, token create|revoke, check-config.

Settings are parsed once here (environment, then flags) and handed down; every
configuration problem is printed together and the process exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.config import INGEST_PATHS, ConfigError, Settings, load_settings

ADMIN_TOKEN_FILE = "admin-token"


def build_parser(extra_commands: Callable[[Any], None] | None = None
                 ) -> argparse.ArgumentParser:
    """The CLI; ``extra_commands`` lets run.py add the harness's commands (server never
    imports harness)."""
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Points server: HTTP ingest → Redis queue → batched PostgreSQL writes.",
        epilog="Configuration comes from the environment (see README); flags override it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the HTTP server and queue workers",
        description="Run the server. Without DATABASE_URL/REDIS_URL it starts embedded "
                    "PostgreSQL and Redis under --data-dir (reused if already running).")
    serve.add_argument("--port", type=int, help="TCP port (default 8000; env PORT)")
    serve.add_argument("--address", help="bind address (default 127.0.0.1; env ADDRESS)")
    serve.add_argument("--processes", type=int,
                       help="fork N server processes sharing the port (default 1)")
    serve.add_argument("--workers", type=int,
                       help="queue workers per process (default 4; env QUEUE_WORKERS)")
    serve.add_argument("--ingest-path", choices=INGEST_PATHS,
                       help="naive | pipelined (default pipelined; env INGEST_PATH)")
    serve.add_argument("--data-dir", help="embedded stores and admin token (default ./.data)")
    serve.set_defaults(func=cmd_serve)

    migrate = commands.add_parser("migrate", help="apply pending database migrations",
                                  description="Apply pending SQL migrations and exit.")
    migrate.add_argument("--data-dir", help="embedded stores directory (default ./.data)")
    migrate.set_defaults(func=cmd_migrate)

    token = commands.add_parser("token", help="create or revoke API tokens",
                                description="Manage bearer tokens (stored as hashes).")
    token_cmds = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_cmds.add_parser("create", help="create a token and print it once",
                                   description="Create a token; it is printed once, "
                                               "only its hash is stored.")
    create.add_argument("--role", required=True, choices=("admin", "ingest", "read"))
    create.add_argument("--name", required=True, help="who or what the token is for")
    create.add_argument("--data-dir", help="embedded stores directory (default ./.data)")
    create.set_defaults(func=cmd_token_create)
    revoke = token_cmds.add_parser("revoke", help="revoke tokens by value or by name",
                                   description="Revoke a token (by its value) or all "
                                               "tokens with a name.")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--token", help="the token's value")
    which.add_argument("--name", help="revoke every active token with this name")
    revoke.add_argument("--data-dir", help="embedded stores directory (default ./.data)")
    revoke.set_defaults(func=cmd_token_revoke)

    check = commands.add_parser("check-config", help="validate the configuration and exit",
                                description="Parse the environment; print the settings "
                                            "or every problem (exit 2).")
    check.set_defaults(func=cmd_check_config)
    if extra_commands is not None:
        extra_commands(commands)
    return parser


def main(argv: list[str] | None = None,
         extra_commands: Callable[[Any], None] | None = None) -> int:
    args = build_parser(extra_commands).parse_args(argv)
    flags = {name: getattr(args, name, None)
             for name in ("port", "address", "processes", "workers", "ingest_path", "data_dir")}
    try:
        settings = load_settings(flags=flags)
    except ConfigError as exc:
        print("configuration is invalid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    return args.func(settings, args)


# --- commands -------------------------------------------------------------------


def cmd_check_config(settings: Settings, args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    for field, value in sorted(vars(settings).items()):
        if isinstance(value, str) and (password := urlsplit(value).password):
            value = value.replace(password, "***")
        print(f"{field} = {value}")
    print("configuration ok")
    return 0


def _stores(settings: Settings, *, redis: bool = True):  # -> EmbeddedStores
    """The embedded stores a command needs: those whose URL is not configured."""
    from server.embedded import EmbeddedStores

    return EmbeddedStores(settings.data_dir, postgres=settings.uses_embedded_postgres,
                          redis=redis and settings.uses_embedded_redis)


def _with_database(settings: Settings, work) -> int:  # work: async (db_url) -> int
    stores = _stores(settings, redis=False)
    db_url, _ = stores.start()
    try:
        return asyncio.run(work(settings.database_url or db_url))
    finally:
        stores.stop()


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from server.storage.migrate import apply_migrations

    async def work(url: str) -> int:
        applied = await apply_migrations(url)
        print("applied: " + ", ".join(applied) if applied else "database is up to date")
        return 0

    return _with_database(settings, work)


async def _open(url: str, settings: Settings):
    from server.storage.database import open_database
    from server.storage.migrate import apply_migrations

    await apply_migrations(url)
    return await open_database(settings.replace(pg_pool_min=1, pg_pool_max=2), url)


def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    from server.auth import create_token

    async def work(url: str) -> int:
        db = await _open(url, settings)
        try:
            print(await create_token(db, args.role, args.name))
        finally:
            await db.close()
        return 0

    return _with_database(settings, work)


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from server.auth import hash_token
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


async def _bootstrap(url: str, settings: Settings) -> None:
    """Migrate, and on first start create the admin token (printed once, file 0600)."""
    from server.auth import create_token
    from server.storage import tokens

    db = await _open(url, settings)
    try:
        token_file = Path(settings.data_dir) / ADMIN_TOKEN_FILE
        async with db.cursor() as cur:
            has_admin = await tokens.has_admin(cur)
        if not has_admin and not token_file.exists():
            token = await create_token(db, "admin", "bootstrap-admin")
            token_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(token + "\n")
            print(f"admin token (shown once; also stored in {token_file}, mode 0600):\n"
                  f"  {token}", flush=True)
    finally:
        await db.close()


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import tornado.netutil

    from server.lifecycle import LISTEN_BACKLOG
    from server.logs import configure_logging

    configure_logging(settings)
    stores = _stores(settings)
    db_url, redis_url = stores.start()
    db_url = settings.database_url or db_url
    redis_url = settings.redis_url or redis_url
    try:
        asyncio.run(_bootstrap(db_url, settings))
        sockets = tornado.netutil.bind_sockets(settings.port, settings.address,
                                               reuse_port=settings.processes > 1,
                                               backlog=LISTEN_BACKLOG)
        if settings.processes == 1:
            return _serve_process(settings, db_url, redis_url, sockets)
        return _supervise(settings, db_url, redis_url, sockets)
    finally:
        stores.stop()


def _serve_process(settings: Settings, db_url: str, redis_url: str, sockets: list) -> int:
    import uvloop

    from server.lifecycle import running_service

    async def serve() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with running_service(settings, db_url, redis_url, sockets=sockets) as service:
            print(f"listening on http://{settings.address}:{service.port} "
                  f"(pid {os.getpid()}, ingest path {settings.ingest_path})", flush=True)
            await stop.wait()
        return 0

    return uvloop.run(serve())


def _supervise(settings: Settings, db_url: str, redis_url: str, sockets: list) -> int:
    """Fork ``processes`` children on the bound sockets; forward signals; reap them."""
    children: list[int] = []
    for _ in range(settings.processes):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _serve_process(settings, db_url, redis_url, sockets)
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        worst = max(worst, os.waitstatus_to_exitcode(status) & 0xFF)
    return worst
