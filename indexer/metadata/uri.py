"""Token URIs: what to fetch, and whether the result can be verified.

Accepted forms: ``ipfs://CID[/path]`` (and the legacy ``ipfs://ipfs/CID``), ``/ipfs/CID``, a
bare CID, gateway URLs (``https://host/ipfs/CID/...`` and subdomain ``https://CID.ipfs.host/``,
which are re-read as IPFS targets so no particular gateway is trusted), ``data:`` URIs and plain
``http(s)``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from indexer.metadata.cid import Cid, parse_cid
from indexer.metadata.errors import CidError, TooLargeError, UriError

MAX_URI_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class IpfsTarget:
    cid: Cid
    path: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "ipfs://" + "/".join((self.cid.text, *self.path))


@dataclass(frozen=True, slots=True)
class DataTarget:
    content: bytes
    media_type: str


@dataclass(frozen=True, slots=True)
class HttpTarget:
    url: str


Target = IpfsTarget | DataTarget | HttpTarget


def expand_token_id(uri: str, token_id: int) -> str:
    """SIP-016: ``{id}`` in a token URI stands for the decimal token id."""
    return uri.replace("{id}", str(token_id))


def _path_parts(path: str) -> tuple[str, ...]:
    parts = tuple(unquote(p) for p in path.split("/") if p)
    for p in parts:
        if p in (".", "..") or "/" in p or "\x00" in p:
            raise UriError(f"unsafe path segment {p!r}")
    return parts


def _ipfs_path(rest: str) -> IpfsTarget:
    head, _, tail = rest.lstrip("/").partition("/")
    try:
        cid = parse_cid(head)
    except CidError as exc:
        raise UriError(f"bad CID in IPFS URI: {exc.message}") from None
    return IpfsTarget(cid, _path_parts(tail.split("?", 1)[0].split("#", 1)[0]))


def parse_uri(uri: str, *, max_data_bytes: int = 1_048_576) -> Target:
    if not isinstance(uri, str) or not uri.strip():
        raise UriError("empty URI")
    uri = uri.strip()
    if len(uri) > MAX_URI_LENGTH and not uri.startswith("data:"):
        raise UriError("URI too long")
    lower = uri[:8].lower()
    if lower.startswith("ipfs://"):
        rest = uri[7:]
        if rest.startswith("ipfs/"):
            rest = rest[5:]
        return _ipfs_path(rest)
    if lower.startswith("ipfs:/"):
        return _ipfs_path(uri[6:].removeprefix("ipfs/"))
    if uri.startswith("/ipfs/"):
        return _ipfs_path(uri[6:])
    if lower.startswith("data:"):
        return _parse_data(uri, max_data_bytes)
    if lower.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        if not parts.hostname:
            raise UriError("URL without host")
        if parts.path.startswith("/ipfs/"):
            return _ipfs_path(parts.path[6:])
        host_head, _, host_rest = parts.hostname.partition(".")
        if host_rest.startswith("ipfs."):
            try:
                return IpfsTarget(parse_cid(host_head), _path_parts(parts.path))
            except CidError:
                pass
        return HttpTarget(uri)
    if "://" not in uri and "/" not in uri:
        try:
            return IpfsTarget(parse_cid(uri))
        except CidError:
            pass
    raise UriError(f"unsupported URI: {uri[:80]!r}")


def _parse_data(uri: str, max_bytes: int) -> DataTarget:
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise UriError("data: URI without a comma")
    params = [p.strip() for p in header.split(";")]
    is_b64 = bool(params) and params[-1].lower() == "base64"
    if is_b64:
        params = params[:-1]
    media_type = params[0] if params and params[0] else "text/plain"
    # Encoded sizes bound decoded sizes (base64 is 4/3, percent-encoding at most 3x).
    if len(payload) > max_bytes * 3:
        raise TooLargeError("data: URI larger than the size limit")
    if is_b64:
        try:
            raw = base64.b64decode(unquote(payload), validate=True)
        except (binascii.Error, ValueError):
            raise UriError("data: URI has invalid base64") from None
    else:
        raw = unquote_to_bytes(payload)
    if len(raw) > max_bytes:
        raise TooLargeError("data: URI larger than the size limit")
    return DataTarget(raw, media_type)
