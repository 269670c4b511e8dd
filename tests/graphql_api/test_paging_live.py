"""Paging while the chain moves: every connection, in every order, pages one snapshot, the block
its first page read, while the real indexer applies blocks and a fork rolls back blocks above
it; a fork that orphans that block itself is refused with a typed error."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import random
from dataclasses import dataclass
from typing import Any

import pytest
from strawberry.utils.str_converters import to_camel_case

import graphql_api.schema  # noqa: F401  (builds the entities and their order inputs)
from graphql_api.db import Reader
from graphql_api.query import ENTITIES
from ops.bench.chaingen import account
from tests.graphql_api.conftest import Api
from tests.graphql_api.livechain import LiveChain
from tests.graphql_api.wsclient import Subscriber
from tests.indexer.helpers import query as sql

PAGE = 3
ROOT_LISTS = {
    "verifiers": "Verifier",
    "facilities": "Facility",
    "generationReports": "GenerationReport",
    "certificates": "Certificate",
    "listings": "Listing",
    "auctions": "Listing",
    "bids": "Bid",
    "sales": "Sale",
    "retirements": "Retirement",
    "transfers": "Transfer",
}
CONNECTION = "totalCount edges { node { id } } pageInfo { hasNextPage endCursor }"


@dataclass
class Paged:
    """One connection to page: `outer` holds the aliased field (`{}`), `inner` the connection
    selection within it; `path` leads from the data to the aliases' parent."""

    label: str
    field: str
    args: str = ""
    outer: str = "{}"
    inner: str = "{}"
    path: tuple[str, ...] = ()

    def document(self, with_reference: bool) -> str:
        page = (
            f"page: {self.field}(first: {PAGE}, after: $after{self.args})"
            f" {{ {self.inner.format(CONNECTION)} }}"
        )
        if with_reference:
            page += (
                f" ref: {self.field}(first: 1000{self.args})"
                f" {{ {self.inner.format('totalCount nodes { id }')} }}"
            )
        return "query($after: String) { " + self.outer.format(page) + " }"

    def connection(self, data: dict[str, Any], alias: str) -> dict[str, Any]:
        for key in self.path:
            data = data[key]
        found: dict[str, Any] = data[alias]
        return found["certificates"] if self.inner != "{}" else found


def every_connection(token: int, owner: str) -> list[Paged]:
    out = []
    for field, entity_name in ROOT_LISTS.items():
        for i, col in enumerate(ENTITIES[entity_name].orderable):
            direction = "desc" if i % 2 else "asc"
            order = f", orderBy: [{{field: {to_camel_case(col)}, direction: {direction}}}]"
            out.append(Paged(f"{field} by {col} {direction}", field, order))
    facility = "facility(id: 1) {{ {} }}"
    certificate = f"certificate(tokenId: {token}) {{{{ {{}} }}}}"
    return [
        *out,
        Paged("Facility.certificates", "certificates", outer=facility, path=("facility",)),
        Paged("Facility.reports", "reports", outer=facility, path=("facility",)),
        Paged("Certificate.transfers", "transfers", outer=certificate, path=("certificate",)),
        Paged("Certificate.listings", "listings", outer=certificate, path=("certificate",)),
        Paged("ownershipHistory", "ownershipHistory", f", tokenId: {token}"),
        Paged("holdings", "holdings", f', owner: "{owner}"', inner="certificates {{ {} }}"),
    ]


def random_block(chain: LiveChain, txs: int) -> list[list[dict[str, Any]]]:
    return [chain.market.random_tx(chain.rng, chain.height + 1) for _ in range(txs)]


