"""Webhook filters are the subscriptions' filters: a `where` selects, over the documents the
feed builds, exactly the listings the API's own `where` compiler (graphql_api.query.SqlWhere)
selects in SQL, on the same rows of a real PostgreSQL. Bad filters are refused with the key."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

import graphql_api.types  # noqa: F401  (registers the API's entities and their filters)
from db.session import create_engine, to_libpq_url
from db.webhooks.docs import DOC_SQL, render
from db.webhooks.filters import FilterError, compile_filter
from graphql_api.errors import BadUserInput
from graphql_api.query import ENTITIES, SqlWhere

SELLERS = ["sp1alice", "sp2bob", "SP3Carol", None]
COUNTRIES = ["DE", "FR", "NO", "de"]
BIG = 10**30  # beyond 64 bits: compared exactly


def _rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(1, 25):
        rows.append(
            {
                "listing_id": i,
                "token_id": 100 + i,
                "seller": SELLERS[i % 4] or "sp0none",
                "buyer": SELLERS[(i * 7) % 4],
                "price": None if i % 6 == 0 else (BIG + i if i % 5 == 0 else i * 1000),
                "bid_count": i % 3,
                "status": ["active", "sold", "cancelled"][i % 3],
                "currency": "STX" if i % 2 else "SP000.sbtc-token",
                "country": COUNTRIES[i % 4],
                "name": f"Farm_{i}%" if i % 2 else f"solar park {i}",
                "wh": i * 10**6,
            }
        )
    return rows


def _load(db_url: str) -> None:
    with psycopg.connect(to_libpq_url(db_url)) as conn:
        conn.execute(
            "INSERT INTO blocks (index_block_hash, block_hash, block_height,"
            " parent_index_block_hash, canonical) VALUES ('0x01', '0x01', 1, '0x00', true)"
        )
        for r in _rows():
            conn.execute(
                "INSERT INTO facilities (block_from, facility_id, owner, name, country,"
                " energy_source, status, registered_height) VALUES"
                " (1, %(listing_id)s, 'sp1', %(name)s, %(country)s, 'ES100', 'active', 1)",
                r,
            )
            conn.execute(
                "INSERT INTO certificates (block_from, token_id, facility_id, owner, status,"
                " period_start, period_end, vintage, wh, serial_start, serial_end,"
                " issued_height) VALUES (1, %(token_id)s, %(listing_id)s, 'sp9', 'listed',"
                " '2025-01-01Z', '2025-01-02Z', 2025, %(wh)s, 0, %(wh)s, 1)",
                r,
            )
            conn.execute(
                "INSERT INTO listings (block_from, listing_id, kind, token_id, seller, currency,"
                " price, bid_count, start_height, status, buyer) VALUES (1, %(listing_id)s,"
                " 'fixed', %(token_id)s, %(seller)s, %(currency)s, %(price)s, %(bid_count)s, 1,"
                " %(status)s, %(buyer)s)",
                r,
            )


# --- a strategy of `where` filters over Listing (with nested certificate and facility) --------

TEXT = st.sampled_from(["sp1alice", "sp2bob", "SP3Carol", "sp", "a", "Farm_1", "%", "_", "park"])
LEAVES: dict[str, Any] = {
    "listingId": st.integers(0, 26),
    "bidCount": st.integers(0, 3),
    "price": st.one_of(st.integers(0, 30_000), st.just(BIG + 5), st.just(str(BIG + 10))),
    "seller": TEXT,
    "buyer": TEXT,
    "status": st.sampled_from(["active", "sold", "cancelled", "expired"]),
    "currency": st.sampled_from(["STX", "SP000.sbtc-token"]),
}
TEXT_FIELDS = {"seller", "buyer", "status", "currency"}


@st.composite
def leaf(draw: st.DrawFn, fields: dict[str, Any], text_fields: set[str]) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(fields)))
    ops = ["", "_not", "_gt", "_gte", "_lt", "_lte", "_in", "_not_in"]
    if name in text_fields:
        ops += ["_contains", "_not_contains", "_contains_nocase", "_starts_with"]
    op = draw(st.sampled_from(ops))
    if op in ("_in", "_not_in"):
        value: Any = draw(st.lists(fields[name], max_size=3))
    elif op in ("_contains", "_not_contains", "_contains_nocase", "_starts_with"):
        value = draw(TEXT)
    else:
        value = draw(fields[name])
    return {name + op: value}


FACILITY_LEAVES = {
    "country": st.sampled_from(COUNTRIES),
    "name": st.sampled_from(["Farm_1%", "solar", "park 2", "_"]),
}
CERT_LEAVES = {"wh": st.integers(0, 30 * 10**6), "tokenId": st.integers(100, 125)}


def wheres() -> st.SearchStrategy[dict[str, Any]]:
    base = st.one_of(
        leaf(LEAVES, TEXT_FIELDS),
        st.builds(
            lambda c, f: {"certificate_": {**c, "facility_": f}},
            leaf(CERT_LEAVES, set()),
            leaf(FACILITY_LEAVES, {"country", "name"}),
        ),
    )
    return st.recursive(
        base,
        lambda inner: st.one_of(
            st.builds(lambda a: {"and": a}, st.lists(inner, max_size=3)),
            st.builds(lambda a: {"or": a}, st.lists(inner, max_size=3)),
            st.builds(lambda a, b: {**a, **b}, inner, inner),
        ),
        max_leaves=6,
    )


def _graphql_filter(where: dict[str, Any], entity: str) -> Any:
    """The API's ListingFilter input object for a `where` given as JSON."""

    nested = {"Listing": {"certificate": "Certificate"}, "Certificate": {"facility": "Facility"}}
    kwargs: dict[str, Any] = {}
    for key, value in where.items():
        if key in ("and", "or"):
            kwargs[key + "_"] = [_graphql_filter(w, entity) for w in value]
        elif key.endswith("_") and key[:-1] in nested.get(entity, {}):
            kwargs[key] = _graphql_filter(value, nested[entity][key[:-1]])
        else:
            name, _, _ = key.partition("_")
            op = key[len(name) :]
            snake = "".join("_" + c.lower() if c.isupper() else c for c in name)
            if isinstance(value, str) and name in ("price", "wh") and value.isdigit():
                value = int(value)
            elif isinstance(value, list) and name in ("price", "wh"):
                value = [int(v) for v in value]
            kwargs[snake + op] = value
    return ENTITIES[entity].filter_input(**kwargs)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(where=wheres())
