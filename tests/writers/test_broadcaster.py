"""The broadcaster against a protocol-faithful fake node (see conftest): each rejection class,
outages, duplicates at the node, concurrent broadcasters, and statuses the indexer owns."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.config import Settings
from tests.writers.conftest import ACCEPTED, FakeNode
from writers import outbox
from writers.broadcaster import GAVE_UP_REASON, Broadcaster
from writers.metrics import RelayMetrics
from writers.node import FINAL_REASONS, RETRYABLE_REASONS, NodeClient, Outcome, classify
from writers.policy import Policy

POLICY = Policy.from_settings(
    Settings(database_url=SecretStr("postgresql://unused/x"), network="testnet")
)


async def accept(engine: AsyncEngine, vector: dict[str, Any]) -> str:
    tx = POLICY.check(bytes.fromhex(vector["hex"]))
    await outbox.submit(engine, tx, "test")
    return tx.txid


async def row(engine: AsyncEngine, txid: str) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT status, reason, reason_data, attempts, last_error,"
                    " next_attempt_at > now() AS deferred FROM relay_txs WHERE txid = :t"
                ),
                {"t": txid},
            )
        ).one()


async def make_due(engine: AsyncEngine) -> None:
    """Let the retry delay pass without sleeping through it."""
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE relay_txs SET next_attempt_at = now()"))


def broadcaster(engine: AsyncEngine, url: str, **kw: Any) -> Broadcaster:
    options: dict[str, Any] = {"backoff_initial_s": 0.01, "tries_per_round": 2}
    options.update(kw)
    return Broadcaster(engine, NodeClient(url, timeout_s=5.0), RelayMetrics(), **options)


async def test_accepted_transactions_are_broadcast_once(
    engine: AsyncEngine, fake_node: tuple[FakeNode, str]
) -> None:
    node, url = fake_node
    txids = [await accept(engine, v) for v in ACCEPTED]
    b = broadcaster(engine, url)
    assert await b.run_once() == len(ACCEPTED)
    assert await b.run_once() == 0
    for txid in txids:
        assert (await row(engine, txid)).status == "broadcast"
        assert node.posts[txid.removeprefix("0x")] == 1
    async with engine.connect() as conn:
        outcomes = (
            await conn.execute(text("SELECT outcome, finished_at IS NOT NULL FROM relay_attempts"))
        ).all()
    assert outcomes == [("accepted", True)] * len(ACCEPTED)


@pytest.mark.parametrize(
    ("reason", "data"),
    [
        ("BadNonce", {"expected": 5, "actual": 0, "principal": "ST1..", "is_origin": True}),
        ("FeeTooLow", {"expected": 300, "actual": 180}),
        ("ConflictingNonceInMempool", None),
        ("NotEnoughFunds", {"expected": "0x00", "actual": "0x00"}),
        ("NoSuchContract", None),
        ("BadFunctionArgument", {"message": "type mismatch"}),
        ("SomeFutureReason", None),
    ],
)
async def test_final_rejections_are_recorded_and_not_retried(
    engine: AsyncEngine, fake_node: tuple[FakeNode, str], reason: str, data: Any
) -> None:
    node, url = fake_node
    txid = await accept(engine, ACCEPTED[0])
    node.script[txid.removeprefix("0x")] = [("reject", reason, data)]
    b = broadcaster(engine, url)
    await b.run_once()
    r = await row(engine, txid)
    assert (r.status, r.reason, r.reason_data) == ("rejected", reason, data)
    assert node.posts[txid.removeprefix("0x")] == 1
    assert await b.run_once() == 0


@pytest.mark.parametrize(
    "answer",
    [
        ("reject", "TooMuchChaining", None),
        ("reject", "ServerFailureDatabase", {"message": "locked"}),
        ("status", 503, b"unavailable"),
        ("status", 429, b"slow down"),
        ("status", 400, b"malformed HTTP request"),
    ],
)
async def test_retryable_answers_defer_then_succeed(
    engine: AsyncEngine, fake_node: tuple[FakeNode, str], answer: tuple[Any, ...]
) -> None:
    node, url = fake_node
    txid = await accept(engine, ACCEPTED[1])
    bare = txid.removeprefix("0x")
    node.script[bare] = [answer, answer, answer]
    b = broadcaster(engine, url, retry_base_s=60.0)
    await b.run_once()  # two tries, both refused for a transient reason
    r = await row(engine, txid)
    assert (r.status, r.attempts, r.deferred) == ("received", 1, True)
    assert r.last_error
    assert await b.run_once() == 0  # not due yet
    await make_due(engine)
    await b.run_once()  # third answer is transient again, then the node accepts
    assert (await row(engine, txid)).status == "broadcast"
    assert node.posts[bare] == 4


async def test_node_outage_keeps_rows_until_the_node_returns(
    engine: AsyncEngine, fake_node: tuple[FakeNode, str]
) -> None:
    node, url = fake_node
    txid = await accept(engine, ACCEPTED[2])
    down = broadcaster(engine, "http://127.0.0.1:9")  # nothing listens on the discard port
    await down.run_once()
    r = await row(engine, txid)
    assert (r.status, r.attempts, r.deferred) == ("received", 1, True)
    assert "ConnectError" in r.last_error
    await make_due(engine)
    await broadcaster(engine, url).run_once()
    assert (await row(engine, txid)).status == "broadcast"
    assert node.posts[txid.removeprefix("0x")] == 1


async def test_a_tx_already_at_the_node_counts_as_broadcast(
    engine: AsyncEngine, fake_node: tuple[FakeNode, str]
) -> None:
    node, url = fake_node
    txid = await accept(engine, ACCEPTED[3])
    node.mempool.add(txid.removeprefix("0x"))  # e.g. sent by a wallet directly, or a lost reply
    await broadcaster(engine, url).run_once()
    assert (await row(engine, txid)).status == "broadcast"


async def test_gives_up_after_max_rounds(
    engine: AsyncEngine, fake_node: tuple[FakeNode, str]
) -> None:
    node, url = fake_node
    txid = await accept(engine, ACCEPTED[4])
    node.default = [("status", 502, b"bad gateway")]
    b = broadcaster(engine, url, max_rounds=2, tries_per_round=1)
    await b.run_once()
    await make_due(engine)
    await b.run_once()
    r = await row(engine, txid)
    assert (r.status, r.reason, r.attempts) == ("rejected", GAVE_UP_REASON, 2)


async def test_two_broadcasters_never_send_one_row_twice(
    engine: AsyncEngine, fake_node: tuple[FakeNode, str]
) -> None:
    node, url = fake_node
    txids = [await accept(engine, v) for v in ACCEPTED]
    first, second = broadcaster(engine, url, batch=2), broadcaster(engine, url, batch=2)
    while sum(await asyncio.gather(first.run_once(), second.run_once())):
        pass
    assert all(node.posts[t.removeprefix("0x")] == 1 for t in txids)
    assert sum(node.posts.values()) == len(ACCEPTED)


async def test_statuses_set_by_the_indexer_are_never_overwritten(
    engine: AsyncEngine, fake_node: tuple[FakeNode, str]
) -> None:
    _, url = fake_node
    txid = await accept(engine, ACCEPTED[5])
    async with engine.begin() as conn:
        # The indexer saw it mined while the relay was still due to send it (e.g. the wallet
        # broadcast it too): the broadcaster must not drag it back.
        await conn.execute(
            text(
                "UPDATE relay_txs SET status = 'mined', block_height = 7, result = '0x0703'"
                " WHERE txid = :t"
            ),
            {"t": txid},
        )
    assert await broadcaster(engine, url).run_once() == 0
    assert (await row(engine, txid)).status == "mined"


async def test_an_attempt_recorded_as_accepted_is_not_sent_again(
    engine: AsyncEngine, fake_node: tuple[FakeNode, str]
) -> None:
    """A crash after the node's 200 was recorded but before the row was marked broadcast."""
    node, url = fake_node
    txid = await accept(engine, ACCEPTED[0])
    attempt = await outbox.start_attempt(engine, txid)
    await outbox.finish_attempt(engine, attempt, "accepted", 200, None)
    await broadcaster(engine, url).run_once()
    assert (await row(engine, txid)).status == "broadcast"
    assert node.posts[txid.removeprefix("0x")] == 0


