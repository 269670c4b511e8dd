"""Subscription root fields over the hub (graphql-transport-ws and graphql-ws).

Each field is a `Kind` of the hub: the topics of all its subscribers and how one notification
recomputes all of them at once (hub.py). `blocks` has one topic; `certificateEvents` and
`relayStatus` topics are found by key in a map; `listingUpdates` topics filtering on listing ids
alone are found by key too, and the other filters are evaluated together, in one statement per
`FILTERS_PER_STATEMENT` filters, over only the listings that changed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterable
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry.types import Info

from db.channels import BLOCKS, RELAY
from graphql_api.context import Context
from graphql_api.db import Reader
from graphql_api.errors import BadUserInput, BlockNotFound, LimitExceeded
from graphql_api.extras import RELAY_COLUMNS, RelayedTransaction, relayed_transaction
from graphql_api.hub import Kind, Topic, fingerprint
from graphql_api.meta import BLOCK_COLUMNS, Block
from graphql_api.query import ENTITIES, SqlWhere, given
from graphql_api.types import Certificate, Listing, Transfer

Ctx = Info[Context, None]
ListingFilter = ENTITIES["Listing"].filter_input
# Listing filters other than by id, evaluated side by side in one statement.
FILTERS_PER_STATEMENT = 200

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


def _ints(values: Iterable[Any]) -> list[int]:
    out = []
    for v in values:
        try:
            out.append(int(v))
        except (TypeError, ValueError):
            continue  # a notification names ids; anything else is not one of ours
    return out


class BlocksKind(Kind):
    channels: ClassVar[frozenset[str]] = frozenset({BLOCKS})

    async def compute(
        self, reader: Reader, channel: str, payload: dict[str, Any]
    ) -> Iterable[tuple[Topic, list[Any]]]:
        row = await reader.one(
            f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE canonical ORDER BY block_height DESC LIMIT 1"
        )
        event = BlockEvent(
            block=Block.from_row(row) if row else None,
            rolled_back=[str(h) for h in payload.get("rolled_back") or []],
        )
        return [(topic, [event]) for topic in self.topics.values()]

    def fingerprint(self, item: Any) -> str:
        return fingerprint([item.block and item.block.hash, item.rolled_back])


def _listing_change(r: Any) -> str:
    """The update kind from a listing's row and the `_ps`/`_pb`/`_pp`/`_new` of the version it
    is compared with."""
    if r["_new"]:
        return "created"
    if r["_ps"] != r["status"]:
        return STATUS_KIND.get(r["status"], "updated")
    if r["_pb"] != r["bid_count"]:
        return "bid"
    if r["_pp"] != r["price"]:
        return "priceChanged"
    return "updated"


# -- resuming: what a client missed since the last thing it saw ----------------------------------


async def _tip_height(reader: Reader) -> int:
    row = await reader.one("SELECT max(block_height) AS h FROM blocks WHERE canonical")
    return int(row["h"]) if row is not None and row["h"] is not None else 0


async def _resume_height(reader: Reader, after: int) -> int:
    """Checks `afterHeight` against the chain; the tip height."""
    if after < 0:
        raise BadUserInput("afterHeight must be >= 0")
    tip = await _tip_height(reader)
    if after > tip:
        raise BlockNotFound(f"afterHeight {after} is above the indexed tip", latest=tip)
    return tip


def _too_far(what: str, cap: int) -> LimitExceeded:
    return LimitExceeded(
        f"{what}: more than {cap} to resume; read the current state with queries and"
        " subscribe without it",
        limit="resume",
        max=cap,
    )


async def blocks_since(reader: Reader, after_hash: str, cap: int) -> list[BlockEvent]:
    """Every canonical block above the last one the client saw. If a fork removed that block,
    the first event names the client's blocks that are gone (`rolledBack`)."""
    orphaned: list[str] = []
    at = after_hash.lower()
    while True:
        row = await reader.one(
            f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE index_block_hash = :h", {"h": at}
        )
        if row is None:
            raise BlockNotFound(f"afterHash: block {after_hash} is unknown")
        if row["canonical"]:
            break
        orphaned.append(at)
        if len(orphaned) > cap:
            raise _too_far("afterHash", cap)
        at = row["parent_index_block_hash"]
    rows = await reader.all(
        f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE canonical AND block_height > :f"
        " ORDER BY block_height LIMIT :n",
        {"f": int(row["block_height"]), "n": cap + 1},
    )
    if len(rows) > cap:
        raise _too_far("afterHash", cap)
    events = [BlockEvent(block=Block.from_row(r), rolled_back=[]) for r in rows]
    if orphaned:
        if not events:  # the fork point is the tip
            events = [BlockEvent(block=Block.from_row(row), rolled_back=[])]
        events[0].rolled_back = orphaned
    return events


