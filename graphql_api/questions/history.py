"""Custody questions (docs/domain.md): who held a certificate, or each part of a serial interval,
and how (query 6), and what an owner holds at a block (query 8)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import strawberry
from strawberry.types.nodes import SelectedField

from graphql_api.context import BlockInput, Context
from graphql_api.errors import BadUserInput, LimitExceeded
from graphql_api.query import (
    ENTITIES,
    Connection,
    SqlWhere,
    live,
    page_at,
    paginate,
    selections_at,
)
from graphql_api.questions.grouping import Breakdown, breakdowns, grouping_sets_sql
from graphql_api.scalars import BigInt
from graphql_api.types import Certificate, Ctx, Transfer

CertificateFilter = ENTITIES["Certificate"].filter_input

# -- holdings (query 8) -----------------------------------------------------------------------

HOLDING_DIMS = {
    "status": "status",
    "vintage": "vintage",
    "energySource": "energy_source",
    "technology": "technology",
    "marketBoundary": "market_boundary",
}


@strawberry.type(
    description="What an owner held at a block. One owner at a time: a listed certificate is"
    " its seller's (status listed) while the marketplace escrows it, never the marketplace's;"
    " so the holdings of all owners sum to the Wh in existence."
)
class Holdings:
    owner: str = strawberry.field(description="The owner principal.")
    at_height: int | None = strawberry.field(description="The block (null = current).")
    certificates: Connection[Certificate] = strawberry.field(
        description="The certificates, by token id."
    )
    # The totals are one grouped read over all the owner's certificates, several times the
    # page's cost for a large holder: read once, and only when a selection asks for them.
    _totals: strawberry.Private[Callable[[], Awaitable[tuple[int, list[Breakdown]]]]]

    @strawberry.field(description="Energy held, every status (split parents no longer exist), Wh.")
    async def total_wh(self) -> BigInt:
        return BigInt((await self._totals())[0])

    @strawberry.field(
        description="Energy by status, vintage, energy source, technology and market boundary."
    )
    async def breakdown(self) -> list[Breakdown]:
        return (await self._totals())[1]


def _asks(selections: Any, *path: str) -> bool:
    """Whether a selection set asks for the field at `path` (through fragments)."""
    name, rest = path[0], path[1:]
    for s in selections:
        if isinstance(s, SelectedField):
            if s.name == name and (not rest or _asks(s.selections, *rest)):
                return True
        elif _asks(getattr(s, "selections", ()), *path):  # a fragment
            return True
    return False


def holdings_condition(at: int | None, params: dict[str, Any]) -> str:
    """Certificates of `:owner` at `at`: those it holds that no active listing escrows, and
    those its active listings escrow. A certificate is escrowed exactly while its listing is
    active (both change in one transaction), so the marketplace, which holds the escrowed ones,
    owns none of them.

    The escrowed tokens are an init-plan array, so both arms of the OR stay index scans.
    """
    c_live = live("c", True, at, params)
    l_live = live("l", True, at, params)
    e_live = live("e", True, at, params)
    return (
        f"{c_live} AND c.status <> 'split' AND ((c.owner = :owner AND NOT EXISTS (SELECT 1"
        f" FROM listings e WHERE e.token_id = c.token_id AND {e_live} AND e.status = 'active'))"
        " OR c.token_id = ANY(ARRAY("
        f"SELECT l.token_id FROM listings l WHERE l.seller = :owner AND {l_live}"
        " AND l.status = 'active')))"
    )


def _lineage(at: int | None, params: dict[str, Any], anchor: str = "c.token_id = :tok") -> str:
    """`lineage(root, token_id, cap)`: each certificate matching `anchor` (its `root`) and its
    split ancestors; an ancestor's history counts up to the split that created its descendant
    (`cap`), which ends its life anyway."""
    c_live, p_live = live("c", True, at, params), live("p", True, at, params)
    return (
        "WITH RECURSIVE lineage(root, token_id, parent_token_id, split_height, cap) AS ("
        " SELECT c.token_id, c.token_id, c.parent_token_id, c.split_height, 2147483647"
        f" FROM certificates c WHERE {anchor} AND {c_live}"
        " UNION ALL SELECT l.root, p.token_id, p.parent_token_id, p.split_height,"
        " coalesce(l.split_height, 2147483647)"
        " FROM certificates p JOIN lineage l ON p.token_id = l.parent_token_id"
        f" WHERE {p_live})"
    )


# -- serial provenance (query 6) --------------------------------------------------------------

MAX_PIECES = 1000


@strawberry.type(description="The part of a serial interval that one certificate holds.")
class ProvenancePiece:
    serial_start: BigInt = strawberry.field(description="First serial of the part (inclusive).")
    serial_end: BigInt = strawberry.field(description="End serial of the part (exclusive).")
    wh: BigInt = strawberry.field(description="Energy of the part, Wh.")
    certificate: Certificate = strawberry.field(
        description="The certificate holding it (its report carries evidence and attestation)."
    )
    history: list[Transfer] = strawberry.field(
        description="Its custody changes, its split ancestors' included, oldest first."
    )


@strawberry.type(description="Query 6 for a serial interval: who held each part of it, and how.")
class SerialProvenance:
    serial_start: BigInt = strawberry.field(description="The interval asked for (inclusive).")
    serial_end: BigInt = strawberry.field(description="The interval's end (exclusive).")
    at_height: int | None = strawberry.field(description="The block (null = current).")
    covered_wh: BigInt = strawberry.field(
        description="Wh of the interval held by certificates (serials never issued are not)."
    )
    pieces: list[ProvenancePiece] = strawberry.field(
        description="The certificates that exist at the block and overlap the interval, by serial."
    )


async def serial_provenance(ctx: Context, start: int, end: int, at: int | None) -> SerialProvenance:
    if not 0 <= start < end:
        raise BadUserInput("serialStart must be >= 0 and below serialEnd")
    params: dict[str, Any] = {"s": start, "e": end}
    rows = await ctx.reader.all(
        f"SELECT c.* FROM certificates c WHERE {live('c', True, at, params)}"
        " AND c.status <> 'split' AND c.serial_start < :e AND c.serial_end > :s"
        f" ORDER BY c.serial_start LIMIT {MAX_PIECES + 1}",
        params,
    )
    if len(rows) > MAX_PIECES:
        raise LimitExceeded(
            f"the interval spans more than {MAX_PIECES} certificates; ask for a narrower one",
            max=MAX_PIECES,
        )
    hparams: dict[str, Any] = {"toks": [r["token_id"] for r in rows]}
    t_live = live("t", False, at, hparams)
    transfers = (
        await ctx.reader.all(
            _lineage(at, hparams, "c.token_id = ANY(:toks)")
            + " SELECT t.*, l.root AS _root FROM transfers t JOIN lineage l ON"
            f" t.token_id = l.token_id AND t.block_height <= l.cap WHERE {t_live}"
            " ORDER BY l.root, t.block_height, t.event_index, t.id",
            hparams,
        )
        if rows
        else []
    )
    te, ce = ENTITIES["Transfer"], ENTITIES["Certificate"]
    by_root: dict[int, list[Transfer]] = {}
    for t in transfers:
        by_root.setdefault(t["_root"], []).append(te.from_row(t, at))
    pieces = []
    for r in rows:
        lo, hi = max(start, int(r["serial_start"])), min(end, int(r["serial_end"]))
        pieces.append(
            ProvenancePiece(
                serial_start=lo,
                serial_end=hi,
                wh=hi - lo,
                certificate=ce.from_row(r, at),
                history=by_root.get(r["token_id"], []),
            )
        )
    return SerialProvenance(
        serial_start=start,
        serial_end=end,
        at_height=at,
        covered_wh=sum(p.wh for p in pieces),
        pieces=pieces,
    )


@strawberry.type
class HistoryQuery:
    @strawberry.field(
        description="Query 6: every custody change of a token, oldest first; a split child's"
        " history starts with its ancestors' whole history up to the split (mint, listings,"
        " escrow, sales, transfers)."
    )
    async def ownership_history(
        self,
        info: Ctx,
        token_id: int,
        first: int = 100,
        after: str | None = None,
        block: BlockInput | None = None,
    ) -> Connection[Transfer]:
        at, pin = await page_at(info.context, block, after)
        params: dict[str, Any] = {"tok": token_id}
        entity = ENTITIES["Transfer"]
        return await paginate(
            info.context,
            prefix=_lineage(at, params),
            from_sql="transfers t JOIN lineage l ON t.token_id = l.token_id"
            " AND t.block_height <= l.cap",
            alias="t",
            params=params,
            conditions=[live("t", False, at, params)],
            order=[("t.block_height", False), ("t.event_index", False), ("t.id", False)],
            signature=f"history:{token_id}",
            first=first,
            after=after,
            build=lambda r: entity.from_row(r, at),
            at=at,
            pin=pin,
        )

    @strawberry.field(
        description="Query 6 for a serial interval [serialStart, serialEnd): the certificates"
        " holding its parts at `block`, each with its provenance (at most 1,000 parts)."
    )
    async def serial_provenance(
        self, info: Ctx, serial_start: BigInt, serial_end: BigInt, block: BlockInput | None = None
    ) -> SerialProvenance:
        at = await info.context.at(block)
        return await serial_provenance(info.context, int(serial_start), int(serial_end), at)

    @strawberry.field(description="An owner's certificates at a block (query 8), with totals.")
    async def holdings(
        self,
        info: Ctx,
        owner: str,
        block: BlockInput | None = None,
        where: CertificateFilter | None = None,  # type: ignore[valid-type]
        first: int = 100,
        after: str | None = None,
    ) -> Holdings:
        ctx = info.context
        # Totals and page at the cursor's block: a later page's totals match its rows.
        at, pin = await page_at(ctx, block, after)
        params: dict[str, Any] = {"owner": owner}
        cert = ENTITIES["Certificate"]
        cond = holdings_condition(at, params)
        if where is not None:
            cond += " AND " + SqlWhere(cert, at, params).compile(where, "c")
        fac_live = live("f", True, at, params)
        totals_sql = grouping_sets_sql(
            HOLDING_DIMS,
            "SELECT c.status, c.vintage, f.energy_source, f.technology, f.market_boundary,"
            " c.wh AS wh_ FROM certificates c LEFT JOIN facilities f"
            f" ON f.facility_id = c.facility_id AND {fac_live} WHERE {cond}",
        )
        totals_params = dict(params)
        read: asyncio.Task[tuple[int, list[Breakdown]]] | None = None

        async def grouped() -> tuple[int, list[Breakdown]]:
            rows = await ctx.reader.all(totals_sql, totals_params)
            total, breakdown = breakdowns(rows, HOLDING_DIMS)
            return int(total), breakdown

        def totals() -> Awaitable[tuple[int, list[Breakdown]]]:
            nonlocal read
            if read is None:  # totalWh and breakdown together share one read
                read = asyncio.ensure_future(grouped())
            return read

        selected = info.selected_fields
        columns = cert.projection(
            [
                *selections_at(selected, "holdings", "certificates", "nodes"),
                *selections_at(selected, "holdings", "certificates", "edges", "node"),
            ]
        )
        page = await paginate(
            ctx,
            from_sql="certificates c",
            alias="c",
            params=dict(params),
            conditions=[cond],
            order=[("c.token_id", False)],
            signature=f"holdings:{owner}",
            first=first,
            after=after,
            build=lambda r: cert.from_row(r, at, columns),
            at=at,
            pin=pin,
            select=None if columns is None else ", ".join(f"c.{c}" for c in columns),
            with_count=_asks(selected, "holdings", "certificates", "totalCount"),
        )
        return Holdings(owner=owner, at_height=at, certificates=page, _totals=totals)