async def test_every_connection_pages_its_first_pages_block_while_the_chain_moves_and_forks(
    api: Api, db_url: str
) -> None:
    chain = LiveChain(db_url, seed=11)
    await chain.add(chain.setup_and_mint(tokens=30))
    token, owner = 1, account(1)
    await chain.add([chain.transfer(token) for _ in range(6)] + random_block(chain, 8))
    for _ in range(3):
        await chain.add(random_block(chain, 12))
    pinned = chain.blocks[-1]
    # The market as of the pinned block: a competing branch from it makes other changes.
    side_market, side_rng = copy.deepcopy(chain.market), random.Random(99)

    pages = every_connection(token, owner)
    reference: dict[str, list[str]] = {}
    seen: dict[str, list[str]] = {}
    cursor: dict[str, str | None] = {}
    for p in pages:
        data = await api.data(p.document(with_reference=True), {"after": None})
        ref = p.connection(data, "ref")
        assert ref["totalCount"] == len(ref["nodes"]), p.label
        reference[p.label] = [n["id"] for n in ref["nodes"]]
        first = p.connection(data, "page")
        seen[p.label] = [e["node"]["id"] for e in first["edges"]]
        cursor[p.label] = (
            first["pageInfo"]["endCursor"] if first["pageInfo"]["hasNextPage"] else None
        )
    assert sum(len(r) > PAGE for r in reference.values()) > 40, "most lists need several pages"

    async def next_pages() -> None:
        for p in pages:
            if cursor[p.label] is None:
                continue
            data = await api.data(p.document(with_reference=False), {"after": cursor[p.label]})
            page = p.connection(data, "page")
            assert page["totalCount"] == len(reference[p.label]), p.label
            seen[p.label] += [e["node"]["id"] for e in page["edges"]]
            info = page["pageInfo"]
            cursor[p.label] = info["endCursor"] if info["hasNextPage"] else None

    # The chain moves on above the pinned block between pages ...
    for _ in range(2):
        await chain.add(random_block(chain, 12))
    main_above = [b["index_block_hash"] for b in chain.blocks[-2:]]
    await next_pages()
    # ... then a longer branch from the pinned block wins: what was above it is rolled back.
    chain.fork(pinned, "side")
    chain.market, chain.rng = side_market, side_rng
    for _ in range(3):
        await chain.add(random_block(chain, 12))
    orphaned = sql(
        db_url, "SELECT count(*) FROM blocks WHERE NOT canonical AND index_block_hash = ANY(%s)",
        main_above,
    )  # fmt: skip
    assert orphaned == [(2,)]
    while any(c is not None for c in cursor.values()):
        await next_pages()
        await chain.add(random_block(chain, 6))

    for p in pages:
        assert seen[p.label] == reference[p.label], p.label
    # The lists did change meanwhile: reading them now gives other rows or another order.
    moved = 0
    for p in pages:
        data = await api.data(p.document(with_reference=True), {"after": None})
        moved += [n["id"] for n in p.connection(data, "ref")["nodes"]] != reference[p.label]
    assert moved > 30, moved


async def test_a_fork_that_orphans_the_cursors_block_is_refused(api: Api, db_url: str) -> None:
    chain = LiveChain(db_url, seed=5)
    await chain.add(chain.setup_and_mint(tokens=12))
    base = chain.blocks[-1]
    await chain.add([chain.transfer(1) for _ in range(4)])
    await chain.add([])
    root = """query($after: String, $b: BlockInput) { certificates(first: 3, after: $after,
        block: $b, orderBy: [{field: owner}]) { totalCount pageInfo { endCursor } } }"""
    relation = """query($after: String) { facility(id: 1) { certificates(first: 3, after: $after)
        { totalCount pageInfo { endCursor } } } }"""
    history = """query($after: String) { ownershipHistory(tokenId: 1, first: 2, after: $after)
        { pageInfo { endCursor } } }"""
    root_cursor = (await api.data(root))["certificates"]["pageInfo"]["endCursor"]
    rel_cursor = (await api.data(relation))["facility"]["certificates"]["pageInfo"]["endCursor"]
    hist_cursor = (await api.data(history))["ownershipHistory"]["pageInfo"]["endCursor"]

    # The cursor names block 3; asking for another block beside it is a contradiction.
    body = await api.query(root, {"after": root_cursor, "b": {"number": 2}})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "block 3" in body["errors"][0]["message"]
    assert "errors" not in await api.query(root, {"after": root_cursor, "b": {"number": 3}})

    chain.fork(base, "side")
    for _ in range(3):
        await chain.add([])
    for doc, after in ((root, root_cursor), (relation, rel_cursor), (history, hist_cursor)):
        body = await api.query(doc, {"after": after})
        error = body["errors"][0]
        assert error["extensions"]["code"] == "BLOCK_NOT_FOUND", body
        assert error["extensions"]["reason"] == "cursor_block_orphaned"
        assert "start again from the first page" in error["message"]
    # A first page reads the new branch, and its cursors page it.
    fresh = (await api.data(root))["certificates"]
    assert (await api.data(root, {"after": fresh["pageInfo"]["endCursor"]}))["certificates"]


