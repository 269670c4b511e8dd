"""Against the devnet node (contracts/devnet/node.mjs, a simnet-backed stacks-node RPC): a
fresh call signed by @stacks/transactions is relayed and accepted; a second transaction for the
same nonce comes back as the node's own nonce rejection and is recorded as final. Skipped when
Node or the devnet is unavailable."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.writers.conftest import relay_settings, serve_app
from tests.writers.processes import CONTRACTS, devnet_process
from writers.app import build_app
from writers.broadcaster import Broadcaster
from writers.metrics import RelayMetrics
from writers.node import NodeClient

WALLET = "ST2JHG361ZXG51QTKY2NQCVBPPRRE2KZB1HR05NNC"  # wallet_3 of settings/Devnet.toml
UINT_1 = "01" + "00" * 15 + "01"
UINT_4000 = "01" + "00" * 14 + "0fa0"


@pytest.fixture(scope="module")
async def devnet() -> AsyncIterator[str]:
    async with devnet_process() as node:
        yield node.url


def sign_update_price(nonce: int) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tx.json"
        subprocess.run(
            ["node", "vectors/relay.mjs", "--call", "marketplace.update-price",
             "--args", json.dumps([UINT_1, UINT_4000]), "--sender", "wallet_3",
             "--nonce", str(nonce), "--fee", str(2000 + nonce), "--out", str(out)],
            cwd=CONTRACTS, check=True,
        )  # fmt: skip
        doc: dict[str, str] = json.loads(out.read_text())
        return doc


async def test_devnet_accepts_a_fresh_call_and_rejects_a_stale_nonce(
    devnet: str, db_url: str, engine: AsyncEngine
) -> None:
    async with httpx.AsyncClient() as client:
        nonce = (await client.get(f"{devnet}/v2/accounts/{WALLET}")).json()["nonce"]
    fresh = sign_update_price(nonce)
    metrics = RelayMetrics()
    broadcaster = Broadcaster(engine, NodeClient(devnet), metrics)
    app = build_app(relay_settings(db_url), engine, metrics)
    async with serve_app(app) as relay, httpx.AsyncClient() as client:
        r = await client.post(f"{relay}/v1/transactions", json={"tx": fresh["hex"]})
        assert r.status_code == 202, r.text
        await broadcaster.run_once()
        first = (await client.get(f"{relay}/v1/transactions/{fresh['txid']}")).json()
        # The same nonce with another fee: the first one holds (or has used) it.
        stale = sign_update_price(nonce)
        stale = sign_update_price(nonce) if stale["txid"] == fresh["txid"] else stale
        r2 = await client.post(f"{relay}/v1/transactions", json={"tx": stale["hex"]})
        assert r2.status_code in (200, 202)
        await broadcaster.run_once()
        second = (await client.get(f"{relay}/v1/transactions/{stale['txid']}")).json()
    assert first["status"] == "broadcast"
    if stale["txid"] != fresh["txid"]:
        # Mined already: BadNonce; still pending: ConflictingNonceInMempool. Both are final.
        assert second["status"] == "rejected"
        assert second["reason"] in ("BadNonce", "ConflictingNonceInMempool")
    async with engine.connect() as conn:
        outcomes = (await conn.execute(text("SELECT outcome FROM relay_attempts"))).scalars()
        assert set(outcomes) <= {"accepted", "rejected"}
