"""Outbound HTTP helpers shared by every role that connects where a user pointed it (metadata
token URIs, webhook endpoints): which addresses are internal, resolving a host so that the
connection goes to an address that was checked, and reading a server's ``Retry-After``.

A URL names a host; what matters is where the connection lands. Loopback, private, link-local
(cloud metadata services live at 169.254.169.254), multicast, unspecified, reserved and other
non-global addresses are refused unless the operator allowed the host by name or the address by
network. Every address a name resolves to is checked, not just the first, and the caller
connects to the checked address, so a name that resolves differently the second time (DNS
rebinding) cannot reach inside.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_RETRY_AFTER_S = 3600.0


def address_class(ip: IpAddress) -> str | None:
    """Why ``ip`` must not be connected to (``None``: a public unicast address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        # Shared (100.64/10), documentation, 6to4/Teredo relays and the like.
        ("non-global", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


class DestinationRefused(ValueError):
    """The host resolves to an address the guard does not allow (or does not resolve)."""


@dataclass(frozen=True, slots=True)
class Allowance:
    """Hosts (by name, case-insensitive) and networks that may be internal."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowance:
        """Entries are host names, IP addresses or CIDR networks (``10.0.0.0/8``)."""
        hosts: set[str] = set()
        networks: list[IpNetwork] = []
        for entry in entries:
            entry = entry.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, host: str, ip: IpAddress) -> bool:
        if host.lower().rstrip(".") in self.hosts:
            return True
        return any(ip in net for net in self.networks)


def check_addresses(host: str, addresses: Iterable[IpAddress], allow: Allowance) -> None:
    """Raise `DestinationRefused` when any address of ``host`` is internal and not allowed."""
    for ip in addresses:
        why = address_class(ip)
        if why is not None and not allow.allows(host, ip):
            shown = host if host == str(ip) else f"{host} ({ip})"
            raise DestinationRefused(f"refusing {shown}: {why} address")


async def resolve_checked(
    host: str, port: int, allow: Allowance, timeout_s: float = 5.0
) -> list[IpAddress]:
    """The addresses of ``host`` (an IP literal or a name), every one of them checked."""
    try:
        literal: IpAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        check_addresses(host, [literal], allow)
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise DestinationRefused(f"resolving {host} did not finish in {timeout_s:g} s") from None
    except OSError as exc:
        raise DestinationRefused(f"cannot resolve {host}: {exc}"[:300]) from None
    addresses = list(
        dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    )
    if not addresses:
        raise DestinationRefused(f"{host} has no address")
    check_addresses(host, addresses, allow)
    return addresses


def parse_retry_after(
    value: str | None, default: float = 1.0, cap: float = MAX_RETRY_AFTER_S
) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return default
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return default
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return default
    return min(max(seconds, 0.0), cap)
