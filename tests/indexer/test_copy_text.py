"""The COPY text buffer the pipeline writes reads back as the values it was given."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg

from db.session import to_libpq_url
from indexer.state import copy_rows, copy_text

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
