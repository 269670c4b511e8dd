"""Alembic, driven from code so `recchain migrate` and the tests need no alembic.ini."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from db import indexes
from db.session import create_engine, to_libpq_url, to_sqlalchemy_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' must be escaped for ConfigParser interpolation (passwords may contain it).
    cfg.set_main_option("sqlalchemy.url", to_sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "heads") -> None:
    """Apply migrations up to `revision` (all branch heads by default). Blocking. Indexes an
    interrupted replay left deferred are built first (`db.indexes`): a migration may name them."""
    with psycopg.connect(to_libpq_url(url)) as conn:
        indexes.restore_sync(conn)
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "heads") -> None:
    # Migrations do blocking I/O; keep them off the caller's event loop.
    await asyncio.to_thread(upgrade, url, revision)


def head_revisions() -> set[str]:
    script = ScriptDirectory.from_config(alembic_config("postgresql+psycopg://x/x"))
    return set(script.get_heads())


async def current_revisions(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(
            await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_heads())
        )


async def is_up_to_date(url: str) -> bool:
    """True when the database is at every head: what `/readyz` means by 'migrated'."""
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        return await current_revisions(engine) == head_revisions()
    finally:
        await engine.dispose()
