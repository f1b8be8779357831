# -*- test-case-name: tests.test_routes_dispatcher -*-
"""
L{OptionsPinger}: one C{OPTIONS} request to a SIP server, sent in a client
transaction of the proxy's transaction layer, to learn whether it answers.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from sipcore.interfaces import IClientTransactionUser, IHopConnector, IPinger
from sipcore.message import URI, Request, generateBranch, generateTag, parseMessage
from sipcore.message._random import randomHex
from sipcore.sip.recordroute import LocalAddresses
from sipcore.sip.routing import NoRoute, nextHopOf

__all__ = ["OptionsPinger"]


@implementer(IClientTransactionUser)
class _Answer:
    """
    The TU of one ping: fires C{deferred} with whether a final response
    came.
    """

    def __init__(self) -> None:
        self.deferred: defer.Deferred[bool] = defer.Deferred()

    def _done(self, alive: bool) -> None:
        if not self.deferred.called:
            self.deferred.callback(alive)

    def responseReceived(self, response: Any, tx: Any) -> None:
        if response.status >= 200:
            self._done(True)

    def timeout(self, tx: Any) -> None:
        self._done(False)

    def transportError(self, tx: Any) -> None:
        self._done(False)


@implementer(IPinger)
class OptionsPinger:
    """
    Sends C{OPTIONS} requests through a transaction layer.

    @ivar stats: C{sent}, C{unreachable} (no flow to the hop).
    """

    def __init__(self, transactions: Any, hops: IHopConnector, addresses: LocalAddresses,
                 fromHost: str = "localhost", resolver: Any = None) -> None:
        """
        @param transactions: the L{sipcore.sip.transaction.TransactionLayer}.
        @param hops: finds the flow to a next hop, opening a connection when
            none is open.
        @param addresses: names this server in the Via.
        @param fromHost: the host of the From URI (the server's domain).
        @param resolver: the L{sipcore.dns.Resolver} that locates a host
            given by name (the first location is pinged), or C{None}: only
            IP addresses are pinged.
        """
        self.transactions = transactions
        self.hops = hops
        self.resolver = resolver
        self.addresses = addresses
        self.fromHost = fromHost
        self.stats = {"sent": 0, "unreachable": 0}

    def ping(self, uri: URI) -> defer.Deferred[bool]:
        """
        See L{IPinger.ping}.
        """
        return defer.Deferred.fromCoroutine(self._ping(uri))

    async def _ping(self, uri: URI) -> bool:
        try:
            hop = nextHopOf(uri)
            serverName: str | None = None
        except NoRoute:
            if self.resolver is None:
                self.stats["unreachable"] += 1
                return False
            try:
                locations = await self.resolver.resolve(uri)
            except Exception:
                self.stats["unreachable"] += 1
                return False
            hop, serverName = locations[0].hop, locations[0].serverName
        try:
            flow = await self.hops.openFlow(hop, serverName)
        except Exception:
            self.stats["unreachable"] += 1
            return False
        transport, host, port = self.addresses.side(flow)
        if ":" in host:
            host = "[" + host + "]"
        target = "sip:{}:{}".format("[" + hop.host + "]" if ":" in hop.host else hop.host,
                                    hop.port)
        if hop.transport != "udp":
            target += ";transport=" + hop.transport
        lines = [
            "OPTIONS {} SIP/2.0".format(target),
            "Via: SIP/2.0/{} {}:{};branch={}{}".format(
                transport.upper(), host, port, generateBranch(),
                ";rport" if transport == "udp" else ""),
            "Max-Forwards: 70",
            "From: <sip:ping@{}>;tag={}".format(self.fromHost, generateTag()),
            "To: <{}>".format(target),
            "Call-ID: {}@{}".format(randomHex(12), self.fromHost),
            "CSeq: 1 OPTIONS",
            "Content-Length: 0",
        ]
        request = parseMessage(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        assert isinstance(request, Request)
        answer = _Answer()
        self.stats["sent"] += 1
        self.transactions.sendRequest(request, flow,
                                      (hop.host, hop.port) if hop.transport == "udp" else None,
                                      answer)
        return await answer.deferred
