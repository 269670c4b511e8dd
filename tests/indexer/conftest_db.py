"""A second fresh database inside one test (to compare two ingestion orders)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import make_url

from db.session import to_libpq_url
from tests.conftest import DROPPER, RUN_ID


@contextmanager
def fresh_db(server_url: str) -> Iterator[str]:
    name = f"recchain_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    template = f"recchain_tmpl_{RUN_ID}"
    with psycopg.connect(to_libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        DROPPER.drop(server_url, name)
