"""A second fresh database inside one test (to compare two ingestion orders)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.conftest import DROPPER, RUN_ID, create_database


@contextmanager
def fresh_db(server_url: str) -> Iterator[str]:
    name = f"recchain_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    template = f"recchain_tmpl_{RUN_ID}"
    url = create_database(server_url, name, template)
    try:
        yield url
    finally:
        DROPPER.drop(server_url, name)
