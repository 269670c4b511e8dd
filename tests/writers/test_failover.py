"""Two real `recchain relay` processes share one outbox; one is killed with SIGKILL while its
POSTs are at the devnet node: nothing accepted is lost, the node admits and mines every
transaction exactly once, and the survivor takes over the dead one's rows at once (their row
locks end with its connection).

What reached the node comes from the node's own log (tests/writers/processes.py). A POST may be
repeated only for a transaction the dead relay had in flight and that the node had not finished
admitting when the survivor asked for it; the node then answers the repeat 200 (it holds the
txid) or refuses its spent nonce, and the survivor's lookup by txid turns that into `broadcast`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.writers.conftest import relay_settings
from tests.writers.processes import (
    DEPLOYER,
    devnet_process,
    needs_node,
    relay_process,
    sign_call,
    uint_cv,
    wait_for,
)
from tests.writers.test_crash import AnswerThief
from writers import outbox
from writers.policy import Policy

TXS = 10
ALLOWED = '["marketplace.set-fee-bps"]'


async def unfinished(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT txid FROM relay_attempts WHERE outcome IS NULL"))
        return set(rows.scalars())


async def statuses(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        return dict((await conn.execute(text("SELECT txid, status FROM relay_txs"))).all())


async def test_kill_one_of_two_relays_mid_broadcast(db_url: str, engine: AsyncEngine) -> None:
    needs_node()
    async with devnet_process() as node:
        async with httpx.AsyncClient() as http:
            nonce = (await http.get(f"{node.url}/v2/accounts/{DEPLOYER}")).json()["nonce"]
        call = "marketplace.set-fee-bps"
        signed = await asyncio.gather(
            *(sign_call(call, [uint_cv(100 + i)], sender="deployer", nonce=nonce + i)
              for i in range(TXS))
        )  # fmt: skip
        txids = [t for _, t in signed]
        # Accepted earlier (by a relay since gone): the first relay finds them all due and
        # claims them in one round.
        policy = Policy.from_settings(
            relay_settings(db_url, allowed_functions=["marketplace.set-fee-bps"])
        )
        for raw, _ in signed:
            await outbox.submit(engine, policy.check(bytes.fromhex(raw)), "test")
        thief = AnswerThief(node.url)
        async with thief.running() as proxy:
            thief.steal = True  # the first relay's POSTs reach the node, their answers do not
            async with relay_process(
                db_url, proxy, RECCHAIN_RELAY__ALLOWED_FUNCTIONS=ALLOWED
            ) as first:

                async def first_has_posts_at_the_node() -> bool:
                    return len(thief.stolen) >= 2

                await wait_for(first_has_posts_at_the_node, "the first relay's POSTs to land")
                async with relay_process(
                    db_url, node.url, RECCHAIN_RELAY__ALLOWED_FUNCTIONS=ALLOWED
                ):
                    held = {t for t, s in (await statuses(engine)).items() if s == "received"}
                    in_doubt = await unfinished(engine)
                    os.kill(first.pid, signal.SIGKILL)
                    killed_at = time.monotonic()
                    assert held, "the kill caught rows the first relay was sending"
                    assert in_doubt and in_doubt <= held

                    first_taken: float | None = None

                    async def all_broadcast() -> bool:
                        nonlocal first_taken
                        now = await statuses(engine)
                        if first_taken is None and any(now[t] != "received" for t in held):
                            first_taken = time.monotonic() - killed_at
                        return all(s == "broadcast" for s in now.values())

                    await wait_for(all_broadcast, "the survivor to broadcast every row", 120)
                    all_taken = time.monotonic() - killed_at

                    async def all_mined() -> bool:
                        return all(t.removeprefix("0x") in node.mined for t in txids)

                    await wait_for(all_mined, "the node to mine every transaction", 120)
    assert set(await statuses(engine)) == set(txids)  # nothing accepted was lost
    assert first_taken is not None
    for t in txids:
        bare = t.removeprefix("0x")
        assert len(node.mined[bare]) == 1, (t, node.mined[bare])  # admitted and mined once
        assert node.mined[bare][0][1] == "success"
        answers = node.answers[bare]
        assert answers[0] == "200", (t, answers)
        # A repeat is the node holding the txid (200) or its spent nonce, never a new admission.
        assert all(a in ("200", "400 BadNonce") for a in answers[1:]), (t, answers)
        if len(answers) > 1:
            assert t in held, (t, answers)  # only a row in flight at the kill is ever repeated
    repeats = sum(node.posts[t.removeprefix("0x")] - 1 for t in txids)
    print(
        f"\nrelay failover: {len(held)} rows held by the killed relay ({len(in_doubt)} POSTs in"
        f" flight); the survivor settled the"
        f" first {first_taken:.2f} s and all {all_taken:.2f} s after the kill;"
        f" {repeats} POSTs repeated of {sum(node.posts.values())}"
    )
