"""The schema: root query and subscription fields, assembled with the guard extensions."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from graphql_api.context import BlockInput, Context
from graphql_api.meta import Meta, load_meta


@strawberry.type(description="Read the indexed REC-Chain state; every field accepts `block`.")
class Query:
    @strawberry.field(
        name="_meta",
        description="The chain position of the answer: tip block, finality and indexing lag.",
    )
    async def meta(self, info: Info[Context, None], block: BlockInput | None = None) -> Meta:
        return await load_meta(info.context, block)


def build_schema(extensions: list[object] | None = None) -> strawberry.Schema:
    return strawberry.Schema(query=Query, extensions=list(extensions or []))  # type: ignore[arg-type]
