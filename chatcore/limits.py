"""Abuse limits that know addresses and clocks, not sockets: flood buckets, exemptions,
connections per address.

``TokenBucket`` meters one connection's requests; ``ExemptList`` holds the addresses and
networks that skip flood control and the per-address limit (bots, benchmarks);
``AddressCounter`` counts connections per address, IPv6 by /64 (one subscriber's usual
allocation, so an attacker cannot take a fresh address per connection from its own prefix).
"""
from __future__ import annotations

import ipaddress

IPV6_PREFIX_BITS = 64           # one IPv6 subscriber usually holds a whole /64 (RFC 6177)


class TokenBucket:
    """``burst`` tokens, refilled at ``per_second``; one request takes one token."""

    __slots__ = ("per_second", "burst", "tokens", "stamp")

    def __init__(self, burst: float, per_second: float, now: float):
        self.per_second = per_second
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> float:
        """Take a token and return 0.0, or return how many seconds until one is due."""
        tokens = self.tokens + (now - self.stamp) * self.per_second
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.per_second


def parse_networks(spec: str) -> tuple:
    """``"127.0.0.1, 10.0.0.0/8, ::1"`` as networks; raises ValueError naming a bad entry."""
    networks = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(networks)


def _address(host: str):
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ExemptList:
    """Addresses and networks exempt from flood control and per-address limits."""

    def __init__(self, spec: str = ""):
        self.networks = parse_networks(spec)

    def __contains__(self, host: str) -> bool:
        if not self.networks:
            return False
        try:
            address = _address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def address_key(host: str) -> str:
    """What the per-address limit counts: the IPv4 address, or the IPv6 /64 it is in."""
    try:
        address = _address(host)
    except ValueError:
        return host                 # not an IP address (a Unix socket, say): itself
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX_BITS}", strict=False))
    return str(address)


class AddressCounter:
    """Open connections per ``address_key``."""

    def __init__(self):
        self._counts: dict[str, int] = {}

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    def add(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    def remove(self, key: str) -> None:
        left = self._counts[key] - 1
        if left:
            self._counts[key] = left
        else:
            del self._counts[key]
