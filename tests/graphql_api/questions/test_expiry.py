"""Query 9 (docs/domain.md), expiry exposure: boundary rules, a certificate's own expiry, the
window, time travel, the chain's clock, the analysts' view and the `recchain expiry` command,
against values derived from the builder's own record."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine

from db.session import to_libpq_url
from tests.graphql_api.builder import Chain
from tests.graphql_api.conftest import Api

AS_OF = datetime(2026, 1, 10, tzinfo=UTC)
QUERY = """query($days: Int!, $asOf: DateTime, $owner: String, $expired: Boolean!, $first: Int!,
  $block: BlockInput) {
  complianceReport(block: $block) {
    expiryExposure(withinDays: $days, asOf: $asOf, owner: $owner, includeExpired: $expired,
                   first: $first) {
      asOf withinDays count totalWh totalMwh
      certificates { certificate { tokenId status owner } marketBoundary expiresAt daysLeft basis }
    }
  }
}"""


def _plus_months(t: datetime, months: int) -> datetime:
    y, m = divmod(t.month - 1 + months, 12)
    return t.replace(year=t.year + y, month=m + 1)


def scenario() -> tuple[Chain, dict[str, int]]:
    chain = Chain()
    chain.block()
    eu = chain.facility(name="Sonnenfeld", country="DE", market_boundary="EU-AIB")
    us = chain.facility(name="Prairie Wind", country="US", market_boundary="US-ERCOT")
    ids = {
        # Production ends 2025-01-01 / 2025-02-01 / 2025-03-01: expiry 12 months later.
        "dec24": chain.mint(eu, "ST1ALICE", 1_000_000, vintage=2024, month=12),
        "jan25": chain.mint(eu, "ST1ALICE", 2_000_000, vintage=2025, month=1),
        "feb25": chain.mint(eu, "ST1BOB", 3_000_000, vintage=2025, month=2),
        "listed": chain.mint(eu, "ST1BOB", 4_000_000, vintage=2025, month=1),
        "retired": chain.mint(eu, "ST1ALICE", 5_000_000, vintage=2025, month=1),
        # No rule for US-ERCOT: never expires unless the certificate says so.
        "us": chain.mint(us, "ST1ALICE", 6_000_000, vintage=2024, month=1),
        "us_own": chain.mint(
            us, "ST1ALICE", 7_000_000, vintage=2024, expires_at=datetime(2026, 1, 20, tzinfo=UTC)
        ),
    }
    chain.block()
    chain.list_fixed(ids["listed"], 10_000)
    chain.retire(ids["retired"], "ACME Corp")
    chain.block()
    return chain, ids


def expected(
    chain: Chain, as_of: datetime, days: int, *, expired: bool, owner: str | None
) -> list[int]:
    """The answer derived from the builder's record, not from the API's SQL."""
    out: list[tuple[datetime, int]] = []
    for (table, token), versions in chain.versions.items():
        if table != "certificates":
            continue
        cert = versions[-1]
        if cert["status"] not in ("active", "listed") or (owner and cert["owner"] != owner):
            continue
        boundary = chain.current("facilities", cert["facility_id"])["market_boundary"]
        if cert["expires_at"] is not None:
            exp = cert["expires_at"]
        elif boundary == "EU-AIB":
            exp = _plus_months(cert["period_end"], 12)
        else:
            continue
        if exp < as_of + timedelta(days=days) and (expired or exp >= as_of):
            out.append((exp, token))
    return [token for _, token in sorted(out)]


async def _ask(api: Api, **kw: Any) -> dict[str, Any]:
    variables = {"days": 30, "asOf": AS_OF.isoformat(), "owner": None, "expired": False}
    variables.update({"first": 100, "block": None}, **kw)
    data = await api.data(QUERY, variables)
    out: dict[str, Any] = data["complianceReport"]["expiryExposure"]
    return out


async def test_window_rules_and_own_expiry(api: Api, engine: AsyncEngine) -> None:
    chain, ids = scenario()
    await chain.write(engine)
    for days, expired, owner in [
        (30, False, None),
        (60, False, None),
        (60, True, None),
        (400, True, "ST1BOB"),
        (0, True, None),
    ]:
        got = await _ask(api, days=days, expired=expired, owner=owner)
        want = expected(chain, AS_OF, days, expired=expired, owner=owner)
        assert [c["certificate"]["tokenId"] for c in got["certificates"]] == want
        assert got["count"] == len(want)
        wh = sum(chain.current("certificates", t)["wh"] for t in want)
        assert int(got["totalWh"]) == wh
    # 30 days from 2026-01-10: January's (2026-02-01 expiry) and the US one with its own date;
    # the listed one counts (still unretired), the retired one never does.
    got = await _ask(api, days=30)
    by_token = {c["certificate"]["tokenId"]: c for c in got["certificates"]}
    assert set(by_token) == {ids["jan25"], ids["listed"], ids["us_own"]}
    assert by_token[ids["us_own"]]["basis"] == "certificate"
    assert by_token[ids["jan25"]]["basis"] == "boundary"
    assert by_token[ids["jan25"]]["marketBoundary"] == "EU-AIB"
    assert by_token[ids["listed"]]["certificate"]["status"] == "listed"
    assert abs(by_token[ids["jan25"]]["daysLeft"] - 22.0) < 1e-9
    # Already expired (2026-01-01) shows with a negative daysLeft only when asked for.
    got = await _ask(api, days=30, expired=True)
    dec = next(c for c in got["certificates"] if c["certificate"]["tokenId"] == ids["dec24"])
    assert dec["daysLeft"] < 0
    # first: 0 still gives the totals.
    totals = await _ask(api, days=60, expired=True, first=0)
    assert totals["certificates"] == [] and totals["count"] == len(
        expected(chain, AS_OF, 60, expired=True, owner=None)
    )


async def test_time_travel_uses_the_block_time(api: Api, engine: AsyncEngine) -> None:
    chain, ids = scenario()
    await chain.write(engine)
    # At block 1 (the mints) the listed certificate was still active, the retired one unretired.
    block1 = chain.canonical_block(1)
    got = await _ask(api, days=3660, asOf=None, block={"number": 1})
    assert datetime.fromisoformat(got["asOf"]) == block1.time
    tokens = {c["certificate"]["tokenId"] for c in got["certificates"]}
    assert ids["retired"] in tokens and ids["us"] not in tokens
    assert {c["certificate"]["status"] for c in got["certificates"]} == {"active"}


async def test_without_as_of_the_chain_tip_is_the_clock(api: Api, engine: AsyncEngine) -> None:
    # Before any block there is no chain clock to read.
    body = await api.query(QUERY, {"days": 30, "expired": False, "first": 10})
    assert body["errors"][0]["extensions"]["code"] == "NOT_AVAILABLE"
    chain, _ = scenario()
    await chain.write(engine)
    tip = chain.canonical_block(chain.height)
    first = await _ask(api, days=3660, asOf=None)
    assert datetime.fromisoformat(first["asOf"]) == tip.time
    # The same chain, the same answer (the server's clock plays no part).
    assert await _ask(api, days=3660, asOf=None) == first


async def test_bad_input_is_refused(api: Api, engine: AsyncEngine) -> None:
    chain, _ = scenario()
    await chain.write(engine)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"days": -1}, "withinDays"),
        ({"days": 100_000}, "withinDays"),
        ({"asOf": "2026-01-10T00:00:00"}, "time zone"),
        ({"first": 5000}, "first"),
    ]
    for kw, message in cases:
        variables: dict[str, Any] = {
            "days": 30,
            "asOf": AS_OF.isoformat(),
            "owner": None,
            "expired": False,
        }
        variables.update({"first": 10, "block": None}, **kw)
        body = await api.query(QUERY, variables)
        assert body.get("data") is None or body["data"]["complianceReport"] is None
        assert message in body["errors"][0]["message"], body["errors"]


async def test_rules_command_and_analyst_view(api: Api, db_url: str, engine: AsyncEngine) -> None:
    chain, ids = scenario()
    await chain.write(engine)
    env = {"DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "recchain.cli", "expiry", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"EU-AIB"' in listed.stdout
    assert cli("set", "US-ERCOT", "0").returncode == 2
    assert cli("set", "US-ERCOT", "36", "--reference", "PUCT").returncode == 0
    # January 2024 ERCOT production now expires 2027-02-01: inside a 400-day window.
    got = await _ask(api, days=400)
    assert ids["us"] in {c["certificate"]["tokenId"] for c in got["certificates"]}
    with psycopg.connect(to_libpq_url(db_url)) as conn:
        conn.execute("SET ROLE recchain_analyst")
        rows: dict[int, datetime] = dict(
            conn.execute("SELECT token_id, expires_at FROM analytics.certificate_expiry").fetchall()
        )
    assert ids["retired"] not in rows
    assert rows[ids["us"]] == datetime(2027, 2, 1, tzinfo=UTC)
    assert rows[ids["jan25"]] == datetime(2026, 2, 1, tzinfo=UTC)
    assert rows[ids["us_own"]] == datetime(2026, 1, 20, tzinfo=UTC)
    assert cli("remove", "US-ERCOT").returncode == 0
    assert cli("remove", "US-ERCOT").returncode == 1
    got = await _ask(api, days=400)
    assert ids["us"] not in {c["certificate"]["tokenId"] for c in got["certificates"]}
