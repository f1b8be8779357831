# -*- test-case-name: tests.test_dns -*-
"""
Locating SIP servers (RFC 3263) with C{twisted.names}, without blocking.

L{Resolver.resolve} turns a SIP or SIPS URI into the ordered list of
L{Location}s to try (RFC 3263 section 4):

  - an IP address, or a host name with an explicit port, is used as it
    is (a name's A and AAAA records give its addresses); the transport is
    the C{transport} parameter, else UDP (TLS for C{sips:});
  - a name with a C{transport} parameter but no port: the SRV records of
    that transport (C{_sip._udp}, C{_sip._tcp}, C{_sips._tcp}), else its
    A/AAAA records at the transport's default port;
  - a name without either: its NAPTR records (services C{SIP+D2U},
    C{SIP+D2T}, C{SIPS+D2T}; only C{SIPS+D2T} for C{sips:}) in order and
    preference, each naming SRV records; without NAPTR records, the SRV
    records of each supported transport; without those, A/AAAA at port
    5060 over UDP (5061 over TLS for C{sips:}).

SRV records are tried by priority, and within one priority in an order
drawn by weight (RFC 2782).  Answers are cached for their TTL (at most
L{MAX_TTL}); names that do not exist or have no such records are
remembered for L{NEGATIVE_TTL}.  Lookup failures (timeouts, server
failures) are not cached.

Each location carries the name a TLS server must prove: the URI's host
(RFC 5922 section 4), never the SRV target.
"""

from __future__ import annotations

import random
import socket
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.names import client, dns
from twisted.names import error as dnserror

from sipcore.message import URI
from sipcore.sip.routing import NextHop, isIPLiteral

__all__ = [
    "DEFAULT_DNS_TIMEOUTS",
    "MAX_TTL",
    "NEGATIVE_TTL",
    "Location",
    "ResolveFailed",
    "Resolver",
    "orderSRV",
    "parseServer",
    "systemServers",
]

#: The retry timeouts of one query (seconds; C{twisted.names} sends the
#: query again after each, to the next server).
DEFAULT_DNS_TIMEOUTS = (1.0, 3.0)

#: The longest time an answer is cached, whatever its TTL.
MAX_TTL = 3600

#: How long a name without the records asked for is remembered.
NEGATIVE_TTL = 30

#: The most answers cached at once (the oldest go first).
MAX_CACHED = 10000

_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}
_SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
_NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}


class ResolveFailed(Exception):
    """
    A URI gave no location to try.

    @ivar reason: why, for the log and the reason phrase.
    @ivar status: the response status for the caller (C{503}).
    """

    status = 503

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Location:
    """
    One place to send a request to.

    @ivar hop: the transport, IP address and port.
    @ivar serverName: the name a TLS server there must prove (and the SNI
        sent).
    """

    hop: NextHop
    serverName: str


def parseServer(spec: str) -> tuple[str, int]:
    """
    Parse a C{--dns-server} value: C{HOST}, C{HOST:PORT}, C{[V6]:PORT} or
    a bare IPv6 address.

    @raise ValueError: when the host is not an IP address or the port is
        not one.
    """
    host, port = spec.strip(), "53"
    if host.startswith("["):
        close = host.find("]")
        if close < 0:
            raise ValueError("bad DNS server {!r}".format(spec))
        rest = host[close + 1:]
        host = host[1:close]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("bad DNS server {!r}".format(spec))
            port = rest[1:]
    elif host.count(":") == 1:
        host, port = host.split(":")
    if not isIPLiteral(host):
        raise ValueError("DNS server {!r}: the host must be an IP address".format(spec))
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("DNS server {!r}: bad port".format(spec))
    return host, int(port)


def systemServers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """
    The name servers of a resolv.conf file (its C{nameserver} lines), or
    C{127.0.0.1:53} when it names none or cannot be read.
    """
    servers = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and isIPLiteral(fields[1]):
            servers.append((fields[1], 53))
    return servers or [("127.0.0.1", 53)]


