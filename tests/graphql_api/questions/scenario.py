"""The small chain the domain-question tests share: two facilities, a split, a sale and two
retirements; the tests derive their expectations from the builder's own record."""

from __future__ import annotations

from tests.graphql_api.builder import Chain


def scenario() -> tuple[Chain, dict[str, int]]:
    chain = Chain()
    chain.block()
    solar = chain.facility(name="Sonnenfeld Bayern", country="DE", market_boundary="EU-AIB")
    wind = chain.facility(
        name="Prairie Wind Ranch",
        country="US",
        market_boundary="US-ERCOT",
        energy_source="ES200",
        commissioning_date=__import__("datetime").date(2001, 1, 1),
    )
    a = chain.mint(solar, "ST1ALICE", 3_000_000, vintage=2025)
    b = chain.mint(wind, "ST1ALICE", 2_000_000, vintage=2023)
    chain.block()
    kids = chain.split(a, [1_000_000, 2_000_000])
    chain.block()
    lst = chain.list_fixed(kids[1], 40_000_000)
    chain.block()
    chain.buy(lst, "ST1BOB")
    chain.block()
    chain.retire(kids[1], "ACME Corp", year=2025, boundary="EU-AIB")
    chain.retire(b, "ACME Corp", year=2025, boundary="EU-AIB")
    chain.block()
    return chain, {"a": a, "b": b, "k0": kids[0], "k1": kids[1], "listing": lst}
