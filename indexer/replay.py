"""`recchain replay`: apply a recorded 4-column observer TSV, fast (catch-up) or paced (`--follow`).

Catch-up mode commits batches of up to `indexer.catchup_batch_blocks` requests, as a pipeline of
three stages on two cores: a thread parses batch N+2, the event loop applies batch N+1 in memory
(`Indexer.process_ahead`), and the indexer's writer thread sends and commits batch N on its own
connection while PostgreSQL works. The archive's position (the last request id committed, in
`replay_positions` under `archive_key`) commits with each batch's rows, so a restarted replay
skips what is already in, and the payload-hash dedup makes any overlap a no-op: kill -9 at any
point loses and duplicates nothing. A payload refused earlier is interpreted again (so a stored
poison block is applied once a fixed release reads it). A held request (a fork beyond the
finality horizon) stops the replay before it: a rerun, once the horizon allows it, goes on.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from sqlalchemy.ext.asyncio import AsyncEngine

from indexer.block import Block
from indexer.pipeline import Indexer
from indexer.requests import Request, parse_block_request, payload_hash
from indexer.tsv import PayloadFormat, count_lines, read_requests
from infra.config import Settings
from infra.progress import StatusLine

if TYPE_CHECKING:
    from db.leader import Leadership


@dataclass(slots=True)
class ReplayStats:
    requests: int = 0
    blocks: int = 0
    events: int = 0
    rejected: int = 0
    seconds: float = 0.0
    held: str | None = None  # why the replay stopped at a held request (rerun to go on)
    # Requests an earlier run had committed (at or below the checkpoint): not applied again.
    skipped: int = 0
    # (request id, event path, reason) of rejected requests, the first MAX_REJECTIONS of them.
    rejections: list[tuple[int | None, str, str]] = field(default_factory=list)


MAX_REJECTIONS = 1000
# Requests in a file from which a catch-up replay into an empty database defers the building of
# its secondary indexes to its end (below, rebuilding them costs more than it saves).
DEFER_INDEXES_FROM = 2000


def _parse_ts(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None


class Progress:
    """A progress bar on stderr: requests, blocks/s, events/s, ETA. It is a
    `infra.progress.StatusLine`: redrawn in place on a terminal, out of the way of log
    lines; on a pipe or a file, a whole line now and then."""

    def __init__(
        self, total: int | None, stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self.total = None if total is None else max(total, 1)  # None: unknown (a gzipped file)
        self.line = StatusLine(stream, enabled=enabled)
        self.enabled = enabled
        self.start = time.monotonic()
        self.last = 0.0

    def _text(self, stats: ReplayStats) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = stats.requests / elapsed
        speed = f"{stats.blocks / elapsed:,.0f} blocks/s {stats.events / elapsed:,.0f} events/s"
        if self.total is None:
            return f"{stats.requests} req {speed}"
        eta = (self.total - stats.requests) / rate if rate > 0 else float("inf")
        width = 30
        filled = int(width * min(stats.requests / self.total, 1.0))
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {stats.requests}/{self.total} req "
            f"{speed} ETA {eta:,.0f}s"
        )

    def update(self, stats: ReplayStats, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.5):
            return
        self.last = now
        self.line.show(self._text(stats))

    def close(self, stats: ReplayStats) -> None:
        if self.enabled:
            self.line.close(self._text(stats))


def _batches(
    requests: Iterator[Request], size: int, ramp: bool = False, total: int | None = None
) -> Iterator[list[Request]]:
    """Batches of `size` requests. With `ramp` (catch-up), the first ones are an eighth, a
    quarter and half of that, so that the writer and PostgreSQL start early instead of waiting
    for a whole first batch to be parsed and applied; and when `total` says fewer than two
    batches are left, each takes half of what is left (at least a quarter batch), so that little
    remains to write once everything else is done (the pipeline fills and drains sooner)."""
    sizes = [max(size // 8, 1), max(size // 4, 1), max(size // 2, 1)] if ramp else []
    sizes.reverse()
    limit = sizes.pop() if sizes else size
    batch: list[Request] = []
    for seen, request in enumerate(requests, start=1):
        batch.append(request)
        if len(batch) >= limit:
            yield batch
            batch = []
            limit = sizes.pop() if sizes else size
            left = None if total is None or not ramp else total - seen
            if left is not None and left < 2 * size:
                limit = max(min(limit, left // 2), size // 4, 1)
    if batch:
        yield batch


_Parsed = tuple[Block | str | None, bytes]


def _parse_batch(items: list[tuple[str, str]], watched: frozenset[str]) -> list[_Parsed]:
    return [
        (parse_block_request(path, payload, watched), payload_hash(payload))
        for path, payload in items
    ]


async def _parsed_ahead(
    batches: Iterator[list[Request]], watched: frozenset[str], workers: int
) -> AsyncIterator[list[Request]]:
    """Parse (and hash) batch N+1 while batch N is applied. With `workers` processes, JSON and
    Clarity decoding run on other cores, at the price of pickling the parsed blocks both ways (as
    much CPU as parsing them, measured): on 2 cores, where PostgreSQL needs the second one, that
    is a loss. With 0, one thread parses whenever the event loop waits (for PostgreSQL, or for
    the writer), which costs no extra CPU at all; sha256 runs there without the GIL."""
    loop = asyncio.get_running_loop()
    pool: Executor = (
        ProcessPoolExecutor(max_workers=workers) if workers > 0 else ThreadPoolExecutor(1)
    )
    depth = max(workers, 1)
    with pool:

        def submit(batch: list[Request]) -> asyncio.Future[list[_Parsed]]:
            items = [(r.path, r.payload) for r in batch]
            return loop.run_in_executor(pool, _parse_batch, items, watched)

        queue: deque[tuple[list[Request], asyncio.Future[list[_Parsed]]]] = deque()
        for batch in batches:
            queue.append((batch, submit(batch)))
            if len(queue) > depth:
                yield await _ready(*queue.popleft())
        while queue:
            yield await _ready(*queue.popleft())


async def _ready(batch: list[Request], parsed: asyncio.Future[list[_Parsed]]) -> list[Request]:
    for request, (result, digest) in zip(batch, await parsed, strict=True):
        request.parsed = result
        request.digest = digest
    return batch


async def _aiter(
    batches: Iterator[list[Request]] | AsyncIterator[list[Request]],
) -> AsyncIterator[list[Request]]:
    if isinstance(batches, AsyncIterator):
        async for batch in batches:
            yield batch
    else:
        for batch in batches:
            yield batch


@contextmanager
def _rare_collections() -> Iterator[None]:
    """Catch-up allocates millions of short-lived containers (decoded tuples, rows, events):
    with the default thresholds the cyclic collector runs hundreds of times per batch and walks
    the whole heap, about a quarter of the CPU. Freezing the heap built at start-up and
    collecting the young generation every 500,000 allocations instead of 700 keeps cycles
    reclaimed for a fraction of that (about 1% of the CPU)."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(500_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


