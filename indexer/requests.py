"""What the event observer sends, as the pipeline takes it: a `Request` per observer POST (or
replay line), its `Outcome`, and the pure parsing of a `/new_block` (JSON, validation, Clarity
decoding of the watched events) that catch-up runs in worker processes."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime

from indexer import metrics
from indexer.block import Block, Event, parse_header, parse_new_block
from indexer.errors import EventSchemaError, PayloadError
from indexer.handlers import HANDLERS
from indexer.schema import SCHEMAS, decode_event

log = logging.getLogger("recchain.indexer")


OBSERVER_PATHS = frozenset(
    {
        "/new_block",
        "/new_burn_block",
        "/new_mempool_tx",
        "/drop_mempool_tx",
        "/attachments/new",
        "/new_microblocks",
        "/stackerdb_chunks",
        "/proposal_response",
    }
)


@dataclass(slots=True)
class Request:
    path: str
    payload: str
    received_at: datetime | None = None
    position: int | None = None  # e.g. the replay file's request id
    # A `/new_block` already parsed off the event loop (catch-up parses in a worker process):
    # the Block, or the PayloadError text that parsing raised.
    parsed: Block | str | None = None
    digest: bytes | None = None  # sha256 of the payload, if already computed (`payload_hash`)
    # Refused before interpretation (e.g. a body that is not UTF-8): stored with this reason.
    refused: str | None = None


@dataclass(slots=True)
class Outcome:
    # applied | stored | orphan | duplicate | ignored | rejected | held
    status: str
    reason: str | None = None
    # `rejected` again: the same payload was refused before (and is recorded already).
    repeat: bool = False

    @property
    def ok(self) -> bool:
        return self.status not in ("rejected", "held")


def payload_hash(payload: str) -> bytes:
    """The dedup key of a raw request (hashlib releases the GIL on payloads this size, so a
    parse thread computes it alongside the event loop)."""
    return hashlib.sha256(payload.encode()).digest()


def header_of(request: Request) -> tuple[str | None, int | None]:
    """The block a `/new_block` payload names, when its header can be read at all."""
    if isinstance(request.parsed, Block):
        return request.parsed.hash, request.parsed.height
    try:
        header = parse_header(json.loads(request.payload))
    except (PayloadError, ValueError, TypeError, AttributeError, RecursionError):
        return None, None
    return header.index_block_hash, header.block_height


def decode_watched(ev: Event) -> None:
    """`decode_event`, except that an event the handlers do not understand (a foreign contract's
    print that is not one of our tuples, an NFT id that is not a uint, a new event kind or field
    of a future contract version) is kept, stored in `events` and marked `skipped`, instead of
    refusing its block and orphaning every descendant. Bytes that are not a Clarity value still
    refuse the block: a node never sends those, so that copy of the block is corrupt."""
    try:
        decode_event(ev)
    except EventSchemaError as exc:
        ev.value = None
        ev.skipped = str(exc)
        return
    if ev.kind is not None and ev.kind not in HANDLERS:
        ev.value = None
        ev.skipped = f"event kind {ev.kind[:80]!r} has no handler"
        return
    texts = TEXT_FIELDS.get(ev.kind) if ev.kind is not None else None
    if texts:
        value = ev.value
        for name in texts:
            text = value[name]
            if text is not None and "\x00" in text:
                value[name] = text.replace("\x00", "\ufffd")


# A string-utf8 may hold U+0000, which PostgreSQL text cannot: anyone calling a contract with one
# would otherwise make its block unstorable, and the genuine block is that same block. The
# handlers store U+FFFD instead; `events.raw_value` keeps the exact value.
TEXT_FIELDS = {
    kind: tuple(name for name, code in schema.items() if code.startswith("S"))
    for kind, schema in SCHEMAS.items()
}


_warned: set[tuple[str, str]] = set()


def note_skipped(block: Block) -> None:
    """Count (and warn once per contract and reason, so a chatty contract cannot flood the log)
    the events of a newly stored block that the handlers will not apply."""
    for ev in block.events:
        if ev.skipped is None:
            continue
        metrics.SKIPPED_EVENTS.labels(ev.contract_id).inc()
        key = (ev.contract_id, ev.skipped)
        if key in _warned or len(_warned) >= 10_000:
            log.debug("event skipped: %s (%s, block %s)", ev.skipped, ev.contract_id, block.hash)
            continue
        _warned.add(key)
        log.warning(
            "event stored but not applied: %s (%s in block %s at %d; later ones alike are "
            "counted in recchain_indexer_events_skipped_total)",
            ev.skipped, ev.contract_id, block.hash, block.height,
        )  # fmt: skip


def parse_block_request(path: str, payload: str, watched: frozenset[str]) -> Block | str | None:
    """The CPU-heavy part of a `/new_block` (JSON, validation, Clarity decoding), as a pure
    function so catch-up can run it in a worker process; None for other paths."""
    if path != "/new_block":
        return None
    try:
        return parse_new_block(json.loads(payload), watched, decode_watched)
    except PayloadError as exc:
        return str(exc)
    except (json.JSONDecodeError, RecursionError) as exc:
        return f"malformed JSON: {exc}"
