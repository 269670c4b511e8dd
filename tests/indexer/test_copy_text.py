"""The COPY buffers the pipeline writes read back as the values they were given."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from db.session import to_libpq_url
from indexer.state import Step, copy_rows, copy_text, load_column_types, send, stage_copy

ROWS: list[tuple[Any, ...]] = [
    (
        "tab\there, newline\nthere, cr\r, backslash \\ and \\N",
        7,
        True,
        b"\x00\\\t\xff",
        {"irec": "IREC\t1", "quote": 'a"b\\c'},
        Decimal("-97.743061"),
        datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        date(2025, 12, 31),
        "\\x00ff",  # hex text for a bytea column, as the pipeline passes raw_tx
    ),
    ("", 0, False, b"", {}, Decimal("0E-6"), None, None, None),
    (None, None, None, None, None, None, None, None, None),
]
COLS = ["t", "i", "b", "raw", "j", "n", "ts", "d", "hex"]


def test_copy_text_format() -> None:
    assert copy_text([]) == ""
    assert copy_text([("a\tb", None, 5, False)]) == "a\\tb\t\\N\t5\tf\n"


async def test_copy_rows_round_trip(db_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(to_libpq_url(db_url)) as conn:
        await conn.execute(
            "CREATE TABLE copy_probe (t text, i bigint, b boolean, raw bytea, j jsonb, "
            "n numeric, ts timestamptz, d date, hex bytea)"
        )
        await copy_rows(conn, "copy_probe", COLS, ROWS)
        cur = await conn.execute(f"SELECT {', '.join(COLS)} FROM copy_probe ORDER BY i NULLS LAST")
        back = await cur.fetchall()
    assert back[0] == (*ROWS[1][:-1], None)
    assert back[1] == (*ROWS[0][:-1], b"\x00\xff")
    assert back[2] == ROWS[2]


async def test_staged_binary_copy_round_trip(db_url: str) -> None:
    """The pipeline's staged COPY (binary, psycopg's dumpers) reads back as the values given;
    an int4 value out of range is refused by PostgreSQL, not wrapped around by the dumper."""
    cols = ["i", "b", "t", "n", "ts", "d", "raw", "j", "ok"]
    rows: list[tuple[Any, ...]] = [
        (
            -7,
            2**40,
            "tab\there, backslash \\ and \\N",
            Decimal("-97.743061"),
            datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
            date(2025, 12, 31),
            b"\x00\\\t\xff",
            {"irec": "IREC\t1"},
            True,
        ),
        (None,) * len(cols),
    ]
    async with await psycopg.AsyncConnection.connect(to_libpq_url(db_url)) as conn:
        await conn.execute(
            "CREATE TABLE copy_staged (i int4, b bigint, t text, n numeric(9, 6), "
            "ts timestamptz, d date, raw bytea, j jsonb, ok boolean)"
        )
        await load_column_types(conn, ["copy_staged"])
        steps: list[Step] = []
        stage_copy(steps, "copy_staged", cols, rows)
        assert "FORMAT BINARY" in steps[0][1].as_string(conn)
        await send(conn, steps)
        cur = await conn.execute(f"SELECT {', '.join(cols)} FROM copy_staged ORDER BY i NULLS LAST")
        assert await cur.fetchall() == rows
        only_nulls: list[Step] = []  # a lone NULL in an int4 column
        stage_copy(only_nulls, "copy_staged", cols, [rows[1]])
        await send(conn, only_nulls)
        cur = await conn.execute("SELECT count(*) FROM copy_staged WHERE i IS NULL")
        assert await cur.fetchone() == (2,)
        too_big: list[Step] = []
        stage_copy(too_big, "copy_staged", ["i"], [(1,), (2**31,)])
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):
            await send(conn, too_big)
