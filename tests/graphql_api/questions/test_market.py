"""Market data (questions/market.py): VWAP, fees and the per-source breakdown."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.graphql_api.conftest import Api
from tests.graphql_api.questions.scenario import scenario


async def test_market_stats_vwap(api: Api, engine: AsyncEngine) -> None:
    chain, _ = scenario()
    await chain.write(engine)
    data = (
        await api.data(
            '{ marketStats(currency: "STX") { overall { tradeCount volumeWh vwapPerMwh fees }'
            " daily { open close volumeWh } byEnergySource { key tradeCount } } }"
        )
    )["marketStats"]
    sale = chain.facts["sales"][0]
    assert data["overall"]["tradeCount"] == 1
    assert Decimal(data["overall"]["vwapPerMwh"]) == Decimal(sale["price"]) / 2
    assert data["overall"]["fees"] == str(sale["fee"])
    assert data["byEnergySource"] == [{"key": "ES100", "tradeCount": 1}]
