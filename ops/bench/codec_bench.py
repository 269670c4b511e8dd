"""Clarity decode throughput on typical event payloads: typed objects vs the plain-Python path.

    python -m ops.bench.codec_bench [--seconds 2]

Reports values/s on one core for an NFT-mint print tuple, a SIP-009 transfer tuple and a bare
uint. The indexer decodes every `raw_value` with `decode_hex_to_python`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from stacks import clarity
from stacks.c32 import address_from_hash160
from stacks.clarity import (
    BufferCV,
    ContractPrincipalCV,
    SomeCV,
    StandardPrincipalCV,
    StringAsciiCV,
    StringUtf8CV,
    TupleCV,
    UIntCV,
)


def _principal(i: int) -> StandardPrincipalCV:
    return StandardPrincipalCV(26, bytes([i % 7]) * 20)


def sample_events() -> dict[str, list[str]]:
    mint = [
        clarity.encode_hex(
            TupleCV.of(
                {
                    "topic": StringAsciiCV("rec-minted"),
                    "token-id": UIntCV(i),
                    "recipient": _principal(i),
                    "mwh": UIntCV(1000 + i),
                    "facility": StringUtf8CV("Parc éolien du Nord"),
                    "vintage": TupleCV.of({"year": UIntCV(2024), "quarter": UIntCV(i % 4 + 1)}),
                    "certificate": BufferCV(i.to_bytes(32, "big")),
                    "registry": SomeCV(ContractPrincipalCV(26, bytes(20), "rec-registry")),
                }
            )
        )
        for i in range(256)
    ]
    transfer = [
        clarity.encode_hex(
            TupleCV.of(
                {
                    "topic": StringAsciiCV("transfer"),
                    "token-id": UIntCV(i),
                    "sender": _principal(i),
                    "recipient": _principal(i + 1),
                }
            )
        )
        for i in range(256)
    ]
    uints = [clarity.encode_hex(UIntCV(i)) for i in range(256)]
    return {"mint tuple (8 fields)": mint, "transfer tuple (4 fields)": transfer, "uint": uints}


def measure(fn: Callable[[str], Any], values: list[str], seconds: float) -> float:
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for v in values:
            fn(v)
        done += len(values)
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args(argv)
    address_from_hash160.cache_clear()
    print(f"{'payload':28} {'typed decode_hex':>18} {'decode_hex_to_python':>22}")
    for name, values in sample_events().items():
        typed = measure(clarity.decode_hex, values, args.seconds)
        fast = measure(clarity.decode_hex_to_python, values, args.seconds)
        print(f"{name:28} {typed:>14,.0f} v/s {fast:>18,.0f} v/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
