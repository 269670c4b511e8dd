"""Search (query 13 of docs/domain.md): ranked full text and typo-tolerant trigram similarity
over facilities, then their certificates and open listings (or a token id). Attribute ranges are
every list's `where`, not this."""

from __future__ import annotations

from typing import Any

import strawberry

from graphql_api.context import Context
from graphql_api.errors import BadUserInput
from graphql_api.query import ENTITIES, check_first
from graphql_api.types import Certificate, Ctx, Facility, Listing

# The search document of a facility; the same expression is indexed by migration 0004.
FACILITY_DOC = (
    "recchain_facility_doc(f.name, f.country, f.subdivision, f.market_boundary, f.grid_zone,"
    " f.energy_source, f.technology)"
)


@strawberry.type(description="A search hit: exactly one of facility, certificate, listing is set.")
class SearchHit:
    score: float = strawberry.field(description="Relevance (full-text rank or similarity).")
    kind: str = strawberry.field(description="facility | certificate | listing.")
    facility: Facility | None = strawberry.field(description="The matching facility.")
    certificate: Certificate | None = strawberry.field(description="A matching certificate.")
    listing: Listing | None = strawberry.field(description="A matching open listing.")


async def search(ctx: Context, text: str, first: int) -> list[SearchHit]:
    check_first(ctx, first)
    text = text.strip()
    if not text or len(text) > 200:
        raise BadUserInput("search text must be 1..200 characters")
    params: dict[str, Any] = {"q": text, "n": first}
    facilities = await ctx.reader.all(
        f"SELECT f.*, greatest(ts_rank(to_tsvector('simple', {FACILITY_DOC}), query),"
        f" word_similarity(:q, {FACILITY_DOC})) AS score"
        " FROM facilities f, plainto_tsquery('simple', :q) query"
        f" WHERE f.block_to IS NULL AND (to_tsvector('simple', {FACILITY_DOC}) @@ query"
        # Typo tolerance: trigram word similarity at the read connection's threshold (db.py),
        # through `<%` so that the trigram index of migration 0004 serves it.
        f" OR :q <% {FACILITY_DOC})"
        " ORDER BY score DESC, f.facility_id LIMIT :n",
        params,
    )
    fe, ce, le = ENTITIES["Facility"], ENTITIES["Certificate"], ENTITIES["Listing"]
    hits = [
        SearchHit(
            score=float(r["score"]),
            kind="facility",
            facility=fe.from_row(r, None),
            certificate=None,
            listing=None,
        )
        for r in facilities
    ]
    scores = {r["facility_id"]: float(r["score"]) for r in facilities}
    token = int(text) if text.isdigit() and len(text) < 19 else None
    if scores or token is not None:
        p2: dict[str, Any] = {"ids": list(scores), "tok": token, "n": first}
        certs = await ctx.reader.all(
            "SELECT c.* FROM certificates c WHERE c.block_to IS NULL"
            " AND c.status IN ('active', 'listed')"
            " AND (c.facility_id = ANY(:ids) OR c.token_id = CAST(:tok AS bigint))"
            " ORDER BY c.token_id LIMIT :n",
            p2,
        )
        for r in certs:
            score = 1.0 if r["token_id"] == token else scores.get(r["facility_id"], 0) * 0.9
            hits.append(
                SearchHit(
                    score=score,
                    kind="certificate",
                    facility=None,
                    certificate=ce.from_row(r, None),
                    listing=None,
                )
            )
        lst = await ctx.reader.all(
            "SELECT l.*, c.facility_id AS _fid FROM listings l JOIN certificates c ON"
            " c.token_id = l.token_id AND c.block_to IS NULL WHERE l.block_to IS NULL"
            " AND l.status = 'active' AND (c.facility_id = ANY(:ids)"
            " OR l.token_id = CAST(:tok AS bigint)) ORDER BY l.listing_id LIMIT :n",
            p2,
        )
        for r in lst:
            score = 1.0 if r["token_id"] == token else scores.get(r["_fid"], 0) * 0.95
            hits.append(
                SearchHit(
                    score=score,
                    kind="listing",
                    facility=None,
                    certificate=None,
                    listing=le.from_row(r, None),
                )
            )
    hits.sort(key=lambda h: -h.score)
    return hits[:first]


@strawberry.type
class SearchQuery:
    @strawberry.field(
        description="Query 13: ranked full-text and typo-tolerant search over facilities,"
        " certificates and open listings."
    )
    async def search(self, info: Ctx, text: str, first: int = 20) -> list[SearchHit]:
        return await search(info.context, text, first)