async def listings_since(reader: Reader, where: Any, after: int, cap: int) -> list[ListingUpdate]:
    """One update per listing matching `where` whose state changed above `after`: its state
    now, and the kind of change against its state at `after` (not each step in between)."""
    tip = await _resume_height(reader, after)
    entity = ENTITIES["Listing"]
    params: dict[str, Any] = {"h": after, "n": cap + 1}
    match = SqlWhere(entity, None, params).compile(where, "cur") if where is not None else "TRUE"
    rows = await reader.all(
        "SELECT cur.*, prev.status AS _ps, prev.price AS _pp, prev.bid_count AS _pb,"
        " prev.vid IS NULL AS _new FROM listings cur"
        " LEFT JOIN LATERAL (SELECT p.* FROM listings p WHERE p.listing_id = cur.listing_id"
        " AND p.block_from <= :h AND (p.block_to IS NULL OR p.block_to > :h) LIMIT 1) prev"
        f" ON TRUE WHERE cur.block_to IS NULL AND cur.block_from > :h AND {match}"
        " ORDER BY cur.listing_id LIMIT :n",
        params,
    )
    if len(rows) > cap:
        raise _too_far("afterHeight", cap)
    return [
        ListingUpdate(
            kind=_listing_change(r),
            listing_id=int(r["listing_id"]),
            block_height=tip,
            listing=entity.from_row(r, None),
        )
        for r in rows
    ]


async def certificate_since(
    reader: Reader, token_id: int, after: int, cap: int
) -> list[CertificateEvent]:
    """One event with every custody change of the certificate above `after` and its state now,
    if anything changed."""
    tip = await _resume_height(reader, after)
    cert = await reader.one(
        "SELECT * FROM certificates WHERE token_id = :t AND block_to IS NULL", {"t": token_id}
    )
    transfers = await reader.all(
        "SELECT * FROM transfers WHERE token_id = :t AND block_height > :h"
        " ORDER BY block_height, event_index LIMIT :n",
        {"t": token_id, "h": after, "n": cap + 1},
    )
    if len(transfers) > cap:
        raise _too_far("afterHeight", cap)
    if not transfers and (cert is None or int(cert["block_from"]) <= after):
        return []
    return [
        CertificateEvent(
            kind=",".join(dict.fromkeys(t["kind"] for t in transfers)) or "updated",
            token_id=token_id,
            block_height=tip,
            certificate=ENTITIES["Certificate"].from_row(cert, None) if cert else None,
            transfers=[ENTITIES["Transfer"].from_row(t, None) for t in transfers],
        )
    ]


def _listing_keys(where: Any) -> list[int] | None:
    """The listing ids a filter selects when it filters on ids alone, else None."""
    if where is None:
        return None
    fields = given(where)
    if set(fields) == {"listing_id"} and isinstance(fields["listing_id"], int):
        return [fields["listing_id"]]
    if set(fields) == {"listing_id_in"} and isinstance(fields["listing_id_in"], list):
        return [int(i) for i in fields["listing_id_in"]]
    return None