async def test_paging_while_the_indexer_commits_blocks_concurrently(api: Api, db_url: str) -> None:
    """The first page and its pin come from one statement even while commits land; pages over
    HTTP and over a websocket (which reads each statement on its own) stay on the pin."""
    chain = LiveChain(db_url, seed=23)
    await chain.add(chain.setup_and_mint(tokens=40))
    for _ in range(2):
        await chain.add(random_block(chain, 12))
    pages = [
        Paged("certificates by owner", "certificates", ", orderBy: [{field: owner}]"),
        Paged(
            "certificates by wh desc", "certificates", ", orderBy: [{field: wh, direction: desc}]"
        ),
        Paged(
            "transfers of ten tokens, newest first",
            "transfers",
            ", where: {tokenId_lte: 10}, orderBy: [{field: blockHeight, direction: desc}]",
        ),
        Paged("holdings", "holdings", f', owner: "{account(1)}"', inner="certificates {{ {} }}"),
    ]
    done = asyncio.Event()

    async def indexing() -> int:
        blocks = 0
        while not done.is_set():
            await chain.add(random_block(chain, 4))
            blocks += 1
            await asyncio.sleep(0.1)  # a chain's pace, not a catch-up: pages interleave
        return blocks

    async def over_ws(sub: Subscriber, document: str, after: str | None) -> dict[str, Any]:
        await sub.subscribe(document, {"after": after})
        got = await sub.next()
        assert "errors" not in got, got
        assert (await sub.next())["type"] == "complete"
        data: dict[str, Any] = got["data"]
        return data

    task = asyncio.create_task(indexing())
    sub = await Subscriber.connect(api.ws_url)
    try:
        for run in range(4):
            for p in pages:
                data = await api.data(p.document(with_reference=True), {"after": None})
                reference = [n["id"] for n in p.connection(data, "ref")["nodes"]]
                page = p.connection(data, "page")
                seen = [e["node"]["id"] for e in page["edges"]]
                while page["pageInfo"]["hasNextPage"]:
                    after = page["pageInfo"]["endCursor"]
                    doc = p.document(with_reference=False)
                    data = await (
                        over_ws(sub, doc, after) if run % 2 else api.data(doc, {"after": after})
                    )
                    page = p.connection(data, "page")
                    assert page["totalCount"] == len(reference), p.label
                    seen += [e["node"]["id"] for e in page["edges"]]
                assert seen == reference, (run, p.label)
    finally:
        done.set()
        blocks = await task
        await sub.close()
    assert blocks >= 3, "blocks were committed while the pages were read"


async def test_each_page_on_a_pin_is_one_statement(
    api: Api, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pin is checked inside the page's statement, the last page's included: a page stays
    one statement (a root list's page alone runs without a transaction: no BEGIN, no
    ROLLBACK)."""
    chain = LiveChain(db_url, seed=3)
    await chain.add(chain.setup_and_mint(tokens=7))
    statements: list[Any] = []
    execute = Reader._execute

    async def counted(self: Reader, conn: Any, sql: Any, params: Any) -> Any:
        statements.append(sql)
        return await execute(self, conn, sql, params)

    monkeypatch.setattr(Reader, "_execute", counted)
    for doc, path in (
        ("query($a: String) { certificates(first: 3, after: $a, orderBy: [{field: owner}])"
         " { nodes { tokenId } pageInfo { hasNextPage endCursor } } }", ("certificates",)),
        ("query($a: String) { facility(id: 1) { certificates(first: 3, after: $a)"
         " { nodes { tokenId } pageInfo { hasNextPage endCursor } } } }",
         ("facility", "certificates")),
    ):  # fmt: skip
        after, pages = None, 0
        while True:
            await chain.add([])  # the chain moves between pages
            statements.clear()
            data = await api.data(doc, {"a": after})
            for key in path:
                data = data[key]
            pages += 1
            pages_read = [s for s in statements if "FROM certificates" in str(s)]
            assert len(pages_read) == 1, (pages, statements)
            if len(path) == 1:  # the page alone: no transaction around it
                assert len(statements) == 1, (pages, statements)
            assert pages < 6, (path, data)
            if not data["pageInfo"]["hasNextPage"]:
                break
            after = data["pageInfo"]["endCursor"]
        assert pages == 3


async def test_a_forged_pin_is_a_client_error(api: Api, db_url: str) -> None:
    chain = LiveChain(db_url, seed=4)
    await chain.add(chain.setup_and_mint(tokens=4))
    q = """query($a: String) { certificates(first: 2, after: $a) { totalCount
        pageInfo { endCursor } } }"""
    cursor = (await api.data(q))["certificates"]["pageInfo"]["endCursor"]
    sig, values, (height, block_hash) = json.loads(
        base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    )
    for pin, code in (
        ([10**30, block_hash], "BAD_USER_INPUT"),
        ([-1, block_hash], "BAD_USER_INPUT"),
        (["1", block_hash], "BAD_USER_INPUT"),
        ([height, 7], "BAD_USER_INPUT"),
        ([height + 1, block_hash], "BLOCK_NOT_FOUND"),  # a height its hash does not have
        ([height, "0x" + "00" * 32], "BLOCK_NOT_FOUND"),
    ):
        raw = json.dumps([sig, values, pin]).encode()
        forged = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        body = await api.query(q, {"a": forged})
        assert body["errors"][0]["extensions"]["code"] == code, (pin, body)
