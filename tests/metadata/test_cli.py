"""`recchain metadata ...` end to end: real parser, real gateway, real database."""

from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.session import session_factory
from indexer.metadata import queue as q
from indexer.metadata.devgateway import RunningGateway
from infra.config import get_settings
from recchain.cli import main
from tests.metadata.conftest import Store


def test_fetch_prints_the_verified_document(
    store: Store, gw: RunningGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    cid = store.doc(name="from the cli")
    assert main(["metadata", "fetch", f"ipfs://{cid}", "--gateway", gw.url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["cid"] == cid.key and out["document"]["name"] == "from the cli"


def test_fetch_reports_the_reason_per_gateway(
    store: Store, gw: RunningGateway, gw2: RunningGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    cid = store.doc(name="bad everywhere")
    gw.gateway.set_behaviour(cid.key, "wrong_bytes")
    gw2.gateway.set_behaviour(cid.key, "error500")
    argv = ["metadata", "fetch", f"ipfs://{cid}", "--gateway", gw.url, "--gateway", gw2.url]
    assert main([*argv, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [a["reason"] for a in out["attempts"]] == ["hash_mismatch", "http_status"]
    assert main(argv) == 1
    assert "hash_mismatch" in capsys.readouterr().err


async def test_retry_command_requeues_failed_jobs(
    engine: AsyncEngine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = session_factory(engine)
    async with sessions() as s, s.begin():
        await q.enqueue(s, "ipfs://broken", "certificate", 1)  # stored as permanent
    monkeypatch.setenv("RECCHAIN_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        import asyncio

        rc = await asyncio.to_thread(main, ["metadata", "retry", "--all-failed"])
        assert rc == 0
        assert await asyncio.to_thread(main, ["metadata", "retry", "999999"]) == 1
    finally:
        get_settings.cache_clear()
        os.environ.pop("RECCHAIN_DATABASE_URL", None)
    async with sessions() as s:
        status = (await s.execute(text("SELECT status FROM metadata_jobs"))).scalar_one()
    assert status == "queued"
