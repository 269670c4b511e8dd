"""Bounded HTTP: streaming reads capped in bytes and time, manual redirects with a cap, a
per-host concurrency/rate limiter that honours 429 ``Retry-After``, and short jittered retries
of transient failures.

A hostile server can neither stall a caller past its deadline (the deadline covers the whole
exchange, body included, so a slow drip is cut) nor make it hold more than the byte cap in
memory (the body is read in chunks and the read stops at the cap; compressed transfer encodings
are refused so a small compressed body cannot expand).

Requests for token URIs on the open web go through an :class:`AddressGuard`: every hop's host
is resolved once, refused when any of its addresses is not a public unicast one (loopback,
private, link-local, multicast, unspecified, reserved), and the connection goes to the address
that was checked, so a name that resolves differently the second time cannot reach inside.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx
import tenacity

from indexer.metadata.errors import (
    FetchError,
    HttpStatusError,
    MetadataError,
    NotAllowedError,
    RateLimitedError,
    RedirectError,
    TimeoutError_,
    TooLargeError,
)
from infra.netguard import IpAddress, address_class, parse_retry_after

_REDIRECTS = (301, 302, 303, 307, 308)
_TRANSIENT_STATUS = (500, 502, 503, 504)


@dataclass
class _HostState:
    sem: asyncio.Semaphore
    next_slot: float = 0.0
    blocked_until: float = 0.0


@dataclass
class HostLimiter:
    """Per host: at most ``concurrency`` requests in flight, at most ``rate_per_s`` started per
    second, and none at all while a ``Retry-After`` is running."""

    concurrency: int = 4
    rate_per_s: float = 20.0
    _hosts: dict[str, _HostState] = field(default_factory=dict)

    def _state(self, host: str) -> _HostState:
        st = self._hosts.get(host)
        if st is None:
            st = self._hosts[host] = _HostState(asyncio.Semaphore(self.concurrency))
        return st

    def block(self, host: str, seconds: float) -> None:
        st = self._state(host)
        st.blocked_until = max(st.blocked_until, time.monotonic() + seconds)

    def blocked_for(self, host: str) -> float:
        st = self._hosts.get(host)
        return max(0.0, st.blocked_until - time.monotonic()) if st else 0.0

    @asynccontextmanager
    async def slot(self, host: str, deadline: float) -> AsyncIterator[None]:
        st = self._state(host)
        wait = st.blocked_until - time.monotonic()
        if wait > 0:
            # Waiting past our own deadline would only turn a clear 429 into a timeout.
            if time.monotonic() + wait > deadline:
                raise RateLimitedError(f"{host} asked us to wait {wait:.1f}s", retry_after=wait)
            await asyncio.sleep(wait)
        async with st.sem:
            now = time.monotonic()
            start = max(now, st.next_slot)
            st.next_slot = start + 1.0 / self.rate_per_s if self.rate_per_s > 0 else now
            if start > now:
                await asyncio.sleep(start - now)
            yield


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: int
    url: str
    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Pinned:
    """Where one hop really goes: ``url`` names the checked address, ``host_header`` and
    ``sni`` keep the name for virtual hosting and certificate checks."""

    url: str
    host_header: str | None = None
    sni: str | None = None


@dataclass
class AddressGuard:
    """Refuses hosts that resolve to internal addresses, except the ``allowed_hosts`` the
    operator listed by name (or address)."""

    allowed_hosts: frozenset[str] = frozenset()

    async def pin(self, url: str, deadline: float) -> Pinned:
        parts = httpx.URL(url)
        host = parts.host
        if not host:
            raise NotAllowedError(f"no host in {url[:80]}")
        if host in self.allowed_hosts:
            return Pinned(url)
        try:
            literal: IpAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            self._check(host, [literal])
            return Pinned(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(_loop_deadline(deadline)):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise TimeoutError_(f"resolving {host} did not finish in time") from None
        except OSError as exc:
            raise FetchError(f"cannot resolve {host}: {exc}"[:300]) from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not addresses:
            raise FetchError(f"{host} has no address")
        self._check(host, addresses)
        pinned = parts.copy_with(host=str(addresses[0]))
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        return Pinned(str(pinned), netloc, host if parts.scheme == "https" else None)

    @staticmethod
    def _check(host: str, addresses: list[IpAddress]) -> None:
        # Every address, not just the first: which one a client ends up using is not ours
        # to predict once the name is handed over, and a mixed answer is itself a red flag.
        for ip in addresses:
            why = address_class(ip)
            if why is not None:
                shown = host if host == str(ip) else f"{host} ({ip})"
                raise NotAllowedError(
                    f"refusing {shown}: {why} address; list the host in "
                    "metadata.https_allowed_hosts to allow it",
                    reason="internal_address",
                )


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, HttpStatusError):
        return exc.status in _TRANSIENT_STATUS
    return type(exc) is FetchError  # connection-level failures


class Http:
    def __init__(
        self,
        client: httpx.AsyncClient,
        limiter: HostLimiter,
        *,
        max_redirects: int = 3,
        request_timeout_s: float = 10.0,
        transient_retries: int = 2,
        guard: AddressGuard | None = None,
    ) -> None:
        self.guard = guard
        self.client = client
        self.limiter = limiter
        self.max_redirects = max_redirects
        self.request_timeout_s = request_timeout_s
        self.transient_retries = transient_retries

    async def request(
        self,
        method: str,
        url: str,
        *,
        max_bytes: int,
        deadline: float,
        headers: dict[str, str] | None = None,
    ) -> HttpResult:
        """One logical request; a few quick retries on connection errors and 5xx."""

        def stop(state: tenacity.RetryCallState) -> bool:
            return (
                state.attempt_number > self.transient_retries or time.monotonic() + 0.5 >= deadline
            )

        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(_transient),
            stop=stop,
            wait=tenacity.wait_exponential_jitter(multiplier=0.1, max=1.0, jitter=0.2),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(method, url, max_bytes, deadline, headers or {})
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(
        self, method: str, url: str, max_bytes: int, deadline: float, headers: dict[str, str]
    ) -> HttpResult:
        seen: set[str] = set()
        for _hop in range(self.max_redirects + 1):
            seen.add(url)
            host = urlsplit(url).netloc
            hop_deadline = min(deadline, time.monotonic() + self.request_timeout_s)
            # Checked on every hop: a redirect must not lead where the first URL could not.
            pinned = await self.guard.pin(url, hop_deadline) if self.guard else Pinned(url)
            async with self.limiter.slot(host, hop_deadline):
                result, location = await self._exchange(
                    method, url, max_bytes, hop_deadline, headers, host, pinned
                )
            if location is None:
                assert result is not None
                return result
            nxt = urljoin(url, location)
            if urlsplit(nxt).scheme not in ("http", "https"):
                raise RedirectError(f"redirect to unsupported scheme: {nxt[:80]}")
            if nxt in seen:
                raise RedirectError(f"redirect loop at {nxt[:80]}", reason="redirect_loop")
            url = nxt
        raise RedirectError(f"more than {self.max_redirects} redirects")

    async def _exchange(
        self,
        method: str,
        url: str,
        max_bytes: int,
        deadline: float,
        headers: dict[str, str],
        host: str,
        pinned: Pinned,
    ) -> tuple[HttpResult | None, str | None]:
        all_headers = {"Accept-Encoding": "identity", **headers}
        if pinned.host_header is not None:
            all_headers["Host"] = pinned.host_header
        req = self.client.build_request(
            method,
            pinned.url,
            headers=all_headers,
            extensions={"sni_hostname": pinned.sni} if pinned.sni else None,
        )
        try:
            async with asyncio.timeout_at(_loop_deadline(deadline)):
                resp = await self.client.send(req, stream=True, follow_redirects=False)
                try:
                    return await self._read(resp, url, max_bytes, host)
                finally:
                    await resp.aclose()
        except TimeoutError:
            raise TimeoutError_(f"{host} did not answer in time") from None
        except httpx.TimeoutException:
            raise TimeoutError_(f"{host} timed out") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"{host}: {type(exc).__name__}: {exc}"[:300]) from None

    async def _read(
        self, resp: httpx.Response, url: str, max_bytes: int, host: str
    ) -> tuple[HttpResult | None, str | None]:
        status = resp.status_code
        if status in _REDIRECTS:
            location = resp.headers.get("location")
            if not location:
                raise FetchError(f"{host}: redirect without Location")
            return None, location
        if status == 429:
            retry_after = parse_retry_after(resp.headers.get("retry-after"))
            self.limiter.block(host, retry_after)
            raise RateLimitedError(f"{host} answered 429", retry_after=retry_after)
        if status >= 400:
            detail = (await _read_capped(resp, 512, truncate=True)).decode("utf-8", "replace")
            raise HttpStatusError(f"{host} answered {status}: {detail[:200]}", status=status)
        encoding = resp.headers.get("content-encoding", "identity").lower()
        if encoding not in ("identity", ""):
            raise FetchError(f"{host} sent an encoded body ({encoding}) we did not ask for")
        declared = resp.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise TooLargeError(f"{host} declares {declared} bytes, limit {max_bytes}")
        body = await _read_capped(resp, max_bytes)
        return HttpResult(status, url, resp.headers.get("content-type", ""), body), None


async def _read_capped(resp: httpx.Response, cap: int, *, truncate: bool = False) -> bytes:
    buf = bytearray()
    async for chunk in resp.aiter_raw():
        buf += chunk
        if len(buf) > cap:
            if truncate:
                return bytes(buf[:cap])
            raise TooLargeError(f"body exceeds {cap} bytes")
    return bytes(buf)


def _loop_deadline(monotonic_deadline: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


def jitter(seconds: float) -> float:
    return seconds * (0.5 + random.random())


__all__ = [
    "AddressGuard",
    "FetchError",
    "HostLimiter",
    "Http",
    "HttpResult",
    "IpAddress",
    "MetadataError",
    "address_class",
    "parse_retry_after",
]
