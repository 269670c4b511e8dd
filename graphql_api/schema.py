"""The schema: root query and subscription fields, assembled with the guard extensions."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.tools import merge_types
from strawberry.types import Info
from strawberry.types.execution import ExecutionContext
from strawberry.types.graphql import OperationType
from strawberry.utils.logging import StrawberryLogger

from graphql_api import types as t
from graphql_api.context import BlockInput, Context
from graphql_api.errors import BadUserInput
from graphql_api.extras import RelayedTransaction, relayed_transaction
from graphql_api.fanout import shareable, shared_stream
from graphql_api.guards import is_internal, tag
from graphql_api.loaders import one_by
from graphql_api.meta import Meta, load_meta
from graphql_api.query import DEFAULT_FIRST, ENTITIES, Connection, list_entity
from graphql_api.scalars import schema_config

Ctx = Info[Context, None]
client_log = logging.getLogger("recchain.api.client_errors")
_SUGGESTION = " Did you mean "


def list_field(entity_name: str, description: str, extra: tuple[str, ...] = ()) -> Any:
    """A root list field: `(where, orderBy, first, after, block) -> <Type>Connection`."""
    entity = ENTITIES[entity_name]

    async def resolve(
        info: Ctx,
        where: Any = None,
        order_by: Any = None,
        first: int = DEFAULT_FIRST,
        after: str | None = None,
        block: BlockInput | None = None,
    ) -> Any:
        at = await info.context.at(block)
        return await list_entity(
            info.context,
            entity,
            where=where,
            order_by=order_by,
            first=first,
            after=after,
            at=at,
            extra=extra,
        )

    resolve.__annotations__ = {
        "info": Ctx,
        "where": entity.filter_input | None,
        "order_by": list[entity.order_input] | None,  # type: ignore[name-defined]
        "first": int,
        "after": str | None,
        "block": BlockInput | None,
        "return": Connection[entity.type_],  # type: ignore[name-defined]
    }
    return strawberry.field(resolver=resolve, description=description)


def one_field(entity_name: str, arg: str, column: str, description: str) -> Any:
    """A root lookup by key at an optional block."""
    entity = ENTITIES[entity_name]

    async def resolve(info: Ctx, key: Any, block: BlockInput | None = None) -> Any:
        at = await info.context.at(block)
        return await one_by(info.context, entity_name, column, key, at)

    resolve.__annotations__ = {
        "info": Ctx,
        "key": Any,
        "block": BlockInput | None,
        "return": entity.type_ | None,
    }
    key_type = entity.columns[column]
    resolve.__annotations__["key"] = key_type
    field = strawberry.field(resolver=resolve, description=description)
    # The Python parameter is generic; the GraphQL argument carries the entity's key name.
    assert field.base_resolver is not None
    field.base_resolver.arguments[0].graphql_name = arg
    return field


def _node_loader(type_name: str, key: str) -> Callable[[Context], Awaitable[Any]] | None:
    entity = ENTITIES.get(type_name)
    if entity is None:
        return None
    column = entity.key
    kind = entity.columns.get(column, int)
    try:
        value: Any = int(key) if kind is not str else key
    except ValueError:
        return None
    return lambda ctx: one_by(ctx, type_name, column, value, None)


@strawberry.type(
    description="Read the indexed REC-Chain state; lists accept `block` for time travel."
)
class Query:
    @strawberry.field(
        name="_meta",
        description="The chain position of the answer: tip block, finality and indexing lag.",
    )
    async def meta(self, info: Ctx, block: BlockInput | None = None) -> Meta:
        return await load_meta(info.context, block)

    @strawberry.field(description="Refetch any object by its global id (current state).")
    async def node(self, info: Ctx, id: strawberry.ID) -> t.Node | None:
        type_name, key = t.parse_global_id(str(id))
        load = _node_loader(type_name, key)
        if load is None:
            raise BadUserInput("node: not a global id issued by this API")
        result: t.Node | None = await load(info.context)
        return result

    certificate = one_field("Certificate", "tokenId", "token_id", "A certificate by token id.")
    certificates = list_field("Certificate", "Certificates, filtered, sorted and paginated.")
    facility = one_field("Facility", "id", "facility_id", "A facility by on-chain id.")
    facilities = list_field("Facility", "Facilities, filtered, sorted and paginated.")
    verifier = one_field("Verifier", "principal", "principal", "A verifier by principal.")
    verifiers = list_field("Verifier", "Verification bodies.")
    generation_report = one_field("GenerationReport", "id", "report_id", "A report by id.")
    generation_reports = list_field("GenerationReport", "Generation reports.")
    listing = one_field("Listing", "id", "listing_id", "A listing by id.")
    listings = list_field("Listing", "Fixed-price listings and auctions.")
    auctions = list_field("Listing", "English auctions only.", ("t.kind = 'auction'",))
    bids = list_field("Bid", "Auction bids.")
    sales = list_field("Sale", "Completed sales (fills).")
    retirements = list_field("Retirement", "Retirements (final claims).")
    transfers = list_field("Transfer", "Custody changes of every certificate.")

    @strawberry.field(description="A transaction submitted through the relay, by txid.")
    async def relayed_transaction(self, info: Ctx, txid: str) -> RelayedTransaction | None:
        return await relayed_transaction(info.context.reader, txid)


class Schema(strawberry.Schema):
    """Runs identical subscription operations once per process (see fanout.py)."""

    # api.field_suggestions: "Did you mean ...?" (of fields, arguments, types, enum values)
    field_suggestions = True

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # A client's mistake is answered to the client and counted in the metrics; as an ERROR
        # with a traceback it cost a formatted stack per bad request and filled the log with
        # whatever text the client sent. Internal errors keep their traceback.
        for error in errors:
            tag(error)  # every error a client gets says what kind it is
            if not self.field_suggestions and _SUGGESTION in error.message:
                error.message = error.message.split(_SUGGESTION)[0].rstrip()
            if is_internal(error):
                StrawberryLogger.error(error, execution_context)
            else:
                client_log.debug("client error: %s", error.message)

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> Any:
        if (
            not isinstance(context_value, Context)
            or context_value.hub is None
            or query is None
            or operation_extensions
            or not shareable(query, operation_name, context_value.settings.api.max_tokens)
        ):
            return await super().stream(
                query,
                variable_values,
                context_value,
                root_value,
                operation_name,
                operation_extensions,
                allowed_operation_types,
            )
        return shared_stream(
            self, context_value, query, variable_values, operation_name, allowed_operation_types
        ).listen()


def build_schema(
    extensions: list[Any] | None = None, *, field_suggestions: bool = True
) -> strawberry.Schema:
    from graphql_api.questions.claims import ClaimsQuery
    from graphql_api.questions.compliance import ComplianceQuery
    from graphql_api.questions.history import HistoryQuery
    from graphql_api.questions.market import MarketQuery
    from graphql_api.questions.search import SearchQuery
    from graphql_api.subscriptions import Subscription

    questions = (HistoryQuery, ClaimsQuery, ComplianceQuery, MarketQuery, SearchQuery)
    query = merge_types("Query", (Query, *questions))
    schema = Schema(
        query=query,
        subscription=Subscription,
        types=[t.Transfer, t.Bid],
        extensions=list(extensions or []),
        config=schema_config(),
    )
    schema.field_suggestions = field_suggestions
    return schema
