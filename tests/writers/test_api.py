"""POST/GET over real HTTP against a real PostgreSQL: what is stored, what is refused, what is
logged and counted."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.channels import RELAY
from db.session import to_libpq_url
from tests.writers.conftest import ACCEPTED, REFUSED, relay_settings, serve_app
from writers import outbox
from writers.app import ClientLimits, build_app
from writers.metrics import RelayMetrics
from writers.policy import Policy


@pytest.fixture
async def relay(db_url: str, engine: AsyncEngine) -> AsyncIterator[str]:
    async with serve_app(build_app(relay_settings(db_url), engine, RelayMetrics())) as url:
        yield url


async def rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(text("SELECT txid, status, sender FROM relay_txs")))


@pytest.mark.parametrize("vector", ACCEPTED, ids=lambda v: v["name"])
async def test_accepted_kinds_are_stored_before_202(
    relay: str, engine: AsyncEngine, vector: dict[str, Any]
) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{relay}/v1/transactions", json={"tx": "0x" + vector["hex"]})
    assert r.status_code == 202, r.text
    txid = "0x" + vector["txid"]
    assert r.json() == {"txid": txid, "status": "received"}
    assert [(row.txid, row.status) for row in await rows(engine)] == [(txid, "received")]


async def test_resubmission_returns_current_status_and_stores_once(
    relay: str, engine: AsyncEngine
) -> None:
    raw = bytes.fromhex(ACCEPTED[0]["hex"])
    txid = "0x" + ACCEPTED[0]["txid"]
    async with httpx.AsyncClient() as client:
        first = await client.post(
            f"{relay}/v1/transactions",
            content=raw,
            headers={"content-type": "application/octet-stream"},
        )
        async with engine.begin() as conn:  # as the indexer would, later
            await conn.execute(
                text("UPDATE relay_txs SET status = 'mempool' WHERE txid = :t"), {"t": txid}
            )
        again = await client.post(f"{relay}/v1/transactions", json=raw.hex())
        status = await client.get(f"{relay}/v1/transactions/{txid}")
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == {"txid": txid, "status": "mempool"}
    assert len(await rows(engine)) == 1
    body = status.json()
    assert (body["status"], body["function_name"], body["nonce"]) == ("mempool", "buy", 0)


@pytest.mark.parametrize("vector", REFUSED, ids=lambda v: v["name"])
async def test_refused_vectors_change_nothing(
    relay: str, engine: AsyncEngine, vector: dict[str, Any]
) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{relay}/v1/transactions", json={"tx": vector["hex"]})
    assert r.json()["error"] == vector["expect"]
    assert r.status_code in (400, 403)
    assert r.json()["txid"] == "0x" + vector["txid"]
    assert await rows(engine) == []


async def test_tampered_and_oversized_bodies_change_nothing(
    relay: str, engine: AsyncEngine
) -> None:
    raw = bytearray(bytes.fromhex(ACCEPTED[0]["hex"]))
    raw[50] ^= 0x80  # inside the origin's signature
    async with httpx.AsyncClient() as client:
        forged = await client.post(f"{relay}/v1/transactions", json={"tx": raw.hex()})
        huge = await client.post(
            f"{relay}/v1/transactions",
            content=b"\x00" * (10 * 1024 * 1024),
            headers={"content-type": "application/octet-stream"},
        )
        truncated = await client.post(f"{relay}/v1/transactions", json={"tx": raw[:-5].hex()})
        text_body = await client.post(
            f"{relay}/v1/transactions", content=b"00", headers={"content-type": "text/plain"}
        )
    assert (forged.status_code, forged.json()["error"]) == (400, "bad_signature")
    assert (huge.status_code, huge.json()["error"]) == (413, "body_too_large")
    assert (truncated.status_code, truncated.json()["error"]) == (400, "undecodable")
    assert (text_body.status_code, text_body.json()["error"]) == (415, "unsupported_media_type")
    assert await rows(engine) == []


async def test_status_of_unknown_and_malformed_txids(relay: str) -> None:
    async with httpx.AsyncClient() as client:
        unknown = await client.get(f"{relay}/v1/transactions/{'ab' * 32}")
        bad = await client.get(f"{relay}/v1/transactions/not-a-txid")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "not_found")
    assert (bad.status_code, bad.json()["error"]) == (400, "bad_txid")


async def test_every_status_change_is_notified(
    relay: str, engine: AsyncEngine, db_url: str
) -> None:
    txid = "0x" + ACCEPTED[1]["txid"]
    async with await psycopg.AsyncConnection.connect(
        to_libpq_url(db_url), autocommit=True
    ) as listener:
        await listener.execute(f"LISTEN {RELAY}")
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{relay}/v1/transactions", json={"tx": ACCEPTED[1]["hex"]})
        assert r.status_code == 202
        async with engine.begin() as conn:
            for status in ("broadcast", "broadcast", "mined"):  # the repeat is no change
                await conn.execute(
                    text("UPDATE relay_txs SET status = :s WHERE txid = :t"),
                    {"s": status, "t": txid},
                )
        seen = [
            json.loads(note.payload) async for note in listener.notifies(timeout=10.0, stop_after=3)
        ]
    assert seen == [
        {"txid": txid, "status": "received"},
        {"txid": txid, "status": "broadcast"},
        {"txid": txid, "status": "mined"},
    ]


async def test_unknown_status_values_are_refused_by_the_table(
    relay: str, engine: AsyncEngine
) -> None:
    async with httpx.AsyncClient() as client:
        await client.post(f"{relay}/v1/transactions", json={"tx": ACCEPTED[0]["hex"]})
    with pytest.raises(Exception, match="relay_status"):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE relay_txs SET status = 'confirmed'"))


async def test_api_keys_rate_limit_and_audit(
    db_url: str, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    settings = relay_settings(db_url, api_keys=["s3cret-key"], rate_limit_per_minute=2)
    metrics = RelayMetrics()
    caplog.set_level(logging.INFO, logger="recchain.relay.audit")
    async with serve_app(build_app(settings, engine, metrics)) as url, httpx.AsyncClient() as c:
        body = {"tx": ACCEPTED[0]["hex"]}
        anonymous = await c.post(f"{url}/v1/transactions", json=body)
        wrong = await c.post(f"{url}/v1/transactions", json=body, headers={"x-api-key": "nope"})
        auth = {"authorization": "Bearer s3cret-key"}
        ok = await c.post(f"{url}/v1/transactions", json=body, headers=auth)
        dup = await c.post(f"{url}/v1/transactions", json=body, headers=auth)
        limited = await c.post(f"{url}/v1/transactions", json=body, headers=auth)
        exposition = (await c.get(f"{url}/metrics")).text
    assert (anonymous.status_code, anonymous.json()["error"]) == (401, "unauthorized")
    assert wrong.status_code == 401
    assert (ok.status_code, dup.status_code) == (202, 200)
    assert (limited.status_code, limited.json()["error"]) == (429, "rate_limited")
    assert len(await rows(engine)) == 1

    records = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith("audit")]
    assert [r["outcome"] for r in records] == [
        "rejected",
        "rejected",
        "accepted",
        "duplicate",
        "rejected",
    ]
    accepted = records[2]
    assert accepted["tx"] == ACCEPTED[0]["hex"]
    assert accepted["txid"] == "0x" + ACCEPTED[0]["txid"]
    assert accepted["client"].startswith("key:")
    assert not any("s3cret" in r.getMessage() for r in caplog.records)
    assert 'recchain_relay_submissions_total{code="unauthorized",outcome="rejected"} 2.0' in (
        exposition
    )
    assert 'recchain_relay_submissions_total{code="",outcome="accepted"} 1.0' in exposition


def test_concurrency_cap_is_per_client() -> None:
    limits = ClientLimits(per_minute=100, max_in_flight=2)
    assert limits.enter("a") and limits.enter("a")
    assert not limits.enter("a")
    assert limits.enter("b")
    limits.leave("a")
    assert limits.enter("a")


async def test_concurrent_submissions_of_one_tx_store_one_row(
    relay: str, engine: AsyncEngine
) -> None:
    async with httpx.AsyncClient() as client:
        answers = await asyncio.gather(
            *(
                client.post(f"{relay}/v1/transactions", json={"tx": ACCEPTED[2]["hex"]})
                for _ in range(8)
            )
        )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 7 + [202]
    assert len(await rows(engine)) == 1


async def test_accepts_waiting_together_share_one_commit_and_each_is_notified(
    engine: AsyncEngine, db_url: str
) -> None:
    policy = Policy.from_settings(relay_settings(db_url))
    txs = [policy.check(bytes.fromhex(v["hex"])) for v in ACCEPTED]
    committer = outbox.GroupCommitter(engine)
    async with await psycopg.AsyncConnection.connect(
        to_libpq_url(db_url), autocommit=True
    ) as listener:
        await listener.execute(f"LISTEN {RELAY}")
        # Every call is queued before the writer first runs, so they form one group; the
        # repeat of the first transaction inside that group is a duplicate, not a second row.
        answers = await asyncio.gather(
            *(committer.submit(tx, "c") for tx in txs), committer.submit(txs[0], "c")
        )
        # Resolved means committed: another connection already sees every row.
        stored = {row.txid: row.status for row in await rows(engine)}
        seen = [
            json.loads(note.payload)
            async for note in listener.notifies(timeout=10.0, stop_after=len(txs))
        ]
    await committer.aclose()
    assert answers == [("received", True)] * len(txs) + [("received", False)]
    assert (committer.groups, committer.committed) == (1, len(txs) + 1)
    assert stored == {tx.txid: "received" for tx in txs}
    assert sorted(n["txid"] for n in seen) == sorted(tx.txid for tx in txs)
    assert {n["status"] for n in seen} == {"received"}


async def test_a_duplicate_of_a_stored_row_in_a_group_reports_its_status(
    engine: AsyncEngine, db_url: str
) -> None:
    policy = Policy.from_settings(relay_settings(db_url))
    old, new = (policy.check(bytes.fromhex(v["hex"])) for v in ACCEPTED[:2])
    await outbox.submit(engine, old, "c")
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE relay_txs SET status = 'mined' WHERE txid = :t"), {"t": old.txid}
        )
    committer = outbox.GroupCommitter(engine)
    answers = await asyncio.gather(committer.submit(new, "c"), committer.submit(old, "c"))
    await committer.aclose()
    assert answers == [("received", True), ("mined", False)]
    assert len(await rows(engine)) == 2


async def test_a_row_the_table_refuses_fails_alone_not_its_group(
    engine: AsyncEngine, db_url: str
) -> None:
    policy = Policy.from_settings(relay_settings(db_url))
    good, other = (policy.check(bytes.fromhex(v["hex"])) for v in ACCEPTED[:2])
    # A u64 nonce past bigint's range is signable but not storable.
    bad = dataclasses.replace(other, nonce=2**63)
    committer = outbox.GroupCommitter(engine)
    answers = await asyncio.gather(
        committer.submit(good, "c"), committer.submit(bad, "c"), return_exceptions=True
    )
    await committer.aclose()
    assert answers[0] == ("received", True)
    assert isinstance(answers[1], Exception)
    assert [row.txid for row in await rows(engine)] == [good.txid]
