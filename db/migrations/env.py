"""Alembic environment. Migrations run over a synchronous psycopg connection (the same driver
as the async engine), so they can be started from inside a running event loop too."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

import db.models
from db.session import to_sqlalchemy_url

config = context.config
target_metadata = db.models.Base.metadata

if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(
        to_sqlalchemy_url(config.get_main_option("sqlalchemy.url") or ""), poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
