"""`python -m ops.bench apisource`: requests the `api` source sends per block, on a mainnet-shaped
workload, against the hosted API's published limit (50 requests a minute per client without a
key, 500 with one: docs.hiro.so/resources/guides/rate-limits).

Two chains are served by the fake API (ops/bench/fake_stacks_api.py, the API's own shapes) and
followed into a fresh database by the real source and pipeline: one whose blocks carry only
others' transactions (`--txs` each, every one with an event, as most mainnet transactions have),
and one whose blocks also carry the watched contracts' market traffic (3 transactions a block).
Each is followed twice: in catch-up (one reconciliation for every block) and at the tip (one
reconciliation per new block, as a websocket notification triggers). For comparison, the
requests the previous approach needed for the same blocks (the tip, the block, its transaction
pages, then each transaction's events) are computed from the same blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import uuid
from typing import Any

from pydantic import SecretStr

from db.session import database_url, engine_scope
from indexer.api_source import ApiSource
from indexer.pipeline import Indexer
from infra.config import Settings, get_settings
from ops.bench import chaingen
from ops.bench.fake_stacks_api import FakeApi, serve
from ops.bench.ingest import _create_db, _drop_db

LIMIT_NO_KEY, LIMIT_KEY = 50, 500


def _pad(blocks: list[dict[str, Any]], txs: int) -> list[dict[str, Any]]:
    """Add others' transactions (each with one STX transfer event) up to `txs` per block."""
    for b in blocks:
        base = len(b["transactions"])
        for k in range(max(txs - base, 0)):
            txid = chaingen.h32("foreign", b["index_block_hash"], k)
            b["transactions"].append(
                {"txid": txid, "tx_index": base + k, "status": "success", "raw_result": "0x03",
                 "raw_tx": "0x00"}
            )  # fmt: skip
            b["events"].append(
                {"txid": txid, "event_index": 0, "committed": True, "type": "stx_transfer_event",
                 "stx_transfer_event": {"sender": chaingen.account(900 + k % 7),
                                        "recipient": chaingen.account(950 + k % 5),
                                        "amount": "1000"}}
            )  # fmt: skip
    return blocks


def _quiet(count: int) -> list[dict[str, Any]]:
    out, parent = [], chaingen.GENESIS
    for h in range(1, count + 1):
        block = chaingen.new_block(h, parent, "quiet", [])
        out.append(block)
        parent = block["index_block_hash"]
    return out


def previous_cost(block: dict[str, Any]) -> int:
    """Requests of the per-transaction approach for one block at the tip: the tip, the block,
    its transaction pages (50 a page), and each transaction's events (50 a page)."""
    per_tx: dict[str, int] = {}
    for e in block["events"]:
        per_tx[e["txid"]] = per_tx.get(e["txid"], 0) + 1
    pages = max(math.ceil(len(block["transactions"]) / 50), 1)
    return 2 + pages + sum(math.ceil(n / 50) for n in per_tx.values())


async def _follow(url: str, chain: list[dict[str, Any]], tip_mode: bool) -> dict[str, Any]:
    settings = Settings(database_url=SecretStr(url))
    fake = FakeApi(chain[:1] if tip_mode else chain)
    server, port, task = await serve(fake.app())
    try:
        async with engine_scope(url, pool_size=1) as engine, engine.connect() as conn:
            indexer = Indexer(conn, settings)
            await indexer.start()
            source = ApiSource(indexer, f"http://127.0.0.1:{port}")
            reconciles = 0
            try:
                if tip_mode:
                    for i in range(1, len(chain) + 1):
                        fake.set_chain(chain[:i])
                        await source.reconcile()
                        reconciles += 1
                else:
                    await source.reconcile()
                    reconciles = 1
            finally:
                await source.client.aclose()
    finally:
        server.should_exit = True
        await task
    per_block = fake.requests / len(chain)
    return {
        "blocks": len(chain),
        "reconciliations": reconciles,
        "requests": fake.requests,
        "requests_per_block": round(per_block, 3),
        "by_route": dict(fake.by_route),
    }


def run(blocks: int = 60, txs: int = 50) -> dict[str, Any]:
    server = database_url(get_settings())
    contracts = len(get_settings().watched_contracts)
    chains = {
        "without watched activity": _pad(_quiet(blocks), txs),
        "with watched activity": _pad(chaingen.Chain(seed=7).grow(None, blocks, "main"), txs),
    }
    out: dict[str, Any] = {"watched_contracts": contracts, "txs_per_block": txs, "runs": {}}
    for label, chain in chains.items():
        before = sum(previous_cost(b) for b in chain) / len(chain)
        for mode in ("catch-up", "tip"):
            name = f"recchain_bench_api_{uuid.uuid4().hex[:8]}"
            url = _create_db(server, name)
            try:
                figures = asyncio.run(_follow(url, chain, tip_mode=mode == "tip"))
            finally:
                _drop_db(server, name)
            figures["previous_requests_per_block"] = round(before, 1)
            if mode == "tip":
                rpm = figures["requests_per_block"]
                # Blocks a minute the source can follow one reconciliation per block within
                # the limit (more blocks than that share reconciliations, paced).
                figures["blocks_per_minute_within_50_rpm"] = round(LIMIT_NO_KEY / rpm, 1)
                figures["blocks_per_minute_within_500_rpm"] = round(LIMIT_KEY / rpm, 1)
                figures["previous_blocks_per_minute_within_50_rpm"] = round(
                    LIMIT_NO_KEY / before, 2
                )
            out["runs"][f"{label}, {mode}"] = figures
    return out


def _cmd(args: argparse.Namespace) -> int:
    figures = run(args.blocks, args.txs)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"watched contracts {figures['watched_contracts']}, {figures['txs_per_block']} txs/block")
    for label, f in figures["runs"].items():
        line = (
            f"{label:38} {f['requests']:5} requests for {f['blocks']} blocks: "
            f"{f['requests_per_block']:6.2f}/block (previous approach "
            f"{f['previous_requests_per_block']}/block)"
        )
        if "blocks_per_minute_within_50_rpm" in f:
            line += (
                f"; within 50 RPM {f['blocks_per_minute_within_50_rpm']} blocks/min "
                f"(previous {f['previous_blocks_per_minute_within_50_rpm']})"
            )
        print(line)
    return 0


def register(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = bench_sub.add_parser(
        "apisource", help="requests per block of the api source, against the hosted rate limit"
    )
    p.add_argument("--blocks", type=int, default=60, help="blocks per chain")
    p.add_argument("--txs", type=int, default=50, help="transactions per block (mainnet-like)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(handler=_cmd)
