"""Clarity decode throughput on typical event payloads: typed objects vs the plain-Python path.

    python -m ops.bench.codec_bench [--seconds 2]

Reports values/s on one core for the REC-Chain print tuples of contracts/EVENTS.md
(`certificate-minted`, `certificate-transferred`), a generic NFT-mint tuple, a SIP-009 transfer
tuple and a bare uint. The indexer decodes every `raw_value` with `decode_hex_to_python`, and must
ingest 20,000 events/s on two cores, so that column should stay above 50,000 v/s for the mint
tuples. Rates are per CPU-second of this process, the best of `--rounds` runs, so other work on a
busy machine does not count against the decoder.
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
    NoneCV,
    SomeCV,
    StandardPrincipalCV,
    StringAsciiCV,
    StringUtf8CV,
    TupleCV,
    UIntCV,
)


def _principal(i: int) -> StandardPrincipalCV:
    return StandardPrincipalCV(26, bytes([i % 7]) * 20)


# Owners of real certificates are a few hundred facility operators, not one per event.
_OWNERS = [StandardPrincipalCV(22, i.to_bytes(2, "big") * 10) for i in range(200)]
_DEPLOYER = bytes.fromhex("6d78de7b0625dfbfc16c3a8a5735f6dc3dc3f2ce")


def certificate_minted(i: int) -> TupleCV:
    """The `certificate-minted` print of rec-nft, field for field (contracts/EVENTS.md)."""
    start = 1_704_067_200 + 3600 * i
    wh = 250_000 + 17 * i
    return TupleCV.of(
        {
            "event": StringAsciiCV("certificate-minted"),
            "token-id": UIntCV(i + 1),
            "owner": _OWNERS[i % len(_OWNERS)],
            "facility-id": UIntCV(i % 97 + 1),
            "report-id": UIntCV(i + 1),
            "period-start": UIntCV(start),
            "period-end": UIntCV(start + 3600),
            "vintage": UIntCV(2024),
            "wh": UIntCV(wh),
            "serial-start": UIntCV(wh * i),
            "serial-end": UIntCV(wh * (i + 1)),
            "token-uri": StringAsciiCV(f"ipfs://bafkreib{i:052d}"),
            "status": StringAsciiCV("active"),
            "parent-id": NoneCV(),
            "issued-at": UIntCV(150_000 + i),
        }
    )


def certificate_transferred(i: int) -> TupleCV:
    return TupleCV.of(
        {
            "event": StringAsciiCV("certificate-transferred"),
            "token-id": UIntCV(i + 1),
            "sender": _OWNERS[i % len(_OWNERS)],
            "recipient": ContractPrincipalCV(26, _DEPLOYER, "marketplace"),
            "kind": StringAsciiCV("escrow"),
            "status": StringAsciiCV("listed"),
        }
    )


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
    return {
        "certificate-minted (15)": [clarity.encode_hex(certificate_minted(i)) for i in range(256)],
        "certificate-transferred (6)": [
            clarity.encode_hex(certificate_transferred(i)) for i in range(256)
        ],
        "mint tuple (8 fields)": mint,
        "transfer tuple (4 fields)": transfer,
        "uint": uints,
    }


def measure(fn: Callable[[str], Any], values: list[str], seconds: float, rounds: int = 1) -> float:
    return max(_measure_once(fn, values, seconds / rounds) for _ in range(rounds))


def _measure_once(fn: Callable[[str], Any], values: list[str], seconds: float) -> float:
    done = 0
    start = time.process_time()
    deadline = start + seconds
    while time.process_time() < deadline:
        for v in values:
            fn(v)
        done += len(values)
    return done / (time.process_time() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--rounds", type=int, default=4, help="runs per measurement (best kept)")
    args = parser.parse_args(argv)
    address_from_hash160.cache_clear()
    print(f"{'payload':28} {'typed decode_hex':>18} {'decode_hex_to_python':>22}")
    for name, values in sample_events().items():
        typed = measure(clarity.decode_hex, values, args.seconds, args.rounds)
        fast = measure(clarity.decode_hex_to_python, values, args.seconds, args.rounds)
        print(f"{name:28} {typed:>14,.0f} v/s {fast:>18,.0f} v/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
