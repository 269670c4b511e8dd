from __future__ import annotations

from sqlalchemy import inspect, text

from db.migrate import current_revisions, head_revisions, is_up_to_date, upgrade
from db.models import Base
from db.session import create_engine


async def test_migrations_create_every_model_table(empty_db_url: str) -> None:
    assert not await is_up_to_date(empty_db_url)
    upgrade(empty_db_url)
    engine = create_engine(empty_db_url)
    try:
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            exts = set(
                (await conn.execute(text("SELECT extname FROM pg_extension"))).scalars().all()
            )
        assert set(Base.metadata.tables) <= tables
        assert {"pg_trgm", "btree_gist"} <= exts
        assert await current_revisions(engine) == head_revisions()
    finally:
        await engine.dispose()
    assert await is_up_to_date(empty_db_url)


async def test_upgrade_is_idempotent(db_url: str) -> None:
    upgrade(db_url)
    assert await is_up_to_date(db_url)
