"""Search (questions/search.py): typo tolerance, ranking, refused empty text."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.graphql_api.conftest import Api
from tests.graphql_api.questions.scenario import scenario


async def test_search_is_typo_tolerant_and_ranked(api: Api, engine: AsyncEngine) -> None:
    chain, _ = scenario()
    await chain.write(engine)
    data = (
        await api.data('{ search(text: "prarie wnd", first: 5) { kind score facility { name } } }')
    )["search"]
    assert data[0]["kind"] == "facility" and data[0]["facility"]["name"] == "Prairie Wind Ranch"
    data = (await api.data('{ search(text: "Sonnenfeld") { kind } }'))["search"]
    assert data[0]["kind"] == "facility" and "certificate" in {h["kind"] for h in data}
    body = await api.query('{ search(text: "") { kind } }')
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
