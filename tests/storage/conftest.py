"""Storage tests talk to the session's PostgreSQL through the service's own pools."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import tornado.ioloop

from server.runtime.prepare import Stores
from server.storage.database import Database, open_database
from tests.support import make_settings


@pytest.fixture
def db(clean: Stores, io_loop: tornado.ioloop.IOLoop) -> Iterator[Database]:
    database = io_loop.run_sync(lambda: open_database(make_settings(), clean.database_url))
    yield database
    io_loop.run_sync(database.close)
