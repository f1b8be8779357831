# -*- test-case-name: tests.test_proxy -*-
"""
How the proxy names itself (RFC 3261 16.4, 16.6 steps 4 and 8): which
hosts and ports are its own (L{LocalAddresses}), and the C{Via} and signed
C{Record-Route} entries it puts on the requests it forwards
(L{RecordRouter}).

A Record-Route entry of ours carries flow tokens naming the flows of both
sides of the dialog and a signature binding it to the dialog's Call-ID
(L{sipcore.sip.routing.FlowTokens}); the proxy sends an in-dialog request
that comes back through it to the flow those tokens name.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from twisted.logger import Logger

from sipcore.interfaces import IFlow, IHopConnector
from sipcore.message import Request, SIPParseError, Via, parseURI
from sipcore.sip.routing import FLOW_PARAM, SIGNATURE_PARAM, FlowTokens, NoRoute, nextHopOf

__all__ = ["RECORD_ROUTE_METHODS", "LocalAddresses", "RecordRouter"]

#: Methods whose initial requests the proxy record-routes.
RECORD_ROUTE_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})

_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})

_Side = tuple[str, str, int]


@dataclass(frozen=True)
class _Addresses:
    """
    What the proxy knows of its listeners.

    @ivar listening: what L{IHopConnector.listening} returned, which these
        addresses were derived from.
    @ivar hosts: every bound and advertised host.
    @ivar pairs: every C{(host, port)} of a bound or advertised host.
    @ivar ports: every listening port.
    @ivar listeners: C{(bound host, port)} of the listeners of each
        transport, in the order listened.
    """

    listening: tuple[tuple[str, str, int], ...]
    hosts: frozenset[str]
    pairs: frozenset[tuple[str, int]]
    ports: frozenset[int]
    listeners: dict[str, tuple[tuple[str, int], ...]]

    @classmethod
    def of(cls, listening: tuple[tuple[str, str, int], ...],
           advertised: Callable[[str], str]) -> _Addresses:
        hosts: set[str] = set()
        pairs: set[tuple[str, int]] = set()
        listeners: dict[str, list[tuple[str, int]]] = {}
        for transport, host, port in listening:
            bound = host.lower()
            public = advertised(host).lower()
            hosts.update((bound, public))
            pairs.update(((bound, port), (public, port)))
            listeners.setdefault(transport, []).append((host, port))
        return cls(listening, frozenset(hosts), frozenset(pairs),
                   frozenset(port for _, _, port in listening),
                   {transport: tuple(found) for transport, found in listeners.items()})

    def listenerOf(self, transport: str, host: str, port: int) -> tuple[str, int]:
        """
        C{(host, port)} that names this proxy on a flow of C{transport}
        whose local end is C{host:port}: that address when it is a
        listener's (an accepted connection, a UDP socket); for a
        connection this proxy opened (an ephemeral local port), the
        listener of that transport bound to C{host}, else to the wildcard
        address (named by C{host}), else the first one; without a listener
        of that transport, C{host:port} itself.
        """
        found = self.listeners.get(transport, ())
        if (host, port) in found or not found:
            return host, port
        for bound, listening in found:
            if bound == host:
                return host, listening
        for bound, listening in found:
            if bound in _WILDCARD_HOSTS:
                return host, listening
        return found[0]


class LocalAddresses:
    """
    The names of this proxy: the server's domains and the addresses its
    listeners are bound to or advertise.

    @ivar domains: the server's domains (lower case).
    @ivar advertiseHost: the host put in Via and Record-Route for a
        listener bound to the wildcard address, or C{None}: the
        alphabetically lowest domain.
    """

    def __init__(self, hops: IHopConnector, domains: Collection[str],
                 advertiseHost: str | None = None) -> None:
        """
        @param hops: gives the listening addresses
            (L{IHopConnector.listening}), read when first needed, so after
            the listeners started.
        @param domains: the server's domains (the collection is read each
            time, not copied).
        @param advertiseHost: see L{advertiseHost}.
        """
        self.hops = hops
        self.domains = domains
        self.advertiseHost = advertiseHost
        self._addresses: _Addresses | None = None

    def advertised(self, host: str) -> str:
        """
        The host this proxy names itself by on a listener bound to
        C{host}: C{host} itself, or for the wildcard address
        L{advertiseHost}, else the lowest domain, else C{127.0.0.1}.
        """
        if host in _WILDCARD_HOSTS:
            if self.advertiseHost:
                return self.advertiseHost
            domains = sorted(self.domains)
            return domains[0] if domains else "127.0.0.1"
        return host

    def _current(self) -> _Addresses:
        """
        The addresses of the listeners, derived again only when what
        C{hops.listening()} returns changes.
        """
        listening = self.hops.listening()
        cached = self._addresses
        if cached is not None and cached.listening is listening:
            return cached
        addresses = self._addresses = _Addresses.of(listening, self.advertised)
        return addresses

    def isOwn(self, host: str | None, port: int | None) -> bool:
        """
        Whether C{host:port} names this proxy: a domain (without a port, or
        with a listener's port) or a listener's address.
        """
        if not host:
            return False
        host = host.lower()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        addresses = self._current()
        if host in self.domains:
            return port is None or port in addresses.ports
        if port is None:
            return host in addresses.hosts
        return (host, port) in addresses.pairs

    def side(self, flow: IFlow) -> _Side:
        """
        C{(transport, host, port)} of this proxy on C{flow}, for Via and
        Record-Route: a listener's address, also for a connection this
        proxy opened (see L{_Addresses.listenerOf}).
        """
        host, port = flow.local
        host, port = self._current().listenerOf(flow.transport, host, port)
        return flow.transport, self.advertised(host), port


class RecordRouter:
    """
    Builds the proxy's C{Via} and C{Record-Route} entries.

    @ivar addresses: the L{LocalAddresses} the entries name.
    @ivar tokens: the L{FlowTokens} that sign them.
    @ivar enabled: whether dialog-creating requests are record-routed.
    """

    _log = Logger()

    def __init__(self, addresses: LocalAddresses, tokens: FlowTokens,
                 enabled: bool = True, nodeURI: Callable[[], str] | None = None) -> None:
        """
        @param nodeURI: gives this node's node URI (where the other members
            of a cluster reach it), named in the Via and Record-Route of
            requests sent to another member; called when first needed (after
            the listeners started).  C{None} outside a cluster, or when the
            URI names no next hop: the sending flow's local address is
            named.
        """
        self.addresses = addresses
        self.tokens = tokens
        self.enabled = enabled
        self._nodeURI = nodeURI
        self._nodeSide: _Side | None = None

    def wanted(self, request: Request) -> bool:
        """
        Whether C{request} gets our Record-Route: an initial (no To tag)
        INVITE, SUBSCRIBE or REFER, when record-routing is enabled.
        """
        if not self.enabled or request.method not in RECORD_ROUTE_METHODS:
            return False
        try:
            return request.toAddr.tag is None
        except SIPParseError:
            return False

    def add(self, out: Request, inbound: IFlow, outbound: IFlow,
            address: tuple[str, int] | None, callId: str,
            inNode: int | None = None, outNode: int | None = None) -> None:
        """
        Put our Record-Route entries on top of C{out}: one when the request
        leaves on the side it came in on, else two (RFC 5658 double
        record-routing), each carrying the flow tokens of its side.

        A side that is another member of the cluster carries that member's
        token rather than the connection's (in-dialog requests reach it at
        its node URI, over whichever connection is open then), and the
        side towards it names this node's node URI.

        @param out: the request forwarded.
        @param inbound: the flow it came on.
        @param outbound: the flow it leaves on.
        @param address: the UDP address it is sent to on C{outbound}, or
            C{None}.
        @param callId: the dialog's Call-ID, which the entries are signed
            for.
        @param inNode: the C{server_id} of the member it came from, or
            C{None}.
        @param outNode: the C{server_id} of the member it goes to, or
            C{None}.
        """
        inSide = self.addresses.side(inbound)
        outSide = self.side(outbound, outNode is not None)
        inTokens = (self._flowTokens(inbound, None) if inNode is None
                    else [self.tokens.makeNode(inNode)])
        outTokens = (self._flowTokens(outbound, address) if outNode is None
                     else [self.tokens.makeNode(outNode)])
        if inSide == outSide:
            tokens = inTokens + [t for t in outTokens if t not in inTokens]
            out.headers.add("Record-Route", self._value(inSide, tokens, False, callId),
                            first=True)
            return
        out.headers.add("Record-Route", self._value(inSide, inTokens, True, callId),
                        first=True)
        out.headers.add("Record-Route", self._value(outSide, outTokens, True, callId),
                        first=True)

    def side(self, flow: IFlow, toNode: bool = False) -> _Side:
        """
        C{(transport, host, port)} of this proxy on C{flow}: its node URI's
        when C{toNode} (the flow goes to another member) and it has one.
        """
        if toNode and self._nodeURI is not None:
            if self._nodeSide is None:
                self._nodeSide = self._sideOf(self._nodeURI())
            if self._nodeSide is not None:
                return self._nodeSide
        return self.addresses.side(flow)

    def _sideOf(self, uri: str) -> _Side | None:
        """
        C{(transport, host, port)} of the node URI C{uri}, or C{None} (and
        a warning, once) when it names no next hop.
        """
        try:
            hop = nextHopOf(parseURI(uri))
        except (SIPParseError, NoRoute) as e:
            self._log.warn("the node URI {uri} names no next hop ({why}): requests to "
                           "other members name the connection's address", uri=uri, why=e)
            self._nodeURI = None
            return None
        return hop.transport, hop.host, hop.port

    def via(self, flow: IFlow, branch: str, toNode: bool = False) -> str:
        """
        Our Via for a request sent on C{flow} with C{branch} (with C{rport}
        on UDP); C{toNode}: see L{side}.
        """
        transport, host, port = self.side(flow, toNode)
        via = Via(transport.upper(), host, port, (("branch", branch),))
        if transport == "udp":
            via = via.withParam("rport")
        return str(via)

    def _value(self, side: _Side, tokens: list[str], double: bool, callId: str) -> str:
        """
        A Record-Route entry of ours, signed for the dialog of C{callId}
        (see L{FlowTokens.signRoute}).
        """
        transport, host, port = side
        if ":" in host:
            host = "[" + host + "]"
        value = "<sip:{}:{};transport={};lr".format(host, port, transport)
        if double:
            value += ";r2=on"
        flowTokens = "-".join(tokens)
        if flowTokens:
            value += ";{}={}".format(FLOW_PARAM, flowTokens)
        signature = self.tokens.signRoute(transport, host, port, flowTokens, callId)
        return value + ";{}={}>".format(SIGNATURE_PARAM, signature)

    def _flowTokens(self, flow: IFlow, address: tuple[str, int] | None) -> list[str]:
        """
        The flow token naming C{flow} (its connection, or for UDP the peer
        at C{address}, by default the flow's remote address), as a list of
        at most one.
        """
        if flow.conid:
            return [self.tokens.make(flow.conid)]
        if flow.transport != "udp":
            return []
        host, port = address if address is not None else flow.remote
        try:
            return [self.tokens.makeAddress(str(host), int(port))]
        except ValueError:
            return []