def orderSRV(records: Sequence[Any], rng: random.Random) -> list[Any]:
    """
    Order SRV records as RFC 2782 says: lower priority first; within one
    priority, repeatedly pick one at random with probability proportional
    to its weight (records of weight 0 have a small chance, taken first in
    the running sum).  Records whose target is C{"."} are dropped.

    @param records: L{dns.Record_SRV} payloads.
    @param rng: the random source.
    """
    byPriority: dict[int, list[Any]] = {}
    for record in records:
        if str(record.target) in ("", "."):
            continue
        byPriority.setdefault(record.priority, []).append(record)
    ordered: list[Any] = []
    for priority in sorted(byPriority):
        group = sorted(byPriority[priority], key=lambda r: r.weight)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered


class Resolver:
    """
    Locates SIP servers (see the module docstring).

    @ivar transports: the transports locations may use, in the order
        tried when a name has no NAPTR records.
    @ivar stats: C{lookups} (queries sent), C{cached} (answered from the
        cache), C{failures} (queries that failed, not "no such name").
    """

    _log = Logger()

    def __init__(self, lookups: Any, clock: Any,
                 transports: Sequence[str] = ("udp", "tcp", "tls"),
                 rng: random.Random | None = None) -> None:
        """
        @param lookups: an L{twisted.internet.interfaces.IResolver} (its
            C{lookupNamingAuthorityPointer}, C{lookupService},
            C{lookupAddress} and C{lookupIPV6Address}).
        @param clock: the L{IReactorTime} the cache reads.
        @param transports: the transports this node can reach hops over.
        @param rng: the random source of SRV weights.
        """
        self.lookups = lookups
        self.clock = clock
        self.transports = tuple(transports)
        self.rng = rng or random.Random()
        self._cache: OrderedDict[tuple[str, int], tuple[float, list[Any]]] = OrderedDict()
        self.stats = {"lookups": 0, "cached": 0, "failures": 0}

    @classmethod
    def fromServers(cls, reactor: Any, servers: Sequence[tuple[str, int]],
                    timeouts: Sequence[float] = DEFAULT_DNS_TIMEOUTS,
                    transports: Sequence[str] = ("udp", "tcp", "tls")) -> Resolver:
        """
        A resolver querying C{servers} (see L{systemServers}) with
        C{twisted.names}.
        """
        lookups = client.Resolver(servers=list(servers), reactor=reactor,
                                  timeout=tuple(int(t + 0.999) for t in timeouts))
        return cls(lookups, reactor, transports)

    def resolve(self, uri: URI) -> Deferred[list[Location]]:
        """
        The locations of a SIP or SIPS URI, in the order to try them.

        @return: a L{Deferred} firing with a non-empty list of
            L{Location}s, or failing with L{ResolveFailed} (not a SIP URI,
            an unsupported transport, no address found).
        """
        return Deferred.fromCoroutine(self._resolve(uri))

    async def _resolve(self, uri: URI) -> list[Location]:
        if not uri.isSIP or not uri.host:
            raise ResolveFailed("not a SIP URI")
        host = uri.host.lower()
        secure = uri.scheme == "sips"
        transport = (uri.param("transport") or "").lower()
        if secure and transport == "tcp":
            transport = "tls"
        if transport and transport not in _DEFAULT_PORTS:
            raise ResolveFailed("unsupported transport {}".format(transport))
        if isIPLiteral(host):
            chosen = transport or ("tls" if secure else "udp")
            return [Location(NextHop(chosen, host, uri.port or _DEFAULT_PORTS[chosen]), host)]
        if uri.port:
            chosen = transport or ("tls" if secure else "udp")
            found = await self._addresses(host, chosen, uri.port, host)
        elif transport:
            found = await self._service(transport, host, host)
            if not found:
                found = await self._addresses(host, transport, _DEFAULT_PORTS[transport], host)
        else:
            found = await self._naptr(host, secure)
            if not found:
                for candidate in self.transports:
                    if candidate in _SRV_PREFIX and (not secure or candidate == "tls"):
                        found += await self._service(candidate, host, host)
            if not found:
                chosen = "tls" if secure else "udp"
                found = await self._addresses(host, chosen, _DEFAULT_PORTS[chosen], host)
        found = [location for location in found if location.hop.transport in self.transports]
        if not found:
            raise ResolveFailed("no {}address found for {}".format(
                "usable " if transport else "", host))
        return found

    async def _naptr(self, host: str, secure: bool) -> list[Location]:
        records = await self._lookup(host, dns.NAPTR)
        usable = []
        for record in records:
            service = record.service.string.decode("ascii", "replace").upper()
            transport = _NAPTR_SERVICES.get(service)
            if (transport is None or record.flags.string.lower() != b"s"
                    or (secure and transport != "tls") or transport not in self.transports):
                continue
            usable.append((record.order, record.preference, transport,
                           str(record.replacement).lower()))
        usable.sort(key=lambda entry: entry[:2])
        found: list[Location] = []
        for _, _, transport, replacement in usable:
            found += await self._srv(replacement, transport, host)
        return found

    async def _service(self, transport: str, host: str, serverName: str) -> list[Location]:
        prefix = _SRV_PREFIX.get(transport)
        if prefix is None:
            return []
        return await self._srv(prefix + host, transport, serverName)

    async def _srv(self, name: str, transport: str, serverName: str) -> list[Location]:
        records = orderSRV(await self._lookup(name, dns.SRV), self.rng)
        found: list[Location] = []
        for record in records:
            found += await self._addresses(str(record.target).lower(), transport,
                                           record.port, serverName)
        return found

    async def _addresses(self, host: str, transport: str, port: int,
                         serverName: str) -> list[Location]:
        if isIPLiteral(host):
            return [Location(NextHop(transport, host, port), serverName)]
        found = []
        for record in await self._lookup(host, dns.A):
            found.append(Location(NextHop(transport, record.dottedQuad(), port), serverName))
        for record in await self._lookup(host, dns.AAAA):
            address = socket.inet_ntop(socket.AF_INET6, record.address)
            found.append(Location(NextHop(transport, address, port), serverName))
        return found

    async def _lookup(self, name: str, kind: int) -> list[Any]:
        """
        The payloads of the records of type C{kind} for C{name}, from the
        cache or a query; C{[]} when there are none or the query failed
        (logged).
        """
        key = (name, kind)
        now = self.clock.seconds()
        cached = self._cache.get(key)
        if cached is not None:
            if cached[0] > now:
                self.stats["cached"] += 1
                return cached[1]
            del self._cache[key]
        self.stats["lookups"] += 1
        query = {
            dns.NAPTR: self.lookups.lookupNamingAuthorityPointer,
            dns.SRV: self.lookups.lookupService,
            dns.A: self.lookups.lookupAddress,
            dns.AAAA: self.lookups.lookupIPV6Address,
        }[kind]
        try:
            answers, _, _ = await query(name)
        except (dnserror.DNSNameError, dnserror.DNSNotImplementedError,
                dnserror.DNSQueryRefusedError):
            self._store(key, now + NEGATIVE_TTL, [])
            return []
        except Exception as e:
            self.stats["failures"] += 1
            self._log.warn("DNS {kind} lookup of {name} failed: {error}",
                           kind=dns.QUERY_TYPES.get(kind, kind), name=name,
                           error=str(e) or type(e).__name__)
            return []
        matching = [rr for rr in answers if rr.type == kind]
        if matching:
            ttl = min(MAX_TTL, min(rr.ttl for rr in matching))
        else:
            ttl = NEGATIVE_TTL
        payloads = [rr.payload for rr in matching]
        self._store(key, now + ttl, payloads)
        return payloads

    def _store(self, key: tuple[str, int], expires: float, payloads: list[Any]) -> None:
        self._cache[key] = (expires, payloads)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
