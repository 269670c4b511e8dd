"""Shared helpers of the indexer tests: run requests through a real Indexer on a real database,
and snapshot the domain tables without surrogate ids for equality checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from pydantic import SecretStr

from db.models.base import FACT_TABLES, VERSIONED_TABLES
from db.session import create_engine, to_libpq_url
from indexer.pipeline import Indexer
from indexer.requests import Outcome, Request
from indexer.state import COLUMNS
from infra.config import Settings
from stacks.transactions import decode_transaction, transaction_json


async def run_requests(
    db_url: str,
    batches: Sequence[Sequence[tuple[str, str]]],
    settings: Settings | None = None,
    ahead: bool = False,
) -> list[Outcome]:
    """`ahead`: the catch-up path (`process_ahead`, batches committed by the writer thread)."""
    settings = settings or Settings(database_url=SecretStr(db_url))
    engine = create_engine(db_url, pool_size=1)
    outcomes: list[Outcome] = []
    try:
        async with engine.connect() as conn:
            indexer = Indexer(conn, settings)
            await indexer.start()
            if ahead:
                await indexer.start_ahead()
            try:
                for batch in batches:
                    requests = [Request(p, body) for p, body in batch]
                    process = indexer.process_ahead if ahead else indexer.process
                    outcomes += await process(requests)
            finally:
                await indexer.stop_ahead()
    finally:
        await engine.dispose()
    return outcomes


def snapshot(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every domain table as a sorted list of rows, surrogate ids left out."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(to_libpq_url(db_url)) as conn:
        for table in (*VERSIONED_TABLES, *FACT_TABLES):
            cols = ", ".join(COLUMNS[table])
            rows = conn.execute(f"SELECT {cols} FROM {table}").fetchall()
            out[table] = sorted(rows, key=repr)
    return out


def query(db_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(to_libpq_url(db_url)) as conn:
        return conn.execute(sql, params).fetchall()


def tx_fields(raw: bytes) -> tuple[Any, ...]:
    """(sender, contract_id, function_name, fee, nonce) of a transaction as the full decoder's
    JSON view gives them: the reference for the summary the indexer stores at ingest."""
    j = transaction_json(decode_transaction(raw))
    payer = j["sponsor"] or j["origin"]
    p = j["payload"]
    contract = p.get("contract")
    if "smart-contract" in p["kind"]:
        contract = f"{j['origin']['signer_address']}.{p['contract_name']}"
    return (j["origin"]["signer_address"], contract, p.get("function_name"), int(payer["fee"]),
            int(j["origin"]["nonce"]))  # fmt: skip
