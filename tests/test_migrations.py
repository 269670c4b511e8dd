from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from db.migrate import current_revisions, head_revisions, is_up_to_date, upgrade
from db.models import Base
from db.session import create_engine


async def test_migrations_create_every_model_table(empty_db_url: str) -> None:
    assert not await is_up_to_date(empty_db_url)
    upgrade(empty_db_url)
    engine = create_engine(empty_db_url)
    try:
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            exts = set(
                (await conn.execute(text("SELECT extname FROM pg_extension"))).scalars().all()
            )
        assert set(Base.metadata.tables) <= tables
        assert {"pg_trgm", "btree_gist"} <= exts
        assert await current_revisions(engine) == head_revisions()
    finally:
        await engine.dispose()
    assert await is_up_to_date(empty_db_url)


def test_head_revisions_are_alembics_heads() -> None:
    from alembic.script import ScriptDirectory

    from db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("postgresql+psycopg://x/x"))
    assert head_revisions() == set(script.get_heads())
    assert len(head_revisions()) >= 2  # one per lineage (api, indexer, webhooks, ...)


async def test_upgrade_is_idempotent(db_url: str) -> None:
    upgrade(db_url)
    assert await is_up_to_date(db_url)


async def test_0013_brings_existing_rows_to_the_split_and_revocation_model(
    empty_db_url: str,
) -> None:
    """Rows indexed before 0013: a split child's issuance txid was the split's, and a revoked
    report's verifier was the revoker (the contract overwrote it)."""
    upgrade(empty_db_url, "0007")
    engine = create_engine(empty_db_url)
    cert = (
        "INSERT INTO certificates (token_id, facility_id, report_id, owner, status, period_start,"
        " period_end, vintage, wh, serial_start, serial_end, parent_token_id, issued_height,"
        " issued_txid, issued_at, block_from, block_to) VALUES (:t, 1, 1, 'ST1A', :s,"
        " '2025-01-01Z', '2025-02-01Z', 2025, :wh, :ss, :se, :p, 5, :tx, '2026-01-01Z', :f, :to)"
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO blocks (index_block_hash, block_hash, block_height,"
                    " parent_index_block_hash, block_time, canonical) VALUES"
                    " ('0x08', '0x08', 8, '0x07', 1767700000, true),"
                    " ('0x09', '0x09', 9, '0x08', 1767700600, true)"
                )
            )
            rows = [
                # minted at 5, split at 8 into 2 (and 4); 2 split at 9 into 3
                dict(t=1, s="active", wh=10, ss=0, se=10, p=None, tx="0xmint", f=5, to=8),
                dict(t=1, s="split", wh=10, ss=0, se=10, p=None, tx="0xmint", f=8, to=None),
                dict(t=2, s="active", wh=6, ss=0, se=6, p=1, tx="0xsplit1", f=8, to=9),
                dict(t=2, s="split", wh=6, ss=0, se=6, p=1, tx="0xsplit1", f=9, to=None),
                dict(t=4, s="active", wh=4, ss=6, se=10, p=1, tx="0xsplit1", f=8, to=None),
                dict(t=3, s="active", wh=6, ss=0, se=6, p=2, tx="0xsplit2", f=9, to=None),
            ]
            for row in rows:
                await conn.execute(text(cert), row)
            report = (
                "INSERT INTO generation_reports (report_id, facility_id, period_start, period_end,"
                " wh, submitter, verifier, status, submitted_height, block_from, block_to)"
                " VALUES (1, 1, '2025-01-01Z', '2025-02-01Z', 10, 'ST1A', :v, :s, 2, :f, :to)"
            )
            for v, s, f, to in (
                (None, "submitted", 2, 3),
                ("ST1ATTESTER", "attested", 3, 5),
                ("ST1ATTESTER", "minted", 5, 7),
                ("ST1REVOKER", "revoked", 7, None),
            ):
                await conn.execute(text(report), {"v": v, "s": s, "f": f, "to": to})
        upgrade(empty_db_url, "0013")
        async with engine.connect() as conn:
            got = (
                await conn.execute(
                    text(
                        "SELECT token_id, issued_txid, issued_height, split_height, split_txid,"
                        " extract(epoch FROM split_at)::bigint FROM certificates"
                        " WHERE block_to IS NULL ORDER BY token_id"
                    )
                )
            ).all()
            report_rows = (
                await conn.execute(
                    text(
                        "SELECT status, verifier, revoked_by, revoked_height FROM"
                        " generation_reports ORDER BY block_from"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in got] == [
        (1, "0xmint", 5, None, None, None),
        (2, "0xmint", 5, 8, "0xsplit1", 1767700000),
        (3, "0xmint", 5, 9, "0xsplit2", 1767700600),
        (4, "0xmint", 5, 8, "0xsplit1", 1767700000),
    ]
    assert [tuple(r) for r in report_rows][-1] == ("revoked", "ST1ATTESTER", "ST1REVOKER", 7)
    assert [tuple(r) for r in report_rows][1] == ("attested", "ST1ATTESTER", None, None)


def test_raw_payloads_are_stored_with_lz4(db_url: str) -> None:
    """0041: large raw payloads (every observer request is kept) use lz4, not pglz."""
    import psycopg

    from db.session import to_libpq_url

    with psycopg.connect(to_libpq_url(db_url)) as conn:
        supported = conn.execute(
            "SELECT attcompression = 'l' FROM pg_attribute WHERE attrelid = "
            "'raw_requests'::regclass AND attname = 'payload'"
        ).fetchone()
        if not (supported and supported[0]):
            pytest.skip("this PostgreSQL was built without lz4 (the column keeps pglz)")
        payload = '{"transactions": [' + ",".join(['{"txid": "0x00"}'] * 20000) + "]}"
        conn.execute(
            "INSERT INTO raw_requests (event_path, payload, payload_hash) VALUES "
            "('/new_block', %s, sha256(convert_to(%s, 'UTF8')))",
            (payload, payload),
        )
        row = conn.execute("SELECT pg_column_compression(payload) FROM raw_requests").fetchone()
        assert row == ("lz4",)
