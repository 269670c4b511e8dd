"""Plain http(s) token URIs cannot reach internal addresses (SSRF), on any redirect hop,
however the name resolves; listed hosts, gateways and the Kubo RPC stay reachable."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from indexer.metadata.devgateway import RunningGateway
from indexer.metadata.errors import NotAllowedError
from indexer.metadata.fetch import AddressGuard, address_class
from indexer.metadata.resolver import Resolver
from infra.config import MetadataSettings
from tests.metadata.conftest import Store, fast_settings

OPEN_WEB = {"allow_https": True}  # no host list: any public host


class Listener:
    """A loopback TCP server that counts connections and answers each with ``reply``."""

    def __init__(self, reply: bytes = b"") -> None:
        self.reply = reply
        self.connections = 0
        self.port = 0

    async def __aenter__(self) -> Listener:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.reply:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(self.reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def redirect_to(location: str) -> bytes:
    return (
        f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


class Recording(httpx.AsyncBaseTransport):
    """Stands in for the network: records what would have been sent, sends nothing."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(b'{"sip": 16, "name": "pinned"}'))


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Resolver]]:
    made: list[Resolver] = []

    def factory(settings: MetadataSettings, transport: Recording | None = None) -> Resolver:
        if transport is None:
            r = Resolver.create(settings)
        else:
            r = Resolver(settings, httpx.AsyncClient(transport=transport))
        made.append(r)
        return r

    yield factory
    for r in made:
        await r.aclose()


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-global"),
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_classes(address: str, why: str | None) -> None:
    assert address_class(ipaddress.ip_address(address)) == why


async def test_loopback_by_address_is_refused_before_connecting(make) -> None:
    async with Listener() as server:
        r = make(fast_settings(**OPEN_WEB))
        with pytest.raises(NotAllowedError) as err:
            await r.resolve(f"https://127.0.0.1:{server.port}/1.json")
        assert err.value.reason == "internal_address"
        assert "127.0.0.1: loopback address" in err.value.message
        with pytest.raises(NotAllowedError):
            await r.resolve(f"http://127.0.0.1:{server.port}/1.json")
        assert server.connections == 0
        # The same URL with the host listed does connect: the count above could have moved.
        listed = make(fast_settings(allow_https=True, https_allowed_hosts=["127.0.0.1"]))
        with pytest.raises(Exception):  # noqa: B017 - a TCP server is no TLS server
            await listed.resolve(f"https://127.0.0.1:{server.port}/1.json")
        assert server.connections >= 1


async def test_a_name_that_resolves_to_loopback_is_refused(
    store: Store, gw: RunningGateway, make
) -> None:
    cid = store.doc(name="behind localhost")
    port = gw.url.rsplit(":", 1)[1]
    r = make(fast_settings(**OPEN_WEB))
    with pytest.raises(NotAllowedError) as err:
        await r.resolve(f"https://localhost:{port}/_dev/web/{cid}")
    assert err.value.reason == "internal_address"
    assert "localhost (" in err.value.message and "loopback" in err.value.message
    assert gw.gateway.hits[cid.key] == 0


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://10.0.0.1/token/1.json", "private"),
        ("https://[fd00::1]:8443/token/1.json", "private"),
    ],
)
async def test_metadata_service_and_private_networks_are_never_contacted(
    make, url: str, why: str
) -> None:
    # Plain http to an unlisted host is refused by scheme, https by address: no request
    # ever reaches the transport, so nothing is sent towards a non-loopback address.
    transport = Recording()
    r = make(fast_settings(**OPEN_WEB), transport)
    with pytest.raises(NotAllowedError) as err:
        await r.resolve(url)
    if url.startswith("https"):
        assert err.value.reason == "internal_address"
        assert f"{why} address" in err.value.message
    assert transport.requests == []


async def test_a_redirect_from_an_allowed_host_to_loopback_is_refused(
    store: Store, gw: RunningGateway, make
) -> None:
    cid = store.doc(name="redirected")
    port = gw.url.rsplit(":", 1)[1]
    md = fast_settings(allow_https=True, https_allowed_hosts=["127.0.0.1"])
    # Control: a redirect within the listed host is followed.
    async with Listener(redirect_to(f"http://127.0.0.1:{port}/_dev/web/{cid}")) as hop:
        res = await make(md).resolve(f"http://127.0.0.1:{hop.port}/token/1")
        assert res.document["name"] == "redirected"
    hits = gw.gateway.hits[cid.key]
    for target, why in (
        (f"http://localhost:{port}/_dev/web/{cid}", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ):
        async with Listener(redirect_to(target)) as hop:
            with pytest.raises(NotAllowedError) as err:
                await make(md).resolve(f"http://127.0.0.1:{hop.port}/token/1")
            assert hop.connections == 1  # the listed host was asked, the next hop was not
        assert err.value.reason == "internal_address"
        assert f"{why} address" in err.value.message
    assert gw.gateway.hits[cid.key] == hits


async def test_the_checked_address_is_the_one_connected_to(
    make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a name answering a public address to the check and loopback to the
    connection gets nowhere, because the name is resolved once and the request pinned."""
    answers = iter(["93.184.216.34", "127.0.0.1", "127.0.0.1"])
    lookups: list[str] = []

    async def getaddrinfo(host: str, port: int, **_kw: Any) -> list[Any]:
        lookups.append(host)
        ip = next(answers)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    transport = Recording()
    res = await make(fast_settings(**OPEN_WEB), transport).resolve(
        "https://rebind.example/token/1.json"
    )
    assert res.document["name"] == "pinned"
    (sent,) = transport.requests
    assert sent.url.host == "93.184.216.34"
    assert sent.headers["host"] == "rebind.example"
    assert sent.extensions["sni_hostname"] == "rebind.example"  # certificate checked by name
    assert lookups == ["rebind.example"]


async def test_a_mixed_answer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def getaddrinfo(host: str, port: int, **_kw: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port)),
        ]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    with pytest.raises(NotAllowedError) as err:
        await AddressGuard().pin("https://mixed.example/1.json", deadline=1e18)
    assert "mixed.example (10.1.2.3): private address" in err.value.message


async def test_gateways_and_kubo_on_loopback_are_trusted(
    store: Store, gw: RunningGateway, make
) -> None:
    cid = store.doc(name="from the operator's gateway")
    r = make(fast_settings(gw.url, **OPEN_WEB))
    assert (await r.resolve(f"ipfs://{cid}")).document["name"] == "from the operator's gateway"
    k = make(fast_settings(kubo_rpc_url=gw.url, **OPEN_WEB))
    assert (await k.resolve(f"ipfs://{cid}")).resolved_by.startswith("kubo:")
