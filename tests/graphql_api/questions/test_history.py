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
