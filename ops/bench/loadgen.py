"""A lean HTTP/1.1 load generator for `/graphql`, run as its own process by `bench query`.

An httpx client in the benchmark's process cost more CPU per request than the API itself, and on
two cores it competed with the server it measured. This one keeps one raw keep-alive connection
per simulated client (asyncio streams, uvloop when installed), writes each request with a single
`write` and reads the answer by its Content-Length; it reports its own CPU time so a run can
show the client was not the bottleneck.

    python -m ops.bench.loadgen --port P --family certificate --connections 32 --seconds 10

prints one JSON object: requests, seconds, requests/s, p50/p99 ms, client CPU seconds.
`--targets FILE` replaces the family with a JSON list of requests (`{"method", "path", "body"}`,
body null for a GET), each drawn at random; a target answering anything but 200, or a GraphQL
body with `errors`, fails the run. `--host` aims at a server other than loopback's API (a peer
serving the same data, `bench holdings`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from ops.bench.families import FAMILIES


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


class Failure(RuntimeError):
    pass


def _encoded(host: str, port: int, target: dict[str, Any]) -> bytes:
    """One request of `--targets`, ready to write."""
    body = target.get("body")
    head = f"{target['method']} {target['path']} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    head += "Accept: application/json\r\n"
    if body is None:
        return (head + "\r\n").encode()
    data = json.dumps(body).encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


async def _client(
    port: int,
    family: str,
    certificates: int,
    seed: int,
    stop_at: float,
    budget: list[int],
    times: list[float],
    host: str = "127.0.0.1",
    targets: list[bytes] | None = None,
) -> None:
    make = FAMILIES.get(family)
    rnd = random.Random(seed)
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST /graphql HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: "
    ).encode()
    try:
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            if targets is not None:
                request = targets[rnd.randrange(len(targets))]
            else:
                assert make is not None
                query, variables = make(rnd, certificates)
                body = json.dumps({"query": query, "variables": variables}).encode()
                request = head + str(len(body)).encode() + b"\r\n\r\n" + body
            started = time.perf_counter()
            writer.write(request)
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
    targets = None
    if args.targets:
        listed = json.loads(Path(args.targets).read_text())  # noqa: ASYNC240 - before the load
        targets = [_encoded(args.host, args.port, t) for t in listed]
    cpu0 = os.times()
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _client(
                args.port,
                args.family,
                args.certificates,
                args.seed + i,
                stop_at,
                budget,
                times,
                args.host,
                targets,
            )
            for i in range(args.connections)
        )
    )
    elapsed = time.perf_counter() - started
    cpu1 = os.times()
    return {
        "family": "targets" if targets is not None else args.family,
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
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--targets", help="JSON list of requests to draw from instead of --family")
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
