"""Alembic, driven from code so `recchain migrate` and the tests need no alembic.ini.

Alembic (and with it Mako and Pygments) is imported by the functions that run it, not here:
every command checks the schema's heads before it starts (`head_revisions`), which reads the
version files without it, a tenth of a second less of each start-up.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    from db.session import to_sqlalchemy_url

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' must be escaped for ConfigParser interpolation (passwords may contain it).
    cfg.set_main_option("sqlalchemy.url", to_sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "heads") -> None:
    """Apply migrations up to `revision` (all branch heads by default). Blocking. Indexes an
    interrupted replay left deferred are built first (`db.indexes`): a migration may name them."""
    import psycopg
    from alembic import command

    from db import indexes
    from db.session import to_libpq_url

    with psycopg.connect(to_libpq_url(url)) as conn:
        indexes.restore_sync(conn)
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "heads") -> None:
    # Migrations do blocking I/O; keep them off the caller's event loop.
    await asyncio.to_thread(upgrade, url, revision)


def head_revisions() -> set[str]:
    """The revisions no other one names as its `down_revision` (Alembic's heads), read from
    the version files' module-level assignments, which Alembic evaluates the same way."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        assigned: dict[str, ast.expr] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.AnnAssign) and node.value is not None:
                target: ast.expr = node.target
                value = node.value
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            else:
                continue
            if isinstance(target, ast.Name):
                assigned[target.id] = value
        if "revision" not in assigned:
            continue  # not a revision (Alembic skips such a file too)
        revisions.add(ast.literal_eval(assigned["revision"]))
        down = ast.literal_eval(assigned["down_revision"]) if "down_revision" in assigned else None
        parents.update((down,) if isinstance(down, str) else down or ())
    return revisions - parents


async def current_revisions(engine: AsyncEngine) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return set(
            await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_heads())
        )


async def is_up_to_date(url: str) -> bool:
    """True when the database is at every head: what `/readyz` means by 'migrated'."""
    from db.session import create_engine

    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        return await current_revisions(engine) == head_revisions()
    finally:
        await engine.dispose()
