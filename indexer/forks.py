"""Chain placement: where a block goes (extends the tip, a fork, an orphan waiting for its
parent, a sibling of the root), orphan adoption, and the rollback of everything above a common
ancestor before the winning branch is applied from its stored events (docs/stacks.md, "Forks
and finality")."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from psycopg import sql

from db.channels import BLOCKS
from db.finality import signed_final_height
from db.models.base import FACT_TABLES, VERSIONED_TABLES
from db.webhooks import feed as webhooks
from indexer.batch import Batch, fit_notify
from indexer.block import Block, BlockHeader, Event, Tx
from indexer.catchup import NeedsSerial
from indexer.core import IndexerCore
from indexer.errors import FinalityError
from indexer.requests import Outcome, decode_watched
from indexer.state import (
    KEYS,
)

log = logging.getLogger("recchain.indexer")


GENESIS = "0x" + "00" * 32


@dataclass(slots=True)
class Known:
    height: int
    parent: str
    canonical: bool
    orphan: bool


class ChainPlacement(IndexerCore):
    """Decides where each block of a batch goes and undoes what a fork orphans."""

    async def _prefetch_blocks(self, hashes: set[str]) -> None:
        """One query for the block index entries a batch needs (not one per block)."""
        missing = [h for h in hashes if h not in self._known]
        if not missing:
            return
        cur = await self.pg.execute(
            "SELECT index_block_hash, block_height, parent_index_block_hash, canonical, orphan "
            "FROM blocks WHERE index_block_hash = ANY(%b)",
            (missing,),
        )
        for row in await cur.fetchall():
            self._known[row[0]] = Known(row[1], row[2], row[3], row[4])
        self._absent.update(h for h in missing if h not in self._known)

    async def _known_block(self, block_hash: str) -> Known | None:
        known = self._known.get(block_hash)
        if known is None:
            if block_hash in self._absent:
                return None
            cur = await self.pg.execute(
                "SELECT block_height, parent_index_block_hash, canonical, orphan FROM blocks "
                "WHERE index_block_hash = %s",
                (block_hash,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            known = self._known[block_hash] = Known(row[0], row[1], row[2], row[3])
        return known

    async def _on_block(self, batch: Batch, block: Block, raw_id: int | None) -> Outcome:
        start = self.settings.indexer.start_height
        if block.height < start:
            batch.ignored += 1
            return Outcome("ignored", f"below indexer.start_height {start}; not applied")
        if await self._known_block(block.hash) is not None:
            return Outcome("duplicate")
        parent = await self._known_block(block.header.parent_index_block_hash)
        # A root needs no parent: with nothing indexed yet it is applied; otherwise it is a
        # sibling of the root, kept like any sibling, whose branch replaces the root's if it
        # grows higher (`_reorg`). Any other block waits for its ancestors like an orphan.
        root = parent is None and (
            block.height == start or block.header.parent_index_block_hash == GENESIS
        )
        orphan = not root and (parent is None or parent.orphan)
        if orphan and self._ahead:
            raise NeedsSerial
        self._known[block.hash] = Known(
            block.height, block.header.parent_index_block_hash, False, orphan
        )
        batch.new_blocks[block.hash] = (block, raw_id)
        if orphan:
            self._orphans.setdefault(block.header.parent_index_block_hash, []).append(block.hash)
            log.warning(
                "block %s at %d has an unknown parent; kept until it arrives",
                block.hash, block.height,
            )  # fmt: skip
            return Outcome("orphan", "parent unknown; stored until it arrives")
        await self._place(batch, block)
        await self._adopt_orphans(batch, block.hash)
        return Outcome("applied")

    async def _place(self, batch: Batch, block: Block) -> None:
        """Decide where a block with a known parent goes, and apply it if it is canonical."""
        if self.tip is None or block.header.parent_index_block_hash == self.tip[0]:
            await self._apply(batch, block)
        elif block.height > self.tip[1]:
            if self._ahead:
                raise NeedsSerial  # rolls back rows that may be in flight
            await self._reorg(batch, block)

    async def _adopt_orphans(self, batch: Batch, parent_hash: str) -> None:
        if self._ahead and (self._db_orphans or parent_hash in self._orphans):
            raise NeedsSerial
        pending = [parent_hash]
        while pending:
            parent = pending.pop()
            children: list[str] = self._orphans.pop(parent, [])
            if self._db_orphans:
                cur = await self.pg.execute(
                    "SELECT index_block_hash FROM blocks WHERE orphan "
                    "AND parent_index_block_hash = %s",
                    (parent,),
                )
                children += [r[0] for r in await cur.fetchall() if r[0] not in children]
            for child in children:
                known = await self._known_block(child)
                assert known is not None
                known.orphan = False
                block = await self._block_for(batch, child)
                if child not in batch.new_blocks:
                    await self.pg.execute(
                        "UPDATE blocks SET orphan = false WHERE index_block_hash = %s", (child,)
                    )
                    self._db_orphans -= 1
                await self._place(batch, block)
                pending.append(child)

    async def _block_for(self, batch: Batch, block_hash: str) -> Block:
        pending = batch.new_blocks.get(block_hash)
        return pending[0] if pending is not None else await self._load_block(block_hash)

    async def _load_block(self, block_hash: str) -> Block:
        """Rebuild a stored block from its rows, to re-apply it when its branch wins."""
        cur = await self.pg.execute(
            "SELECT index_block_hash, block_hash, block_height, parent_index_block_hash, "
            "parent_block_hash, burn_block_hash, burn_block_height, burn_block_time, block_time, "
            "tx_count, event_count FROM blocks WHERE index_block_hash = %s",
            (block_hash,),
        )
        row = await cur.fetchone()
        assert row is not None, block_hash
        block = Block(header=BlockHeader(*row[:9]), tx_count=row[9], event_count=row[10])
        cur = await self.pg.execute(
            "SELECT txid, tx_index, status, raw_result FROM transactions "
            "WHERE index_block_hash = %s ORDER BY tx_index",
            (block_hash,),
        )
        for txid, tx_index, status, raw_result in await cur.fetchall():
            block.txs.append(Tx(txid, tx_index, status, raw_result))
            block.tx_status[txid] = (status, raw_result)
        cur = await self.pg.execute(
            "SELECT txid, tx_index, event_index, type, contract_id, topic, sender, recipient, "
            "amount, raw_value FROM events WHERE index_block_hash = %s "
            "ORDER BY tx_index, event_index",
            (block_hash,),
        )
        for r in await cur.fetchall():
            ev = Event(
                txid=r[0], tx_index=r[1], event_index=r[2], type=r[3], contract_id=r[4],
                topic=r[5], sender=r[6], recipient=r[7], amount=r[8], raw_value=r[9],
            )  # fmt: skip
            if ev.type.startswith(("nft_", "ft_")):
                ev.asset_identifier = ev.contract_id
                ev.contract_id = ev.contract_id.split("::", 1)[0]
            decode_watched(ev)
            block.events.append(ev)
        return block

    async def _reorg(self, batch: Batch, block: Block) -> None:
        assert self.tip is not None
        branch = [block.hash]
        cursor = block.header.parent_index_block_hash
        while True:
            known = await self._known_block(cursor)
            if known is None:
                # Only a root's parent is unknown: this branch starts at a sibling of our root
                # (another block at its height, or a genesis child). Nothing below a root is
                # indexed, so replacing everything from that height up is safe.
                floor = self._known[branch[-1]].height - 1
                break
            assert not known.orphan, "a placed block has a known parent"
            if known.canonical:
                floor = known.height
                break
            branch.append(cursor)
            cursor = known.parent
        depth = self.tip[1] - floor
        if depth > self.settings.indexer.finality_depth:
            raise FinalityError(
                f"fork at height {floor} is {depth} blocks deep, beyond the "
                f"finality horizon of {self.settings.indexer.finality_depth}"
            )
        await self._flush(batch)
        final = await signed_final_height(self.pg, self.tip[1], self.settings)
        if final is not None and floor < final:
            raise FinalityError(
                f"fork at height {floor} would undo block {final}, final by the Nakamoto rule "
                f"(signed, its burn block {self.settings.indexer.nakamoto_burn_confirmations} "
                "Bitcoin blocks deep)"
            )
        log.warning("fork: rolling back %d block(s) above %d for %s", depth, floor, block.hash)
        await self._rollback_above(batch, floor)
        batch.fork_heights.append(depth)
        for block_hash in reversed(branch):
            await self._apply(batch, await self._block_for(batch, block_hash))

    async def _rollback_above(self, batch: Batch, height: int) -> None:
        pg = self.pg
        cur = await pg.execute(
            "UPDATE blocks SET canonical = false WHERE canonical AND block_height > %s "
            "RETURNING index_block_hash",
            (height,),
        )
        rolled = [r[0] for r in await cur.fetchall()]
        for table in ("transactions", "events"):
            await pg.execute(
                sql.SQL("UPDATE {} SET canonical = false WHERE index_block_hash = ANY(%s)").format(
                    sql.Identifier(table)
                ),
                (rolled,),
            )
        changes = batch.cache.changes
        for table in VERSIONED_TABLES:
            key = sql.Identifier(KEYS[table])
            t = sql.Identifier(table)
            cur = await pg.execute(
                sql.SQL("DELETE FROM {} WHERE block_from > %s RETURNING {}").format(t, key),
                (height,),
            )
            changes[table].update(r[0] for r in await cur.fetchall())
            cur = await pg.execute(
                sql.SQL("UPDATE {} SET block_to = NULL WHERE block_to > %s RETURNING {}").format(
                    t, key
                ),
                (height,),
            )
            changes[table].update(r[0] for r in await cur.fetchall())
        for table in FACT_TABLES:
            await pg.execute(
                sql.SQL("DELETE FROM {} WHERE block_height > %s").format(sql.Identifier(table)),
                (height,),
            )
        if rolled:
            # The rolled-back blocks' transactions are back in the mempool (the winning branch,
            # applied next, marks those it carries mined again).
            cur = await pg.execute(
                "UPDATE mempool_txs SET status = 'pending', index_block_hash = NULL "
                "WHERE index_block_hash = ANY(%s) AND status = 'mined'",
                (rolled,),
            )
            self._has_mempool = self._has_mempool or cur.rowcount > 0
        if self._has_relay and rolled:
            await pg.execute(
                "UPDATE relay_txs SET status = 'broadcast', block_height = NULL, "
                "index_block_hash = NULL, tx_status = NULL, result = NULL, mined_at = NULL, "
                "updated_at = now() WHERE index_block_hash = ANY(%s) "
                "AND status IN ('mined', 'failed')",
                (rolled,),
            )
        for h in rolled:
            if h in self._known:
                self._known[h].canonical = False
        batch.rolled_back.extend(rolled)
        payload = {"rolled_back": rolled, "fork_height": height}
        await pg.execute("SELECT pg_notify(%s, %s)", (BLOCKS, fit_notify(payload)))
        # Webhooks: retract what endpoints were given from these blocks; re-feed from here.
        batch.feed_low = min(batch.feed_low, height)
        await webhooks.retract(pg, rolled, height)
