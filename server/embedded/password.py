"""The embedded stores' password: random, one per data directory, in a 0600 file.

Both embedded servers listen on 127.0.0.1 only, but any local user (any process
of the host, any container sharing its network) can reach 127.0.0.1: without a
password, each could read or rewrite the queue and the database.  So the first
start of a data directory makes a random password and stores it beside the
admin token, readable by its owner only; the embedded PostgreSQL (SCRAM) and
Redis (``requirepass``) require it, and the URLs the server builds carry it.
It is never logged: the URLs are not logged, and ``masked`` hides it in any
text that may hold one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from server.embedded.processes import EmbeddedStoreError

STORE_PASSWORD_FILE = "store-password"


def password_file(data_dir: Path) -> Path:
    return Path(data_dir) / STORE_PASSWORD_FILE


def store_password(data_dir: Path) -> tuple[str, bool]:
    """(the data directory's password, whether this call created it).

    Created atomically (a complete file linked into place, or nothing), so that
    two processes starting on one data directory never see half a password.
    """
    path = password_file(data_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{STORE_PASSWORD_FILE}-{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            # Hex: safe unquoted in a URL, a redis.conf line and a libpq keyword.
            handle.write(secrets.token_hex(24) + "\n")
        try:
            os.link(draft, path)
            created = True
        except FileExistsError:  # another process made it first: theirs stands
            created = False
        finally:
            draft.unlink()
    else:
        created = False
    password = path.read_text().strip()
    if not password:
        raise EmbeddedStoreError(f"{path} is empty: delete it only together with the "
                                 "embedded stores' data, or write their password back")
    return password, created


def masked(text: str, password: str | None) -> str:
    """``text`` with ``password`` replaced by ``***`` (for log lines and errors)."""
    return text.replace(password, "***") if password else text
