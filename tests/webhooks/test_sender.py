"""The sender against real HTTP receivers on loopback (ops/bench/receiver.py) and a real
PostgreSQL fed by the real indexer pipeline: in order, signed, retried, dead-lettered and
redelivered, fork-aware, guarded."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from db.session import engine_scope
from db.webhooks import store
from infra.config import IndexerSettings
from ops.bench.chaingen import Chain, to_requests
from ops.bench.receiver import Behaviour, Receiver
from tests.indexer.helpers import query, run_requests
from tests.webhooks.helpers import (
    events,
    fast,
    register,
    running_sender,
    statuses,
    wait_for,
)
from writers.webhooks import signing


async def _chain(db_url: str, blocks: int, seed: int, label: str = "main") -> list[Any]:
    made = Chain(seed=seed).grow(None, blocks, label)
    await run_requests(db_url, [[r] for r in to_requests(made)])
    return made


def _all(db_url: str, endpoint_id: int, status: str) -> bool:
    got = statuses(db_url, endpoint_id)
    return bool(got) and set(got) == {status}


def _seqs(receiver: Receiver, path: str) -> list[int]:
    return [d.json["sequence"] for d in receiver.of(path)]


async def test_delivers_in_order_signed_with_the_block(db_url: str) -> None:
    async with Receiver() as rx:
        ep = await register(db_url, ["block", "certificate"], url=rx.url("/signed"))
        rx.behaviours["/signed"] = Behaviour(secrets=[ep["secret"]])
        await _chain(db_url, 6, seed=21)
        n = len(events(db_url, ep["id"]))
        async with running_sender(db_url, fast(db_url)):
            await wait_for(lambda: _all(db_url, ep["id"], "delivered"), "every event delivered")
    got = rx.of("/signed")
    assert len(got) == n and _seqs(rx, "/signed") == list(range(1, n + 1))
    assert all(d.verified and d.status == 200 for d in got)
    stored = events(db_url, ep["id"])
    for d, e in zip(got, stored, strict=True):
        body = d.json
        assert d.headers["recchain-event-id"] == body["id"] == e["event_id"]
        assert d.headers["idempotency-key"] == e["event_id"]
        assert d.headers["recchain-event-type"] == body["type"] == e["type"]
        assert body["block"] == {
            "height": e["block_height"],
            "hash": e["index_block_hash"],
            "finalized": False,  # finality depth 1000: nothing is final yet
        }
    cert = next(d.json for d in got if d.json["type"] == "certificate")
    assert isinstance(cert["data"]["certificate"]["wh"], str), "BigInt travels as a string"
    assert query(db_url, "SELECT count(*) FROM webhook_attempts WHERE http_status = 200") == [(n,)]


async def test_endpoint_down_for_a_while_gets_everything_in_order(db_url: str) -> None:
    rx = Receiver()
    await rx.start()
    await rx.stop()  # its port is known, nothing listens there
    ep = await register(db_url, ["block"], url=rx.url("/down"))
    await _chain(db_url, 5, seed=22)
    async with running_sender(db_url, fast(db_url)):

        def failed_a_few() -> bool:
            rows = query(db_url, "SELECT count(*) FROM webhook_attempts WHERE error IS NOT NULL")
            return rows[0][0] >= 3

        await wait_for(failed_a_few, "connection failures while the endpoint is down")
        assert set(statuses(db_url, ep["id"])) == {"pending"}
        await rx.start()  # back up, same port
        await wait_for(lambda: _all(db_url, ep["id"], "delivered"), "delivery after the outage")
        await rx.stop()
    assert _seqs(rx, "/down") == list(range(1, 6))
    head = events(db_url, ep["id"])[0]
    assert head["attempts"] >= 3 and head["last_status"] == 200


async def test_500_then_200_is_retried_and_keeps_order(db_url: str) -> None:
    async with Receiver() as rx:
        rx.behaviours["/flaky"] = Behaviour(fail_first=2)
        ep = await register(db_url, ["block"], url=rx.url("/flaky"))
        await _chain(db_url, 4, seed=23)
        async with running_sender(db_url, fast(db_url)) as sender:
            await wait_for(lambda: _all(db_url, ep["id"], "delivered"), "delivery after 500s")
            # Observed right after each outcome is recorded (so just after the table says so).
            await wait_for(
                lambda: (
                    sender.metrics.registry.get_sample_value(
                        "recchain_webhooks_delivery_lag_seconds_count"
                    )
                    == 4
                ),
                "a commit -> delivered lag per delivery",
            )
    # The first event was answered 500, 500, 200; nothing overtook it.
    assert [(d.json["sequence"], d.status) for d in rx.of("/flaky")] == [
        (1, 500), (1, 500), (1, 200), (2, 200), (3, 200), (4, 200),
    ]  # fmt: skip
    async with engine_scope(db_url, pool_size=1) as engine, engine.connect() as conn:
        first = events(db_url, ep["id"])[0]["event_id"]
        history = await store.attempts(conn, ep["id"], None, first)
    assert [a["http_status"] for a in history["attempts"]] == [500, 500, 200]
    assert history["status"] == "delivered"


async def test_a_slow_endpoint_delays_no_other(db_url: str) -> None:
    async with Receiver() as rx:
        held = asyncio.Event()
        rx.behaviours["/slow"] = Behaviour(hold=held)
        slow = await register(db_url, ["block"], url=rx.url("/slow"))
        quick = await register(db_url, ["block"], url=rx.url("/quick"))
        await _chain(db_url, 8, seed=24)
        async with running_sender(db_url, fast(db_url, timeout_s=30.0)):
            await wait_for(lambda: _all(db_url, quick["id"], "delivered"), "the quick endpoint")
            # Meanwhile the slow one still has its first delivery open, and nothing else.
            assert len(rx.of("/slow")) == 1 and rx.in_flight["/slow"] == 1
            held.set()
            await wait_for(lambda: _all(db_url, slow["id"], "delivered"), "the slow endpoint")
    assert _seqs(rx, "/slow") == list(range(1, 9))
    assert rx.max_in_flight["/slow"] == 1 and rx.max_in_flight["/quick"] == 1


async def test_timeouts_are_failures_and_retried(db_url: str) -> None:
    async with Receiver() as rx:
        rx.behaviours["/sleepy"] = Behaviour(delay_s=3.0)
        ep = await register(db_url, ["block"], url=rx.url("/sleepy"))
        await _chain(db_url, 1, seed=25)
        async with running_sender(db_url, fast(db_url, timeout_s=0.5)):

            def timed_out() -> bool:
                rows = query(db_url, "SELECT error FROM webhook_attempts WHERE error IS NOT NULL")
                return len(rows) >= 2

            await wait_for(timed_out, "two timed-out attempts")
    rows = query(db_url, "SELECT error, duration_ms FROM webhook_attempts ORDER BY id")
    assert all("timeout" in r[0] for r in rows[:2])
    assert all(r[1] < 3000 for r in rows[:2]), "the sender did not wait for the slow answer"
    assert statuses(db_url, ep["id"]) == ["pending"]


async def test_retry_after_is_honoured(db_url: str) -> None:
    async with Receiver() as rx:
        rx.behaviours["/busy"] = Behaviour(fail_first=1, fail_status=429, retry_after="2")
        ep = await register(db_url, ["block"], url=rx.url("/busy"))
        await _chain(db_url, 1, seed=26)
        async with running_sender(db_url, fast(db_url)):
            await wait_for(lambda: _all(db_url, ep["id"], "delivered"), "delivery after a 429")
    first, second = rx.of("/busy")
    assert first.status == 429 and second.status == 200
    assert second.received - first.received >= 1.9  # not the 0.05 s backoff


async def test_dead_letters_are_visible_and_redelivered_in_order(db_url: str) -> None:
    async with Receiver() as rx:
        rx.behaviours["/broken"] = Behaviour(status=503)
        ep = await register(db_url, ["block"], url=rx.url("/broken"))
        await _chain(db_url, 3, seed=27)
        settings = fast(db_url, dead_letter_after_s=0.3)
        async with running_sender(db_url, settings) as sender:
            await wait_for(lambda: _all(db_url, ep["id"], "dead"), "every event a dead letter")
            labels = {"endpoint": str(ep["id"])}
            registry = sender.metrics.registry

            def sample(name: str, **extra: str) -> float | None:
                return registry.get_sample_value(name, {**labels, **extra})

            # Counted right after each outcome is recorded; the gauges are read from the
            # outbox every few seconds.
            await wait_for(
                lambda: sample("recchain_webhooks_deliveries_total", outcome="dead") == 3,
                "three dead letters counted",
            )
            await wait_for(
                lambda: sample("recchain_webhooks_dead_letters") == 3, "the dead-letter gauge"
            )
            assert sample("recchain_webhooks_queue_depth") == 0
            assert sample("recchain_webhooks_oldest_pending_seconds") == 0
        async with engine_scope(db_url, pool_size=1) as engine, engine.begin() as conn:
            dead = await store.deliveries(conn, ep["id"], None, status="dead")
            listed = await store.get_endpoint(conn, ep["id"], None)
        assert [d["seq"] for d in dead] == [3, 2, 1]
        assert listed is not None and listed["dead"] == 3 and listed["pending"] == 0
        rx.behaviours["/broken"] = Behaviour()  # fixed
        before = len(rx.of("/broken"))
        async with engine_scope(db_url, pool_size=1) as engine, engine.begin() as conn:
            assert await store.redeliver(conn, ep["id"], None, dead=True) == 3
        async with running_sender(db_url, settings):
            await wait_for(lambda: _all(db_url, ep["id"], "delivered"), "the redelivery")
    again = rx.of("/broken")[before:]
    assert [d.json["sequence"] for d in again] == [1, 2, 3]
    assert all(d.status == 200 for d in again)


async def test_secret_rotation_signs_with_both_during_the_overlap(db_url: str) -> None:
    async with Receiver() as rx:
        ep = await register(db_url, ["block"], url=rx.url("/rotating"))
        old = ep["secret"]
        async with engine_scope(db_url, pool_size=1) as engine, engine.begin() as conn:
            rotated = await store.rotate_secret(conn, ep["id"], None, overlap_s=3600)
        new = rotated["secret"]
        assert new != old and new.startswith("whsec_")
        rx.behaviours["/rotating"] = Behaviour(secrets=[old])  # a receiver not yet switched
        await _chain(db_url, 2, seed=28)
        async with running_sender(db_url, fast(db_url)):
            await wait_for(lambda: _all(db_url, ep["id"], "delivered"), "signed with both")
            for d in rx.of("/rotating"):
                header = d.headers["recchain-signature"]
                assert header.count("v1=") == 2
                assert signing.verify(header, d.body, new) and signing.verify(header, d.body, old)
            # The overlap ends: only the new secret signs.
            async with engine_scope(db_url, pool_size=1) as engine, engine.begin() as conn:
                await conn.execute(
                    text("UPDATE webhook_endpoints SET previous_secret_until = now()")
                )
            rx.behaviours["/rotating"] = Behaviour(secrets=[new])
            await _chain_more(db_url, seed=28)
            await wait_for(lambda: _all(db_url, ep["id"], "delivered"), "signed with the new")
    last = rx.of("/rotating")[-1]
    assert last.headers["recchain-signature"].count("v1=") == 1 and last.verified
    assert not signing.verify(last.headers["recchain-signature"], last.body, old)


async def _chain_more(db_url: str, seed: int) -> None:
    """One more block on top of the canonical tip."""
    chain = Chain(seed=seed)
    grown = chain.grow(None, 2, "main")  # the same blocks as before (duplicates: ignored)
    more = chain.grow(grown[-1]["index_block_hash"], 1, "main")
    await run_requests(db_url, [[r] for r in to_requests(grown + more)])


def test_signature_verification_rejects_tampering_and_replays() -> None:
    body = b'{"id":"x"}'
    header = signing.sign(["whsec_a"], 1_000_000, body)
    assert signing.verify(header, body, "whsec_a", now=1_000_100)
    assert not signing.verify(header, body + b" ", "whsec_a", now=1_000_100)
    assert not signing.verify(header, body, "whsec_b", now=1_000_100)
    assert not signing.verify(header, body, "whsec_a", now=1_000_000 + 301)  # replay window
    assert not signing.verify("v1=" + header.split("v1=")[1], body, "whsec_a", now=1_000_000)


async def test_internal_addresses_are_refused_unless_allowed(db_url: str) -> None:
    async with Receiver() as rx:
        settings = fast(db_url, allow_internal_hosts=[])
        try:
            await store.check_destination(rx.url("/inside"), settings)
        except store.WebhookError as exc:
            assert exc.code == "destination_refused" and "loopback" in exc.message
        else:
            raise AssertionError("loopback must be refused")
        # Registered while allowed, delivered by a sender that no longer allows it.
        ep = await register(db_url, ["block"], url=rx.url("/inside"))
        await _chain(db_url, 1, seed=29)
        async with running_sender(db_url, settings):

            def refused() -> bool:
                rows = query(db_url, "SELECT error FROM webhook_attempts")
                return bool(rows) and all("refused" in r[0] for r in rows)

            await wait_for(refused, "a refused attempt")
        assert rx.of("/inside") == [], "no connection was made"
        assert statuses(db_url, ep["id"]) == ["pending"]


async def test_response_bodies_are_capped_and_redirects_not_followed(db_url: str) -> None:
    async with Receiver() as rx:
        rx.behaviours["/huge"] = Behaviour(body_bytes=20 * 1024 * 1024)
        rx.behaviours["/moved"] = Behaviour(status=302, location=rx.url("/huge"))
        huge = await register(db_url, ["block"], url=rx.url("/huge"))
        moved = await register(db_url, ["block"], url=rx.url("/moved"))
        await _chain(db_url, 1, seed=30)
        async with running_sender(db_url, fast(db_url, max_response_bytes=100)):
            await wait_for(lambda: _all(db_url, huge["id"], "delivered"), "the huge answer")

            def redirect_failed() -> bool:
                return bool(query(db_url, "SELECT 1 FROM webhook_attempts WHERE http_status = 302"))

            await wait_for(redirect_failed, "the 302 recorded as a failure")
    rows = query(
        db_url,
        "SELECT length(response), duration_ms FROM webhook_attempts WHERE endpoint_id = %s",
        huge["id"],
    )
    assert rows[0][0] == 100
    assert statuses(db_url, moved["id"]) == ["pending"]
    assert len(rx.of("/huge")) == 1, "the redirect was not followed"


async def test_fork_reaches_the_receiver_as_a_rollback(db_url: str) -> None:
    async with Receiver() as rx:
        ep = await register(db_url, ["block"], url=rx.url("/fork"))
        chain = Chain(seed=31)
        main = chain.grow(None, 6, "main")
        side = chain.grow(main[2]["index_block_hash"], 5, "side")  # 4..8 beat 6
        async with running_sender(db_url, fast(db_url)):
            await run_requests(db_url, [[r] for r in to_requests(main)])
            await wait_for(lambda: len(rx.of("/fork")) == 6, "the main branch delivered")
            await run_requests(db_url, [[r] for r in to_requests(side)])
            await wait_for(
                lambda: (
                    set(statuses(db_url, ep["id"])) <= {"delivered", "retracted"}
                    and len(events(db_url, ep["id"])) > 7
                ),
                "the fork delivered",
            )
    got = [d.json for d in rx.of("/fork")]
    assert [g["sequence"] for g in got] == list(range(1, len(got) + 1))
    rollback = next(g for g in got if g["type"] == "rollback")
    orphaned = {b["index_block_hash"] for b in main[3:]}
    retracted = [g["id"] for g in got if g["type"] == "block" and g["block"]["hash"] in orphaned]
    assert rollback["data"]["retracts"] == retracted and len(retracted) == 3
    assert set(rollback["data"]["rolledBack"]) == orphaned
    assert rollback["block"]["height"] == 3
    after = [g for g in got if g["sequence"] > rollback["sequence"]]
    assert [g["block"]["hash"] for g in after] == [b["index_block_hash"] for b in side]


async def test_finalized_flag_and_delivery_at_finality(db_url: str) -> None:
    async with Receiver() as rx:
        tip = await register(db_url, ["block"], url=rx.url("/tip"))
        final = await register(db_url, ["block"], url=rx.url("/final"), delivery="final")
        settings = fast(db_url)
        settings.indexer = IndexerSettings(finality_depth=3)
        blocks = Chain(seed=32).grow(None, 8, "main")
        await run_requests(db_url, [[r] for r in to_requests(blocks)], settings=settings)
        async with running_sender(db_url, settings):
            await wait_for(lambda: _all(db_url, tip["id"], "delivered"), "tip deliveries")
            await wait_for(lambda: _all(db_url, final["id"], "delivered"), "final deliveries")
    # Delivered after the whole chain was indexed (tip 8): heights <= 5 are final by then.
    assert [(d.json["block"]["height"], d.json["block"]["finalized"]) for d in rx.of("/tip")] == [
        (h, h <= 5) for h in range(1, 9)
    ]
    assert [d.json["block"]["height"] for d in rx.of("/final")] == [1, 2, 3, 4, 5]
    assert all(d.json["block"]["finalized"] for d in rx.of("/final"))


async def test_retention_deletes_old_finished_events_only(db_url: str) -> None:
    async with Receiver() as rx:
        ep = await register(db_url, ["block"], url=rx.url("/old"))
        await _chain(db_url, 3, seed=33)
        async with running_sender(db_url, fast(db_url, retention_days=30)) as sender:
            await wait_for(lambda: _all(db_url, ep["id"], "delivered"), "delivered")
            async with engine_scope(db_url, pool_size=1) as engine, engine.begin() as conn:
                # Two of them are old; one of those is pending again (redelivered).
                await conn.execute(
                    text(
                        "UPDATE webhook_events SET created_at = now() - interval '40 days'"
                        " WHERE seq <= 2"
                    )
                )
                await conn.execute(
                    text(
                        "UPDATE webhook_events SET status = 'pending', next_attempt_at ="
                        " now() + interval '1 hour' WHERE seq = 1"
                    )
                )
            await sender._prune()
    assert [(e["seq"], e["status"]) for e in events(db_url, ep["id"])] == [
        (1, "pending"), (3, "delivered"),
    ]  # fmt: skip
    assert query(
        db_url, "SELECT count(*) FROM webhook_attempts WHERE endpoint_id = %s", ep["id"]
    ) == [(2,)]