async def attempts_of(engine: AsyncEngine, txid: str) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    text(
                        "SELECT outcome, http_status, detail FROM relay_attempts"
                        " WHERE txid = :t ORDER BY id"
                    ),
                    {"t": txid},
                )
            ).all()
        )


async def test_a_nonce_refusal_of_a_transaction_the_node_mined_is_broadcast(
    engine: AsyncEngine, fake_node: tuple[FakeNode, str]
) -> None:
    """The relay died between the node's acceptance and its record of it; the node has mined the
    transaction and forgotten it from its mempool, so a resend would get BadNonce. Asked by txid,
    the node's txindex has it: broadcast, never rejected. (tests/writers/test_crash.py kills a
    real relay process at that point.)"""
    node, url = fake_node
    txid = await accept(engine, ACCEPTED[0])
    bare = txid.removeprefix("0x")
    await outbox.start_attempt(engine, txid)  # the POST left; its answer never got recorded
    node.raw[bare] = bytes.fromhex(ACCEPTED[0]["hex"])
    node.mine(txid)
    await broadcaster(engine, url).run_once()
    r = await row(engine, txid)
    assert (r.status, r.reason) == ("broadcast", None)
    assert (node.lookups[bare], node.posts[bare]) == (1, 0)  # in doubt, held: not sent again
    # Another copy, the node asked only after its refusal (no attempt of it was in doubt).
    other = await accept(engine, ACCEPTED[1])
    node.raw[other.removeprefix("0x")] = bytes.fromhex(ACCEPTED[1]["hex"])
    node.mine(other)
    await broadcaster(engine, url).run_once()
    assert (await row(engine, other)).status == "broadcast"
    (attempt,) = await attempts_of(engine, other)
    assert (attempt.outcome, attempt.http_status) == ("accepted", 400)
    assert "BadNonce" in attempt.detail and "mined" in attempt.detail


