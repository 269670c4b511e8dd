"""Moves the outbox to the node: claim due rows, POST each, record what the node said.

Delivery is at-least-once towards the node and exactly-once in effect, by txid:

* a claimed row whose earlier attempt was recorded as accepted is marked broadcast unsent;
* a row whose earlier attempt never finished (its process died after the POST left) is first
  looked up at the node by txid, and marked broadcast unsent when the node holds it;
* a refusal is believed only once the node, asked for the txid, does not hold it: a resend of a
  transaction already mined comes back `BadNonce` (or `ConflictingNonceInMempool` while another
  copy waits), which is the node's view of the nonce, not of this transaction. When the node
  cannot tell (no txindex) the refusal is recorded, and the indexer's `mined` record, which
  overrides `rejected`, corrects it once the block arrives.

So the only repeated POST is one whose first copy the node had not finished admitting when it
was asked; the node admits a txid once and answers the repeat 200 or with a nonce refusal that
the lookup turns into `broadcast`.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_exponential

from db.outage import Outage
from writers import outbox
from writers.metrics import RelayMetrics
from writers.node import Known, NodeAnswer, NodeClient, Outcome

log = logging.getLogger("recchain.relay.broadcaster")

GAVE_UP_REASON = "BroadcastGaveUp"


class Broadcaster:
    def __init__(
        self,
        engine: AsyncEngine,
        node: NodeClient,
        metrics: RelayMetrics,
        *,
        batch: int = 32,
        parallel: int = 8,
        poll_s: float = 0.5,
        tries_per_round: int = 3,
        backoff_initial_s: float = 0.2,
        retry_base_s: float = 1.0,
        retry_max_s: float = 60.0,
        max_rounds: int = 50,
        outage: Outage | None = None,
    ) -> None:
        self.engine = engine
        self.outage = outage or Outage(log)
        self.node = node
        self.metrics = metrics
        self.batch = batch
        self.parallel = asyncio.Semaphore(parallel)
        self.poll_s = poll_s
        self.tries_per_round = tries_per_round
        self.backoff_initial_s = backoff_initial_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.max_rounds = max_rounds
        self.wake = asyncio.Event()

    async def run_once(self) -> int:
        """One claim round; returns how many rows it handled."""
        async with self.engine.connect() as conn, conn.begin():
            claimed = await outbox.claim(conn, self.batch)
            if not claimed:
                return 0
            answers = await asyncio.gather(*(self._send(c) for c in claimed))
            for row, answer in zip(claimed, answers, strict=True):
                await self._apply(conn, row, answer)
        return len(claimed)

    async def _send(self, row: outbox.Claimed) -> NodeAnswer:
        if row.already_accepted:
            return NodeAnswer(Outcome.ACCEPTED, None, detail="accepted by an earlier attempt")
        async with self.parallel:
            if row.in_doubt:
                known = await self._lookup(row.txid)
                if known.held:
                    log.info("%s already at the node (%s); not sent again", row.txid, known.detail)
                    return NodeAnswer(Outcome.ACCEPTED, None, detail=known.detail)
            # Short in-round backoff for blips (node restarting, a 503); longer outages fall
            # back to the durable schedule in `next_attempt_at`. After the last try, the last
            # answer (a RETRY) is returned rather than raised.
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self.tries_per_round),
                wait=wait_exponential(multiplier=self.backoff_initial_s, max=5.0),
                retry=retry_if_result(lambda a: a.outcome is Outcome.RETRY),
                retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
            )
            answer: NodeAnswer = await retrying(self._post_once, row)
            return answer

    async def _lookup(self, txid: str) -> Known:
        known = await self.node.lookup(txid)
        self.metrics.node_lookups.labels(known.presence.value).inc()
        return known

    async def _post_once(self, row: outbox.Claimed) -> NodeAnswer:
        attempt_id = await outbox.start_attempt(self.engine, row.txid)
        answer = await self.node.post(row.raw, row.txid)
        if answer.outcome is Outcome.REJECTED:
            known = await self._lookup(row.txid)
            if known.held:
                log.info(
                    "node answered %s for %s but holds it (%s): broadcast",
                    answer.reason,
                    row.txid,
                    known.detail,
                )
                answer = NodeAnswer(
                    Outcome.ACCEPTED,
                    answer.http_status,
                    answer.reason,
                    answer.reason_data,
                    detail=f"{answer.reason}, but {known.detail}",
                )
            elif known.detail:
                answer = NodeAnswer(
                    answer.outcome,
                    answer.http_status,
                    answer.reason,
                    answer.reason_data,
                    detail=f"{answer.detail}; lookup: {known.detail}",
                )
        await outbox.finish_attempt(
            self.engine, attempt_id, answer.outcome.value, answer.http_status, answer.detail
        )
        self.metrics.broadcast_attempts.labels(answer.outcome.value, answer.reason or "").inc()
        return answer

    async def _apply(self, conn: AsyncConnection, row: outbox.Claimed, answer: NodeAnswer) -> None:
        if answer.outcome is Outcome.ACCEPTED:
            await outbox.mark_broadcast(conn, row.txid)
        elif answer.outcome is Outcome.REJECTED:
            log.info("node rejected %s: %s", row.txid, answer.reason)
            await outbox.mark_rejected(conn, row.txid, answer.reason or "", answer.reason_data)
        elif row.attempts + 1 >= self.max_rounds:
            log.warning(
                "giving up on %s after %d rounds: %s", row.txid, row.attempts + 1, answer.detail
            )
            await outbox.mark_rejected(
                conn, row.txid, GAVE_UP_REASON, {"last_error": answer.detail or ""}
            )
        else:
            delay = min(self.retry_base_s * 2**row.attempts, self.retry_max_s)
            await outbox.mark_retry(conn, row.txid, delay, answer.detail or "retry")

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_depth = 0.0
        while not stop.is_set():
            try:
                handled = await self.run_once()
                if loop.time() >= next_depth:
                    self.metrics.outbox_depth.set(await outbox.depth(self.engine))
                    next_depth = loop.time() + 1.0
                self.outage.ok()
            except Exception as exc:
                # A database or node hiccup must not kill the broadcaster; rows stay in the
                # outbox and are claimed again once the database answers (one log line per
                # outage, backoff meanwhile).
                await self.outage.pause(self.outage.failed(exc, "broadcast round"), stop)
                continue
            if handled:
                continue
            self.wake.clear()
            waiter = asyncio.ensure_future(self.wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait(
                {waiter, stopper}, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            stopper.cancel()
