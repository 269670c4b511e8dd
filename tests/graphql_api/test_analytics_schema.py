"""The analysts' `analytics` schema: documented views, readable by the read-only role only."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.session import to_libpq_url
from tests.graphql_api.builder import Chain


async def test_views_answer_and_the_role_is_read_only(db_url: str, engine: AsyncEngine) -> None:
    chain = Chain()
    chain.block()
    token = chain.mint(chain.facility(), "ST1A", 7_000_000)
    chain.block()
    chain.transfer(token, "ST1B")
    chain.retire(token, "ACME")
    await chain.write(engine)
    with psycopg.connect(to_libpq_url(db_url)) as conn:
        conn.execute("SET ROLE recchain_analyst")
        assert conn.execute(
            "SELECT owner, status FROM analytics.current_owners WHERE token_id = %s", (token,)
        ).fetchall() == [("ST1B", "retired")]
        assert conn.execute(
            "SELECT owner, from_height, to_height FROM analytics.ownership_intervals"
            " WHERE token_id = %s ORDER BY from_height",
            (token,),
        ).fetchall() == [("ST1A", 1, 2), ("ST1B", 2, None)]
        row = conn.execute("SELECT beneficiary_name, mwh FROM analytics.retirements").fetchone()
        assert row is not None and row[0] == "ACME" and float(row[1]) == 7.0
        settings = conn.execute(
            "SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole"
            " WHERE r.rolname = 'recchain_analyst'"
        ).fetchone()
        assert settings is not None and "statement_timeout=30s" in settings[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM public.certificates")
        conn.rollback()
        conn.execute("SET ROLE recchain_analyst")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM public.retirements")
        conn.rollback()
        comment = conn.execute(
            "SELECT obj_description('analytics.retirements'::regclass)"
        ).fetchone()
        assert comment is not None and "claim" in comment[0]
