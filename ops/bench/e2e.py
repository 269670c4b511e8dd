"""The whole write path as separate processes on loopback: a devnet wallet's signed purchase goes
through the relay to the devnet node, the node mines it and pushes the block to the indexer, and
the GraphQL API's `relayStatus` subscription reports it mined.

`Stack` starts `recchain index --source observer`, the devnet node (contracts/devnet/node.mjs,
which replays the demo chain to the indexer first), `recchain relay` and `recchain serve` on
free ports against one migrated database. tests/writers/test_end_to_end.py asserts on it;
`python -m ops.bench.relay_bench --e2e` reports the submit-to-mined latency it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import websockets

from infra.config import DEFAULT_DEPLOYER, PROJECT_ROOT
from stacks.clarity import ContractPrincipalCV, NoneCV, SomeCV, UIntCV, encode_hex, principal_cv

CONTRACTS = PROJECT_ROOT / "contracts"
NODE_SCRIPT = CONTRACTS / "devnet" / "node.mjs"
# Devnet accounts (contracts/settings/Devnet.toml) that the demo chain funds but never lists with.
BUYERS = {
    "wallet_7": "ST3PF13W7Z0RRM42A8VZRVFQ75SV1K26RXEP8YGKJ",
    "wallet_8": "ST3NBRSFKX28FQ2ZJ1MAKX58HKHSDGNV5N7R21XCP",
}
MARKET = f"{DEFAULT_DEPLOYER}.marketplace"
NFT_ASSET = f"{DEFAULT_DEPLOYER}.rec-nft::rec"
# The demo replay is several hundred simnet blocks: minutes on a busy 2-core machine.
START_TIMEOUT_S = 600.0

T = TypeVar("T")

RELAY_STATUS = """
subscription($txid: String!) {
  relayStatus(txid: $txid) { txid status blockHeight txStatus reason }
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int, *names: str) -> dict[str, float]:
    """The samples of `names` on a process's loopback `/metrics`, each summed over its labels."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    totals = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


@dataclass
class Service:
    """A child process whose combined output is kept, for readiness lines and failure reports."""

    name: str
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, name: str, args: list[str], env: dict[str, str], cwd: Path) -> Service:
        proc = await asyncio.create_subprocess_exec(
            *args,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        service = cls(name, proc)
        service.reader = asyncio.create_task(service._read())
        return service

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            del self.lines[:-400]  # a long run keeps only its tail
            self.changed.set()
        self.changed.set()

    async def wait_line(self, needle: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if needle in line:
                    return line
            seen = len(self.lines)
            if self.proc.returncode is not None:
                raise StackError(f"{self.name} exited ({self.proc.returncode})", self.tail())
            left = deadline - time.monotonic()
            if left <= 0:
                raise StackError(f"{self.name}: no {needle!r} in {timeout_s:.0f} s", self.tail())
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))

    def tail(self, n: int = 30) -> str:
        return "\n".join(f"[{self.name}] {line}" for line in self.lines[-n:])

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.reader is not None:
            await self.reader


class StackError(RuntimeError):
    def __init__(self, message: str, logs: str = "") -> None:
        super().__init__(f"{message}\n{logs}" if logs else message)


async def until(
    probe: Callable[[], Awaitable[T | None]], timeout_s: float, what: str, interval_s: float = 0.2
) -> T:
    """Poll `probe` until it returns something other than None (a bounded wait, not a timing
    assertion: only a stack that never gets there fails)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.TransportError):
            value = await probe()
            if value is not None:
                return value
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(interval_s)


@dataclass(frozen=True)
class Listing:
    listing_id: int
    token_id: int
    seller: str
    currency: str
    price: int


@dataclass(frozen=True)
class Purchase:
    txid: str
    hex: str
    buyer: str
    listing: Listing


@dataclass
class Mined:
    """What the subscriber saw: every status in order and the submit-to-mined latency."""

    statuses: list[dict[str, Any]]
    submit_to_mined_s: float
    submit_answer: dict[str, Any]
    submit_http_status: int


