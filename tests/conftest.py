"""Test databases: a real PostgreSQL, never a mock.

`DATABASE_URL` (CI) names a server to use; without it the embedded PostgreSQL is started. Each
test run creates its own template database, migrated once with Alembic (the same migrations
production runs), and every test that asks for `db_url` gets a fresh copy of that template, so
tests never see each other's rows and the run never touches the named database itself.

A test's database is dropped behind it, on a few background connections (`DROPPER`): PostgreSQL's
DROP DATABASE waits for a checkpoint, seconds on a busy server, which no test needs to wait for,
and concurrent drops share one checkpoint. A drop that failed during the run fails the run at its
end. The drops still waiting when the run ends are handed to a detached process
(`tests/dropdbs.py`) instead of being waited for: each copy of the template leaves a few hundred
files for the next checkpoint to fsync, and on a loaded machine the last checkpoints of a run
took over a minute, which the developer waited for with every test already done.
"""

from __future__ import annotations

import os
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from db.migrate import upgrade
from db.session import create_engine, to_libpq_url, to_sqlalchemy_url
from infra.config import PROJECT_ROOT

# The primary + hot standby pair, and a server of one's own, for every test package (see
# tests/pgcluster.py).
from tests.dropdbs import drop_database, hand_over_drops
from tests.pgcluster import (  # noqa: F401
    _replica_template,
    own_server,
    pg_cluster,
    replica_db,
)

# Which tests share a worker under `pytest -n` (make test): see tests/xdistgroups.py.
from tests.xdistgroups import (  # noqa: F401
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_logreport,
    pytest_unconfigure,
    pytest_xdist_make_scheduler,
    remember_durations,
)

RUN_ID = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"


def _server_url() -> str:
    url = os.environ.get("DATABASE_URL") or os.environ.get("RECCHAIN_DATABASE_URL")
    if url:
        return to_sqlalchemy_url(url)
    from db.embedded import embedded_server_uri

    data_dir = os.environ.get("RECCHAIN_TEST_DATA_DIR")
    return to_sqlalchemy_url(
        embedded_server_uri(
            PROJECT_ROOT / ".data" if not data_dir else __import__("pathlib").Path(data_dir)
        )
    )


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _admin(url: str) -> psycopg.Connection:
    return psycopg.connect(to_libpq_url(url), autocommit=True)


def create_database(url: str, name: str, template: str | None = None) -> str:
    """Create database `name` on the server of `url` (a copy of `template`) and return its URL.

    Its commits do not wait for the WAL flush (`synchronous_commit = off`): on a busy server that
    wait is most of a small transaction's time, and it matters only if the server itself crashes,
    which no test does to this server (the outage tests run their own, ops/pgcluster.py).
    """
    with _admin(url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    return _with_database(url, name)


class Dropper:
    """Drops databases on a few daemon threads. `finish` raises the first drop that failed (a
    database left behind is reported, never ignored) and hands those not yet dropped to a
    detached process, so that the run's end does not wait for the server's checkpoints."""

    def __init__(self, connections: int = 3) -> None:
        self._connections = connections
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._undone: dict[str, str] = {}  # name -> server URL, until dropped
        self._failures: list[BaseException] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def drop(self, url: str, name: str) -> None:
        with self._lock:
            self._undone[name] = url
            if not self._threads:
                for i in range(self._connections):
                    thread = threading.Thread(target=self._work, name=f"dropdb-{i}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
        self._queue.put((url, name))

    def _work(self) -> None:
        while True:
            url, name = self._queue.get()
            try:
                drop_database(url, name)
            except BaseException as exc:  # reported by finish
                with self._lock:
                    self._failures.append(exc)
            else:
                with self._lock:
                    self._undone.pop(name, None)

    def finish(self) -> None:
        with self._lock:
            undone, self._undone = dict(self._undone), {}
            failures = list(self._failures)
        by_server: dict[str, list[str]] = {}
        for name, url in undone.items():
            by_server.setdefault(url, []).append(name)
        for url, names in by_server.items():
            hand_over_drops(url, names)
        if failures:
            raise failures[0]


DROPPER = Dropper()


def pytest_sessionfinish(session: pytest.Session) -> None:
    DROPPER.finish()
    remember_durations(session)


@pytest.fixture(scope="session")
def server_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    name = f"recchain_tmpl_{RUN_ID}"
    upgrade(create_database(server_url, name))
    yield name
    DROPPER.drop(server_url, name)


@pytest.fixture
def db_url(server_url: str, template_db: str) -> Iterator[str]:
    """A fresh, fully migrated database for one test (SQLAlchemy URL)."""
    name = f"recchain_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    yield create_database(server_url, name, template_db)
    DROPPER.drop(server_url, name)


@pytest.fixture
def empty_db_url(server_url: str) -> Iterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    name = f"recchain_e_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    yield create_database(server_url, name)
    DROPPER.drop(server_url, name)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()
