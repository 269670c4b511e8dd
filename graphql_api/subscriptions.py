"""Subscription root fields over the hub (graphql-transport-ws and graphql-ws)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from strawberry.types import Info

from db.channels import BLOCKS, RELAY
from graphql_api.context import Context
from graphql_api.db import Reader
from graphql_api.extras import RelayedTransaction, relayed_transaction
from graphql_api.hub import fingerprint
from graphql_api.meta import BLOCK_COLUMNS, Block
from graphql_api.query import ENTITIES, SqlWhere
from graphql_api.types import Certificate, Listing, Transfer

Ctx = Info[Context, None]
ListingFilter = ENTITIES["Listing"].filter_input

# Listing status -> the update kind pushed when a listing enters it.
STATUS_KIND = {
    "sold": "sold",
    "cancelled": "cancelled",
    "expired": "expired",
    "settled-unsold": "expired",
}


@strawberry.type(description="A new canonical tip, or a fork that rolled blocks back.")
class BlockEvent:
    block: Block | None = strawberry.field(description="The new canonical tip.")
    rolled_back: list[str] = strawberry.field(
        description="Index block hashes removed from the canonical chain by a fork."
    )


@strawberry.type(description="A change to a listing.")
class ListingUpdate:
    kind: str = strawberry.field(
        description="created | priceChanged | bid | sold | cancelled | expired | updated |"
        " rolledBack (a fork undid the change; `listing` is the state after the rollback, null"
        " if the listing no longer exists)."
    )
    listing_id: int = strawberry.field(description="The listing.")
    block_height: int | None = strawberry.field(description="Tip height of the notification.")
    listing: Listing | None = strawberry.field(description="The listing's current state.")


@strawberry.type(description="A change to a certificate.")
class CertificateEvent:
    kind: str = strawberry.field(
        description="The custody change kinds of this block (mint, transfer, sale, escrow, split,"
        " retire...), 'updated', or 'rolledBack'."
    )
    token_id: int = strawberry.field(description="The certificate.")
    block_height: int | None = strawberry.field(description="Tip height of the notification.")
    certificate: Certificate | None = strawberry.field(description="The current state.")
    transfers: list[Transfer] = strawberry.field(description="Custody changes in this block.")


def _reader(ctx: Context) -> Reader:
    # Computation is shared by every subscriber of a topic: it must not use one socket's state.
    return Reader(ctx.engine, ctx.settings.api.statement_timeout_ms, snapshot=False)


def _changed(payload: dict[str, Any], table: str) -> list[Any] | None:
    """Ids the notification names for `table`; None when it was truncated (unknown)."""
    if payload.get("truncated"):
        return None
    return list((payload.get("changes") or {}).get(table) or [])


async def _ids_touched_at(reader: Reader, table: str, key: str, height: int) -> list[Any]:
    rows = await reader.all(
        f"SELECT DISTINCT {key} AS k FROM {table} WHERE block_from >= :h OR block_to >= :h",
        {"h": height},
    )
    return [r["k"] for r in rows]


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Every new canonical tip and every fork rollback.")
    async def blocks(self, info: Ctx) -> AsyncGenerator[BlockEvent, None]:
        ctx = info.context

        async def compute(channel: str, payload: dict[str, Any]) -> list[Any]:
            if channel != BLOCKS:
                return []
            row = await _reader(ctx).one(
                f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE canonical"
                " ORDER BY block_height DESC LIMIT 1"
            )
            return [
                BlockEvent(
                    block=Block.from_row(row) if row else None,
                    rolled_back=list(payload.get("rolled_back") or []),
                )
            ]

        async with ctx.hub.subscribe(
            "blocks", compute, lambda e: fingerprint([e.block and e.block.hash, e.rolled_back])
        ) as queue:
            while True:
                item = await queue.get()
                ctx.fresh()
                yield item

    @strawberry.subscription(
        description="Listing changes (created, price changed, bid, sold, cancelled, expired,"
        " rolled back by a fork) of listings matching `where`."
    )
    async def listing_updates(
        self,
        info: Ctx,
        where: ListingFilter | None = None,  # type: ignore[valid-type]
    ) -> AsyncGenerator[ListingUpdate, None]:
        ctx = info.context
        entity = ENTITIES["Listing"]
        key = "listings:" + json.dumps(strawberry.asdict(where) if where else None, default=str)

        async def compute(channel: str, payload: dict[str, Any]) -> list[Any]:
            if channel != BLOCKS:
                return []
            reader = _reader(ctx)
            ids = _changed(payload, "listings")
            if ids is None:
                ids = await _ids_touched_at(
                    reader, "listings", "listing_id", int(payload.get("height") or 0)
                )
            if not ids:
                return []
            params: dict[str, Any] = {"ids": [int(i) for i in ids]}
            match = "TRUE"
            if where is not None:
                match = SqlWhere(entity, None, params).compile(where, "cur")
            rows = await reader.all(
                "SELECT i.id AS _id, cur.*, prev.status AS _ps, prev.price AS _pp,"
                " prev.bid_count AS _pb, prev.vid IS NULL AS _new"
                " FROM unnest(CAST(:ids AS bigint[])) AS i(id)"
                " LEFT JOIN listings cur ON cur.listing_id = i.id AND cur.block_to IS NULL"
                " LEFT JOIN LATERAL (SELECT p.* FROM listings p WHERE p.listing_id = i.id"
                " AND p.block_to = cur.block_from ORDER BY p.block_from DESC LIMIT 1) prev"
                f" ON TRUE WHERE cur.vid IS NULL OR {match} ORDER BY i.id",
                params,
            )
            rolled = bool(payload.get("rolled_back"))
            out = []
            for r in rows:
                if r["vid"] is None:
                    kind, listing = "rolledBack", None
                else:
                    listing = entity.from_row(r, None)
                    if rolled:
                        kind = "rolledBack"
                    elif r["_new"]:
                        kind = "created"
                    elif r["_ps"] != r["status"]:
                        kind = STATUS_KIND.get(r["status"], "updated")
                    elif r["_pb"] != r["bid_count"]:
                        kind = "bid"
                    elif r["_pp"] != r["price"]:
                        kind = "priceChanged"
                    else:
                        kind = "updated"
                out.append(
                    ListingUpdate(
                        kind=kind,
                        listing_id=int(r["_id"]),
                        block_height=payload.get("height"),
                        listing=listing,
                    )
                )
            return out

        def mark(u: ListingUpdate) -> str:
            state = None if u.listing is None else strawberry.asdict(u.listing)
            return fingerprint([u.kind, u.listing_id, u.block_height, state])

        async with ctx.hub.subscribe(key, compute, mark) as queue:
            while True:
                item = await queue.get()
                ctx.fresh()
                yield item

    @strawberry.subscription(description="Changes to one certificate (custody, status, fork).")
    async def certificate_events(
        self, info: Ctx, token_id: int
    ) -> AsyncGenerator[CertificateEvent, None]:
        ctx = info.context
        cert_entity, transfer_entity = ENTITIES["Certificate"], ENTITIES["Transfer"]

        async def compute(channel: str, payload: dict[str, Any]) -> list[Any]:
            if channel != BLOCKS:
                return []
            ids = _changed(payload, "certificates")
            if ids is not None and token_id not in {int(i) for i in ids}:
                return []
            reader = _reader(ctx)
            row = await reader.one(
                "SELECT * FROM certificates WHERE token_id = :t AND block_to IS NULL",
                {"t": token_id},
            )
            height = payload.get("height")
            transfers = await reader.all(
                "SELECT * FROM transfers WHERE token_id = :t AND block_height = :h"
                " ORDER BY event_index",
                {"t": token_id, "h": height},
            )
            if payload.get("rolled_back"):
                kind = "rolledBack"
            else:
                kind = ",".join(dict.fromkeys(t["kind"] for t in transfers)) or "updated"
            return [
                CertificateEvent(
                    kind=kind,
                    token_id=token_id,
                    block_height=height,
                    certificate=cert_entity.from_row(row, None) if row else None,
                    transfers=[transfer_entity.from_row(t, None) for t in transfers],
                )
            ]

        def mark(e: CertificateEvent) -> str:
            state = None if e.certificate is None else strawberry.asdict(e.certificate)
            return fingerprint([e.kind, state, [t.id_ for t in e.transfers]])

        async with ctx.hub.subscribe(f"cert:{token_id}", compute, mark) as queue:
            while True:
                item = await queue.get()
                ctx.fresh()
                yield item

    @strawberry.subscription(
        description="Status changes of a relayed transaction; starts with its current status."
    )
    async def relay_status(self, info: Ctx, txid: str) -> AsyncGenerator[RelayedTransaction, None]:
        ctx = info.context

        async def load() -> RelayedTransaction | None:
            return await relayed_transaction(_reader(ctx), txid)

        async def compute(channel: str, payload: dict[str, Any]) -> list[Any]:
            if channel != RELAY or payload.get("txid") != txid:
                return []
            status = await load()
            return [status] if status else []

        async with ctx.hub.subscribe(
            f"relay:{txid}", compute, lambda s: fingerprint(strawberry.asdict(s))
        ) as queue:
            # Subscribed first, so no change can fall between this read and the pushes; and read
            # once the replica has what the primary has, so a status the relay has already
            # reported to the client is not shown older here.
            await ctx.hub.sync()
            first = await load()
            if first is not None:
                yield first
            while True:
                item = await queue.get()
                if first is not None and strawberry.asdict(item) == strawberry.asdict(first):
                    continue
                first = None
                yield item
