"""Query 5 (24/7 CFE): hourly matching against rows written with the builder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.graphql_api.builder import Chain
from tests.graphql_api.conftest import Api

ZONE = "10Y1001A1001A82H"
OTHER_ZONE = "10YFR-RTE------C"
H0 = datetime(2025, 3, 1, 10, tzinfo=UTC)


# A leap year of hours (about 350 kB of JSON) fits the default body limit: no overrides here.


Q = """query($b: String!, $z: String!, $c: [HourlyConsumptionInput!]!, $at: BlockInput) {
  hourlyMatching(beneficiary: $b, biddingZone: $z, consumption: $c, block: $at) {
    consumedWh matchedWh unmatchedWh shareMatched unmatchedHourCount unmatchedHours atHeight
    hours { hour consumedWh matchedWh unmatchedWh }
  }
}"""


def hourly(chain: Chain, facility: int, wh: int, start: datetime, minutes: int = 60) -> int:
    """A certificate whose generation period is `minutes` from `start`."""
    token = chain.mint(facility, "ST1ALICE", wh)
    end = start + timedelta(minutes=minutes)
    chain.put("certificates", token, period_start=start, period_end=end)
    return token


def hours(*pairs: tuple[int, int]) -> list[dict[str, Any]]:
    return [{"hour": (H0 + timedelta(hours=h)).isoformat(), "wh": wh} for h, wh in pairs]


async def test_hourly_matching(api: Api, engine: AsyncEngine) -> None:
    chain = Chain()
    chain.block()
    de = chain.facility(grid_zone=ZONE)
    fr = chain.facility(grid_zone=OTHER_ZONE)
    full = hourly(chain, de, 1_000, H0)  # hour 0: fully matched
    half_a = hourly(chain, de, 300, H0 + timedelta(hours=1), minutes=30)  # hour 1: partial
    half_b = hourly(chain, de, 200, H0 + timedelta(hours=1, minutes=30), minutes=30)
    other_zone = hourly(chain, fr, 5_000, H0 + timedelta(hours=2))
    other_owner = hourly(chain, de, 5_000, H0 + timedelta(hours=2))
    monthly = chain.mint(de, "ST1ALICE", 9_000, vintage=2025, month=3)  # not hourly
    spans_two = hourly(chain, de, 5_000, H0 + timedelta(hours=2, minutes=30))  # crosses an hour
    later = hourly(chain, de, 700, H0 + timedelta(hours=3))
    chain.block()
    for token in (full, half_a, half_b, other_zone, monthly, spans_two):
        chain.retire(token, "ACME Corp")
    chain.retire(other_owner, "Other Corp")
    chain.block()
    before_later = chain.height
    chain.block()
    chain.retire(later, "ACME Corp")
    chain.block()
    await chain.write(engine)

    consumption = hours((0, 800), (1, 1_000), (2, 400), (3, 700))
    variables = {"b": "ACME Corp", "z": ZONE, "c": consumption}
    m = (await api.data(Q, variables))["hourlyMatching"]
    assert [(h["consumedWh"], h["matchedWh"], h["unmatchedWh"]) for h in m["hours"]] == [
        ("800", "800", "0"),  # more retired than consumed: capped at consumption
        ("1000", "500", "500"),  # two half-hour certificates in the same hour
        ("400", "0", "400"),  # only another zone, another beneficiary, a two-hour span
        ("700", "700", "0"),
    ]
    assert (m["consumedWh"], m["matchedWh"], m["unmatchedWh"]) == ("2900", "2000", "900")
    assert abs(m["shareMatched"] - 2000 / 2900) < 1e-9
    assert m["unmatchedHourCount"] == 2
    assert [datetime.fromisoformat(h) for h in m["unmatchedHours"]] == [
        H0 + timedelta(hours=1),
        H0 + timedelta(hours=2),
    ]

    # Time travel: before the last retirement, hour 3 is unmatched.
    past = (await api.data(Q, {**variables, "at": {"number": before_later}}))["hourlyMatching"]
    assert past["atHeight"] == before_later
    assert [h["matchedWh"] for h in past["hours"]] == ["800", "500", "0", "0"]
    assert past["unmatchedHourCount"] == 3

    # The same retirements seen from the other zone: only its own hourly certificate counts.
    fr_m = (await api.data(Q, {**variables, "z": OTHER_ZONE}))["hourlyMatching"]
    assert [h["matchedWh"] for h in fr_m["hours"]] == ["0", "0", "400", "0"]


async def test_claim_period_must_cover_the_hour(api: Api, engine: AsyncEngine) -> None:
    chain = Chain()
    chain.block()
    de = chain.facility(grid_zone=ZONE)
    token = hourly(chain, de, 1_000, H0)
    chain.block()
    # Claimed for 2024: the March 2025 hour is outside the claim period.
    chain.retire(token, "ACME Corp", year=2024)
    chain.block()
    await chain.write(engine)
    m = (await api.data(Q, {"b": "ACME Corp", "z": ZONE, "c": hours((0, 10))}))["hourlyMatching"]
    assert m["matchedWh"] == "0" and m["unmatchedHourCount"] == 1


async def test_bad_consumption_is_refused(api: Api) -> None:
    def body(c: list[dict[str, Any]]) -> dict[str, Any]:
        return {"b": "ACME Corp", "z": ZONE, "c": c}

    cases = {
        "not on a UTC hour": [{"hour": "2025-03-01T10:30:00+00:00", "wh": 1}],
        "given twice": [{"hour": "2025-03-01T10:00:00Z", "wh": 1}] * 2,
        "at most 8784": [
            {"hour": (H0 + timedelta(hours=i)).isoformat(), "wh": 1} for i in range(8785)
        ],
        "negative": [{"hour": "2025-03-01T10:00:00Z", "wh": -1}],
    }
    for text, consumption in cases.items():
        resp = await api.query(Q, body(consumption))
        assert resp.get("data") is None, text
        err = resp["errors"][0]
        assert err["extensions"]["code"] == "BAD_USER_INPUT" and text in err["message"], err


async def test_a_leap_year_of_hours_fits_the_default_limits(api: Api, engine: AsyncEngine) -> None:
    chain = Chain()
    chain.block()
    de = chain.facility(grid_zone=ZONE)
    first = datetime(2024, 1, 1, tzinfo=UTC)
    token = hourly(chain, de, 800, first + timedelta(hours=4000))
    chain.block()
    chain.retire(token, "ACME Corp", year=2024)
    chain.block()
    await chain.write(engine)
    year = [{"hour": (first + timedelta(hours=i)).isoformat(), "wh": 500} for i in range(8784)]
    m = (await api.data(Q, {"b": "ACME Corp", "z": ZONE, "c": year}))["hourlyMatching"]
    assert len(m["hours"]) == 8784
    assert m["matchedWh"] == "500" and m["unmatchedHourCount"] == 8783
