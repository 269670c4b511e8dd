"""The shared outbound guard: allowances by name and network, every resolved address checked."""

from __future__ import annotations

import ipaddress

import pytest

from infra.netguard import (
    Allowance,
    DestinationRefused,
    check_addresses,
    parse_retry_after,
    resolve_checked,
)


def test_allowance_by_name_and_network() -> None:
    allow = Allowance.parse(["Receiver.Internal.", "10.1.0.0/16", "::1", " "])
    assert allow.hosts == frozenset({"receiver.internal"})
    assert allow.allows("receiver.internal", ipaddress.ip_address("192.168.0.1"))
    assert allow.allows("other", ipaddress.ip_address("10.1.2.3"))
    assert allow.allows("other", ipaddress.ip_address("::1"))
    assert not allow.allows("other", ipaddress.ip_address("10.2.0.1"))


def test_every_address_is_checked() -> None:
    public = ipaddress.ip_address("93.184.216.34")
    inside = ipaddress.ip_address("169.254.169.254")
    check_addresses("example.org", [public], Allowance())
    with pytest.raises(DestinationRefused, match=r"example.org \(169.254.169.254\): link-local"):
        check_addresses("example.org", [public, inside], Allowance())
    check_addresses("example.org", [public, inside], Allowance.parse(["169.254.0.0/16"]))


async def test_resolve_checked_refuses_loopback_names_and_literals() -> None:
    with pytest.raises(DestinationRefused, match="loopback"):
        await resolve_checked("localhost", 80, Allowance())
    with pytest.raises(DestinationRefused, match=r"127\.0\.0\.1: loopback"):
        await resolve_checked("127.0.0.1", 80, Allowance())
    with pytest.raises(DestinationRefused, match="loopback"):
        await resolve_checked("[::1]", 80, Allowance())
    assert await resolve_checked("127.0.0.1", 80, Allowance.parse(["127.0.0.0/8"])) == [
        ipaddress.ip_address("127.0.0.1")
    ]
    resolved = await resolve_checked("localhost", 80, Allowance.parse(["localhost"]))
    assert all(ip.is_loopback for ip in resolved)
    with pytest.raises(DestinationRefused, match="cannot resolve"):
        await resolve_checked("no-such-host.invalid", 80, Allowance())


def test_retry_after_forms() -> None:
    assert parse_retry_after("7") == 7
    assert parse_retry_after(None, default=2) == 2
    assert parse_retry_after("99999999", cap=60) == 60
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