async def test_a_nonce_refusal_the_node_cannot_explain_is_final(
    engine: AsyncEngine, fake_node: tuple[FakeNode, str]
) -> None:
    """No txindex and not in the mempool: the refusal stands (the indexer's `mined` record
    overrides it if the transaction shows up in a block: tests/indexer/test_relay_status.py)."""
    node, url = fake_node
    node.txindex = False
    txid = await accept(engine, ACCEPTED[2])
    node.raw[txid.removeprefix("0x")] = bytes.fromhex(ACCEPTED[2]["hex"])
    node.mine(txid)
    await broadcaster(engine, url).run_once()
    r = await row(engine, txid)
    assert (r.status, r.reason) == ("rejected", "BadNonce")
    (attempt,) = await attempts_of(engine, txid)
    assert attempt.outcome == "rejected"
    assert "no transaction index" in attempt.detail


async def test_a_conflicting_nonce_for_a_txid_pending_at_the_node_is_broadcast(
    engine: AsyncEngine, fake_node: tuple[FakeNode, str]
) -> None:
    """A node behind a balancer may refuse a copy of what the mempool already holds."""
    node, url = fake_node
    txid = await accept(engine, ACCEPTED[3])
    bare = txid.removeprefix("0x")
    node.raw[bare] = bytes.fromhex(ACCEPTED[3]["hex"])
    node.mempool.add(bare)
    node.script[bare] = [("reject", "ConflictingNonceInMempool", None)]
    await broadcaster(engine, url).run_once()
    assert (await row(engine, txid)).status == "broadcast"
    assert node.lookups[bare] == 1


async def test_a_lookup_answer_for_other_bytes_is_not_trusted(
    engine: AsyncEngine, fake_node: tuple[FakeNode, str]
) -> None:
    node, url = fake_node
    txid = await accept(engine, ACCEPTED[4])
    bare = txid.removeprefix("0x")
    node.raw[bare] = bytes.fromhex(ACCEPTED[5]["hex"])  # a proxy answering for another tx
    node.mine(txid)
    await broadcaster(engine, url).run_once()
    assert (await row(engine, txid)).status == "rejected"


async def test_an_attempt_in_doubt_the_node_lacks_is_sent_again_once(
    engine: AsyncEngine, fake_node: tuple[FakeNode, str]
) -> None:
    node, url = fake_node
    txid = await accept(engine, ACCEPTED[5])
    await outbox.start_attempt(engine, txid)  # a POST whose process died before it left
    await broadcaster(engine, url).run_once()
    bare = txid.removeprefix("0x")
    assert (await row(engine, txid)).status == "broadcast"
    assert (node.lookups[bare], node.posts[bare]) == (1, 1)


def test_classification_table() -> None:
    txid = "ab" * 32
    assert classify(200, f'"{txid}"'.encode(), "0x" + txid).outcome is Outcome.ACCEPTED
    assert classify(200, b'"' + b"cd" * 32 + b'"', txid).outcome is Outcome.RETRY
    for reason in FINAL_REASONS:
        body = f'{{"error":"transaction rejected","reason":"{reason}","txid":"{txid}"}}'
        assert classify(400, body.encode(), txid).outcome is Outcome.REJECTED
    for reason in RETRYABLE_REASONS:
        body = f'{{"error":"transaction rejected","reason":"{reason}","txid":"{txid}"}}'
        assert classify(400, body.encode(), txid).outcome is Outcome.RETRY
    assert classify(500, b"oops", txid).outcome is Outcome.RETRY
    assert not FINAL_REASONS & RETRYABLE_REASONS
