"""
Tests for L{sipcore.routes}: the routes file and table, dispatcher sets and
their health checks, the routing chain's timeout and failures, the
C{routes} handler, and the proxy consulting routers (with serial failover
and 3xx recursion).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.logger import formatEvent
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from sipcore.events.discovery import findHandlers
from sipcore.interfaces import IHandlerPlugin, IPinger, IReloadable, IRouter
from sipcore.message import Request, parseMessage, parseURI
from sipcore.plugin import HandlerContext, HandlerError, parseOptions
from sipcore.routes import (
    PEER,
    USER,
    Caller,
    RouteAnswer,
    RouteTarget,
    RouteTargets,
    RoutingChain,
    RoutingRequest,
)
from sipcore.routes.dispatcher import DispatcherSet, HealthChecks
from sipcore.routes.ping import OptionsPinger
from sipcore.routes.static import StaticRoutes
from sipcore.routes.table import RoutesError, RouteTable, parseRoutes
from sipcore.sip.auth import Identity
from sipcore.sip.proxy import RECURSE, Proxy, ProxyPolicy
from sipcore.sip.recordroute import LocalAddresses
from sipcore.sip.routing import NextHop
from sipcore.sip.trust import TrustedPeers
from sipcore.testing import LogCapture
from sipcore.transport.hops import HopConnector
from tests.test_proxy import ProxyHarness, sipRequest

ROUTES = """
# a comment line
default  -          sip:192.0.2.1:5060
domain   Partner.NET sip:192.0.2.2   # trailing comment
prefix   +49        sip:192.0.2.3 sip:192.0.2.4 algorithm=round-robin allow=users,peers
prefix   +4930      sip:192.0.2.5 strip=3
"""


def messages(logs: LogCapture) -> list[str]:
    """
    The text of the sipcore log lines captured.
    """
    return [formatEvent(event) for event in logs.events
            if event.get("log_namespace", "").startswith("sipcore")]


def routingRequest(uri: str, kind: str = USER, local: bool = True) -> RoutingRequest:
    request = parseMessage(sipRequest("INVITE", uri=uri))
    assert isinstance(request, Request)
    return RoutingRequest(request, request.uri, Caller(kind, "127.0.0.1", "alice@example.com"),
                          local)


class RoutesFileTests(SynchronousTestCase):
    """
    The routes file's format and the table's choice of route.
    """

    def test_parse(self) -> None:
        """
        Each line gives a kind, a match, targets and options; domains are
        lower-cased; defaults are priority and users only.
        """
        default, domain, prefix, longer = parseRoutes(ROUTES)
        self.assertEqual((default.kind, default.match, default.allow, default.algorithm),
                         ("default", "", frozenset({USER}), "priority"))
        self.assertEqual(domain.match, "partner.net")
        self.assertEqual([str(t) for t in prefix.targets], ["sip:192.0.2.3", "sip:192.0.2.4"])
        self.assertEqual(prefix.algorithm, "round-robin")
        self.assertEqual(prefix.allow, frozenset({USER, PEER}))
        self.assertEqual(longer.strip, 3)

    def test_find(self) -> None:
        """
        The longest matching prefix wins, then the domain, then the
        default route.
        """
        table = RouteTable(parseRoutes(ROUTES))

        def name(uri: str) -> str | None:
            route = table.find(parseURI(uri))
            return None if route is None else route.name

        self.assertEqual(name("sip:+49301234@example.com"), "prefix +4930")
        self.assertEqual(name("sip:+49891234@example.com"), "prefix +49")
        self.assertEqual(name("sip:bob@partner.net"), "domain partner.net")
        self.assertEqual(name("sip:bob@other.org"), "default")
        self.assertIsNone(RouteTable(parseRoutes(ROUTES.split("\n", 3)[3])).find(
            parseURI("sip:bob@other.org")))

    def test_errors(self) -> None:
        """
        Malformed lines are refused with the line number and the reason.
        """
        cases = {
            "default -": "line 1: expected KIND",
            "route x sip:192.0.2.1": "kind must be",
            "prefix 1 http://x": "not a sip: or sips: URI",
            "prefix 1 sip:192.0.2.1 algorithm=random": "algorithm must be",
            "prefix 1 sip:a sip:b algorithm=weighted weights=1": "one positive integer",
            "prefix 1 sip:a allow=anyone": "allow must name",
            "domain d sip:a strip=1": "only on prefix routes",
            "prefix 1 sip:a colour=red": "unknown option",
            "default - sip:a\ndefault - sip:b": "line 2: a second default route",
        }
        for text, message in cases.items():
            with self.assertRaises(RoutesError) as caught:
                parseRoutes(text)
            self.assertIn(message, str(caught.exception), text)


class DispatcherTests(SynchronousTestCase):
    """
    Dispatcher sets order their live targets by their algorithm; health
    pings take targets out and back in, logged once per change.
    """

    def makeSet(self, line: str, **kwargs: Any) -> DispatcherSet:
        [route] = parseRoutes(line)
        return DispatcherSet(route, **kwargs)

    def test_priority(self) -> None:
        """
        Priority: as listed, dead targets left out; all when none lives.
        """
        s = self.makeSet("default - sip:192.0.2.1 sip:192.0.2.2 sip:192.0.2.3")
        self.assertEqual([t.host for t in s.order()], ["192.0.2.1", "192.0.2.2", "192.0.2.3"])
        s.answered(0, False)
        self.assertEqual([t.host for t in s.order()], ["192.0.2.2", "192.0.2.3"])
        s.answered(1, False)
        s.answered(2, False)
        self.assertEqual(len(s.order()), 3)

    def test_roundRobin(self) -> None:
        """
        Round-robin: each request starts one further among the live ones.
        """
        s = self.makeSet("default - sip:192.0.2.1 sip:192.0.2.2 algorithm=round-robin")
        firsts = [s.order()[0].host for _ in range(4)]
        self.assertEqual(firsts, ["192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.2"])

    def test_weighted(self) -> None:
        """
        Weighted: the first choice is drawn by weight among live targets.
        """
        drawn: list[list[int]] = []

        def choose(weights: Any) -> int:
            drawn.append(list(weights))
            return len(weights) - 1

        s = self.makeSet("default - sip:192.0.2.1 sip:192.0.2.2 sip:192.0.2.3 "
                         "algorithm=weighted weights=5,3,1", choose=choose)
        self.assertEqual([t.host for t in s.order()], ["192.0.2.3", "192.0.2.1", "192.0.2.2"])
        s.answered(2, False)
        self.assertEqual([t.host for t in s.order()], ["192.0.2.2", "192.0.2.1"])
        self.assertEqual(drawn, [[5, 3, 1], [5, 3]])

    def test_healthChecks(self) -> None:
        """
        Every interval each target of a set is pinged; one that does not
        answer leaves the set and returns when it answers, with one log
        line per change.
        """
        alive = {"192.0.2.1": True, "192.0.2.2": True}
        pinged: list[str] = []

        @implementer(IPinger)
        class Pinger:
            def ping(self, uri: Any) -> defer.Deferred[bool]:
                pinged.append(uri.host)
                return defer.succeed(alive[uri.host])

        clock = task.Clock()
        s = self.makeSet("default - sip:192.0.2.1 sip:192.0.2.2")
        single = self.makeSet("prefix 9 sip:192.0.2.9")
        checks = HealthChecks([s, single], Pinger(), clock, interval=10)
        logs = LogCapture(self)
        checks.start()
        self.assertEqual(pinged, ["192.0.2.1", "192.0.2.2"])
        alive["192.0.2.1"] = False
        clock.advance(10)
        clock.advance(10)
        self.assertEqual(s.up, [False, True])
        alive["192.0.2.1"] = True
        clock.advance(10)
        self.assertEqual(s.up, [True, True])
        changes = [m for m in messages(logs) if "192.0.2.1" in m]
        self.assertEqual(len(changes), 2, changes)
        self.assertIn("stopped answering", changes[0])
        self.assertIn("answers again", changes[1])
        checks.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        # A ping left unanswered counts as down after the ping timeout.
        hanging: list[defer.Deferred[bool]] = []

        @implementer(IPinger)
        class Silent:
            def ping(self, uri: Any) -> defer.Deferred[bool]:
                d: defer.Deferred[bool] = defer.Deferred()
                hanging.append(d)
                return d

        silent = HealthChecks([s], Silent(), clock, interval=10, timeout=2)
        silent.pingAll()
        self.assertEqual(s.up, [True, True])
        clock.advance(2)
        self.assertEqual(s.up, [False, False])
        self.assertEqual(len(hanging), 2)

    def test_optionsPinger(self) -> None:
        """
        The pinger sends an OPTIONS in a client transaction to the URI's
        hop and fires C{True} on its final response, C{False} on timeout,
        and C{False} at once for a hop no flow reaches.
        """
        h = ProxyHarness()
        hops = HopConnector(h.table, h.listeners)
        pinger = OptionsPinger(h.core.transactions, hops,
                               LocalAddresses(hops, h.core.domains), "example.com")
        self.assertTrue(verifyObject(IPinger, pinger))
        d = pinger.ping(parseURI("sip:127.0.0.1:6000"))
        [(options, address)] = h.udpSent()
        self.assertEqual((options.method, address), ("OPTIONS", ("127.0.0.1", 6000)))
        self.assertEqual(options.vias[0].port, 5060)
        from sipcore.message import Response
        reply = Response.forRequest(options, 404, toTag="x")
        h.core.messageReceived(reply.serialize(), h.caller)
        self.assertIs(self.successResultOf(d), True)
        lost = pinger.ping(parseURI("sip:127.0.0.1:6001"))
        h.clock.pump([0.5] * 70)
        self.assertIs(self.successResultOf(lost), False)
        self.assertIs(self.successResultOf(pinger.ping(parseURI("sip:127.0.0.1:6002;transport=tcp"))),
                      False)

    def test_optionsPingerLocatesNames(self) -> None:
        """
        A target given by host name is pinged at the first location the
        resolver gives; one the resolver cannot locate counts as not
        answering.
        """
        from sipcore.dns import Location, ResolveFailed

        class Resolver:
            def resolve(self, uri: Any) -> defer.Deferred[list[Location]]:
                if uri.host == "pbx.example":
                    return defer.succeed([Location(NextHop("udp", "127.0.0.1", 6003),
                                                   "pbx.example")])
                return defer.fail(ResolveFailed("no such name"))

        h = ProxyHarness()
        hops = HopConnector(h.table, h.listeners)
        pinger = OptionsPinger(h.core.transactions, hops,
                               LocalAddresses(hops, h.core.domains), "example.com",
                               resolver=Resolver())
        pinger.ping(parseURI("sip:pbx.example"))
        [(options, address)] = h.udpSent()
        self.assertEqual((options.method, address), ("OPTIONS", ("127.0.0.1", 6003)))
        self.assertIs(self.successResultOf(pinger.ping(parseURI("sip:nowhere.example"))), False)


@implementer(IRouter)
class FixedRouter:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.asked: list[RoutingRequest] = []

    def route(self, request: RoutingRequest) -> Any:
        self.asked.append(request)
        return self.answer


class ChainTests(SynchronousTestCase):
    """
    The routing chain asks routers in order and never fails or hangs.
    """

    def test_order(self) -> None:
        """
        A router answering C{None} passes to the next; the first answer
        wins and later routers are not asked.
        """
        answer = RouteAnswer(404, "Not Here")
        first, second, third = FixedRouter(None), FixedRouter(answer), FixedRouter(None)
        chain = RoutingChain([("a", first), ("b", second), ("c", third)], task.Clock())
        self.assertIs(self.successResultOf(chain.route(routingRequest("sip:1@example.com"))),
                      answer)
        self.assertEqual((len(first.asked), len(second.asked), len(third.asked)), (1, 1, 0))
        self.assertIsNone(self.successResultOf(
            RoutingChain([("a", first)], task.Clock()).route(routingRequest("sip:1@x"))))

    def test_timeout(self) -> None:
        """
        A router that does not answer within the timeout is cancelled; the
        chain answers C{500} and logs one line naming it.
        """
        clock = task.Clock()
        pending: defer.Deferred[Any] = defer.Deferred()
        chain = RoutingChain([("slow", FixedRouter(pending))], clock, timeout=2)
        logs = LogCapture(self)
        d = chain.route(routingRequest("sip:1@example.com"))
        self.assertNoResult(d)
        clock.advance(2)
        self.assertEqual(self.successResultOf(d), RouteAnswer(500, "Server Internal Error"))
        self.assertEqual(len([m for m in messages(logs) if "slow" in m]), 1)
        self.assertEqual(chain.stats["timedOut"], 1)

    def test_failures(self) -> None:
        """
        A router that raises, fails, or answers something else gives
        C{500}, one log line each, and no logged traceback.
        """
        @implementer(IRouter)
        class Raising:
            def route(self, request: Any) -> Any:
                raise RuntimeError("boom")

        for router in (Raising(), FixedRouter(defer.fail(ValueError("bad"))),
                       FixedRouter("sip:192.0.2.1")):
            logs = LogCapture(self)
            d = RoutingChain([("r", router)], task.Clock()).route(routingRequest("sip:1@x"))
            self.assertEqual(self.successResultOf(d), RouteAnswer(500, "Server Internal Error"))
            self.assertEqual(len([m for m in messages(logs) if "router r" in m]), 1)

    def test_values(self) -> None:
        """
        Route values refuse what cannot be meant.
        """
        self.assertRaises(ValueError, RouteTarget)
        self.assertRaises(ValueError, RouteTargets, ())
        self.assertRaises(ValueError, RouteAnswer, 200, "OK")


class StaticRoutesTests(SynchronousTestCase):
    """
    The C{routes} handler plugin.
    """

    def makeHandler(self, pinger: Any = None, **given: str) -> StaticRoutes:
        plugin = findHandlers()["routes"]
        options = parseOptions(plugin, given)
        handler = plugin.makeHandler(HandlerContext(
            serverId=0, reactor=task.Clock(), store=None, options=options,
            handlerName="routes", pinger=pinger))
        assert isinstance(handler, StaticRoutes)
        return handler

    def test_plugin(self) -> None:
        """
        C{getPlugins} finds it; its handler provides L{IRouter}.
        """
        plugin = findHandlers()["routes"]
        self.assertTrue(verifyObject(IHandlerPlugin, plugin))
        handler = self.makeHandler(default="sip:192.0.2.1")
        self.assertTrue(verifyObject(IRouter, handler))
        self.assertTrue(verifyObject(IReloadable, handler))

    def test_defaultAndFile(self) -> None:
        """
        The default option and the file's routes together; a prefix route
        strips digits from the new Request-URI; a caller the route does
        not allow gets 403.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("prefix +4930 sip:192.0.2.5 strip=3\n")
        handler = self.makeHandler(default="sip:192.0.2.1, sip:192.0.2.2", file=path)
        routed = handler.route(routingRequest("sip:bob@other.org"))
        assert isinstance(routed, RouteTargets)
        self.assertEqual([(t.uri, str(t.nextHop)) for t in routed.targets],
                         [(None, "sip:192.0.2.1"), (None, "sip:192.0.2.2")])
        stripped = handler.route(routingRequest("sip:+4930123@example.com"))
        assert isinstance(stripped, RouteTargets)
        self.assertEqual(str(stripped.targets[0].uri), "sip:30123@example.com")
        refused = handler.route(routingRequest("sip:bob@other.org", kind=PEER))
        self.assertEqual(refused, RouteAnswer(403, "Forbidden (route not allowed for this caller)"))

    def test_reload(self) -> None:
        """
        C{reload} reads the routes file again: a new route routes, a
        removed one no longer does, and a route that did not change keeps
        its set (a target out of it stays out); the health checks start
        over with the new sets.  A malformed, unreadable or empty file
        raises L{RoutesError} naming the file, and the routes in use stay.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"prefix +49 sip:192.0.2.3 sip:192.0.2.4\nprefix 00 sip:192.0.2.6\n")
        pings: list[str] = []

        @implementer(IPinger)
        class Pending:
            def ping(self, uri: Any) -> defer.Deferred[bool]:
                pings.append(str(uri))
                return defer.Deferred()

        handler = self.makeHandler(pinger=Pending(), file=path.path)
        handler.start()
        self.addCleanup(handler.stop)
        self.assertEqual(pings, ["sip:192.0.2.3", "sip:192.0.2.4"])
        [kept] = [route for route in handler.sets if route.match == "+49"]
        handler.sets[kept].answered(0, False)

        def firstHop(uri: str) -> str | None:
            routed = handler.route(routingRequest(uri))
            if routed is None:
                return None
            assert isinstance(routed, RouteTargets)
            return str(routed.targets[0].nextHop)

        path.setContent(b"prefix +49 sip:192.0.2.3 sip:192.0.2.4\n"
                        b"domain partner.net sip:192.0.2.9\n")
        self.assertEqual(handler.reload(), "(2 routes from {})".format(path.path))
        self.assertEqual(firstHop("sip:bob@partner.net"), "sip:192.0.2.9")
        self.assertIsNone(firstHop("sip:0049301@example.com"))
        self.assertEqual(firstHop("sip:+49301@example.com"), "sip:192.0.2.4")
        self.assertEqual(pings[2:], ["sip:192.0.2.3", "sip:192.0.2.4"])
        for content in (b"prefix +49\n", b"\xff\xfe", b"# nothing\n"):
            path.setContent(content)
            with self.assertRaises(RoutesError) as caught:
                handler.reload()
            self.assertIn(path.path if content != b"# nothing\n" else "no route",
                          str(caught.exception))
        path.remove()
        self.assertRaises(RoutesError, handler.reload)
        self.assertEqual(firstHop("sip:bob@partner.net"), "sip:192.0.2.9")
        self.assertEqual(firstHop("sip:+49301@example.com"), "sip:192.0.2.4")
        self.assertEqual(len(pings), 4)

    def test_badConfiguration(self) -> None:
        """
        No route, an unreadable file or a malformed route stop the start
        with a message naming the handler.
        """
        for given in ({}, {"file": "/nonexistent/routes"}, {"default": "http://x"}):
            with self.assertRaises(HandlerError) as caught:
                self.makeHandler(**given)
            self.assertIn("'routes'", str(caught.exception))


class ProxyRoutingTests(SynchronousTestCase):
    """
    The proxy asks its routers about initial requests for no registered
    local user, from authenticated users or trusted peers only.
    """

    def harness(self, router: Any, authenticated: bool = True, **policy: Any) -> ProxyHarness:
        h = ProxyHarness()
        h.proxy = Proxy(h.core, h.store, h.clock, HopConnector(h.table, h.listeners),
                        policy=ProxyPolicy(**policy),
                        routers=RoutingChain([("r", router)], h.clock))
        h.proxy.install()
        if authenticated:
            def guard(tx: Any) -> defer.Deferred[bool]:
                tx.authenticated = Identity("alice", "example.com")
                return defer.succeed(True)

            h.core.addGuard(guard)
        return h

    def test_routedToUpstream(self) -> None:
        """
        An INVITE for a local number nobody registered, from an
        authenticated user, goes to the router's next hop with its
        Request-URI unchanged; the router saw the caller.
        """
        router = FixedRouter(RouteTargets((RouteTarget(nextHop=parseURI("sip:127.0.0.1:6000")),)))
        h = self.harness(router)
        h.send(sipRequest("INVITE", uri="sip:+4930123@example.com"))
        [(invite, address)] = h.udpSent()
        self.assertEqual(address, ("127.0.0.1", 6000))
        self.assertEqual(str(invite.uri), "sip:+4930123@example.com")
        [asked] = router.asked
        self.assertEqual((asked.caller.kind, asked.caller.user, asked.local),
                         (USER, "alice@example.com", True))

    def test_anonymousNotRouted(self) -> None:
        """
        A caller neither authenticated nor a trusted peer never reaches the
        routers: 404 for a local user, 403 for a foreign domain.
        """
        router = FixedRouter(RouteTargets((RouteTarget(nextHop=parseURI("sip:127.0.0.1:6000")),)))
        h = self.harness(router, authenticated=False)
        h.send(sipRequest("INVITE", uri="sip:+4930123@example.com"))
        h.send(sipRequest("INVITE", uri="sip:bob@192.0.2.1", branch="z9hG4bKother",
                          callId="c2"))
        self.assertEqual(h.statuses(), [404, 403])
        self.assertEqual(router.asked, [])
        self.assertEqual(h.udpSent(), [])

    def test_trustedPeer(self) -> None:
        """
        A trusted peer's request to a foreign domain is routed, and the
        router sees it as a peer.
        """
        router = FixedRouter(RouteAnswer(486, "Busy Here"))
        h = self.harness(router, authenticated=False,
                         trustedPeers=TrustedPeers.fromStrings(["127.0.0.1"]))
        h.send(sipRequest("INVITE", uri="sip:bob@192.0.2.1"))
        self.assertEqual(h.statuses(), [486])
        self.assertEqual(router.asked[0].caller.kind, PEER)

    def test_registeredUserNotRouted(self) -> None:
        """
        A request for a registered local user goes to its binding; the
        routers are not asked.
        """
        router = FixedRouter(RouteAnswer(500, "Never"))
        h = self.harness(router)
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("INVITE"))
        self.assertEqual(len(h.requestsOn(bob, "INVITE")), 1)
        self.assertEqual(router.asked, [])

    def test_routerFailureIs500(self) -> None:
        """
        A router that fails gives the caller 500 and the transaction ends.
        """
        h = self.harness(FixedRouter(defer.fail(RuntimeError("db down"))))
        LogCapture(self)
        h.send(sipRequest("MESSAGE", uri="sip:bob@192.0.2.1"))
        self.assertEqual(h.statuses(), [500])

    def test_cancelWhileRouting(self) -> None:
        """
        A CANCEL that arrives while the router works ends the INVITE with
        487; the router's late answer forwards nothing.
        """
        pending: defer.Deferred[Any] = defer.Deferred()
        h = self.harness(FixedRouter(pending))
        h.send(sipRequest("INVITE", uri="sip:bob@192.0.2.1"))
        h.send(sipRequest("CANCEL", uri="sip:bob@192.0.2.1"))
        pending.callback(RouteTargets((RouteTarget(nextHop=parseURI("sip:127.0.0.1:6000")),)))
        self.assertEqual(sorted(h.statuses()), [200, 487])
        self.assertEqual(h.udpSent(), [])

    def test_serialFailover(self) -> None:
        """
        Serial targets are tried one after another: a 503 from the first
        sends the request to the second, whose answer goes to the caller.
        """
        router = FixedRouter(RouteTargets((
            RouteTarget(nextHop=parseURI("sip:127.0.0.1:6000")),
            RouteTarget(nextHop=parseURI("sip:127.0.0.1:6001")),
        )))
        h = self.harness(router)
        h.send(sipRequest("MESSAGE", uri="sip:bob@192.0.2.1"))
        [(first, address)] = h.udpSent()
        self.assertEqual(address, ("127.0.0.1", 6000))
        h.answer(first, 503, h.caller)
        sent = h.udpSent()
        self.assertEqual([a for _, a in sent], [("127.0.0.1", 6000), ("127.0.0.1", 6001)])
        h.answer(sent[1][0], 200, h.caller)
        self.assertEqual(h.statuses(), [200])

    def test_recurseOn3xx(self) -> None:
        """
        With C{redirects=recurse} a 302's Contact gets the request; the
        caller sees the final answer, not the 302.  With the default
        (relay) the 302 goes to the caller.
        """
        target = RouteTargets((RouteTarget(nextHop=parseURI("sip:127.0.0.1:6000")),))
        for redirects, expected in ((RECURSE, [486]), ("relay", [302])):
            h = self.harness(FixedRouter(target), redirects=redirects)
            h.send(sipRequest("MESSAGE", uri="sip:bob@192.0.2.1"))
            [(first, _)] = h.udpSent()
            h.answer(first, 302, h.caller, extra=(("Contact", "<sip:carol@127.0.0.1:6002>"),))
            sent = h.udpSent()
            if redirects == RECURSE:
                self.assertEqual(sent[1][1], ("127.0.0.1", 6002))
                self.assertEqual(str(sent[1][0].uri), "sip:carol@127.0.0.1:6002")
                h.answer(sent[1][0], 486, h.caller)
            self.assertEqual(h.statuses(), expected)


class RouterOptionTests(SynchronousTestCase):
    """
    C{--router} names the routers, in order; mistakes stop the start.
    """

    def build(self, *args: str) -> Any:
        from sipcore.tap import Options, buildService
        from sipcore.testing import UDPMemoryReactor

        options = Options()
        options.parseOptions(list(args))
        return buildService(options, UDPMemoryReactor())

    def test_wired(self) -> None:
        """
        The routes handler named by C{--router} is the proxy's router, and
        C{--redirects} and C{--routing-timeout} reach the proxy.
        """
        service = self.build("--handler", "routes", "--handler-option",
                             "routes:default=sip:192.0.2.1", "--router", "routes",
                             "--redirects", "recurse", "--routing-timeout", "2")
        proxy = service.proxy
        [(name, router)] = proxy.routers.routers
        self.assertEqual(name, "routes")
        self.assertIsInstance(router, StaticRoutes)
        self.assertEqual((proxy.policy.redirects, proxy.routers.timeout), (RECURSE, 2.0))

    def test_mistakes(self) -> None:
        """
        A router that is not enabled, a handler that does not route, and
        an enabled router not named are refused.
        """
        from twisted.python import usage

        from sipcore.plugin import HandlerConfigError

        with self.assertRaises(HandlerConfigError):
            self.build("--router", "routes")
        with self.assertRaises(HandlerConfigError):
            self.build("--router", "location-cleanup")
        with self.assertRaises(HandlerConfigError):
            self.build("--handler", "routes", "--handler-option", "routes:default=sip:192.0.2.1")
        self.assertRaises(usage.UsageError, self.build, "--redirects", "follow")


class ExampleConfigurationTests(SynchronousTestCase):
    """
    The browser-to-PBX example in C{examples/browser-to-pbx} is valid.
    """

    def test_example(self) -> None:
        """
        Its configuration file parses, names the routes handler as the
        router, and its routes file parses: the default route is a
        priority set of two PBXs.
        """
        import os

        from sipcore.tap import Options

        here = os.path.join(os.path.dirname(__file__), "..", "examples", "browser-to-pbx")
        users = self.mktemp()
        with open(users, "w") as f:
            f.write("alice@example.com:secret\n")
        options = Options()
        # The command line replaces the file's path to the users.
        options.parseOptions(["--config", os.path.join(here, "sipcore.ini"),
                              "--auth-file", users])
        self.assertEqual(options["router"], ["routes"])
        self.assertEqual(options["handler-option"]["routes"]["file"], "/etc/sipcore/routes")
        with open(os.path.join(here, "routes")) as f:
            default, emergency = parseRoutes(f.read())
        self.assertEqual((default.kind, len(default.targets), default.algorithm),
                         ("default", 2, "priority"))
        self.assertEqual(emergency.match, "112")


class TargetOfTests(SynchronousTestCase):
    """
    L{Proxy.targetOf} turns a route target into a branch target.
    """

    def test_targets(self) -> None:
        """
        An IP literal is a next hop; a host name is located by the
        resolver when there is one, else the target has nowhere to go (its
        branch fails with 503).
        """
        h = ProxyHarness()
        hops = HopConnector(h.table, h.listeners)
        located = Proxy(h.core, h.store, h.clock, hops, resolver=object())  # type: ignore[arg-type]
        plain = Proxy(h.core, h.store, h.clock, hops)
        uri = parseURI("sip:+49301@example.com")
        literal = located.targetOf(uri, parseURI("sip:192.0.2.1:5070;transport=tcp"))
        self.assertEqual((literal.uri, literal.hop, literal.locate),
                         (uri, NextHop("tcp", "192.0.2.1", 5070), None))
        named = located.targetOf(None, parseURI("sip:pbx.example"))
        self.assertEqual((named.hop, named.locate), (None, parseURI("sip:pbx.example")))
        nowhere = plain.targetOf(None, parseURI("sip:pbx.example"))
        self.assertEqual((nowhere.hop, nowhere.locate), (None, None))
        self.assertRaises(ValueError, plain.targetOf, None)