class ListingsKind(Kind):
    """`listingUpdates` topics: by id (`{listingId}` / `{listingId_in}`) or by any filter."""

    channels: ClassVar[frozenset[str]] = frozenset({BLOCKS})

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[int, dict[Topic, None]] = {}
        self.general: dict[Topic, None] = {}

    def add(self, topic: Topic) -> None:
        super().add(topic)
        keys = _listing_keys(topic.args)
        if keys is None:
            self.general[topic] = None
        for k in keys or ():
            self.by_id.setdefault(k, {})[topic] = None

    def remove(self, topic: Topic) -> None:
        super().remove(topic)
        self.general.pop(topic, None)
        for k in _listing_keys(topic.args) or ():
            topics = self.by_id.get(k)
            if topics is not None:
                topics.pop(topic, None)
                if not topics:
                    del self.by_id[k]

    async def compute(
        self, reader: Reader, channel: str, payload: dict[str, Any]
    ) -> Iterable[tuple[Topic, list[Any]]]:
        changed = _changed(payload, "listings")
        if changed is None:
            changed = await _ids_touched_at(
                reader, "listings", "listing_id", int(payload.get("height") or 0)
            )
        ids = sorted(set(_ints(changed)))
        if not self.general:  # only the subscribed ones matter
            ids = [i for i in ids if i in self.by_id]
        if not ids:
            return []
        updates = await self._updates(reader, ids, payload)
        out: dict[Topic, list[Any]] = {}
        for lid, update in updates.items():
            for topic in self.by_id.get(lid, ()):
                out.setdefault(topic, []).append(update)
        if self.general:
            for topic, matched in await self._matches(reader, updates, list(self.general)):
                for lid in matched:
                    out.setdefault(topic, []).append(updates[lid])
            # A listing gone in a rollback can no longer be filtered: every filter gets it.
            gone = [u for u in updates.values() if u.listing is None]
            for topic in self.general:
                for update in gone:
                    out.setdefault(topic, []).append(update)
        for items in out.values():
            items.sort(key=lambda u: u.listing_id)
        return out.items()

    async def _updates(
        self, reader: Reader, ids: list[int], payload: dict[str, Any]
    ) -> dict[int, ListingUpdate]:
        """One update per listing id, whatever the filters: its state and what changed."""
        entity = ENTITIES["Listing"]
        rows = await reader.all(
            "SELECT i.id AS _id, cur.*, prev.status AS _ps, prev.price AS _pp,"
            " prev.bid_count AS _pb, prev.vid IS NULL AS _new"
            " FROM unnest(CAST(:ids AS bigint[])) AS i(id)"
            " LEFT JOIN listings cur ON cur.listing_id = i.id AND cur.block_to IS NULL"
            " LEFT JOIN LATERAL (SELECT p.* FROM listings p WHERE p.listing_id = i.id"
            " AND p.block_to = cur.block_from ORDER BY p.block_from DESC LIMIT 1) prev ON TRUE",
            {"ids": ids},
        )
        rolled = bool(payload.get("rolled_back"))
        height = payload.get("height")
        out = {}
        for r in rows:
            if r["vid"] is None:
                kind, listing = "rolledBack", None
            else:
                listing = entity.from_row(r, None)
                kind = "rolledBack" if rolled else _listing_change(r)
            lid = int(r["_id"])
            out[lid] = ListingUpdate(
                kind=kind, listing_id=lid, block_height=height, listing=listing
            )
        return out

    async def _matches(
        self, reader: Reader, updates: dict[int, ListingUpdate], topics: list[Topic]
    ) -> list[tuple[Topic, list[int]]]:
        """Which of the existing changed listings each topic's filter selects: the filters are
        evaluated side by side, one column each, over the changed listings only."""
        entity = ENTITIES["Listing"]
        present = [lid for lid, u in updates.items() if u.listing is not None]
        if not present:
            return []
        out = [(t, present) for t in topics if t.args is None]
        filtered = [t for t in topics if t.args is not None]
        for start in range(0, len(filtered), FILTERS_PER_STATEMENT):
            chunk = filtered[start : start + FILTERS_PER_STATEMENT]
            params: dict[str, Any] = {"ids": present}
            compiler = SqlWhere(entity, None, params)
            columns = ", ".join(
                f"{compiler.compile(t.args, 'cur')} AS m{n}" for n, t in enumerate(chunk)
            )
            rows = await reader.all(
                f"SELECT cur.listing_id AS _id, {columns} FROM listings cur"
                " WHERE cur.listing_id = ANY(:ids) AND cur.block_to IS NULL"
                " ORDER BY cur.listing_id",
                params,
            )
            for n, topic in enumerate(chunk):
                matched = [int(r["_id"]) for r in rows if r[f"m{n}"]]
                if matched:
                    out.append((topic, matched))
        return out

    def fingerprint(self, item: Any) -> str:
        state = None if item.listing is None else strawberry.asdict(item.listing)
        return fingerprint([item.kind, item.listing_id, item.block_height, state])


