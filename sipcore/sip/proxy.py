# -*- test-case-name: tests.test_proxy -*-
"""
The stateful proxy (RFC 3261 section 16): it routes every request the core
does not answer itself to the registered users of the server's domains,
over the very connection each one registered on, and along the Route set
for requests inside a dialog.

One L{Proxy} is the core's default handler (C{core.routeDefault(proxy)}),
its ACK handler (C{core.routeAcks(proxy.ackReceived)}) and its handler of
responses that match no client transaction
(C{core.routeResponses(proxy.responseReceived)}).

Per request (one server transaction) it keeps a response context
(L{sipcore.sip.forking}): the branches it forked to (one client transaction
each), the responses they got, and timer C for INVITE branches.  It reaches
next hops through an L{IHopConnector}, opening connections where none is
open, and locates servers by name with a L{sipcore.dns.Resolver} (RFC
3263), failing a branch over to the next location on a transport error, a
timeout or a C{503}.  See C{docs/routing.rst}.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from sipcore.cluster import INodeDirectory
from sipcore.cluster.delivery import FlowRefused, NodeRoutes
from sipcore.dns import Location, ResolveFailed, Resolver
from sipcore.interfaces import IFlow, IHopConnector, ILocationStore
from sipcore.location import Binding, StoreUnavailable
from sipcore.location.binding import aorKey
from sipcore.message import (
    URI,
    Request,
    Response,
    SIPParseError,
    generateTag,
    parseAddressList,
    parseURI,
)
from sipcore.metrics import CollectorRegistry, Metric, counterFamily, labelled, register
from sipcore.routes.hook import (
    PEER,
    USER,
    Caller,
    RouteAnswer,
    RouteTarget,
    RoutingChain,
    RoutingRequest,
)
from sipcore.sip.core import Refused
from sipcore.sip.forking import Branch, Decision, ResponseContext, Target
from sipcore.sip.recordroute import LocalAddresses, RecordRouter
from sipcore.sip.routing import (
    FlowTokens,
    NextHop,
    NodeRef,
    NoRoute,
    isIPLiteral,
    loopHash,
    loopHashOfBranch,
    nextHopOf,
    parseReceived,
    proxyBranch,
    statelessBranch,
)
from sipcore.sip.servertransaction import sendToSender
from sipcore.sip.trust import TrustedPeers
from sipcore.transport.outgoing import ConnectFailed

__all__ = ["DEFAULT_MAX_BRANCHES", "DEFAULT_TIMER_C", "RECURSE", "RELAY", "Proxy",
           "ProxyPolicy"]

#: C{--redirects}: a 3xx a branch receives goes to the caller (the default).
RELAY = "relay"

#: C{--redirects}: the proxy forwards the request to a 3xx's Contacts.
RECURSE = "recurse"

#: Seconds an INVITE branch may go without a provisional response before
#: it is cancelled (RFC 3261 16.6 step 11: more than 3 minutes... we use
#: exactly 3 minutes, as is common).
DEFAULT_TIMER_C = 180.0

#: INVITE branches remembered at most after they ended (for stray 2xx).
DEFAULT_MAX_RECENT_BRANCHES = 65536

#: Branches one request to an address of record forks to at most.
DEFAULT_MAX_BRANCHES = 10


@dataclass(frozen=True)
class ProxyPolicy:
    """
    The proxy's settings.

    @ivar timerC: seconds an INVITE branch waits for its next provisional
        response before it is cancelled (and the caller gets C{408}).
    @ivar forwardForeign: whether initial requests for domains this server
        does not serve are forwarded (by the host and port in the URI, IP
        literals only), and so are requests with a Route set this proxy
        did not build.  When false they are refused with
        C{foreignStatus}.  In-dialog requests routed through this proxy's
        own (signed) Record-Route always go to the flow its flow tokens
        name, whatever their Route set or Request-URI says.
    @ivar foreignStatus: the status for a refused foreign request.
    @ivar advertiseHost: the host put in Via and Record-Route for a
        listener bound to the wildcard address.  The composition root
        passes C{--advertise-host}, else the first C{--domain} given; when
        C{None} the alphabetically lowest of the core's domains is used
        (the core keeps its domains as a set).
    @ivar recordRoute: whether to record-route dialog-creating requests.
    @ivar maxBranches: the most branches a request to an address of record
        forks to: its bindings with the highest C{q} first, then the most
        recently registered.
    @ivar trustedPeers: the sources a binding's C{Path} is honoured from
        (its C{received} address); any other binding is reached at its own
        flow.  Requests from them may use routes.
    @ivar redirects: L{RELAY} (a 3xx goes to the caller, as chosen among
        the final responses) or L{RECURSE} (the request is forwarded to the
        3xx's Contacts, while the request has had fewer than
        C{maxBranches} branches).
    """

    timerC: float = DEFAULT_TIMER_C
    forwardForeign: bool = False
    foreignStatus: int = 403
    advertiseHost: str | None = None
    recordRoute: bool = True
    maxBranches: int = DEFAULT_MAX_BRANCHES
    trustedPeers: TrustedPeers = TrustedPeers()
    redirects: str = RELAY


#: The methods the proxy's request counts name (others count as C{other}).
METHODS = frozenset(("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "MESSAGE", "SUBSCRIBE",
                     "NOTIFY", "REFER", "INFO", "UPDATE", "PRACK", "PUBLISH", "REGISTER"))


class Proxy:
    """
    The stateful proxy.

    @ivar stats: a L{Counter}: C{forwarded} (branches sent), C{acksForwarded},
        C{strayForwarded}, C{strayDropped}, C{strayUnknownBranch} (stray
        2xx dropped because their branch is not one of ours),
        C{staleBindings}, C{cancelsSent}, C{timerC}, C{failovers}
        (branches sent again to their next location), C{forksCapped}
        (requests that had more bindings than C{maxBranches}), C{pathIgnored}
        (bindings whose Path came from a source not trusted),
        C{nodeFlowsRefused} (requests naming one of this node's connections
        without a valid cluster MAC, answered 403), and one
        C{status:NNN} per final response the proxy generated itself.
    @ivar requests: a L{Counter} of the requests routed, by (method, outcome):
        the class of the final response the caller got (C{2xx} to C{6xx});
        for C{ACK}, C{forwarded} or C{dropped}.  Methods other than
        L{METHODS} count as C{other}.
    @ivar maxRecentBranches: how many ended INVITE branches are
        remembered (for stray 2xx) at most.
    """

    _log = Logger()

    def __init__(
        self,
        core: Any,
        store: ILocationStore,
        clock: IReactorTime,
        hops: IHopConnector,
        serverId: int = 0,
        policy: ProxyPolicy | None = None,
        staleBinding: Callable[[Binding], object] | None = None,
        flowTokens: FlowTokens | None = None,
        maxRecentBranches: int = DEFAULT_MAX_RECENT_BRANCHES,
        metrics: CollectorRegistry | None = None,
        resolver: Resolver | None = None,
        routers: RoutingChain | None = None,
        directory: INodeDirectory | None = None,
        nodeURI: Callable[[], str] | None = None,
    ) -> None:
        """
        @param core: the L{sipcore.sip.core.SIPCore} (its C{transactions},
            C{domains} and C{respond} are used).
        @param store: where bindings are looked up.
        @param clock: for timer C.
        @param hops: the L{IHopConnector} of the transports: the flow of
            a connection or a next hop, and the listeners' addresses (read
            when a request is routed, so after they started).
        @param serverId: this node's C{server_id}; only bindings with it
            are delivered over a connection.
        @param staleBinding: called with a binding whose connection is gone
            (the composition root removes it from the store); may return a
            Deferred, whose failure is logged.
        @param flowTokens: the signer of Record-Route flow tokens and
            entries (a new random key by default).
        @param maxRecentBranches: ended INVITE branches remembered at most
            (the oldest are forgotten first).
        @param metrics: the registry its figures are served from, or
            C{None}.
        @param resolver: what locates hosts given by name (RFC 3263); when
            C{None}, only IP addresses are reached.
        @param routers: the L{RoutingChain} asked where an initial request
            goes that is for no registered local user, when its caller is
            an authenticated local user or a trusted peer; C{None}: none.
        @param directory: the live members of this node's cluster: a
            binding bound to a connection of one of them is reached through
            it, and a request from one of them naming a connection of this
            node is delivered over it (L{sipcore.cluster.delivery}).
            C{None}: a single node (such a binding gets C{480}).
        @param nodeURI: gives this node's node URI (where the members reach
            it), named in the Via and Record-Route of what it sends them;
            called once, when first needed.
        """
        self.core = core
        self.transactions = core.transactions
        self.store = store
        self.clock = clock
        self.hops = hops
        self.serverId = serverId
        self.policy = policy or ProxyPolicy()
        self.staleBinding = staleBinding
        self.tokens = flowTokens or FlowTokens()
        self.addresses = LocalAddresses(hops, core.domains, self.policy.advertiseHost)
        self.nodes = NodeRoutes(directory, clock) if directory is not None else None
        self.recordRouter = RecordRouter(self.addresses, self.tokens, self.policy.recordRoute,
                                         nodeURI)
        self.maxRecentBranches = maxRecentBranches
        self.resolver = resolver
        self.routers = routers if routers is not None else RoutingChain((), clock)
        self.stats: Counter[str] = Counter()
        self.requests: Counter[tuple[str, str]] = Counter()
        register(metrics, _ProxyCollector(self))
        self._contexts: dict[Any, ResponseContext] = {}
        self._live: set[ResponseContext] = set()
        # branch -> Branch of each INVITE branch not ended yet.
        self._liveInvites: dict[str, Branch] = {}
        # branch -> (forget at, upstream flow, request) of ended INVITE
        # branches, oldest first.
        self._endedInvites: OrderedDict[str, tuple[float, IFlow, Request]] = OrderedDict()

    def install(self) -> None:
        """
        Make this proxy the core's default request handler, its ACK
        handler and its stray response handler.
        """
        self.core.routeDefault(self)
        self.core.routeAcks(self.ackReceived)
        self.core.routeResponses(self.responseReceived)

    def stop(self) -> None:
        """
        Cancel every timer the proxy holds (shutdown).
        """
        for context in list(self._live):
            context.stop()
        self._live.clear()
        self._contexts.clear()
        self._liveInvites.clear()
        self._endedInvites.clear()

    def isOwn(self, host: str | None, port: int | None) -> bool:
        """
        Whether C{host:port} names this proxy (L{LocalAddresses.isOwn}).
        """
        return self.addresses.isOwn(host, port)

    # -- requests ---------------------------------------------------------------

    def __call__(self, tx: Any) -> defer.Deferred[None]:
        """
        Route one new request (the core's default handler).

        @return: a L{Deferred} that fires when routing decided (the
            branches are sent or the request was answered); it never fails.
        """
        d = defer.Deferred.fromCoroutine(self._handle(tx))
        d.addErrback(self._handleFailed, tx)
        return d

    def _handleFailed(self, failure: Failure, tx: Any) -> None:
        self._log.failure("routing {method} failed", failure, method=tx.request.method)
        try:
            self.core.respond(tx, 500, "Server Internal Error", toTag=generateTag())
        except Exception:
            self._log.failure("could not answer 500")

    def answered(self, method: str, status: int) -> None:
        """
        Count a routed C{method} request whose caller got a final response
        of C{status} (L{requests}).
        """
        self._count(method, "{}xx".format(status // 100))

    def _count(self, method: str, outcome: str) -> None:
        self.requests[method if method in METHODS else "other", outcome] += 1

    def _refuse(self, tx: Any, status: int, reason: str,
                headers: Iterable[tuple[str, str]] = ()) -> None:
        self.stats["status:{}".format(status)] += 1
        self.answered(tx.request.method, status)
        self.core.respond(tx, status, reason, headers=headers, toTag=generateTag())

    async def _handle(self, tx: Any) -> None:
        request = tx.request
        if request.method == "CANCEL":
            self._cancelReceived(tx)
            return
        try:
            decision = self._route(request, tx.flow)
        except Refused as e:
            self._refuse(tx, e.status, e.reason, e.headers)
            return
        context = ResponseContext(self, tx)
        if context.isInvite:
            self._contexts[tx] = context
        self._live.add(context)
        targets = decision.targets
        if decision.aor is not None:
            try:
                bindings = await self.store.lookup(decision.aor, self.clock.seconds())
            except StoreUnavailable:
                self._live.discard(context)
                context.respondLocally(503, "Service Unavailable", [("Retry-After", "5")])
                return
            except Exception:
                self._live.discard(context)
                self._log.failure("location lookup of {aor} failed", aor=decision.aor)
                context.respondLocally(500, "Server Internal Error")
                return
            if context.cancelled or context.finalSent:
                self._live.discard(context)
                return
            if not bindings and decision.routable:
                routed = await self._consult(tx, context, decision, local=True)
                if routed is None:
                    return
                targets = routed
            elif not bindings:
                self._live.discard(context)
                self.stats["status:404"] += 1
                context.respondLocally(404, "Not Found")
                return
            else:
                callId = decision.request.callId
                targets = [self._bindingTarget(binding, callId)
                           for binding in self._forkSet(bindings)]
        elif decision.routable:
            routed = await self._consult(tx, context, decision, local=False)
            if routed is None:
                return
            targets = routed
        context.start(targets, decision)

    def _caller(self, tx: Any) -> Caller | None:
        """
        Who may use routes: the local user the request was authenticated
        as, or a trusted peer; C{None} for anyone else.
        """
        source = tx.flow.remote[0]
        if tx.authenticated is not None:
            return Caller(USER, source, str(tx.authenticated))
        if source in self.policy.trustedPeers:
            return Caller(PEER, source)
        return None

    async def _consult(self, tx: Any, context: ResponseContext, decision: Decision,
                       local: bool) -> list[Target] | None:
        """
        Ask the routers where an initial request for no registered local
        user goes.  Without a router's answer the request is treated as
        without routers: C{404} for a local Request-URI, else forwarded by
        its Request-URI under C{forwardForeign}, else refused.  A caller
        that may not use routes is treated the same way.

        @return: the targets, or C{None} when the request was answered.
        """
        caller = self._caller(tx)
        answer: Any = None
        if caller is not None:
            answer = await self.routers.route(
                RoutingRequest(tx.request, decision.request.uri, caller, local))
        if context.cancelled or context.finalSent:
            self._live.discard(context)
            return None
        if answer is None:
            if local:
                refusal = Refused(404, "Not Found")
            elif self.policy.forwardForeign:
                try:
                    return [self._hopTarget(decision.request.uri)]
                except Refused as e:
                    refusal = e
            else:
                refusal = self._foreign()
            self._live.discard(context)
            self.stats["status:{}".format(refusal.status)] += 1
            context.respondLocally(refusal.status, refusal.reason, refusal.headers)
            return None
        if isinstance(answer, RouteAnswer):
            self._live.discard(context)
            self.stats["status:{}".format(answer.status)] += 1
            context.respondLocally(answer.status, answer.reason, answer.headers)
            return None
        decision.serial = answer.serial
        return [self._routeTarget(target) for target in answer.targets]

    def _routeTarget(self, target: RouteTarget) -> Target:
        """
        The L{Target} of a router's L{RouteTarget}.
        """
        return self.targetOf(target.uri, target.nextHop)

    def targetOf(self, uri: URI | None, nextHop: URI | None = None) -> Target:
        """
        The L{Target} that sends a request with Request-URI C{uri} (C{None}:
        unchanged) to C{nextHop} (C{None}: where C{uri} points): the next
        hop it names, located by the resolver (RFC 3263) when it names a
        host by name; a URI reached neither way fails its branch with
        C{503}.
        """
        hopURI = nextHop or uri
        if hopURI is None:
            raise ValueError("a target needs a Request-URI or a next hop")
        try:
            return Target(uri=uri, hop=nextHopOf(hopURI))
        except NoRoute:
            if self._locatable(hopURI):
                return Target(uri=uri, locate=hopURI)
            return Target(uri=uri)

    def _forkSet(self, bindings: list[Binding]) -> list[Binding]:
        """
        The bindings a request forks to: at most C{policy.maxBranches}, the
        highest C{q} first, then the most recently registered.
        """
        ordered = sorted(bindings, key=lambda b: (-b.q, -b.lastModified))
        limit = self.policy.maxBranches
        if len(ordered) > limit:
            self.stats["forksCapped"] += 1
            del ordered[limit:]
        return ordered

    def _route(self, request: Request, flow: IFlow, stateless: bool = False) -> Decision:
        """
        Decide where a request goes (RFC 3261 16.3 to 16.5).

        @raise Refused: with the answer when it goes nowhere.
        """
        try:
            maxForwards = request.maxForwards
            routes = request.routes
            hashValue = loopHash(request)
            toTag = request.toAddr.tag
            callId = request.callId
        except SIPParseError as e:
            raise Refused(400, e.reason) from None
        if maxForwards == 0:
            raise Refused(483, "Too Many Hops")
        if not stateless and self._looped(request, hashValue):
            raise Refused(482, "Loop Detected")
        headers = request.headers.copy()
        uri = request.uri
        # Only an entry of ours that we signed for this dialog proves the
        # request follows a Route set we built.
        signed: list[URI] = []
        # Strict routing by the previous hop (16.4): the Request-URI is a
        # Record-Route value of ours (signed); the real one is the last
        # Route.
        if (uri.isSIP and uri.hasParam("lr") and not uri.user and routes
                and self.isOwn(uri.host, uri.port)
                and self.tokens.isSignedRoute(uri, callId)):
            signed.append(uri)
            uri = routes[-1].uri
            routes = routes[:-1]
            headers.remove("Route")
            for route in routes:
                headers.add("Route", str(route))
        # A member of the cluster names one of our connections (with a MAC
        # only members can make): the request goes over that connection.
        nodeFlow = None
        if (self.nodes is not None and routes and routes[0].uri.isSIP
                and self.nodes.names(routes[0].uri)
                and self.isOwn(routes[0].uri.host, routes[0].uri.port)):
            try:
                nodeFlow = self.nodes.check(routes[0].uri, callId, str(flow.remote[0]))
            except FlowRefused:
                self.stats["nodeFlowsRefused"] += 1
                raise Refused(403, "Forbidden (flow not authenticated)") from None
            routes.pop(0)
            headers.removeFirst("Route")
        # Every entry naming us is removed (an outbound proxy's preloaded
        # Route names us too, but proves nothing).
        while routes and routes[0].uri.isSIP and self.isOwn(routes[0].uri.host,
                                                            routes[0].uri.port):
            own = routes.pop(0).uri
            headers.removeFirst("Route")
            if self.tokens.isSignedRoute(own, callId):
                signed.append(own)
        base = Request(request.method, uri, headers, request.body, request.version)
        if maxForwards is None:
            base.headers.set("Max-Forwards", "70")
        else:
            base.headers.set("Max-Forwards", str(maxForwards - 1))
        decision = Decision(base, [], loopHash=hashValue)
        if nodeFlow is not None:
            conid, decision.fromNode = nodeFlow
            if self.hops.connection(conid) is None:
                raise Refused(430, "Flow Failed")
            decision.targets.append(Target(conid=conid, failStatus=430, failReason="Flow Failed"))
            return decision

        # Our signed entries name the flows of both sides of the dialog:
        # the request goes to the other side's flow, never to an address
        # its Route set or Request-URI chooses.
        flows = self.tokens.fromURIs(signed)
        if flows:
            decision.targets.append(self._dialogTarget(flows, flow))
            return decision

        if routes:
            if not self.policy.forwardForeign:
                raise self._foreign()
            decision.targets.append(self._hopTarget(routes[0].uri))
            return decision
        if self._isOwnURI(uri):
            if stateless:
                raise Refused(404, "Not Found")
            if toTag and not uri.user:
                raise Refused(481, "Call/Transaction Does Not Exist")
            if not uri.user or not uri.host:
                raise Refused(404, "Not Found")
            decision.aor = aorKey(uri.user, uri.host.lower())
            decision.routable = bool(self.routers) and not toTag
            return decision
        if self.routers and not toTag and not stateless:
            decision.routable = True
            return decision
        if not self.policy.forwardForeign:
            raise self._foreign()
        decision.targets.append(self._hopTarget(uri))
        return decision

    def _dialogTarget(self, flows: list[int | NextHop | NodeRef], inbound: IFlow) -> Target:
        """
        Where a request routed through our signed Record-Route goes: the
        first flow its flow tokens name that is not the one it came on
        (the other side of the dialog), else that one (a dialog of a flow
        with itself).  A side served by another member of the cluster is
        chosen only when no other side is left (a request it sent goes to
        this node's side); it is reached at its node URI.

        @raise Refused: C{430} when that flow is a connection that is gone,
            or a member that is not live.
        """
        others = [f for f in flows if not self._isInbound(f, inbound)]
        here = [f for f in others if not isinstance(f, NodeRef)]
        chosen = (here or others or flows)[0]
        if isinstance(chosen, NodeRef):
            return self._nodeTarget(chosen.serverId)
        if isinstance(chosen, NextHop):
            return Target(hop=chosen, failStatus=430, failReason="Flow Failed")
        if self.hops.connection(chosen) is None:
            raise Refused(430, "Flow Failed")
        return Target(conid=chosen, failStatus=430, failReason="Flow Failed")

    def _nodeTarget(self, serverId: int) -> Target:
        """
        The L{Target} of the cluster member C{serverId}'s side of a dialog.

        @raise Refused: C{430} when it is not a live member.
        """
        found = self.nodes.node(serverId) if self.nodes is not None else None
        if found is None:
            raise Refused(430, "Flow Failed")
        return Target(hop=found[1], node=serverId, failStatus=430, failReason="Flow Failed")

    @staticmethod
    def _isInbound(named: int | NextHop | NodeRef, inbound: IFlow) -> bool:
        """
        Whether a flow named by a token is the flow C{inbound}.
        """
        if isinstance(named, NodeRef):
            return False
        if isinstance(named, NextHop):
            if inbound.conid or inbound.transport != "udp":
                return False
            host, port = inbound.remote[0], inbound.remote[1]
            return port == named.port and _sameHost(host, named.host)
        return bool(inbound.conid) and named == inbound.conid

    def _foreign(self) -> Refused:
        status = self.policy.foreignStatus
        return Refused(status, "Forbidden (relaying denied)" if status == 403 else "Not Found")

    def _isOwnURI(self, uri: URI) -> bool:
        if uri.scheme not in ("sip", "sips"):
            return False
        return self.isOwn(uri.host, uri.port)

    def _hopTarget(self, uri: URI) -> Target:
        try:
            hop = nextHopOf(uri)
        except NoRoute as e:
            if self._locatable(uri):
                return Target(locate=uri)
            raise Refused(e.status, e.reason) from None
        return Target(hop=hop)

    def _locatable(self, uri: URI) -> bool:
        """
        Whether C{uri} names its host by a name the resolver can locate.
        """
        return (self.resolver is not None and uri.isSIP and bool(uri.host)
                and not isIPLiteral(uri.host))

    def _looped(self, request: Request, hashValue: str) -> bool:
        """
        Whether a Via of ours carries the loop hash of this very request
        (16.3 step 4): it came back unchanged.
        """
        for via in request.vias:
            if loopHashOfBranch(via.branch) == hashValue and self.isOwn(via.host, via.port):
                return True
        return False

    def _bindingTarget(self, binding: Binding, callId: str) -> Target:
        """
        Where a binding is reached: along its Path when the REGISTER came
        from a trusted peer, else over its connection when it is bound to
        one of this node, else through the live cluster member holding its
        connection (with a C{Route} naming that connection, signed for
        C{callId}), else at the address the REGISTER came from (UDP), else
        at its Contact.  The Request-URI becomes the Contact.  A binding
        bound to a connection no live node holds fails with C{480}.
        """
        try:
            contact = parseURI(binding.contact)
        except SIPParseError:
            return Target(failStatus=480, failReason="Temporarily Unavailable",
                           binding=binding)
        target = Target(uri=contact, failStatus=480, failReason="Temporarily Unavailable",
                         binding=binding)
        if binding.path and not self._pathTrusted(binding):
            self.stats["pathIgnored"] += 1
        elif binding.path:
            try:
                path = parseAddressList(binding.path, nameAddrOnly=True)
            except SIPParseError:
                path = []
            while path and self.isOwn(path[0].uri.host, path[0].uri.port):
                path.pop(0)
            if path:
                target.routes = [str(address) for address in path]
                try:
                    target.hop = nextHopOf(path[0].uri)
                except NoRoute:
                    if self._locatable(path[0].uri):
                        target.locate = path[0].uri
                return target
        if binding.connectionId > 0:
            if binding.serverId == self.serverId:
                target.conid = binding.connectionId
            elif self.nodes is not None:
                remote = self.nodes.flowOf(binding.serverId, binding.connectionId, callId)
                if remote is not None:
                    target.hop = remote.hop
                    target.routes = [remote.route]
                    target.node = binding.serverId
            return target
        received = parseReceived(binding.received)
        if received is not None:
            target.hop = received
            return target
        try:
            target.hop = nextHopOf(contact)
        except NoRoute:
            if self._locatable(contact):
                target.locate = contact
        return target

    def _pathTrusted(self, binding: Binding) -> bool:
        """
        Whether a binding's Path was registered by a trusted peer: the
        address its REGISTER came from (C{received}) is one.
        """
        received = parseReceived(binding.received)
        return received is not None and received.host in self.policy.trustedPeers

    # -- sending ---------------------------------------------------------------

    def _resolve(self, target: Target) -> tuple[IFlow, tuple[str, int] | None] | None:
        """
        The flow (and address, for UDP) a target is sent on, or C{None}
        when it cannot be reached now.
        """
        if target.conid is not None:
            flow = self.hops.connection(target.conid)
            if flow is None:
                return None
            return flow, None
        hop = target.hop
        if hop is None:
            return None
        flow = self.hops.flowTo(hop.transport, hop.host, hop.port)
        if flow is None:
            return None
        if hop.transport == "udp":
            return flow, (hop.host, hop.port)
        return flow, None

    def _staleBinding(self, binding: Binding) -> None:
        self.stats["staleBindings"] += 1
        self._log.info(
            "binding {ruid} of {aor}: connection {conid} is gone; removing it",
            ruid=binding.ruid, aor=binding.aor, conid=binding.connectionId)
        if self.staleBinding is None:
            return
        d = defer.maybeDeferred(self.staleBinding, binding)
        d.addErrback(self._staleBindingFailed, binding)

    def _staleBindingFailed(self, failure: Failure, binding: Binding) -> None:
        """
        Log, once, that removing a stale binding failed: an unavailable
        store as an error line, anything else with its traceback.
        """
        if failure.check(StoreUnavailable):
            self._log.error(
                "could not remove the bindings of gone connection {conid}: {error}",
                conid=binding.connectionId, error=failure.getErrorMessage())
            return
        self._log.failure("removing the bindings of gone connection {conid} failed",
                          failure, conid=binding.connectionId)

    def sendBranch(self, context: ResponseContext, branch: Branch, decision: Decision) -> None:
        """
        Send the branch to its target: over its connection, or to the
        first of its locations (its next hop, or those the resolver gives
        for C{target.locate}), opening a connection when none is open.  A
        target that cannot be reached fails the branch.
        """
        target = branch.target
        branch.decision = decision
        if target.conid is not None:
            flow = self.hops.connection(target.conid)
            if flow is None:
                if target.binding is not None:
                    self._staleBinding(target.binding)
                branch.fail(target.failStatus, target.failReason)
                return
            self._sendBranchOn(context, branch, decision, flow, None)
            return
        if target.hop is not None:
            branch.locations = [Location(target.hop, target.hop.host)]
            self._tryNextLocation(branch)
            return
        if target.locate is not None and self.resolver is not None:
            d = self.resolver.resolve(target.locate)
            d.addCallbacks(self._located, self._notLocated,
                           callbackArgs=(branch,), errbackArgs=(branch,))
            d.addErrback(self._unexpected, branch)
            return
        branch.fail(target.failStatus, target.failReason)

    def _located(self, locations: list[Location], branch: Branch) -> None:
        branch.locations = list(locations)
        self._tryNextLocation(branch)

    def _notLocated(self, failure: Failure, branch: Branch) -> None:
        failure.trap(ResolveFailed)
        error = failure.value
        assert isinstance(error, ResolveFailed)
        self._log.warn("cannot locate {uri}: {why}", uri=branch.target.locate,
                       why=error.reason)
        branch.fail(503, "Service Unavailable")

    def _tryNextLocation(self, branch: Branch) -> None:
        """
        Open (or reuse) a flow to the branch's next location and send the
        branch there; when it cannot be reached, go on to the one after.
        """
        location = branch.locations.pop(0)
        branch.location = location
        d = self.hops.openFlow(location.hop, location.serverName)
        d.addCallbacks(self._flowOpened, self._flowFailed,
                       callbackArgs=(branch, location), errbackArgs=(branch,))
        d.addErrback(self._unexpected, branch)

    def _unexpected(self, failure: Failure, branch: Branch) -> None:
        """
        Sending a branch raised: log it, and fail the branch.
        """
        self._log.failure("sending {branch!r} failed", failure, branch=branch)
        if not branch.done:
            branch.fail(500, "Server Internal Error")

    def _flowOpened(self, flow: IFlow, branch: Branch, location: Location) -> None:
        context = branch.context
        if branch.done:
            return
        if context.cancelled or branch.cancelStatus is not None:
            status = branch.cancelStatus or 487
            branch.fail(status, "Request Timeout" if status == 408 else "Request Terminated")
            return
        hop = location.hop
        address = (hop.host, hop.port) if hop.transport == "udp" else None
        assert branch.decision is not None
        self._sendBranchOn(context, branch, branch.decision, flow, address)

    def _flowFailed(self, failure: Failure, branch: Branch) -> None:
        failure.trap(ConnectFailed)
        error = failure.value
        assert isinstance(error, ConnectFailed)
        if branch.done:
            return
        if self.failover(branch, error.reason):
            return
        target = branch.target
        branch.fail(target.failStatus, target.failReason)

    def failover(self, branch: Branch, why: str) -> bool:
        """
        The branch's location failed (transport error, timeout, C{503}):
        send it to its next location in a new client transaction (RFC 3263
        section 4.3), unless it has none left, was cancelled or already had
        a provisional response.

        @return: whether it was sent on.
        """
        if (not branch.locations or branch.done or branch.provisional
                or branch.cancelStatus is not None or branch.context.cancelled):
            return False
        self._liveInvites.pop(branch.branchId, None)
        branch.stopTimers()
        self.stats["failovers"] += 1
        self._log.info("{method} to {failed}: {why}; trying {next}",
                       method=branch.context.request.method,
                       failed=branch.location.hop if branch.location else None,
                       why=why, next=branch.locations[0].hop)
        self._tryNextLocation(branch)
        return True

    def _sendBranchOn(self, context: ResponseContext, branch: Branch, decision: Decision,
                      flow: IFlow, address: tuple[str, int] | None) -> None:
        """
        Build the branch's request (16.6) for C{flow} and send it in a new
        client transaction.
        """
        target = branch.target
        base = decision.request
        out = Request(base.method, target.uri or base.uri, base.headers.copy(), base.body,
                      base.version)
        for route in reversed(target.routes):
            out.headers.add("Route", route, first=True)
        if self.recordRouter.wanted(base):
            self.recordRouter.add(out, context.tx.flow, flow, address, base.callId,
                                  inNode=decision.fromNode, outNode=target.node)
        branchId = proxyBranch(decision.loopHash)
        out.headers.add("Via", self.recordRouter.via(flow, branchId, target.node is not None),
                        first=True)
        branch.request = out
        branch.flow = flow
        branch.address = address
        branch.branchId = branchId
        self.stats["forwarded"] += 1
        if out.method == "INVITE":
            branch.startTimerC()
            self._liveInvites[branchId] = branch
        branch.tx = self.transactions.sendRequest(out, flow, address, branch)

    # -- INVITE branches remembered for stray 2xx ---------------------------------

    def branchEnded(self, branch: Branch) -> None:
        """
        An INVITE branch got its final response: remember where a stray
        2xx for it goes for 64*T1 after its client transaction ends (which
        is up to 64*T1 after the final response), in bounded memory.
        """
        if self._liveInvites.pop(branch.branchId, None) is None:
            return
        now = self.clock.seconds()
        ended = self._endedInvites
        ended[branch.branchId] = (now + 2 * self.transactions.timers.timeout,
                                  branch.context.tx.flow, branch.context.request)
        self._forgetOldBranches(now)

    def _forgetOldBranches(self, now: float) -> None:
        ended = self._endedInvites
        while ended:
            branchId, (forgetAt, _, _) = next(iter(ended.items()))
            if forgetAt > now and len(ended) <= self.maxRecentBranches:
                break
            del ended[branchId]

    def _upstreamOf(self, branchId: str | None) -> tuple[IFlow, Request] | None:
        """
        Where responses for the INVITE branch C{branchId} go: the flow and
        request of its server transaction, if the branch is one this proxy
        sent and it is live or ended recently.
        """
        if not branchId:
            return None
        branch = self._liveInvites.get(branchId)
        if branch is not None:
            return branch.context.tx.flow, branch.context.request
        self._forgetOldBranches(self.clock.seconds())
        entry = self._endedInvites.get(branchId)
        if entry is None:
            return None
        return entry[1], entry[2]

    # -- CANCEL ------------------------------------------------------------------

    def _cancelReceived(self, tx: Any) -> None:
        """
        A CANCEL (16.10): 200 to it, then 487 to its INVITE and a CANCEL on
        every pending branch; 481 when no INVITE matches.
        """
        invite = self.transactions.findInviteForCancel(tx.request)
        if invite is None:
            self._refuse(tx, 481, "Call/Transaction Does Not Exist")
            return
        self.core.respond(tx, 200, "OK", toTag=generateTag())
        self.answered("CANCEL", 200)
        context = self._contexts.get(invite)
        if context is not None:
            context.cancel()

    def finished(self, context: ResponseContext) -> None:
        """
        C{context} is done: every branch ended and the final response went
        upstream.
        """
        self.forget(context)
        self._live.discard(context)

    def forget(self, context: ResponseContext) -> None:
        """
        A CANCEL no longer finds C{context}: its final response went
        upstream.
        """
        if self._contexts.get(context.tx) is context:
            del self._contexts[context.tx]

    # -- ACK for 2xx --------------------------------------------------------------

    def ackReceived(self, request: Request, flow: IFlow) -> bool:
        """
        An ACK no server transaction absorbed (the ACK for a 2xx): forward
        it statelessly along its Route set or by its Request-URI (16.11);
        drop it when it goes nowhere.  A next hop given by host name is
        located by the resolver (RFC 3263) and the ACK goes to its first
        location; one that cannot be located is dropped with one log line.

        @return: C{True} if it was forwarded or is being located (it
            belongs to a dialog), C{False} if it was dropped.
        """
        try:
            decision = self._route(request, flow, stateless=True)
            (target,) = decision.targets
        except (Refused, ValueError):
            return self._ackDropped()
        if target.locate is not None and self.resolver is not None:
            d = self.resolver.resolve(target.locate)
            d.addCallbacks(self._ackLocated, self._ackNotLocated,
                           callbackArgs=(request, decision, target),
                           errbackArgs=(target.locate,))
            d.addErrback(self._ackFailed)
            return True
        return self._forwardAck(request, decision, target)

    def _ackLocated(self, locations: list[Location], request: Request, decision: Decision,
                    target: Target) -> None:
        located = Target(uri=target.uri, hop=locations[0].hop)
        self._forwardAck(request, decision, located)

    def _ackNotLocated(self, failure: Failure, uri: URI) -> None:
        failure.trap(ResolveFailed)
        error = failure.value
        assert isinstance(error, ResolveFailed)
        self._log.warn("cannot locate {uri} for an ACK: {why}; dropped", uri=uri,
                       why=error.reason)
        self._ackDropped()

    def _ackFailed(self, failure: Failure) -> None:
        self._log.failure("forwarding an ACK failed", failure)
        self._ackDropped()

    def _forwardAck(self, request: Request, decision: Decision, target: Target) -> bool:
        """
        Send the ACK of C{decision} to C{target} over a flow that reaches
        it now (no connection is opened for an ACK).
        """
        resolved = self._resolve(target)
        if resolved is None:
            return self._ackDropped()
        out = decision.request
        if target.uri is not None:
            out.uri = target.uri
        outFlow, address = resolved
        out.headers.add("Via", self.recordRouter.via(outFlow, statelessBranch(request),
                                                     target.node is not None), first=True)
        sent = _sendOn(outFlow, address, out.serialize())
        if not sent:
            return self._ackDropped()
        self.stats["acksForwarded"] += 1
        self._count("ACK", "forwarded")
        return True

    def _ackDropped(self) -> bool:
        self.stats["acksDropped"] += 1
        self._count("ACK", "dropped")
        return False

    # -- responses without a transaction ----------------------------------------

    def responseReceived(self, response: Response, flow: IFlow) -> None:
        """
        A response that matched no client transaction.  A 2xx to INVITE
        whose top Via is ours, with the branch of an INVITE this proxy
        forwarded (live, or ended less than 64*T1 after its transaction
        ended) and its Call-ID, is forwarded statelessly (RFC 6026 section
        7.1) to where that INVITE's responses went: never to an address
        taken from the response.  Everything else is dropped and counted.
        """
        try:
            vias = response.vias
            method = response.cseq[1]
            callId = response.callId
        except SIPParseError:
            self.stats["strayDropped"] += 1
            return
        if not (200 <= response.status < 300 and method == "INVITE" and len(vias) >= 2
                and self.isOwn(vias[0].host, vias[0].port)):
            self.stats["strayDropped"] += 1
            return
        upstream = self._upstreamOf(vias[0].branch)
        if upstream is None or upstream[1].callId != callId:
            self.stats["strayUnknownBranch"] += 1
            self.stats["strayDropped"] += 1
            return
        outFlow, request = upstream
        response.headers.removeFirst("Via")
        sent = sendToSender(outFlow, request, response.serialize())
        self.stats["strayForwarded" if sent else "strayDropped"] += 1


def _sameHost(host: str, other: str) -> bool:
    """
    Whether two IP addresses as text are the same address.
    """
    if host == other:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]) == ipaddress.ip_address(other)
    except ValueError:
        return False


def _sendOn(flow: IFlow, address: tuple[str, int] | None, data: bytes) -> bool:
    """
    Send C{data} on C{flow}: to C{address} on an unreliable flow, over the
    connection otherwise.
    """
    if flow.reliable or address is None:
        return flow.send(data)
    return flow.sendTo(data, address)


class _ProxyCollector:
    """
    The proxy's requests by method and outcome, and its other counters.
    """

    def __init__(self, proxy: Proxy) -> None:
        self._proxy = proxy

    def collect(self) -> list[Metric]:
        proxy = self._proxy
        return [
            counterFamily("sipcore_proxy_requests_total",
                          "Requests routed by the proxy, by method and outcome (the class of "
                          "the final response; for ACK forwarded or dropped).",
                          ["method", "outcome"],
                          [([method, outcome], count)
                           for (method, outcome), count in sorted(proxy.requests.items())]),
            counterFamily("sipcore_proxy_events_total",
                          "Proxy counters: branches forwarded, ACKs, stray responses, "
                          "cancels, timer C, and the final responses it made itself.",
                          ["event"], labelled(proxy.stats)),
        ]
