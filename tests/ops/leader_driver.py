"""A stand-in indexer for the failover tests: lead `NAME`, record each term, hold until killed.

`python -m tests.ops.leader_driver URL NAME` logs (JSON, on stdout) "standing by" while another
process leads and "acquired leadership" once it leads. While leading it appends a row per
second to `leader_terms` so the test can check, from the database alone, that no two
processes ever led at the same time.
"""

from __future__ import annotations

import asyncio
import os
import sys

import psycopg

from db.leader import Leadership, run_as_leader
from db.session import to_libpq_url
from infra.config import Settings
from infra.logging import configure_logging


async def lead(url: str, leadership: Leadership) -> None:
    async with await psycopg.AsyncConnection.connect(to_libpq_url(url), autocommit=True) as conn:
        while True:
            leadership.ensure()
            await conn.execute(
                "INSERT INTO leader_terms (pid, at) VALUES (%s, clock_timestamp())",
                (os.getpid(),),
            )
            await asyncio.sleep(0.2)


async def main(url: str, name: str) -> None:
    await run_as_leader(
        url, name, lambda held: lead(url, held), poll_interval=0.1, check_interval=0.2
    )


if __name__ == "__main__":
    configure_logging(Settings(log_json=True, log_level="INFO"), stream=sys.stdout)
    asyncio.run(main(sys.argv[1], sys.argv[2]))