def test_listing_filters_select_what_the_api_selects(loaded: str, where: dict[str, Any]) -> None:
    params: dict[str, Any] = {}
    try:
        predicate = SqlWhere(ENTITIES["Listing"], None, params).compile(
            _graphql_filter(where, "Listing"), "cur"
        )
    except BadUserInput:  # too deep for the API: too deep for a webhook too
        with pytest.raises(FilterError):
            compile_filter({"kind": "listing", "where": where})
        return
    compiled = compile_filter({"kind": "listing", "where": where})
    with psycopg.connect(to_libpq_url(loaded)) as conn:
        docs = conn.execute(
            f"SELECT d.key, d.doc FROM ({DOC_SQL['listing']}) d", {"lo": 0, "hi": 1}
        ).fetchall()
        assert len(docs) == len(_rows())
        if compiled.path is None:
            ours = {k for k, _ in docs}
        else:
            ours = {
                k
                for k, doc in docs
                if conn.execute(
                    "SELECT jsonb_path_exists(%s::jsonb, %s::jsonpath, %s::jsonb, true)",
                    (json.dumps(doc), compiled.path, json.dumps(compiled.vars)),
                ).fetchone()[0]  # type: ignore[index]
            }
    engine = create_engine(loaded, pool_size=1)

    async def api() -> set[int]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(f"SELECT listing_id FROM listings cur WHERE block_to IS NULL AND {predicate}"),
                params,
            )
            return {r[0] for r in rows}

    try:
        theirs = asyncio.run(api())
    finally:
        asyncio.run(engine.dispose())
    assert ours == theirs, (where, compiled.path)


@pytest.fixture
def loaded(db_url: str) -> str:
    _load(db_url)
    return db_url


