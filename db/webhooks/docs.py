"""What a webhook event carries: one JSON document per change, built in SQL from the tables, in
the shapes of the API's subscriptions and types (field names in camelCase, as in GraphQL).

- `block`: one per canonical block; `data` = `{block}`.
- `listing`: one per listing version (a listing changed in a block); `data` =
  `{kind, listingId, blockHeight, listing}` as `listingUpdates` pushes it, with
  `listing.certificate` and its `facility` as of that block.
- `certificate`: one per certificate version; `data` = `{kind, tokenId, blockHeight,
  certificate, transfers}` as `certificateEvents` pushes it, with `certificate.facility`.
- `retirement`: one per retirement; `data` = `{retirement}` with `retirement.facility`.

Documents are stored with amounts as JSON numbers (exact in `jsonb`), so that filters compare
them numerically; `render` turns the fields the API serialises as `BigInt`/decimals into
decimal strings when a delivery is built, so a JavaScript receiver never loses precision.
Field lists come from the models, so a new column appears in the documents by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Boolean, Date, DateTime, Integer, Numeric
from sqlalchemy.dialects.postgresql import JSONB

from db.models import Certificate, Facility, Listing, Retirement, Transfer

# BigInteger columns the API serialises as decimal strings (BigInt); other BigIntegers are ids.
_BIG = frozenset({"wh", "serial_start", "serial_end", "capacity_w"})
_HIDDEN = frozenset({"vid", "block_from", "block_to", "id"})
_TIME_FORMAT = '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\''


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # JSON (camelCase)
    column: str
    type: str  # int | big | decimal | text | bool | time | date | json
    expr: str | None = None  # SQL computing it, `{a}` standing for the table alias

    def sql(self, alias: str) -> str:
        ref = self.expr.format(a=alias) if self.expr else f"{alias}.{self.column}"
        if self.type == "time":
            return f"to_char({ref} AT TIME ZONE 'UTC', {_TIME_FORMAT})"
        return ref


@dataclass(frozen=True, slots=True)
class Shape:
    """An object in a document: its scalar fields and the objects nested in it."""

    fields: tuple[Field, ...]
    nested: dict[str, Shape] = field(default_factory=dict)  # JSON name -> object
    lists: dict[str, Shape] = field(default_factory=dict)  # JSON name -> array of objects

    def by_name(self) -> dict[str, Field]:
        return {f.name: f for f in self.fields}

    def sql(self, alias: str) -> str:
        """`jsonb_build_object` of the scalar fields (the caller adds nested ones)."""
        pairs = [f"'{f.name}', {f.sql(alias)}" for f in self.fields]
        # jsonb_build_object takes at most 100 arguments.
        chunks = [pairs[i : i + 40] for i in range(0, len(pairs), 40)]
        return " || ".join(f"jsonb_build_object({', '.join(c)})" for c in chunks)


def _type(column: Any) -> str:
    t = column.type
    if isinstance(t, Numeric):
        return "big" if t.scale == 0 else "decimal"
    if isinstance(t, BigInteger):
        return "big" if column.name in _BIG else "int"
    if isinstance(t, Integer):
        return "int"
    if isinstance(t, Boolean):
        return "bool"
    if isinstance(t, DateTime):
        return "time"
    if isinstance(t, Date):
        return "date"
    if isinstance(t, JSONB):
        return "json"
    return "text"


def _shape(model: Any, **kw: Any) -> Shape:
    cols = [c for c in model.__table__.columns if c.name not in _HIDDEN]
    return Shape(tuple(Field(camel(c.name), c.name, _type(c)) for c in cols), **kw)


FACILITY = _shape(Facility)
CERTIFICATE = _shape(Certificate, nested={"facility": FACILITY})
LISTING = _shape(Listing, nested={"certificate": CERTIFICATE})
TRANSFER = _shape(Transfer)
RETIREMENT = _shape(Retirement, nested={"facility": FACILITY})
BLOCK = Shape(
    (
        Field("height", "block_height", "int"),
        Field("hash", "index_block_hash", "text"),
        Field("blockHash", "block_hash", "text"),
        Field("parentHash", "parent_index_block_hash", "text"),
        Field("burnBlockHeight", "burn_block_height", "int"),
        Field("burnBlockHash", "burn_block_hash", "text"),
        Field(
            "time", "time", "time", "to_timestamp(coalesce({a}.block_time, {a}.burn_block_time))"
        ),
        Field("txCount", "tx_count", "int"),
        Field("eventCount", "event_count", "int"),
    )
)

# Per event type: the key of its main object in `data`, that object's shape, and (for
# `certificate`) arrays beside it that filters may also look into.
ROOTS: dict[str, tuple[str, Shape]] = {
    "block": ("block", BLOCK),
    "listing": ("listing", LISTING),
    "certificate": ("certificate", CERTIFICATE),
    "retirement": ("retirement", RETIREMENT),
}
SIBLING_LISTS: dict[str, dict[str, Shape]] = {"certificate": {"transfers": TRANSFER}}
# Listing update kinds (`ListingUpdate.kind`), which a listing filter may select by `changes`.
LISTING_CHANGES = ("created", "priceChanged", "bid", "sold", "cancelled", "expired", "updated")


def _at(table: str, alias: str, key: str, value: str, height: str) -> str:
    """A lateral join to the version of an entity valid at `height`."""
    return (
        f"LEFT JOIN LATERAL (SELECT * FROM {table} {alias}_ WHERE {alias}_.{key} = {value}"
        f" AND {alias}_.block_from <= {height} AND ({alias}_.block_to IS NULL"
        f" OR {alias}_.block_to > {height}) ORDER BY {alias}_.block_from DESC LIMIT 1)"
        f" {alias} ON TRUE"
    )


def _or_null(alias: str, obj: str) -> str:
    return f"CASE WHEN {alias}.vid IS NULL THEN NULL ELSE {obj} END"


def _facility(alias: str) -> str:
    return _or_null(alias, FACILITY.sql(alias))


_CERT_WITH_FACILITY = f"{CERTIFICATE.sql('c')} || jsonb_build_object('facility', {_facility('f')})"

# Each SELECT yields (kind, rank, height, hash, key, doc) for the heights in (lo, hi]; rank
# and key order the events of one block: the block, then certificates, listings, retirements.
DOC_SQL: dict[str, str] = {
    "block": f"""
        SELECT 'block'::text AS kind, 0 AS rank, b.block_height AS height,
               b.index_block_hash AS hash, 0::bigint AS key,
               jsonb_build_object('block', {BLOCK.sql("b")}) AS doc
        FROM blocks b
        WHERE b.canonical AND b.block_height > %(lo)s AND b.block_height <= %(hi)s""",
    "certificate": f"""
        SELECT 'certificate'::text AS kind, 1 AS rank, c.block_from AS height,
               bk.index_block_hash AS hash, c.token_id AS key,
               jsonb_build_object(
                   'kind', coalesce((SELECT string_agg(u.k, ',' ORDER BY u.i) FROM (
                        SELECT k, min(i) AS i FROM unnest(t.kinds) WITH ORDINALITY AS x(k, i)
                        GROUP BY k) u), 'updated'),
                   'tokenId', c.token_id, 'blockHeight', c.block_from,
                   'certificate', {_CERT_WITH_FACILITY},
                   'transfers', coalesce(t.list, '[]'::jsonb)) AS doc
        FROM certificates c
        JOIN blocks bk ON bk.canonical AND bk.block_height = c.block_from
        {_at("facilities", "f", "facility_id", "c.facility_id", "c.block_from")}
        LEFT JOIN LATERAL (
            SELECT jsonb_agg({TRANSFER.sql("tr")} ORDER BY tr.tx_index, tr.event_index) AS list,
                   array_agg(tr.kind ORDER BY tr.tx_index, tr.event_index) AS kinds
            FROM transfers tr WHERE tr.token_id = c.token_id AND tr.block_height = c.block_from
        ) t ON TRUE
        WHERE c.block_from > %(lo)s AND c.block_from <= %(hi)s""",
    "listing": f"""
        SELECT 'listing'::text AS kind, 2 AS rank, l.block_from AS height,
               bk.index_block_hash AS hash, l.listing_id AS key,
               jsonb_build_object(
                   'kind', CASE
                       WHEN p.vid IS NULL THEN 'created'
                       WHEN p.status IS DISTINCT FROM l.status THEN CASE l.status
                           WHEN 'sold' THEN 'sold' WHEN 'cancelled' THEN 'cancelled'
                           WHEN 'expired' THEN 'expired' WHEN 'settled-unsold' THEN 'expired'
                           ELSE 'updated' END
                       WHEN p.bid_count IS DISTINCT FROM l.bid_count THEN 'bid'
                       WHEN p.price IS DISTINCT FROM l.price THEN 'priceChanged'
                       ELSE 'updated' END,
                   'listingId', l.listing_id, 'blockHeight', l.block_from,
                   'listing', {LISTING.sql("l")} || jsonb_build_object(
                       'certificate', {_or_null("c", _CERT_WITH_FACILITY)})) AS doc
        FROM listings l
        JOIN blocks bk ON bk.canonical AND bk.block_height = l.block_from
        LEFT JOIN LATERAL (SELECT p_.vid, p_.status, p_.price, p_.bid_count FROM listings p_
            WHERE p_.listing_id = l.listing_id AND p_.block_to = l.block_from
            ORDER BY p_.block_from DESC LIMIT 1) p ON TRUE
        {_at("certificates", "c", "token_id", "l.token_id", "l.block_from")}
        {_at("facilities", "f", "facility_id", "c.facility_id", "l.block_from")}
        WHERE l.block_from > %(lo)s AND l.block_from <= %(hi)s""",
    "retirement": f"""
        SELECT 'retirement'::text AS kind, 3 AS rank, r.block_height AS height,
               r.index_block_hash AS hash, r.id AS key,
               jsonb_build_object('retirement',
                   {RETIREMENT.sql("r")} || jsonb_build_object('facility', {_facility("f")})) AS doc
        FROM retirements r
        {_at("facilities", "f", "facility_id", "r.facility_id", "r.block_height")}
        WHERE r.block_height > %(lo)s AND r.block_height <= %(hi)s""",
}


def _render(value: Any, shape: Shape) -> Any:
    if not isinstance(value, dict):
        return value
    fields = shape.by_name()
    out: dict[str, Any] = {}
    for key, item in value.items():
        spec = fields.get(key)
        if spec is not None and spec.type in ("big", "decimal") and item is not None:
            item = str(item)
        elif key in shape.nested:
            item = _render(item, shape.nested[key])
        elif key in shape.lists and isinstance(item, list):
            item = [_render(x, shape.lists[key]) for x in item]
        out[key] = item
    return out


def render(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """The delivered form of a stored document: amounts and decimals as decimal strings.

    Pass documents parsed with `parse_float=Decimal` so decimals stay exact."""
    root = ROOTS.get(event_type)
    if root is None:  # rollback events carry no amounts
        return data
    key, shape = root
    out = dict(data)
    if key in out:
        out[key] = _render(out[key], shape)
    for name, list_shape in SIBLING_LISTS.get(event_type, {}).items():
        if isinstance(out.get(name), list):
            out[name] = [_render(x, list_shape) for x in out[name]]
    return out