class CertificatesKind(Kind):
    """`certificateEvents(tokenId)` topics, one per token."""

    channels: ClassVar[frozenset[str]] = frozenset({BLOCKS})

    def __init__(self) -> None:
        super().__init__()
        self.by_token: dict[int, Topic] = {}

    def add(self, topic: Topic) -> None:
        super().add(topic)
        self.by_token[int(topic.args)] = topic

    def remove(self, topic: Topic) -> None:
        super().remove(topic)
        if self.by_token.get(int(topic.args)) is topic:
            del self.by_token[int(topic.args)]

    async def compute(
        self, reader: Reader, channel: str, payload: dict[str, Any]
    ) -> Iterable[tuple[Topic, list[Any]]]:
        changed = _changed(payload, "certificates")
        if changed is None:
            tokens = sorted(self.by_token)
        else:
            tokens = sorted({i for i in _ints(changed) if i in self.by_token})
        if not tokens:
            return []
        height = payload.get("height")
        cert_entity, transfer_entity = ENTITIES["Certificate"], ENTITIES["Transfer"]
        certs = {
            int(r["token_id"]): r
            for r in await reader.all(
                "SELECT * FROM certificates WHERE token_id = ANY(:t) AND block_to IS NULL",
                {"t": tokens},
            )
        }
        transfers: dict[int, list[Any]] = {}
        for r in await reader.all(
            "SELECT * FROM transfers WHERE token_id = ANY(:t) AND block_height = :h"
            " ORDER BY token_id, event_index",
            {"t": tokens, "h": height},
        ):
            transfers.setdefault(int(r["token_id"]), []).append(r)
        rolled = bool(payload.get("rolled_back"))
        out = []
        for token in tokens:
            mine = transfers.get(token, [])
            if rolled:
                kind = "rolledBack"
            else:
                kind = ",".join(dict.fromkeys(t["kind"] for t in mine)) or "updated"
            row = certs.get(token)
            event = CertificateEvent(
                kind=kind,
                token_id=token,
                block_height=height,
                certificate=cert_entity.from_row(row, None) if row else None,
                transfers=[transfer_entity.from_row(t, None) for t in mine],
            )
            out.append((self.by_token[token], [event]))
        return out

    def fingerprint(self, item: Any) -> str:
        state = None if item.certificate is None else strawberry.asdict(item.certificate)
        return fingerprint([item.kind, state, [t.id_ for t in item.transfers]])


class RelayKind(Kind):
    """`relayStatus(txid)` topics, one per transaction."""

    channels: ClassVar[frozenset[str]] = frozenset({RELAY})

    async def compute(
        self, reader: Reader, channel: str, payload: dict[str, Any]
    ) -> Iterable[tuple[Topic, list[Any]]]:
        if payload.get("resync"):  # notifications were lost: every topic re-reads, at once
            topics = {t.args.lower(): t for t in self.topics.values()}
            rows = await reader.all(
                f"SELECT {RELAY_COLUMNS} FROM relay_txs WHERE txid = ANY(:t)",
                {"t": list(topics)},
            )
            return [(topics[r["txid"]], [RelayedTransaction(**r)]) for r in rows]
        txid = payload.get("txid")
        topic = self.topics.get(f"relay:{txid.lower()}") if isinstance(txid, str) else None
        if topic is None:
            return []
        status = await relayed_transaction(reader, topic.args)
        return [(topic, [status])] if status else []

    def fingerprint(self, item: Any) -> str:
        return fingerprint(strawberry.asdict(item))


