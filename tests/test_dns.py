# -*- test-case-name: tests.test_dns -*-
"""
Tests for L{sipcore.dns}: RFC 3263 server location against a fake
C{twisted.names} resolver.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet import defer, task
from twisted.names import dns
from twisted.names.error import DNSNameError, DNSQueryTimeoutError
from twisted.trial.unittest import SynchronousTestCase

from sipcore.dns import (
    NEGATIVE_TTL,
    Location,
    ResolveFailed,
    Resolver,
    orderSRV,
    parseServer,
    systemServers,
)
from sipcore.message import parseURI
from sipcore.sip.routing import NextHop


class FakeLookups:
    """
    A resolver answering from a dict C{(name, type) -> [payload]}, with a
    TTL; names in C{failing} time out; other names do not exist.

    @ivar queries: every C{(name, type)} asked.
    """

    def __init__(self, records: dict[tuple[str, int], list[Any]], ttl: int = 300) -> None:
        self.records = records
        self.ttl = ttl
        self.failing: set[str] = set()
        self.queries: list[tuple[str, int]] = []

    def _answer(self, name: str, kind: int) -> defer.Deferred[Any]:
        self.queries.append((name, kind))
        if name in self.failing:
            return defer.fail(DNSQueryTimeoutError(name))
        payloads = self.records.get((name, kind))
        if payloads is None:
            return defer.fail(DNSNameError(name))
        answers = [dns.RRHeader(name=name, type=kind, ttl=self.ttl, payload=p) for p in payloads]
        return defer.succeed((answers, [], []))

    def lookupNamingAuthorityPointer(self, name: str) -> defer.Deferred[Any]:
        return self._answer(name, dns.NAPTR)

    def lookupService(self, name: str) -> defer.Deferred[Any]:
        return self._answer(name, dns.SRV)

    def lookupAddress(self, name: str) -> defer.Deferred[Any]:
        return self._answer(name, dns.A)

    def lookupIPV6Address(self, name: str) -> defer.Deferred[Any]:
        return self._answer(name, dns.AAAA)


def srv(priority: int, weight: int, port: int, target: str) -> dns.Record_SRV:
    return dns.Record_SRV(priority, weight, port, target)


def naptr(order: int, pref: int, service: bytes, replacement: str) -> dns.Record_NAPTR:
    return dns.Record_NAPTR(order, pref, b"s", service, b"", replacement)


A = dns.A
AAAA = dns.AAAA
SRV = dns.SRV
NAPTR = dns.NAPTR


class ResolverTests(SynchronousTestCase):
    """
    L{Resolver.resolve} follows RFC 3263 section 4.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.lookups = FakeLookups({
            ("a.test", A): [dns.Record_A("192.0.2.1")],
            ("b.test", A): [dns.Record_A("192.0.2.2")],
            ("b.test", AAAA): [dns.Record_AAAA("2001:db8::2")],
        })
        self.resolver = Resolver(self.lookups, self.clock, rng=random.Random(1))

    def resolve(self, uri: str) -> list[tuple[str, str, int]]:
        locations = self.successResultOf(self.resolver.resolve(parseURI(uri)))
        return [(loc.hop.transport, loc.hop.host, loc.hop.port) for loc in locations]

    def test_ipLiteral(self) -> None:
        """
        An IP address is used as it is, with no query: UDP and 5060 by
        default, TLS and 5061 for C{sips:}, the C{transport} parameter
        and port when given.
        """
        self.assertEqual(self.resolve("sip:192.0.2.9"), [("udp", "192.0.2.9", 5060)])
        self.assertEqual(self.resolve("sips:192.0.2.9"), [("tls", "192.0.2.9", 5061)])
        self.assertEqual(self.resolve("sip:[2001:db8::9]:5080;transport=tcp"),
                         [("tcp", "2001:db8::9", 5080)])
        self.assertEqual(self.lookups.queries, [])

    def test_explicitPort(self) -> None:
        """
        A name with a port: its A and AAAA records, no NAPTR or SRV query.
        """
        self.assertEqual(self.resolve("sip:b.test:5080;transport=tcp"),
                         [("tcp", "192.0.2.2", 5080), ("tcp", "2001:db8::2", 5080)])
        self.assertEqual({kind for _, kind in self.lookups.queries}, {A, AAAA})

    def test_transportSRV(self) -> None:
        """
        A name with a C{transport} parameter: that transport's SRV records
        by priority; C{sips:} with TCP asks for C{_sips._tcp}.
        """
        self.lookups.records[("_sip._tcp.x.test", SRV)] = [
            srv(20, 0, 5090, "b.test"), srv(10, 0, 5070, "a.test")]
        self.lookups.records[("_sips._tcp.x.test", SRV)] = [srv(10, 0, 5071, "a.test")]
        self.assertEqual(self.resolve("sip:x.test;transport=tcp"),
                         [("tcp", "192.0.2.1", 5070), ("tcp", "192.0.2.2", 5090),
                          ("tcp", "2001:db8::2", 5090)])
        self.assertEqual(self.resolve("sips:x.test;transport=tcp"), [("tls", "192.0.2.1", 5071)])

    def test_transportWithoutSRV(self) -> None:
        """
        Without SRV records, the name's addresses at the transport's
        default port.
        """
        self.assertEqual(self.resolve("sip:a.test;transport=tls"), [("tls", "192.0.2.1", 5061)])

    def test_naptr(self) -> None:
        """
        Without transport or port: NAPTR records in order and preference,
        only those this node supports (and only SIPS+D2T for C{sips:}).
        """
        self.lookups.records[("x.test", NAPTR)] = [
            naptr(10, 20, b"SIP+D2U", "_sip._udp.x.test"),
            naptr(10, 10, b"SIP+D2T", "_sip._tcp.x.test"),
            naptr(5, 10, b"SIPS+D2T", "_sips._tcp.x.test"),
            naptr(1, 1, b"SIP+D2S", "_sip._sctp.x.test"),
        ]
        self.lookups.records[("_sip._udp.x.test", SRV)] = [srv(1, 0, 5060, "a.test")]
        self.lookups.records[("_sip._tcp.x.test", SRV)] = [srv(1, 0, 5062, "a.test")]
        self.lookups.records[("_sips._tcp.x.test", SRV)] = [srv(1, 0, 5063, "a.test")]
        self.assertEqual(self.resolve("sip:x.test"), [
            ("tls", "192.0.2.1", 5063), ("tcp", "192.0.2.1", 5062), ("udp", "192.0.2.1", 5060)])
        self.assertEqual(self.resolve("sips:x.test"), [("tls", "192.0.2.1", 5063)])

    def test_noNAPTR(self) -> None:
        """
        Without NAPTR records: the SRV records of each supported transport,
        then, without those, A/AAAA at 5060 over UDP.
        """
        self.lookups.records[("_sip._tcp.x.test", SRV)] = [srv(1, 0, 5062, "a.test")]
        self.assertEqual(self.resolve("sip:x.test"), [("tcp", "192.0.2.1", 5062)])
        self.assertEqual(self.resolve("sip:a.test"), [("udp", "192.0.2.1", 5060)])

    def test_unsupportedTransportFiltered(self) -> None:
        """
        Locations over transports this node cannot use are left out; none
        left is L{ResolveFailed} with status 503.
        """
        resolver = Resolver(self.lookups, self.clock, transports=("tcp", "tls"))
        failure = self.failureResultOf(resolver.resolve(parseURI("sip:a.test")), ResolveFailed)
        self.assertEqual(failure.value.status, 503)

    def test_unknownName(self) -> None:
        """
        A name with no records fails with L{ResolveFailed} naming it.
        """
        failure = self.failureResultOf(self.resolver.resolve(parseURI("sip:nx.test")),
                                       ResolveFailed)
        self.assertIn("nx.test", failure.value.reason)

    def test_serverName(self) -> None:
        """
        Every location carries the URI's host as the TLS server name, not
        the SRV target.
        """
        self.lookups.records[("_sips._tcp.x.test", SRV)] = [srv(1, 0, 5063, "a.test")]
        (location,) = self.successResultOf(self.resolver.resolve(
            parseURI("sip:x.test;transport=tls")))
        self.assertEqual(location, Location(NextHop("tls", "192.0.2.1", 5063), "x.test"))

    def test_cache(self) -> None:
        """
        Answers are cached for their TTL, and names without records for
        L{NEGATIVE_TTL}.
        """
        self.lookups.ttl = 60
        queries = self.lookups.queries
        self.resolve("sip:a.test:5060")
        self.assertEqual((queries.count(("a.test", A)), queries.count(("a.test", AAAA))),
                         (1, 1))
        self.clock.advance(NEGATIVE_TTL)
        self.resolve("sip:a.test:5060")
        self.assertEqual((queries.count(("a.test", A)), queries.count(("a.test", AAAA))),
                         (1, 2))
        self.clock.advance(60 - NEGATIVE_TTL)
        self.resolve("sip:a.test:5060")
        self.assertEqual(queries.count(("a.test", A)), 2)

    def test_failureNotCached(self) -> None:
        """
        A query that timed out is asked again next time, and logged.
        """
        self.lookups.failing.add("a.test")
        self.failureResultOf(self.resolver.resolve(parseURI("sip:a.test:5060")), ResolveFailed)
        self.failureResultOf(self.resolver.resolve(parseURI("sip:a.test:5060")), ResolveFailed)
        self.assertEqual(self.lookups.queries.count(("a.test", A)), 2)
        self.assertEqual(self.resolver.stats["failures"], 4)


