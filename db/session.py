"""The one async engine/session factory. Every role imports its database access from here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from db.embedded import embedded_server_uri
from infra.config import Settings, get_settings


def to_sqlalchemy_url(url: str) -> str:
    """Normalise any libpq-style URL to the psycopg 3 dialect SQLAlchemy needs."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql+asyncpg://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def to_libpq_url(url: str) -> str:
    """The same URL as psycopg/libpq (LISTEN connections, COPY, psql) wants it."""
    sa = make_url(to_sqlalchemy_url(url))
    return sa.set(drivername="postgresql").render_as_string(hide_password=False)


def database_url(settings: Settings | None = None) -> str:
    """The SQLAlchemy URL of the primary database, starting the embedded one if needed."""
    settings = settings or get_settings()
    if settings.database_url is not None:
        return to_sqlalchemy_url(settings.database_url.get_secret_value())
    return to_sqlalchemy_url(embedded_server_uri(settings.data_dir))


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    options: dict[str, Any] = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 10}
    options.update(kwargs)
    return create_async_engine(to_sqlalchemy_url(url), **options)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def engine_scope(url: str | None = None, **kwargs: Any) -> AsyncIterator[AsyncEngine]:
    """An engine that is disposed on exit: for CLI commands and tests."""
    engine = create_engine(url or database_url(), **kwargs)
    try:
        yield engine
    finally:
        await engine.dispose()