class Stack:
    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.ports = {k: free_port() for k in ("observer", "node", "relay", "api", "metrics")}
        self.node_url = f"http://127.0.0.1:{self.ports['node']}"
        self.relay_url = f"http://127.0.0.1:{self.ports['relay']}"
        self.api_url = f"http://127.0.0.1:{self.ports['api']}/graphql"
        self.ws_url = f"ws://127.0.0.1:{self.ports['api']}/graphql"
        self.services: list[Service] = []
        self.http = httpx.AsyncClient(timeout=30)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECCHAIN_")}
        env.pop("DATABASE_URL", None)
        env.update(
            RECCHAIN_DATABASE_URL=self.db_url,
            RECCHAIN_NETWORK="testnet",
            RECCHAIN_INDEXER__METRICS_PORT=str(self.ports["metrics"]),
            RECCHAIN_API__RATE_LIMIT_PER_MINUTE="100000",
            RECCHAIN_API__MASK_ERRORS="false",
            PYTHONUNBUFFERED="1",
        )
        return env

    async def _recchain(self, name: str, *args: str) -> Service:
        cmd = [sys.executable, "-m", "recchain.cli", *args]
        service = await Service.start(name, cmd, self._env(), PROJECT_ROOT)
        self.services.append(service)
        return service

    async def __aenter__(self) -> Stack:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        indexer = await self._recchain(
            "index", "index", "--source", "observer",
            "--listen", f"127.0.0.1:{self.ports['observer']}",
        )  # fmt: skip
        await self._wait_port(indexer, self.ports["observer"])
        node = await Service.start(
            "devnet",
            ["node", str(NODE_SCRIPT), "--port", str(self.ports["node"]),
             "--observer", f"http://127.0.0.1:{self.ports['observer']}"],
            dict(os.environ), CONTRACTS,
        )  # fmt: skip
        self.services.append(node)
        relay = await self._recchain(
            "relay", "relay", "--port", str(self.ports["relay"]), "--node-url", self.node_url
        )
        api = await self._recchain("serve", "serve", "--port", str(self.ports["api"]))
        await relay.wait_line("relay listening on", 120)
        await self._wait_port(api, self.ports["api"])
        await node.wait_line("listening on", START_TIMEOUT_S)

    async def _wait_port(self, service: Service, port: int) -> None:
        async def probe() -> bool | None:
            if service.proc.returncode is not None:
                raise StackError(f"{service.name} exited", service.tail())
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return None
            writer.close()
            return True

        await until(probe, 120, f"{service.name} to listen on {port}")

    async def close(self) -> None:
        for service in reversed(self.services):
            await service.stop()
        self.services.clear()
        await self.http.aclose()

    def logs(self) -> str:
        return "\n".join(s.tail() for s in self.services)

    # ------------------------------------------------------------------ reading the stack

    async def graphql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        r = await self.http.post(self.api_url, json={"query": query, "variables": variables or {}})
        body = r.json()
        if r.status_code != 200 or body.get("errors"):
            raise StackError(f"GraphQL error {r.status_code}: {body}")
        return body["data"]

    async def node_tip(self) -> tuple[int, str]:
        info = (await self.http.get(f"{self.node_url}/v2/info")).json()
        return int(info["stacks_tip_height"]), "0x" + info["index_block_hash"]

    async def indexed_tip(self) -> tuple[int, str] | None:
        block = (await self.graphql("{ _meta { block { height hash } } }"))["_meta"]["block"]
        return None if block is None else (int(block["height"]), block["hash"])

    async def wait_indexed(self, height: int, timeout_s: float = START_TIMEOUT_S) -> int:
        """Until the indexer's canonical tip reaches `height`."""

        async def probe() -> int | None:
            tip = await self.indexed_tip()
            return tip[0] if tip is not None and tip[0] >= height else None

        try:
            return await until(probe, timeout_s, f"the indexer to reach height {height}")
        except StackError as exc:
            raise StackError(str(exc), self.logs()) from None

    async def wait_in_sync(self) -> int:
        """Until the indexer has the node's tip (the demo history arrives after start-up)."""
        height, _ = await self.node_tip()
        await self.wait_indexed(height)
        indexed = await self.indexed_tip()
        assert indexed is not None
        return indexed[0]

    async def active_listings(self) -> list[Listing]:
        data = await self.graphql(
            """{ listings(where: {status: "active", kind: "fixed"}, first: 200) {
                   nodes { listingId tokenId seller currency price endHeight } } }"""
        )
        height, _ = await self.node_tip()
        return [
            Listing(n["listingId"], n["tokenId"], n["seller"], n["currency"], int(n["price"]))
            for n in data["listings"]["nodes"]
            # A listing that expires before the purchase lands would fail, not sell.
            if n["endHeight"] is None or n["endHeight"] > height + 20
        ]

    async def nonce(self, principal: str) -> int:
        return int(
            (await self.http.get(f"{self.node_url}/v2/accounts/{principal}")).json()["nonce"]
        )

    async def sign_purchase(self, listing: Listing) -> Purchase:
        """`marketplace.buy` of `listing` signed by a devnet wallet other than the seller, in
        deny mode with the post-conditions the demo chain's own purchases carry."""
        name, address = next((n, a) for n, a in BUYERS.items() if a != listing.seller)
        if listing.currency == "STX":
            ft_arg = encode_hex(NoneCV())
            pay = {"type": "stx-postcondition", "address": address, "condition": "eq",
                   "amount": str(listing.price)}  # fmt: skip
        else:
            token = principal_cv(listing.currency)
            assert isinstance(token, ContractPrincipalCV)
            ft_arg = encode_hex(SomeCV(token))
            pay = {"type": "ft-postcondition", "address": address, "condition": "eq",
                   "asset": f"{listing.currency}::sbtc", "amount": str(listing.price)}  # fmt: skip
        nft_out = {"type": "nft-postcondition", "address": MARKET, "condition": "sent",
                   "asset": NFT_ASSET, "assetId": encode_hex(UIntCV(listing.token_id))}  # fmt: skip
        nonce = await self.nonce(address)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "tx.json"
            proc = await asyncio.create_subprocess_exec(
                "node", "vectors/relay.mjs", "--call", "marketplace.buy",
                "--args", json.dumps([encode_hex(UIntCV(listing.listing_id)), ft_arg]),
                "--sender", name, "--nonce", str(nonce), "--fee", "3000",
                "--pcs", json.dumps([pay, nft_out]), "--out", str(out),
                cwd=CONTRACTS, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            output, _ = await proc.communicate()
            if proc.returncode != 0:
                raise StackError("signing failed", output.decode(errors="replace"))
            doc = json.loads(out.read_text())
        return Purchase("0x" + doc["txid"].removeprefix("0x"), doc["hex"], address, listing)

    async def relay_and_watch(self, purchase: Purchase, timeout_s: float = 120.0) -> Mined:
        """Subscribe to `relayStatus`, POST the purchase to the relay, and follow the
        subscription until the chain's verdict (mined or failed) or a relay refusal."""
        async with websockets.connect(
            self.ws_url,
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            open_timeout=30,
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            while json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] != "connection_ack":
                pass
            await ws.send(
                json.dumps(
                    {"id": "1", "type": "subscribe",
                     "payload": {"query": RELAY_STATUS, "variables": {"txid": purchase.txid}}}
                )
            )  # fmt: skip
            # The API LISTENs before it answers the subscribe, but that answer is only the
            # absence of a row: give the subscription's start a moment to be registered.
            await asyncio.sleep(0.5)
            started = time.perf_counter()
            r = await self.http.post(f"{self.relay_url}/v1/transactions", json={"tx": purchase.hex})
            statuses: list[dict[str, Any]] = []
            deadline = time.monotonic() + timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StackError(
                        f"no verdict for {purchase.txid} in {timeout_s:.0f} s; saw {statuses}",
                        self.logs(),
                    )
                try:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), left))
                except TimeoutError:
                    continue
                if msg["type"] == "next":
                    if msg["payload"].get("errors"):
                        raise StackError(f"subscription error: {msg['payload']}")
                    status = msg["payload"]["data"]["relayStatus"]
                    statuses.append(status)
                    if status["status"] in ("mined", "failed", "rejected", "dropped"):
                        return Mined(
                            statuses, time.perf_counter() - started, r.json(), r.status_code
                        )
                elif msg["type"] in ("error", "complete"):
                    raise StackError(f"subscription ended: {msg}")

    async def sale_of(self, listing_id: int) -> list[dict[str, Any]]:
        data = await self.graphql(
            """query($id: Int!) { sales(where: {listingId: $id}) {
                   nodes { listingId tokenId buyer seller price txid blockHeight } } }""",
            {"id": listing_id},
        )
        sales: list[dict[str, Any]] = data["sales"]["nodes"]
        return sales

    async def owner_of(self, token_id: int) -> str | None:
        data = await self.graphql(
            "query($t: Int!) { certificate(tokenId: $t) { owner } }", {"t": token_id}
        )
        cert = data["certificate"]
        return None if cert is None else str(cert["owner"])
