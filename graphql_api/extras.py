"""Tables owned by other roles, read when present: resolved metadata and the relay outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from graphql_api.context import Context
from graphql_api.errors import NotAvailable
from graphql_api.scalars import BigInt

UNDEFINED_TABLE = "42P01"


@strawberry.type(description="Token metadata fetched from IPFS and verified against its CID.")
class ResolvedMetadata:
    uri: str = strawberry.field(description="The metadata URI as minted.")
    cid: str = strawberry.field(description="CIDv1 of the verified document.")
    name: str | None = strawberry.field(description="SIP-016 `name`.")
    description: str | None = strawberry.field(description="SIP-016 `description`.")
    image: str | None = strawberry.field(description="SIP-016 `image`.")
    document: JSON = strawberry.field(description="The full verified JSON document.")
    resolved_at: datetime | None = strawberry.field(description="When it was resolved.")


async def metadata_for(ctx: Context, uri: str | None) -> ResolvedMetadata | None:
    """Batched per operation; None until the resolver has fetched and verified the URI."""
    if not uri:
        return None

    async def load(uris: Sequence[str]) -> list[ResolvedMetadata | None]:
        rows = await ctx.reader.all(
            "SELECT u.uri, d.cid, d.document, u.resolved_at FROM metadata_uris u"
            " JOIN metadata_documents d ON d.cid = u.cid WHERE u.uri = ANY(:uris)",
            {"uris": list(uris)},
        )
        found = {}
        for r in rows:
            doc = r["document"] if isinstance(r["document"], dict) else {}
            found[r["uri"]] = ResolvedMetadata(
                uri=r["uri"],
                cid=r["cid"],
                name=_text(doc.get("name")),
                description=_text(doc.get("description")),
                image=_text(doc.get("image")),
                document=cast("JSON", doc),
                resolved_at=r["resolved_at"],
            )
        return [found.get(u) for u in uris]

    result: ResolvedMetadata | None = await ctx.loader("metadata", load).load(uri)
    return result


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@strawberry.type(description="A transaction accepted by the relay, and its fate.")
class RelayedTransaction:
    txid: str = strawberry.field(description="Transaction id (0x-hex).")
    status: str = strawberry.field(
        description="received | broadcast | mempool | mined | failed | dropped | rejected."
    )
    reason: str | None = strawberry.field(description="Why it was rejected or dropped.")
    sender: str = strawberry.field(description="Sender address.")
    sponsor: str | None = strawberry.field(description="Sponsor address, if sponsored.")
    nonce: BigInt = strawberry.field(description="Sender nonce.")
    fee: BigInt = strawberry.field(description="Fee in micro-STX.")
    contract_id: str = strawberry.field(description="Called contract.")
    function_name: str = strawberry.field(description="Called function.")
    block_height: int | None = strawberry.field(description="Block that mined it.")
    tx_status: str | None = strawberry.field(description="On-chain outcome when mined.")
    received_at: datetime | None = strawberry.field(description="Accepted by the relay.")
    broadcast_at: datetime | None = strawberry.field(description="Accepted by the node.")
    mined_at: datetime | None = strawberry.field(description="Mined.")
    updated_at: datetime | None = strawberry.field(description="Last status change.")


RELAY_COLUMNS = (
    "txid, status, reason, sender, sponsor, nonce, fee, contract_id, function_name,"
    " block_height, tx_status, received_at, broadcast_at, mined_at, updated_at"
)


async def relayed_transaction(reader: Any, txid: str) -> RelayedTransaction | None:
    try:
        row = await reader.one(
            f"SELECT {RELAY_COLUMNS} FROM relay_txs WHERE txid = :t", {"t": txid.lower()}
        )
    except Exception as exc:
        # The reader raises psycopg's errors; SQLAlchemy wraps them in `orig`.
        sqlstate = getattr(exc, "sqlstate", None) or getattr(
            getattr(exc, "orig", None), "sqlstate", None
        )
        if sqlstate == UNDEFINED_TABLE:
            raise NotAvailable("the relay outbox is not installed in this database") from exc
        raise
    return RelayedTransaction(**row) if row else None
