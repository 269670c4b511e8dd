"""Declarative base and the block-range versioning shared by every entity table."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, MetaData
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Versioned:
    """An entity whose state is kept as one row per version, valid for blocks
    `[block_from, block_to)` of the canonical chain (`block_to` NULL = current).

    This one mechanism gives time travel (state as of block N), ownership history, and exact fork
    rollback: delete versions with `block_from > fork_height`, reopen those whose
    `block_to > fork_height`. Several changes to one entity inside one block update that block's
    version in place, so a version never has an empty range.
    """

    @declared_attr
    def vid(cls) -> Mapped[int]:
        return mapped_column(BigInteger, primary_key=True, autoincrement=True)

    @declared_attr
    def block_from(cls) -> Mapped[int]:
        return mapped_column(Integer, nullable=False)

    @declared_attr
    def block_to(cls) -> Mapped[int | None]:
        return mapped_column(Integer, nullable=True)


# Tables whose rows are versioned by block range, in the order a rollback may touch them.
VERSIONED_TABLES: tuple[str, ...] = (
    "verifiers",
    "facilities",
    "generation_reports",
    "certificates",
    "listings",
)
# Append-only fact tables: one row per on-chain occurrence, removed wholesale on rollback.
FACT_TABLES: tuple[str, ...] = ("transfers", "bids", "sales", "retirements")
