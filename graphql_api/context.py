"""Per-operation context: the reader, the DataLoaders and the resolved `block` arguments."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.dataloader import DataLoader

from graphql_api.db import Reader
from graphql_api.errors import BadUserInput, BlockNotFound
from infra.config import Settings


@strawberry.input(description="Time travel: the state as of a canonical block (inclusive).")
class BlockInput:
    number: int | None = strawberry.field(default=None, description="Stacks block height.")
    hash: str | None = strawberry.field(
        default=None, description="Index block hash (or block hash) of a canonical block."
    )


@dataclass
class Context:
    settings: Settings
    engine: AsyncEngine
    reader: Reader
    request: Any = None
    response: Any = None
    hub: Any = None
    _loaders: dict[str, DataLoader[Any, Any]] = field(default_factory=dict)
    _blocks: dict[tuple[int | None, str | None], int | None] = field(default_factory=dict)

    def loader(
        self,
        name: str,
        load: Callable[[Sequence[Any]], Awaitable[Sequence[Any]]],
    ) -> DataLoader[Any, Any]:
        """The operation's DataLoader named `name` (one per operation or subscription push)."""
        existing = self._loaders.get(name)
        if existing is None:
            existing = DataLoader(load_fn=load)
            self._loaders[name] = existing
        return existing

    def detached(self) -> Context:
        """A context for work shared by many sockets: no request, reads per statement."""
        return Context(
            settings=self.settings,
            engine=self.engine,
            reader=Reader(self.engine, self.settings.api.statement_timeout_ms, snapshot=False),
            hub=self.hub,
        )

    def fresh(self) -> None:
        """Forget loaders and resolved blocks: called before each subscription push."""
        self._loaders.clear()
        self._blocks.clear()

    async def at(self, block: BlockInput | None) -> int | None:
        """The height a `block` argument names; None means 'the current state'."""
        if block is None or (block.number is None and block.hash is None):
            return None
        key: tuple[int | None, str | None] = (block.number, block.hash)
        if key in self._blocks:
            return self._blocks[key]
        if block.number is not None and block.hash is not None:
            raise BadUserInput("block: give either number or hash, not both")
        if block.number is not None:
            if block.number < 0:
                raise BadUserInput("block.number must be >= 0")
            tip = await self.reader.one("SELECT max(block_height) AS h FROM blocks WHERE canonical")
            if tip is None or tip["h"] is None or block.number > tip["h"]:
                raise BlockNotFound(
                    f"block {block.number} is not indexed yet",
                    latest=None if tip is None else tip["h"],
                )
            height: int | None = block.number
        else:
            row = await self.reader.one(
                "SELECT block_height, canonical FROM blocks"
                " WHERE index_block_hash = :h OR block_hash = :h"
                " ORDER BY canonical DESC LIMIT 1",
                {"h": block.hash},
            )
            if row is None:
                raise BlockNotFound(f"block {block.hash} is unknown")
            if not row["canonical"]:
                raise BlockNotFound(f"block {block.hash} is not on the canonical chain")
            height = int(row["block_height"])
        self._blocks[key] = height
        return height

    async def close(self) -> None:
        await self.reader.close()
