"""The query families of `bench query`: each draws one request (query text, variables) at random
over the generated data set (`apidata.py`), so the server answers uncached rows."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ops.bench.apidata import BENEFICIARIES, BLOCKS, OWNERS

Family = Callable[[random.Random, int], tuple[str, dict[str, Any]]]

FAMILIES: dict[str, Family] = {
    "certificate": lambda r, n: (
        "query($t: Int!) { certificate(tokenId: $t) { owner status wh vintage } }",
        {"t": r.randint(1, n)},
    ),
    "ownership_history": lambda r, n: (
        "query($t: Int!) { ownershipHistory(tokenId: $t) { nodes { kind txid blockHeight"
        " sender recipient price } } }",
        {"t": r.randint(1, n)},
    ),
    "holdings_at_block": lambda r, n: (
        "query($o: String!, $b: Int!) { holdings(owner: $o, block: {number: $b}, first: 20) {"
        " totalWh certificates { nodes { tokenId wh } } } }",
        {"o": f"SP{r.randrange(OWNERS)}", "b": r.randint(BLOCKS // 4, BLOCKS)},
    ),
    "retirement_statement": lambda r, n: (
        "query($b: String!) { retirementStatement(beneficiary: $b, reportingYear: 2025) {"
        " totalWh breakdown { dimension key wh } lines { retirement { txid serialStart"
        " serialEnd wh } } } }",
        {"b": f"Beneficiary {r.randrange(BENEFICIARIES)}"},
    ),
    "certificates_filtered": lambda r, n: (
        'query($f: Int!) { certificates(first: 20, where: {facilityId: $f, status: "active"},'
        " orderBy: [{field: tokenId, direction: desc}]) { nodes { tokenId owner facility"
        " { name } } pageInfo { endCursor } } }",
        {"f": r.randint(1, 1000)},
    ),
}