class OrderSRVTests(SynchronousTestCase):
    """
    L{orderSRV} orders by priority and draws by weight (RFC 2782).
    """

    def test_priorityAndDot(self) -> None:
        """
        Lower priority first; a target of C{.} is dropped.
        """
        ordered = orderSRV([srv(2, 0, 1, "b"), srv(1, 0, 2, "a"), srv(0, 0, 3, "")],
                           random.Random(0))
        self.assertEqual([r.port for r in ordered], [2, 1])

    def test_weights(self) -> None:
        """
        Within one priority, a record of weight 90 comes first about nine
        times as often as one of weight 10.
        """
        rng = random.Random(42)
        first = [orderSRV([srv(1, 10, 1, "a"), srv(1, 90, 2, "b")], rng)[0].port
                 for _ in range(2000)]
        share = first.count(2) / len(first)
        self.assertTrue(0.85 < share < 0.95, share)


class ParseTests(SynchronousTestCase):
    """
    C{--dns-server} values and resolv.conf files.
    """

    def test_parseServer(self) -> None:
        """
        HOST, HOST:PORT, [V6]:PORT and bare IPv6 are accepted; names and
        bad ports are not.
        """
        self.assertEqual(parseServer("127.0.0.1"), ("127.0.0.1", 53))
        self.assertEqual(parseServer("127.0.0.1:5353"), ("127.0.0.1", 5353))
        self.assertEqual(parseServer("[::1]:5353"), ("::1", 5353))
        self.assertEqual(parseServer("::1"), ("::1", 53))
        for bad in ("dns.test", "127.0.0.1:0", "127.0.0.1:x", "[::1"):
            self.assertRaises(ValueError, parseServer, bad)

    def test_systemServers(self) -> None:
        """
        The C{nameserver} lines of a resolv.conf; C{127.0.0.1} without.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("search x\nnameserver 192.0.2.53\nnameserver ::1\n")
        self.assertEqual(systemServers(path), [("192.0.2.53", 53), ("::1", 53)])
        self.assertEqual(systemServers(path + ".missing"), [("127.0.0.1", 53)])
