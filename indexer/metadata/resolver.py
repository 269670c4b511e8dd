"""Resolve a token URI to a verified SIP-016 document, trying sources in priority order.

IPFS content is verified block by block against its CID, so no source is trusted: a source
that returns wrong bytes fails (for that CID) and the next one is tried. Sources, in order:
Kubo RPC, trustless gateways (raw blocks), path gateways (only when the answer can be checked
against the CID). ``data:`` URIs decode locally; plain http(s) only where configured, and
never to an internal address unless its host is listed (configured gateways and the Kubo RPC
are the operator's own choice and exempt).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx

from indexer.metadata import metrics
from indexer.metadata.cid import Cid, identity_content, raw_cid, verify_block
from indexer.metadata.dagpb import (
    PbNode,
    UnixFsData,
    UnixFsType,
    build_file,
    decode_node,
    decode_unixfs,
)
from indexer.metadata.errors import (
    DagPbError,
    DocumentError,
    MetadataError,
    NotAllowedError,
    NotFoundError,
    ResolutionFailed,
    TooLargeError,
    UnsupportedError,
    VerificationError,
)
from indexer.metadata.fetch import AddressGuard, HostLimiter, Http
from indexer.metadata.hamt import shard_step
from indexer.metadata.sip016 import parse_document
from indexer.metadata.uri import DataTarget, HttpTarget, IpfsTarget, Target, parse_uri
from infra.config import MetadataSettings

MAX_DAG_DEPTH = 16
# Every block visited costs a request or, for identity CIDs, some work: bound both.
MAX_BLOCKS = 4096
RAW_BLOCK = "application/vnd.ipld.raw"
# dag-pb framing adds a little to the file bytes; intermediate blocks may use this much more.
DAG_OVERHEAD_BYTES = 256 * 1024

GetBlock = Callable[[Cid], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Resolution:
    """A verified document: ``cid`` keys the bytes it was parsed from (cache key)."""

    uri: str
    document: dict[str, Any]
    cid: str
    raw_size: int
    resolved_by: str
    failures: tuple[tuple[str, MetadataError], ...] = ()


@dataclass(slots=True)
class _Budget:
    """Bytes one resolution may still transfer: content plus dag-pb framing."""

    remaining: int

    def take(self, n: int) -> None:
        self.remaining -= n
        if self.remaining < 0:
            raise TooLargeError("DAG larger than the size limit")


class Source(Protocol):
    name: str

    async def fetch(
        self, target: IpfsTarget, max_bytes: int, deadline: float
    ) -> tuple[bytes, Cid]: ...


class _BlockSource:
    """Common DAG walk over any ``get_block`` that returns a block for a CID."""

    name: str
    http: Http

    async def _get_raw(self, cid: Cid, cap: int, deadline: float) -> bytes:
        raise NotImplementedError

    async def fetch(self, target: IpfsTarget, max_bytes: int, deadline: float) -> tuple[bytes, Cid]:
        budget = _Budget(max_bytes + DAG_OVERHEAD_BYTES)

        async def get(cid: Cid) -> bytes:
            inline = identity_content(cid)
            if inline is not None:
                budget.take(len(inline))  # inline blocks can be linked many times over
                return inline
            block = await self._get_raw(cid, max(budget.remaining, 0), deadline)
            budget.take(len(block))
            try:
                verify_block(cid, block)
            except VerificationError:
                metrics.MISMATCHES.labels(self.name).inc()
                raise
            return block

        return await walk(get, target, max_bytes)


async def walk(get: GetBlock, target: IpfsTarget, max_bytes: int) -> tuple[bytes, Cid]:
    """Follow ``target.path`` through UnixFS directories, then read the file it names."""
    cid = target.cid
    for segment in target.path:
        if cid.is_raw:
            raise NotFoundError(f"{segment!r}: a raw block has no entries")
        fs_node = decode_node(await get(cid))
        fs = decode_unixfs(fs_node.data)
        if fs.type == UnixFsType.HAMT_SHARD:
            cid = await _shard_lookup(get, fs_node, fs, segment)
            continue
        if fs.type != UnixFsType.DIRECTORY:
            raise NotFoundError(f"{segment!r}: not a directory")
        match = [link for link in fs_node.links if link.name == segment]
        if not match:
            raise NotFoundError(f"no entry {segment!r} in {cid.key}")
        cid = match[0].cid
    return await read_file(get, cid, max_bytes), cid


async def _shard_lookup(get: GetBlock, node: PbNode, fs: UnixFsData, name: str) -> Cid:
    level = 0
    while True:
        step = shard_step(node, fs, name, level)
        if step is None:
            raise NotFoundError(f"no entry {name!r} in the sharded directory")
        child, is_entry = step
        if is_entry:
            return child
        node = decode_node(await get(child))
        fs = decode_unixfs(node.data)
        if fs.type != UnixFsType.HAMT_SHARD:
            raise DagPbError("HAMT sub-shard link does not lead to a shard")
        level += 1


async def read_file(get: GetBlock, root: Cid, max_bytes: int) -> bytes:
    out = bytearray()
    declared: int | None = None
    stack: list[tuple[Cid, int]] = [(root, 0)]
    visited = 0
    while stack:
        cid, depth = stack.pop()
        visited += 1
        if depth > MAX_DAG_DEPTH or visited > MAX_BLOCKS:
            raise DagPbError("DAG deeper or wider than allowed")
        block = await get(cid)
        if cid.is_raw:
            out += block
        else:
            node = decode_node(block)
            fs = decode_unixfs(node.data)
            if fs.type not in (UnixFsType.FILE, UnixFsType.RAW):
                what = "a directory" if fs.type == UnixFsType.DIRECTORY else fs.type.name
                raise NotFoundError(f"{cid.key} is {what}, not a file")
            if depth == 0:
                declared = fs.filesize
            if fs.blocksizes and len(fs.blocksizes) != len(node.links):
                raise DagPbError("blocksizes do not match links")
            out += fs.data
            stack.extend((link.cid, depth + 1) for link in reversed(node.links))
        if len(out) > max_bytes:
            err = TooLargeError(f"file larger than {max_bytes} bytes")
            err.permanent = True  # the CID fixes the size: retrying cannot help
            raise err
    if declared is not None and declared != len(out):
        raise DagPbError(f"file declares {declared} bytes but has {len(out)}")
    return bytes(out)


def _cid_arg(target: IpfsTarget | Cid) -> str:
    if isinstance(target, Cid):
        return target.text
    return "/".join((target.cid.text, *(quote(p, safe="") for p in target.path)))


class KuboSource(_BlockSource):
    """Kubo RPC: ``/api/v0/cat`` for raw CIDs (then hashed), ``/api/v0/block/get`` per block
    for dag-pb so every block is checked. The RPC accepts only POST."""

    def __init__(self, base_url: str, http: Http) -> None:
        self.base = base_url.rstrip("/")
        self.name = f"kubo:{urlsplit(self.base).netloc}"
        self.http = http

    async def _get_raw(self, cid: Cid, cap: int, deadline: float) -> bytes:
        url = f"{self.base}/api/v0/block/get?arg={cid.text}"
        return (await self.http.request("POST", url, max_bytes=cap, deadline=deadline)).body

    async def fetch(self, target: IpfsTarget, max_bytes: int, deadline: float) -> tuple[bytes, Cid]:
        if target.cid.is_raw and not target.path:
            url = f"{self.base}/api/v0/cat?arg={_cid_arg(target)}"
            res = await self.http.request("POST", url, max_bytes=max_bytes, deadline=deadline)
            try:
                verify_block(target.cid, res.body)
            except VerificationError:
                metrics.MISMATCHES.labels(self.name).inc()
                raise
            return res.body, target.cid
        return await super().fetch(target, max_bytes, deadline)


class TrustlessGateway(_BlockSource):
    """A gateway asked for raw blocks (``?format=raw`` and the ``vnd.ipld.raw`` media type)."""

    def __init__(self, base_url: str, http: Http) -> None:
        self.base = base_url.rstrip("/")
        self.name = urlsplit(self.base).netloc or self.base
        self.http = http

    async def _get_raw(self, cid: Cid, cap: int, deadline: float) -> bytes:
        url = f"{self.base}/ipfs/{cid.text}?format=raw"
        res = await self.http.request(
            "GET", url, max_bytes=cap, deadline=deadline, headers={"Accept": RAW_BLOCK}
        )
        return res.body


class PathGateway:
    """A plain gateway that returns file bytes. Accepted only when they can be checked: a raw
    CID hashes them directly; a dag-pb file is rebuilt with the default ``ipfs add`` layouts
    and must give the same root CID. Paths inside directories cannot be checked this way."""

    def __init__(self, base_url: str, http: Http) -> None:
        self.base = base_url.rstrip("/")
        self.name = f"path:{urlsplit(self.base).netloc or self.base}"
        self.http = http

    async def fetch(self, target: IpfsTarget, max_bytes: int, deadline: float) -> tuple[bytes, Cid]:
        if target.path:
            raise VerificationError(
                "a path gateway cannot prove a path inside a directory", reason="unverifiable"
            )
        url = f"{self.base}/ipfs/{_cid_arg(target)}"
        body = (await self.http.request("GET", url, max_bytes=max_bytes, deadline=deadline)).body
        cid = target.cid
        if cid.is_raw:
            verify_block(cid, body)
            return body, cid
        layouts = [{"cid_version": cid.version, "raw_leaves": False}]
        if cid.version == 1:
            layouts.append({"cid_version": 1, "raw_leaves": True})
        for layout in layouts:
            if build_file(body, **layout).root.key == cid.key:  # type: ignore[arg-type]
                return body, cid
        metrics.MISMATCHES.labels(self.name).inc()
        raise VerificationError(f"bytes from {self.name} do not rebuild to {cid.key}")


@dataclass
class Resolver:
    settings: MetadataSettings
    client: httpx.AsyncClient
    sources: list[Source] = field(default_factory=list)
    http: Http = field(init=False)
    # Token URIs on the open web: anyone can mint one naming an internal service.
    web: Http = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        limiter = HostLimiter(s.per_host_concurrency, s.per_host_rate_per_s)
        self.http = Http(
            self.client,
            limiter,
            max_redirects=s.max_redirects,
            request_timeout_s=s.request_timeout_s,
        )
        self.web = Http(
            self.client,
            limiter,
            max_redirects=s.max_redirects,
            request_timeout_s=s.request_timeout_s,
            guard=AddressGuard(frozenset(s.https_allowed_hosts)),
        )
        if not self.sources:
            if s.kubo_rpc_url:
                self.sources.append(KuboSource(s.kubo_rpc_url, self.http))
            self.sources.extend(TrustlessGateway(g, self.http) for g in s.gateways)
            self.sources.extend(PathGateway(g, self.http) for g in s.path_gateways)

    @classmethod
    def create(cls, settings: MetadataSettings, gateways: list[str] | None = None) -> Resolver:
        """A resolver with its own HTTP client; close it with :meth:`aclose`."""
        if gateways:
            settings = settings.model_copy(update={"gateways": gateways, "kubo_rpc_url": None})
        timeout = httpx.Timeout(settings.request_timeout_s)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        client = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)
        return cls(settings, client)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def resolve(self, uri: str) -> Resolution:
        s = self.settings
        deadline = time.monotonic() + s.total_timeout_s
        target = parse_uri(uri, max_data_bytes=s.max_bytes)
        content, cid, by, failures = await self._content(target, deadline)
        try:
            document = parse_document(content, max_bytes=s.max_bytes)
        except DocumentError as exc:
            # Verified content is what it is; a mutable URL may be fixed by its owner.
            exc.permanent = not isinstance(target, HttpTarget)
            raise
        return Resolution(uri, document, cid, len(content), by, tuple(failures))

    async def _content(
        self, target: Target, deadline: float
    ) -> tuple[bytes, str, str, list[tuple[str, MetadataError]]]:
        s = self.settings
        if isinstance(target, DataTarget):
            return target.content, raw_cid(target.content).key, "data-uri", []
        if isinstance(target, HttpTarget):
            host = urlsplit(target.url).hostname or ""
            scheme = urlsplit(target.url).scheme
            allowed = s.https_allowed_hosts
            if not s.allow_https or (allowed and host not in allowed):
                raise NotAllowedError(f"fetching {scheme} URLs from {host} is not allowed")
            if scheme == "http" and host not in allowed:
                raise NotAllowedError("plain http is allowed only for listed hosts")
            started = time.monotonic()
            res = await self.web.request(
                "GET", target.url, max_bytes=s.max_bytes, deadline=deadline
            )
            metrics.SOURCE_LATENCY.labels(host, "ok").observe(time.monotonic() - started)
            return res.body, raw_cid(res.body).key, host, []
        inline = identity_content(target.cid)
        if inline is not None and not target.path and target.cid.is_raw:
            return inline, target.cid.key, "identity", []
        failures: list[tuple[str, MetadataError]] = []
        for source in self.sources:
            started = time.monotonic()
            try:
                content, cid = await source.fetch(target, s.max_bytes, deadline)
            except MetadataError as exc:
                metrics.SOURCE_LATENCY.labels(source.name, exc.reason).observe(
                    time.monotonic() - started
                )
                failures.append((source.name, exc))
                if _content_is_bad(exc):
                    # Verified blocks proved the DAG itself is unusable; no source can differ.
                    break
                continue
            metrics.SOURCE_LATENCY.labels(source.name, "ok").observe(time.monotonic() - started)
            return content, cid.key, source.name, failures
        raise ResolutionFailed(failures)


def _content_is_bad(exc: MetadataError) -> bool:
    return isinstance(exc, DagPbError | NotFoundError | UnsupportedError) or (
        isinstance(exc, TooLargeError) and exc.permanent
    )


Fetcher = Callable[[str], Awaitable[Resolution]]
