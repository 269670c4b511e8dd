"""Custody questions (questions/history.py): ownership history across a split, holdings at a
past block."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.graphql_api.conftest import Api
from tests.graphql_api.questions.scenario import scenario


async def test_ownership_history_follows_the_split(api: Api, engine: AsyncEngine) -> None:
    chain, ids = scenario()
    await chain.write(engine)
    data = await api.data(
        "query($t: Int!) { ownershipHistory(tokenId: $t) { nodes { tokenId kind txid blockHeight"
        " sender recipient price } } }",
        {"t": ids["k1"]},
    )
    nodes = data["ownershipHistory"]["nodes"]
    # Derived from the builder: the parent's mint, the parent's split, then the child's life.
    expected = [
        (r["token_id"], r["kind"])
        for r in sorted(chain.facts["transfers"], key=lambda r: r["event_index"])
        if r["token_id"] == ids["k1"] or (r["token_id"] == ids["a"])
    ]
    assert [(n["tokenId"], n["kind"]) for n in nodes] == expected
    assert [n["kind"] for n in nodes] == ["mint", "split", "split", "escrow", "sale", "retire"]
    sale = next(n for n in nodes if n["kind"] == "sale")
    assert sale["price"] == "40000000" and sale["recipient"] == "ST1BOB"


async def test_holdings_at_a_past_block(api: Api, engine: AsyncEngine) -> None:
    chain, ids = scenario()
    await chain.write(engine)
    q = """query($b: Int) { holdings(owner: "ST1ALICE", block: {number: $b}) { totalWh
        breakdown { dimension key wh } certificates { nodes { tokenId } } } }"""
    at3 = (await api.data(q, {"b": 3}))["holdings"]
    # At block 3 the 2 MWh child is listed (escrowed) but still Alice's.
    assert {n["tokenId"] for n in at3["certificates"]["nodes"]} == {ids["b"], ids["k0"], ids["k1"]}
    assert at3["totalWh"] == "5000000"
    now = (await api.data(q, {"b": None}))["holdings"]
    assert {n["tokenId"] for n in now["certificates"]["nodes"]} == {ids["b"], ids["k0"]}


async def test_holdings_count_pages_and_totals_agree_however_they_are_selected(
    api: Api, engine: AsyncEngine
) -> None:
    chain, ids = scenario()
    for i in range(4):
        chain.mint(chain.facility(name=f"Extra {i}", country="DE"), "ST1ALICE", 1_000 + i)
    chain.block()
    listed = chain.mint(chain.facility(name="Escrowed", country="DE"), "ST1ALICE", 7)
    chain.block()
    chain.list_fixed(listed, 5)  # escrowed by the marketplace: still Alice's
    chain.block()
    await chain.write(engine)
    full = """query { holdings(owner: "ST1ALICE", first: 100) { totalWh
        breakdown { dimension key wh } certificates { totalCount nodes { tokenId } } } }"""
    everything = (await api.data(full))["holdings"]
    tokens = [n["tokenId"] for n in everything["certificates"]["nodes"]]
    assert listed in tokens and ids["k0"] in tokens and len(tokens) == 7
    assert everything["certificates"]["totalCount"] == len(tokens)
    # The count read with the page, through a fragment, on every page and past the last one.
    paged = """query($a: String) { holdings(owner: "ST1ALICE", first: 3, after: $a) {
        ...H } } fragment H on Holdings { certificates { totalCount
        edges { cursor node { tokenId } } pageInfo { endCursor hasNextPage } } }"""
    seen: list[int] = []
    after = None
    while True:
        page = (await api.data(paged, {"a": after}))["holdings"]["certificates"]
        assert page["totalCount"] == len(tokens)
        seen += [e["node"]["tokenId"] for e in page["edges"]]
        if page["edges"]:
            assert page["edges"][-1]["cursor"] == page["pageInfo"]["endCursor"]
        after = page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
    assert seen == tokens
    last = (await api.data(paged, {"a": after}))["holdings"]["certificates"]
    assert last["edges"] == [] and last["totalCount"] == len(tokens)
    # Totals alone (no page selected) and with the page give the same figures.
    totals = await api.data(
        '{ holdings(owner: "ST1ALICE") { totalWh breakdown { dimension key wh } } }'
    )
    assert totals["holdings"]["totalWh"] == everything["totalWh"]
    assert totals["holdings"]["breakdown"] == everything["breakdown"]
    assert int(everything["totalWh"]) > 0