async def _pushes(ctx: Context, queue: Any) -> AsyncGenerator[Any, None]:
    while True:
        item = await queue.get()
        if isinstance(item, BaseException):
            raise item
        ctx.fresh()
        yield item


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Every new canonical tip and every fork rollback. With `afterHash`, first"
        " every canonical block the client missed."
    )
    async def blocks(
        self,
        info: Ctx,
        after_hash: Annotated[
            str | None,
            strawberry.argument(
                description="Resume: the hash of the last block received (from this or another"
                " API process). First pushed: one event per canonical block above it, in order,"
                " the first naming in `rolledBack` those of the client's blocks a fork removed;"
                " then the live events. At most `max_page_size` blocks (else LIMIT_EXCEEDED)."
            ),
        ] = None,
    ) -> AsyncGenerator[BlockEvent, None]:
        ctx = info.context
        cap = ctx.settings.api.max_page_size
        initial = None
        if after_hash is not None:
            hash_ = after_hash

            async def initial(reader: Reader) -> list[Any]:
                return list(await blocks_since(reader, hash_, cap))

        async with ctx.hub.subscribe(BlocksKind, "blocks", None, initial) as queue:
            async for item in _pushes(ctx, queue):
                yield item

    @strawberry.subscription(
        description="Listing changes (created, price changed, bid, sold, cancelled, expired,"
        " rolled back by a fork) of listings matching `where`."
    )
    async def listing_updates(
        self,
        info: Ctx,
        where: ListingFilter | None = None,  # type: ignore[valid-type]
        after_height: Annotated[
            int | None,
            strawberry.argument(
                description="Resume: the height of the last block received. First pushed: one"
                " update per matching listing that changed above it (its state now, `kind`"
                " against its state at that height); then the live updates. At most"
                " `max_page_size` listings (else LIMIT_EXCEEDED)."
            ),
        ] = None,
    ) -> AsyncGenerator[ListingUpdate, None]:
        ctx = info.context
        key = "listings:" + json.dumps(strawberry.asdict(where) if where else None, default=str)
        if where is not None:
            # A bad filter is refused now, not on the first change.
            SqlWhere(ENTITIES["Listing"], None, {}).compile(where, "cur")
        initial = None
        if after_height is not None:
            after, cap = after_height, ctx.settings.api.max_page_size

            async def initial(reader: Reader) -> list[Any]:
                return list(await listings_since(reader, where, after, cap))

        async with ctx.hub.subscribe(ListingsKind, key, where, initial) as queue:
            async for item in _pushes(ctx, queue):
                yield item

    @strawberry.subscription(description="Changes to one certificate (custody, status, fork).")
    async def certificate_events(
        self,
        info: Ctx,
        token_id: int,
        after_height: Annotated[
            int | None,
            strawberry.argument(
                description="Resume: the height of the last block received. First pushed, if"
                " the certificate changed above it: one event with every custody change since"
                " and its state now; then the live events."
            ),
        ] = None,
    ) -> AsyncGenerator[CertificateEvent, None]:
        ctx = info.context
        initial = None
        if after_height is not None:
            after, cap = after_height, ctx.settings.api.max_page_size

            async def initial(reader: Reader) -> list[Any]:
                return list(await certificate_since(reader, token_id, after, cap))

        key = f"cert:{token_id}"
        async with ctx.hub.subscribe(CertificatesKind, key, token_id, initial) as queue:
            async for item in _pushes(ctx, queue):
                yield item

    @strawberry.subscription(
        description="Status changes of a relayed transaction; starts with its current status."
    )
    async def relay_status(self, info: Ctx, txid: str) -> AsyncGenerator[RelayedTransaction, None]:
        ctx = info.context

        async def current(reader: Reader) -> list[Any]:
            status = await relayed_transaction(reader, txid)
            return [status] if status else []

        # The first status is read by the hub in order with the notifications (and, with a
        # replica, once it has what the primary had at this moment): no change can fall
        # between it and the pushes, and none arrives older than it.
        key = f"relay:{txid.lower()}"  # the outbox keeps txids in lower case
        async with ctx.hub.subscribe(RelayKind, key, txid, current) as queue:
            async for item in _pushes(ctx, queue):
                yield item
