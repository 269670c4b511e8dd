"""Refusals never loop unrecorded, and what holds the chain is visible and repairable.

Against real servers on loopback (the event observer and the GraphQL API) and `recchain replay`
run as the operator runs it: a corrupt copy of a block is refused once, its retry answered 200 so
the node moves on, its descendants kept as orphans; `_meta`, the metrics and `chain_holds` show
the hold; the runbook's procedure (replay the genuine block from an archive, after the old
one-row poison replay that used to move the position past it) repairs the chain, which then
equals an uninterrupted replay. A fork beyond the finality horizon is held (409 on every retry)
until the horizon is raised, then applied from the stored payload (`recchain replay poison.tsv`).
A body over the size limit is held (413) until the limit is raised. Values PostgreSQL cannot
store refuse their block instead of a 500 on every retry, at the tip and in catch-up."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr
from sqlalchemy import make_url

from db.session import create_engine, to_libpq_url
from graphql_api.app import create_app as create_api
from indexer import metrics
from indexer.block import Event
from indexer.observer import create_app
from indexer.pipeline import Indexer
from indexer.schema import decode_event
from indexer.tsv import write_requests
from infra.config import PROJECT_ROOT, IndexerSettings, Settings
from ops.bench.chaingen import Chain, print_tuple, to_requests
from ops.bench.fake_stacks_api import serve
from tests.indexer.conftest_db import fresh_db
from tests.indexer.helpers import query, run_requests, snapshot

META = "{ _meta { tipHeight hold { kind reason blockHeight blockHash attempts since } } }"


@asynccontextmanager
async def observer(
    db_url: str, settings: Settings | None = None, max_body_bytes: int = 1 << 20
) -> AsyncIterator[httpx.AsyncClient]:
    """A real observer server on loopback over `db_url`."""
    settings = settings or Settings(database_url=SecretStr(db_url))
    engine = create_engine(db_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            indexer = Indexer(conn, settings)
            await indexer.start()
            server, port, task = await serve(create_app(indexer, max_body_bytes=max_body_bytes))
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                    yield c
            finally:
                server.should_exit = True
                await task
    finally:
        await engine.dispose()


async def meta(db_url: str) -> dict[str, Any]:
    """`_meta` from a real API server over the same database."""
    engine = create_engine(db_url, pool_size=2)
    settings = Settings(database_url=SecretStr(db_url))
    try:
        server, port, task = await serve(create_api(settings, engine=engine))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                body = (await c.post("/graphql", json={"query": META})).json()
        finally:
            server.should_exit = True
            await task
    finally:
        await engine.dispose()
    assert "errors" not in body, body
    return body["data"]["_meta"]  # type: ignore[no-any-return]


def write_archive(path: Path, reqs: list[tuple[str, str]], first_id: int = 1) -> Path:
    with path.open("w") as out:
        write_requests(out, [(first_id + i, "2026-01-01 00:00:00+00", p, b)
                             for i, (p, b) in enumerate(reqs)])  # fmt: skip
    return path


def recchain(db_url: str, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "recchain.cli", *args],
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            "DATABASE_URL": make_url(db_url).render_as_string(hide_password=False),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.returncode, json.loads(done.stderr.strip().splitlines()[-1])


def export_poison(db_url: str, tsv: Path, where: str) -> Path:
    """The runbook's `\\copy (SELECT id, received_at, event_path, payload FROM raw_requests
    WHERE ...) TO 'poison.tsv'`, through COPY as psql runs it."""
    with psycopg.connect(to_libpq_url(db_url)) as conn, tsv.open("wb") as out:
        sql = f"COPY (SELECT id, received_at, event_path, payload FROM raw_requests WHERE {where})"
        with conn.cursor().copy(f"{sql} TO STDOUT") as copy_out:
            for data in copy_out:
                out.write(bytes(data))
    return tsv


def _held(kind: str) -> float:
    return metrics.HOLDS.labels(kind)._value.get()  # type: ignore[no-any-return]


def _corrupt(block: dict[str, Any]) -> str:
    bad = copy.deepcopy(block)
    ev = next(e for e in bad["events"] if e["type"] == "contract_event")
    ev["contract_event"]["raw_value"] = "0x0c0000"  # a tuple cut short: not a Clarity value
    return json.dumps(bad)


async def test_corrupt_block_holds_the_chain_until_the_genuine_copy_is_replayed(
    db_url: str, server_url: str, tmp_path: Path
) -> None:
    blocks = Chain(seed=80).grow(None, 10, "main")
    reqs = to_requests(blocks)
    k = 3  # the fourth block arrives corrupt
    async with observer(db_url) as node:
        for path, body in reqs[:k]:
            assert (await node.post(path, content=body)).status_code == 200
        first = await node.post("/new_block", content=_corrupt(blocks[k]))
        assert first.status_code == 400 and "Clarity" in first.json()["error"]
        retry = await node.post("/new_block", content=_corrupt(blocks[k]))
        assert retry.status_code == 200, retry.text  # recorded: the node moves on
        assert retry.json()["result"] == "rejected"
        for path, body in reqs[k + 1 :]:
            r = await node.post(path, content=body)
            assert (r.status_code, r.json()["result"]) == (200, "orphan")
        assert _held("refused_block") == 1
        assert metrics.ORPHANS._value.get() == len(blocks) - k - 1
    assert query(db_url, "SELECT count(*) FROM raw_requests WHERE error IS NOT NULL") == [(1,)]
    shown = await meta(db_url)
    assert shown["tipHeight"] == k
    hold = shown["hold"]
    assert (hold["kind"], hold["blockHeight"], hold["blockHash"], hold["attempts"]) == (
        "refused_block",
        k + 1,
        blocks[k]["index_block_hash"],
        2,
    )
    assert "Clarity" in hold["reason"]

    # The old runbook step first (it changed nothing, and used to move the one replay position
    # past every archive's rows): the stored payload is refused again, nothing else happens.
    poison = export_poison(db_url, tmp_path / "poison.tsv", "error IS NOT NULL")
    code, summary = recchain(db_url, "replay", str(poison), "--quiet")
    assert (code, summary["rejected"], summary["blocks"]) == (0, 1, 0)
    # The procedure: replay the genuine block from an archive; its descendants follow.
    archive = write_archive(tmp_path / "archive.tsv", reqs)
    code, summary = recchain(db_url, "replay", str(archive), "--quiet")
    assert (code, summary["rejected"]) == (0, 0), summary
    assert query(db_url, "SELECT count(*) FROM blocks WHERE orphan") == [(0,)]
    assert query(db_url, "SELECT block_height FROM checkpoints") == [(len(blocks),)]
    assert query(db_url, "SELECT count(*) FROM chain_holds WHERE resolved_at IS NULL") == [(0,)]
    assert (await meta(db_url))["hold"] is None
    with fresh_db(server_url) as clean:
        await run_requests(clean, [reqs])
        assert snapshot(db_url) == snapshot(clean)
        same = "SELECT index_block_hash, canonical FROM blocks ORDER BY 1"
        assert query(db_url, same) == query(clean, same)


async def test_deep_fork_is_held_then_applied_from_the_stored_payload(
    db_url: str, server_url: str, tmp_path: Path
) -> None:
    chain = Chain(seed=81)
    main = chain.grow(None, 8, "main")
    side = chain.grow(main[1]["index_block_hash"], 8, "side")  # wins at height 9: 6 deep
    strict = Settings(database_url=SecretStr(db_url), indexer=IndexerSettings(finality_depth=4))
    before: dict[str, Any] = {}
    async with observer(db_url, strict) as node:
        for path, body in to_requests(main + side[:6]):
            assert (await node.post(path, content=body)).status_code == 200
        before = snapshot(db_url)
        for _ in range(3):  # the node retries: held each time, recorded once
            r = await node.post("/new_block", content=to_requests(side[6:7])[0][1])
            assert r.status_code == 409, r.text
            assert r.json()["held"] is True and "finality horizon" in r.json()["error"]
        assert _held("deep_fork") == 1
    assert snapshot(db_url) == before
    hold = (await meta(db_url))["hold"]
    assert (hold["kind"], hold["blockHeight"], hold["attempts"]) == ("deep_fork", 9, 3)
    assert query(db_url, "SELECT count(*) FROM raw_requests WHERE error IS NOT NULL") == [(1,)]

    # Runbook: keep the payload, raise the horizon, re-apply it with `recchain replay`.
    poison = export_poison(db_url, tmp_path / "poison.tsv", "error IS NOT NULL")
    wide = {"RECCHAIN_INDEXER__FINALITY_DEPTH": "10"}
    code, summary = recchain(db_url, "replay", str(poison), "--quiet", **wide)
    assert (code, summary["rejected"], summary["blocks"]) == (0, 0, 1), summary
    assert (await meta(db_url))["hold"] is None
    assert query(db_url, "SELECT count(*) FROM raw_requests WHERE error IS NOT NULL") == [(0,)]
    async with observer(db_url) as node:  # the node goes on with the rest of the branch
        r = await node.post("/new_block", content=to_requests(side[6:7])[0][1])
        assert r.json()["result"] == "duplicate"
        for path, body in to_requests(side[7:]):
            assert (await node.post(path, content=body)).status_code == 200
    canonical = main[:2] + side
    with fresh_db(server_url) as clean:
        await run_requests(clean, [to_requests(canonical)])
        assert snapshot(db_url) == snapshot(clean)
        same = "SELECT index_block_hash FROM blocks WHERE canonical ORDER BY block_height"
        assert query(db_url, same) == query(clean, same)


async def test_a_held_request_stops_a_replay_and_a_rerun_goes_on(
    db_url: str, server_url: str, tmp_path: Path
) -> None:
    chain = Chain(seed=82)
    main = chain.grow(None, 8, "main")
    side = chain.grow(main[1]["index_block_hash"], 9, "side")
    archive = write_archive(tmp_path / "archive.tsv", to_requests(main + side))
    strict = {"RECCHAIN_INDEXER__FINALITY_DEPTH": "4"}
    code, summary = recchain(db_url, "replay", str(archive), "--quiet", "--batch", "5", **strict)
    assert code == 3 and "finality horizon" in summary["held"], summary
    assert summary["requests"] == len(main) + 6  # everything before the held block
    assert query(db_url, "SELECT block_height FROM checkpoints") == [(len(main),)]
    code, summary = recchain(db_url, "replay", str(archive), "--quiet", "--batch", "5", **strict)
    assert code == 3  # still held: the rerun meets it again, nothing skipped
    wide = {"RECCHAIN_INDEXER__FINALITY_DEPTH": "20"}
    code, summary = recchain(db_url, "replay", str(archive), "--quiet", "--batch", "5", **wide)
    assert (code, summary["rejected"]) == (0, 0), summary
    with fresh_db(server_url) as clean:
        await run_requests(clean, [to_requests(main[:2] + side)])
        assert snapshot(db_url) == snapshot(clean)
    assert query(db_url, "SELECT count(*) FROM chain_holds WHERE resolved_at IS NULL") == [(0,)]


async def test_oversized_body_is_held_until_the_limit_is_raised(db_url: str) -> None:
    blocks = Chain(seed=83).grow(None, 2, "main")
    small = json.dumps(blocks[0])
    big = json.dumps({**blocks[1], "padding": "x" * (2 * len(small))})  # unknown keys: ignored
    limit = len(small) + 100
    async with observer(db_url, max_body_bytes=limit) as node:
        assert (await node.post("/new_block", content=small)).status_code == 200
        for _ in range(2):
            assert (await node.post("/new_block", content=big)).status_code == 413
    holds = "SELECT kind, event_path, attempts FROM chain_holds WHERE resolved_at IS NULL"
    assert query(db_url, holds) == [("body_too_large", "/new_block", 2)]
    assert (await meta(db_url))["hold"]["kind"] == "body_too_large"
    async with observer(db_url, max_body_bytes=len(big)) as node:  # the operator raised it
        assert (await node.post("/new_block", content=big)).status_code == 200
    assert query(db_url, holds) == []


async def test_body_that_is_not_utf8_is_recorded_once(db_url: str) -> None:
    async with observer(db_url) as node:
        body = b'{"burn_block_hash": "\xff\xfe"}'
        first = await node.post("/new_burn_block", content=body)
        assert (first.status_code, first.json()["error"]) == (400, "body is not UTF-8")
        again = await node.post("/new_burn_block", content=body)
        assert (again.status_code, again.json()["result"]) == (200, "rejected")
    assert query(db_url, "SELECT error FROM raw_requests") == [("body is not UTF-8",)]


def _unstorable(block: dict[str, Any], mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The block with its certificate-minted print changed by `mutate` (and re-encoded)."""
    bad = copy.deepcopy(block)
    for e in bad["events"]:
        body = e.get("contract_event")
        if body is None:
            continue
        ev = Event("", 0, 0, "contract_event", body["contract_identifier"])
        ev.raw_value = body["raw_value"]
        decode_event(ev)
        if ev.kind == "certificate-minted":
            mutate(ev.value)
            body["raw_value"] = print_tuple(ev.value)
            return bad
    raise AssertionError("no certificate-minted print in the block")


@pytest.mark.parametrize("ahead", [False, True], ids=["tip", "catch-up"])
async def test_a_value_postgresql_cannot_store_refuses_its_block(
    db_url: str, server_url: str, ahead: bool
) -> None:
    blocks = Chain(seed=84).grow(None, 8, "main")
    k = next(
        i for i, b in enumerate(blocks) if any(e["type"] == "nft_mint_event" for e in b["events"])
    )
    bad = _unstorable(blocks[k], lambda v: v.update(vintage=2**40))  # vintage is an integer
    delivered = [*blocks[:k], bad, *blocks[k + 1 :]]
    batches = [to_requests(delivered)] if ahead else [[r] for r in to_requests(delivered)]
    outcomes = await run_requests(db_url, batches, ahead=ahead)
    if not ahead:  # in catch-up the batch was answered before its commit failed and was redone
        refused = [o for o in outcomes if o.status == "rejected"]
        assert len(refused) == 1 and "cannot be stored" in (refused[0].reason or ""), outcomes
    errors = "SELECT error FROM raw_requests WHERE error IS NOT NULL"
    assert [e for (e,) in query(db_url, errors) if e.startswith("cannot be stored")] != []
    assert len(query(db_url, errors)) == 1
    assert query(db_url, "SELECT kind, block_height FROM chain_holds") == [("refused_block", k + 1)]
    assert query(db_url, "SELECT count(*) FROM blocks WHERE orphan") == [(len(blocks) - k - 1,)]
    # The genuine copy repairs it.
    await run_requests(db_url, [to_requests(blocks[k : k + 1])])
    with fresh_db(server_url) as clean:
        await run_requests(clean, [to_requests(blocks)])
        assert snapshot(db_url) == snapshot(clean)
    assert query(db_url, "SELECT count(*) FROM chain_holds WHERE resolved_at IS NULL") == [(0,)]
