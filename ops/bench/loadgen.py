"""A lean HTTP/1.1 load generator for `/graphql`, run as its own process by `bench query`.

An httpx client in the benchmark's process cost more CPU per request than the API itself, and on
two cores it competed with the server it measured. This one keeps one raw keep-alive connection
per simulated client (asyncio streams, uvloop when installed), writes each request with a single
`write` and reads the answer by its Content-Length; it reports its own CPU time so a run can
show the client was not the bottleneck.

    python -m ops.bench.loadgen --port P --family certificate --connections 32 --seconds 10

prints one JSON object: requests, seconds, requests/s, p50/p99 ms, client CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from typing import Any

from ops.bench.families import FAMILIES


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


class Failure(RuntimeError):
    pass


async def _client(
    port: int,
    family: str,
    certificates: int,
    seed: int,
    stop_at: float,
    budget: list[int],
    times: list[float],
) -> None:
    make = FAMILIES[family]
    rnd = random.Random(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: "
    ).encode()
    try:
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            query, variables = make(rnd, certificates)
            body = json.dumps({"query": query, "variables": variables}).encode()
            started = time.perf_counter()
            writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
            header = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in header.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            payload = await reader.readexactly(length)
            times.append(time.perf_counter() - started)
            if not header.startswith(b"HTTP/1.1 200") or b'"errors"' in payload:
                raise Failure(f"{family}: {header.splitlines()[0]!r} {payload[:500]!r}")
    finally:
        writer.close()


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    times: list[float] = []
    budget = [args.requests if args.requests else 1 << 62]
    stop_at = time.perf_counter() + (args.seconds if args.seconds else 1e9)
    cpu0 = os.times()
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _client(
                args.port, args.family, args.certificates, args.seed + i, stop_at, budget, times
            )
            for i in range(args.connections)
        )
    )
    elapsed = time.perf_counter() - started
    cpu1 = os.times()
    return {
        "family": args.family,
        "connections": args.connections,
        "requests": len(times),
        "seconds": round(elapsed, 3),
        "requests_per_second": round(len(times) / elapsed, 1),
        "p50_ms": round(_percentile(times, 0.5), 3),
        "p99_ms": round(_percentile(times, 0.99), 3),
        "client_cpu_seconds": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--family", choices=sorted(FAMILIES), default="certificate")
    p.add_argument("--certificates", type=int, default=1_000_000)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: no)")
    p.add_argument("--requests", type=int, default=0, help="stop after this many (0: no)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(_run(args))))


if __name__ == "__main__":
    main()