def archive_key(path: Path, payload_format: PayloadFormat = "auto") -> str | None:
    """What names an archive in `replay_positions`: its first request (id, path, payload).
    A growing archive and a later export of the same requests keep it, so a rerun skips what
    is committed; a different file (a one-row poison block) has its own position."""
    for r in read_requests(path, payload_format):
        digest = hashlib.sha256(f"{r.id}\t{r.path}\t{r.payload}".encode()).hexdigest()
        return f"replay:{digest[:32]}"
    return None


async def replay_file(
    engine: AsyncEngine,
    settings: Settings,
    path: Path,
    *,
    follow: bool = False,
    speed: float = 1.0,
    progress: bool = True,
    batch_size: int | None = None,
    enqueue_metadata: bool = True,
    parse_workers: int = 0,
    payload_format: PayloadFormat = "auto",
    defer_indexes_from: int = DEFER_INDEXES_FROM,
    requests_in_file: int | None = None,
    fence: Leadership | None = None,
) -> ReplayStats:
    """`requests_in_file`: what the caller counted (`tsv.check_file`), for the progress bar and
    the batch sizes; without it a plain file is counted here, a gzipped one is not (unknown).
    `fence`: the indexer leadership the caller holds; every write transaction checks it."""
    stats = ReplayStats()
    started = time.monotonic()
    lines = requests_in_file if requests_in_file is not None else count_lines(path)
    bar = Progress(lines, enabled=progress)
    async with engine.connect() as conn:
        indexer = Indexer(conn, settings, enqueue_metadata=enqueue_metadata)
        indexer.fence = fence  # before start(): it may write (deferred indexes)
        # A catch-up replay into an empty database builds its secondary indexes once at the
        # end (`db.indexes`); a small file gains nothing from it (a gzipped one counts as large).
        deferring = not follow and (lines is None or lines >= defer_indexes_from)
        await indexer.start(keep_deferred=deferring)
        if deferring:
            # Dropped with the first batch that has rows for their tables: an archive of
            # others' traffic has none, and rebuilding 27 indexes would cost it more than
            # reading it does.
            await indexer.defer_indexes(on_first_rows=True)
        indexer.source = archive_key(path, payload_format)
        done = await indexer.position() or 0

        def requests() -> Iterator[Request]:
            for r in read_requests(path, payload_format):
                if r.id <= done:
                    stats.requests += 1  # committed by an earlier run
                    stats.skipped += 1
                    continue
                yield Request(r.path, r.payload, _parse_ts(r.received_at), r.id)

        size = 1 if follow else batch_size or settings.indexer.catchup_batch_blocks
        previous: datetime | None = None
        batches = _batches(requests(), size, ramp=not follow, total=lines)
        if not follow:
            batches = _parsed_ahead(batches, indexer.watched, parse_workers)  # type: ignore[assignment]
        if not follow:
            await indexer.start_ahead()
        try:
            with _rare_collections() if not follow else nullcontext():
                async for batch in _aiter(batches):
                    if follow and previous is not None and batch[0].received_at is not None:
                        gap = (batch[0].received_at - previous).total_seconds() / max(speed, 1e-9)
                        await asyncio.sleep(min(max(gap, 0.0), 60.0))
                    if follow:
                        previous = batch[0].received_at
                        outcomes = await indexer.process(batch)
                    else:
                        outcomes = await indexer.process_ahead(batch)
                    for request, outcome in zip(batch, outcomes, strict=True):
                        if outcome.status == "held":
                            stats.held = outcome.reason
                            break
                        stats.requests += 1
                        stats.rejected += not outcome.ok
                        if outcome.status == "applied" and request.path == "/new_block":
                            stats.blocks += 1
                        elif not outcome.ok and len(stats.rejections) < MAX_REJECTIONS:
                            reason = outcome.reason or "rejected"
                            stats.rejections.append((request.position, request.path, reason))
                    stats.events += indexer.last_events
                    bar.update(stats)
                    if stats.held is not None:  # what follows waits for it: stop here
                        break
        finally:
            await indexer.stop_ahead()  # the last batch commits (or its failure is raised) here
        if deferring:
            # Also after a replay stopped at a held request: what is indexed is queryable.
            await indexer.build_deferred_indexes()
        # Refused when their batch was redone at write time, after it had been answered.
        late = indexer.late_rejections
        stats.rejected += len(late)
        stats.rejections += late[: max(MAX_REJECTIONS - len(stats.rejections), 0)]
    bar.close(stats)
    stats.seconds = time.monotonic() - started
    return stats
