"""Answers kept per chain tip: the encoded JSON of a query, served again while the chain has not
moved (like graph-node's query cache for recent blocks).

An entry is (document, operationName, variables) -> (tip, bytes), where the tip is the canonical
tip's height and index block hash, read in the same REPEATABLE READ snapshot that produced the
answer (`TIP_SQL`, after the operation's own statements, before its ROLLBACK). A request is
served from an entry only while the tip this process currently knows (`AnswerCache.tip`) is
that same (height, hash), and the entry is younger than `api.answer_cache_max_age_s`.

Why an answer served this way is the answer a fresh read would give, up to the notification's
delivery delay:

1. What is cached depends on the chain alone. Only query operations the short path executes
   (`http.py`: every guard passed) are cached, only when their answer has no errors, and only
   documents that select nothing outside the indexed chain (`chain_only`): not the relay outbox
   (`RelayedTransaction`), resolved IPFS metadata (`ResolvedMetadata`, written by the metadata
   workers between blocks), chain holds (`ChainHold`), expiry rules (`expiryExposure`, changed
   by `recchain expiry`) or the clock and the replica (`_meta { lagSeconds replicaLagSeconds }`).
   No field answers per client. What remains is read from the tables the indexer writes, which
   after any sequence of blocks and forks equal a replay of the canonical chain alone
   (tests/indexer/test_forks.py): a function of that chain, which its tip's index block hash
   names (each block names its parent), and of this process's settings.
2. The index block hash identifies the tip, the height alone does not: a fork that replaces
   the tip at the same height changes the hash, so every entry of the old tip stops matching.
   Every indexer commit that changes the canonical chain NOTIFYs `recchain_blocks` in the same
   transaction (indexer/batch.py, indexer/forks.py) with the new tip's height and hash; NOTIFY
   is delivered after the commit, in commit order. The hub's LISTEN connection sets
   `AnswerCache.tip` from each such notification as soon as it arrives (before any replica
   wait); a notification without a tip (a rollback's, sent before the batch's own) makes the
   tip unknown until the next one. On (re)connecting, the tip is read on the LISTEN connection
   after its LISTEN, so a commit between the two is both read and notified later. While the
   connection is down the tip is unknown, and an unknown tip serves nothing.
3. An entry's tip comes from the snapshot that computed the answer, never from what the process
   believed at the time, so an answer is only ever filed under the tip of the state it shows.
   A read replica (`api.read_database_url`) that lags the primary produces answers filed under
   the older tip it had replayed: they match no tip the primary announces later (the chain
   has moved on; should forks bring it back to that very block, its state is that block's
   again, point 1) and are misses, never served under a tip the replica had not reached. A
   replica snapshot at tip T is the primary's state at T (WAL replay in order), so an entry
   filed under T from either server holds the same answer.
4. Between a commit and the arrival of its notification (normally a millisecond or so, the
   same delay the subscriptions have), a request may still be answered from the previous tip's
   entries: the state that was current up to that commit (the answer's `_meta.block`, if
   selected, says which). Without a cache a read replica gives the same kind of answer. The
   age bound caps what a silently dead LISTEN connection (no TCP reset) or a change to the
   chain tables made by hand, without a notification, could serve.

Queries with a `block` argument or a cursor (the past) are cached under the tip like any other:
they are read again after each new block, which is correct but no cheaper; the past could be
kept across blocks only if a fork that orphans the named block also evicted it.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSchema,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    get_operation_ast,
    is_abstract_type,
)

from graphql_api import metrics

# The tip as the API means it everywhere (`_meta`, meta.py): the highest canonical block.
TIP_SQL = (
    "SELECT block_height, index_block_hash FROM blocks WHERE canonical"
    " ORDER BY block_height DESC LIMIT 1"
)
# Fields whose answer is not a function of the chain: see the module docstring, point 1.
VOLATILE_FIELDS = frozenset(
    {"Meta.lagSeconds", "Meta.replicaLagSeconds", "ComplianceReport.expiryExposure"}
)
# Any field of these types (wherever a later field adds one) reads tables of other roles.
VOLATILE_TYPES = frozenset({"ResolvedMetadata", "RelayedTransaction", "ChainHold"})
# Per entry beyond the key's and the answer's bytes (the tuple, the entry, the dict slot).
ENTRY_OVERHEAD = 200

Tip = tuple[int, str]
Key = tuple[str, str | None, str]


def tip_of(row: dict[str, Any] | None) -> Tip | None:
    if row is None or row.get("index_block_hash") is None:
        return None
    return int(row["block_height"]), str(row["index_block_hash"])


def notified_tip(payload: str) -> Tip | None:
    """The tip a `recchain_blocks` payload announces; None when it announces none."""
    try:
        data = json.loads(payload) if payload else None
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("resync"):
        return None
    height, block = data.get("height"), data.get("hash")
    if type(height) is not int or not isinstance(block, str) or not block:
        return None
    return height, block


def variables_key(variables: dict[str, Any] | None) -> str:
    """One text per set of variable values, whatever the order of their names."""
    if not variables:
        return ""
    return json.dumps(variables, sort_keys=True, separators=(",", ":"))


def chain_only(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None) -> bool:
    """Whether the query operation selects only fields answered from the indexed chain.

    Linear in the document: a fragment's verdict does not depend on where it is spread, so
    each is walked once (`max_selections` already refused documents that expand too far)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation != OperationType.QUERY:
        return False
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    verdicts: dict[str, bool] = {}

    def fragment(name: str) -> bool:
        if name not in verdicts:
            verdicts[name] = True  # a cycle is invalid (refused by validation) and adds nothing
            definition = fragments.get(name)
            kind = (
                schema.get_type(definition.type_condition.name.value)
                if definition is not None
                else None
            )
            verdicts[name] = definition is not None and walk(definition.selection_set, kind)
        return verdicts[name]

    def walk(selection_set: SelectionSetNode, parent: Any) -> bool:
        if parent is None:
            return False
        names = {parent.name}
        if is_abstract_type(parent):
            names.update(t.name for t in schema.get_possible_types(parent))
        fields = getattr(parent, "fields", None) or {}
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                name = node.name.value
                if name.startswith("__"):
                    continue  # __typename, introspection: the schema, fixed per process
                field = fields.get(name)
                if field is None or any(f"{n}.{name}" in VOLATILE_FIELDS for n in names):
                    return False
                named = get_named_type(field.type)
                if named.name in VOLATILE_TYPES:
                    return False
                if node.selection_set is not None and not walk(node.selection_set, named):
                    return False
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition
                kind = parent if condition is None else schema.get_type(condition.name.value)
                if not walk(node.selection_set, kind):
                    return False
            elif isinstance(node, FragmentSpreadNode) and not fragment(node.name.value):
                return False
        return True

    return walk(operation.selection_set, schema.query_type)


