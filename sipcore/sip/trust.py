# -*- test-case-name: tests.test_security_relay -*-
"""
Trusted peers: the networks whose requests may do what only a proxy of
ours may do, such as register along a C{Path} (RFC 3327).

A L{TrustedPeers} value is parsed once from the configuration
(C{--trusted-peer ADDRESS[/PREFIX]}, repeatable) and asked per request
whether a source host is one of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["TrustedPeers", "parseNetwork"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parseNetwork(spec: str) -> Network:
    """
    Parse one C{ADDRESS[/PREFIX]}: an IPv4 or IPv6 address (a single host)
    or a network in CIDR notation, without host bits set.

    @raise ValueError: with a message saying what is wrong.
    """
    text = spec.strip()
    if text.startswith("[") and "]" in text:
        address, _, rest = text[1:].partition("]")
        text = address + rest
    if not text:
        raise ValueError("an IPv4 or IPv6 address or network is required")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise ValueError("{!r} is not an IPv4 or IPv6 address or network ({})".format(
            spec, e)) from None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    The IP address a source host names (brackets and an IPv6 zone removed,
    an IPv4-mapped IPv6 address as its IPv4 address), or C{None}.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class TrustedPeers:
    """
    A set of trusted networks; C{host in peers} says whether a source
    address belongs to one of them.  Empty (the default) trusts nobody.

    @ivar networks: the networks, in the order given.
    """

    networks: tuple[Network, ...] = ()

    @classmethod
    def fromStrings(cls, specs: Iterable[str]) -> TrustedPeers:
        """
        Parse C{ADDRESS[/PREFIX]} values (see L{parseNetwork}).

        @raise ValueError: for a value that is not an address or network.
        """
        return cls(tuple(parseNetwork(spec) for spec in specs))

    def __contains__(self, host: object) -> bool:
        """
        Whether C{host} (an IP address as text, as a flow's remote address
        gives it) is in one of the networks.  Anything that is not an IP
        address is not trusted.
        """
        if not self.networks or not isinstance(host, str):
            return False
        address = _address(host)
        if address is None:
            return False
        return any(address in network for network in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __iter__(self) -> Iterator[Network]:
        return iter(self.networks)

    def __str__(self) -> str:
        return ", ".join(str(network) for network in self.networks) or "none"
