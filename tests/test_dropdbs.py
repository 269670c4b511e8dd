"""The run's last databases are dropped by a detached process (tests/dropdbs.py)."""

from __future__ import annotations

import time
import uuid

import psycopg

from db.session import to_libpq_url
from tests.conftest import create_database
from tests.dropdbs import hand_over_drops


def _exists(server_url: str, name: str) -> bool:
    with psycopg.connect(to_libpq_url(server_url), autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def test_handed_over_databases_are_dropped_while_one_is_in_use(server_url: str) -> None:
    names = [f"recchain_d_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    urls = [create_database(server_url, name) for name in names]
    # A connection left open on one of them: the drop must end it, not wait for it.
    held = psycopg.connect(to_libpq_url(urls[0]))
    try:
        hand_over_drops(server_url, [*names, "recchain_d_never_existed"])
        deadline = time.monotonic() + 90
        while any(_exists(server_url, n) for n in names) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_exists(server_url, n) for n in names)
    finally:
        held.close()