@dataclass(slots=True)
class Entry:
    tip: Tip
    body: bytes
    size: int
    stored: float


class AnswerCache:
    """A bounded LRU of encoded answers and the tip this process knows (module docstring)."""

    def __init__(self, max_entries: int, max_bytes: int, max_age_s: float) -> None:
        self.max_entries = max(1, max_entries)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.tip: Tip | None = None
        self.bytes = 0
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        # Hashes of keys missed once: see `admit`.
        self._seen: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    # -- the tip, from the hub's LISTEN connection -----------------------------------------
    def learn(self, tip: Tip | None) -> None:
        self.tip = tip

    def notified(self, payload: str) -> None:
        self.tip = notified_tip(payload)

    def forget(self) -> None:
        """Notifications may be missed from now on: serve nothing until the tip is read again."""
        self.tip = None

    # -- answers ---------------------------------------------------------------------------
    def get(self, key: Key) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            metrics.ANSWER_CACHE_MISSES.labels("absent").inc()
            return None
        if self.tip is None or entry.tip != self.tip:
            metrics.ANSWER_CACHE_MISSES.labels("tip").inc()
            return None
        if time.monotonic() - entry.stored > self.max_age_s:
            metrics.ANSWER_CACHE_MISSES.labels("age").inc()
            return None
        self._entries.move_to_end(key)
        metrics.ANSWER_CACHE_HITS.inc()
        return entry.body

    def admit(self, key: Key) -> bool:
        """Whether a miss of a one-statement document is worth keeping: its key was missed
        before (or kept under an older tip). Keeping needs the tip from the answer's snapshot,
        so BEGIN, the tip and ROLLBACK around a statement that would otherwise run alone; a
        request never repeated pays none of it."""
        if key in self._entries:
            return True
        mark = hash(key)
        if mark in self._seen:
            del self._seen[mark]
            return True
        self._seen[mark] = None
        if len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return False

    def put(self, key: Key, tip: Tip, body: bytes) -> None:
        size = len(body) + len(key[0]) + len(key[1] or "") + len(key[2]) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        self._entries[key] = Entry(tip, body, size, time.monotonic())
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size
            metrics.ANSWER_CACHE_EVICTIONS.inc()
        metrics.ANSWER_CACHE_ENTRIES.set(len(self._entries))
        metrics.ANSWER_CACHE_BYTES.set(self.bytes)