def test_certificate_filters_look_into_the_block_transfers(server_url: str) -> None:
    doc = {
        "kind": "sale",
        "certificate": {"tokenId": 5, "owner": "SPBUYER", "facility": {"country": "DE"}},
        "transfers": [{"kind": "sale", "sender": "SPSELLER", "recipient": "SPBUYER"}],
    }
    cases = [
        ({"owner": "SPBUYER"}, True),
        ({"owner": "SPSELLER"}, False),
        ({"or": [{"owner": "SPSELLER"}, {"transfers_": {"sender": "SPSELLER"}}]}, True),
        ({"transfers_": {"kind": "retire"}}, False),
        ({"facility_": {"country_in": ["FR", "DE"]}, "tokenId_gte": 5}, True),
    ]
    with psycopg.connect(to_libpq_url(server_url)) as conn:
        for where, expected in cases:
            c = compile_filter({"kind": "certificate", "where": where})
            got = conn.execute(
                "SELECT jsonb_path_exists(%s::jsonb, %s::jsonpath, %s::jsonb, true)",
                (json.dumps(doc), c.path, json.dumps(c.vars)),
            ).fetchone()
            assert got == (expected,), where


def test_listing_changes_select_update_kinds(server_url: str) -> None:
    c = compile_filter({"kind": "listing", "changes": ["created", "sold"], "where": {}})
    assert c.condition == {"kind": "listing", "where": {}, "changes": ["created", "sold"]}
    with psycopg.connect(to_libpq_url(server_url)) as conn:
        for kind, expected in (("created", True), ("bid", False), ("sold", True)):
            doc = {"kind": kind, "listing": {"listingId": 1}}
            got = conn.execute(
                "SELECT jsonb_path_exists(%s::jsonb, %s::jsonpath, %s::jsonb, true)",
                (json.dumps(doc), c.path, json.dumps(c.vars)),
            ).fetchone()
            assert got == (expected,), kind


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "trades"}, "filter.kind: one of block, listing"),
        ({"kind": "listing", "where": {"colour": "red"}}, "filter.where.colour: unknown field"),
        ({"kind": "listing", "where": {"price_lte": "cheap"}}, "filter.where.price_lte: expected"),
        ({"kind": "listing", "where": {"bidCount_contains": "1"}}, "applies to text fields only"),
        ({"kind": "listing", "where": {"seller_in": "SP1"}}, "filter.where.seller_in: expected a"),
        ({"kind": "listing", "where": {"or": [{"x": 1}]}}, "filter.where.or[0].x: unknown"),
        ({"kind": "listing", "where": {"certificate_": {"facility_": {"planet": "x"}}}}, "planet"),
        ({"kind": "block", "changes": ["created"]}, "only listing filters select changes"),
        ({"kind": "listing", "changes": ["bought"]}, "unknown 'bought'"),
        ({"kind": "listing", "extra": 1}, "unknown key(s) extra"),
        ({"kind": "retirement", "where": {"claimStart_gt": "2025-01-01"}}, "needs a time zone"),
        ({"kind": "listing", "where": {"listingId": True}}, "expected an integer"),
        (
            {"kind": "listing", "where": {"and": [{"and": [{"and": [{"and": [{"and": [{}]}]}]}]}]}},
            "nesting deeper than 4",
        ),
    ],
)
def test_bad_filters_name_the_offending_key(spec: Any, message: str) -> None:
    with pytest.raises(FilterError) as err:
        compile_filter(spec)
    assert message in str(err.value)


def test_render_serialises_amounts_as_strings() -> None:
    data = json.loads(
        json.dumps(
            {
                "kind": "created",
                "listing": {
                    "listingId": 3,
                    "price": BIG,
                    "certificate": {"wh": 5, "facility": {"latitude": 59.9, "capacityW": 7}},
                },
            }
        ),
        parse_float=Decimal,
    )
    out = render("listing", data)
    listing = out["listing"]
    assert listing["listingId"] == 3 and listing["price"] == str(BIG)
    assert listing["certificate"]["wh"] == "5"
    assert listing["certificate"]["facility"] == {"latitude": "59.9", "capacityW": "7"}
    assert render("certificate", {"transfers": [{"price": 9, "tokenId": 1}]}) == {
        "transfers": [{"price": "9", "tokenId": 1}]
    }
