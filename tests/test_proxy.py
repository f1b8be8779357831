# -*- test-case-name: tests.test_proxy -*-
"""
Tests for L{sipcore.sip.proxy} and L{sipcore.sip.routing}: every routing
decision of the stateful proxy, driven through the real core and
transaction layer with a L{task.Clock}, fake flows and the memory store.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.logger import LogLevel, formatEvent
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipcore.dns import Resolver
from sipcore.interfaces import IClientTransactionUser
from sipcore.location import Binding
from sipcore.message import Request, Response, parseMessage, parseURI
from sipcore.sip.core import SIPCore, StatelessTransaction
from sipcore.sip.forking import Branch, IgnoreResponses, ResponseContext, Target
from sipcore.sip.proxy import Proxy, ProxyPolicy
from sipcore.sip.routing import (
    ACK_BRANCH_PREFIX,
    BRANCH_PREFIX,
    FlowTokens,
    NextHop,
    NoRoute,
    chooseBest,
    loopHash,
    nextHopOf,
    proxyBranch,
)
from sipcore.sip.servertransaction import sendToSender
from sipcore.sip.trust import TrustedPeers
from sipcore.testing import (
    FakeDatagramTransport,
    FakeFlow,
    FakeStreamFlow,
    LogCapture,
    MemoryLocationStore,
    RecordingBus,
    parseRequest,
)
from sipcore.transport.connections import ConnectionTable
from sipcore.transport.hops import HopConnector
from sipcore.transport.udp import SIPDatagramProtocol
from tests.test_dns import FakeLookups
from tests.test_transport_hops import FakeListener

UDP_PORT = 5060
WS_PORT = 8080
TCP_PORT = 5070


def sipRequest(
    method: str = "INVITE",
    uri: str = "sip:bob@example.com",
    branch: str = "z9hG4bKcaller1",
    via: str | None = None,
    callId: str = "call-1",
    cseq: int = 1,
    toTag: str | None = None,
    maxForwards: str | None = "70",
    extra: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> bytes:
    lines = [
        "{} {} SIP/2.0".format(method, uri),
        "Via: " + (via or "SIP/2.0/UDP 127.0.0.1:40000;branch={};rport".format(branch)),
    ]
    if maxForwards is not None:
        lines.append("Max-Forwards: " + maxForwards)
    lines += [
        "From: <sip:alice@example.com>;tag=alicetag",
        "To: <sip:bob@example.com>" + (";tag=" + toTag if toTag else ""),
        "Call-ID: " + callId,
        "CSeq: {} {}".format(cseq, method),
        "Contact: <sip:alice@127.0.0.1:40000>",
    ]
    lines += ["{}: {}".format(name, value) for name, value in extra]
    lines.append("Content-Length: {}".format(len(body)))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def conidOf(flow: FakeFlow) -> int:
    """
    The connection id of C{flow}, a stream connection in a table.
    """
    assert flow.conid is not None
    return flow.conid


class ProxyHarness:
    """
    A core, a transaction layer, a connection table, a memory store and a
    proxy, on a L{task.Clock}; a UDP listener on 5060, TCP on 5070 and WS
    on 8080, all on 127.0.0.1, domain example.com.
    """

    def __init__(self, policy: ProxyPolicy | None = None,
                 table: ConnectionTable | None = None,
                 resolver: Resolver | None = None) -> None:
        self.clock = task.Clock()
        self.core = SIPCore(self.clock, domains=["example.com"])
        self.table = table if table is not None else ConnectionTable(RecordingBus(), self.clock)
        self.store = MemoryLocationStore(self.clock)
        self.udpProtocol = SIPDatagramProtocol(self.core, receiveBuffer=0)
        self.udpTransport = FakeDatagramTransport()
        self.udpProtocol.transport = self.udpTransport
        self.udpProtocol._local = ("127.0.0.1", UDP_PORT)
        self.listeners = [
            FakeListener("udp", UDP_PORT, self.udpProtocol, host="127.0.0.1"),
            FakeListener("tcp", TCP_PORT, host="127.0.0.1"),
            FakeListener("ws", WS_PORT, host="127.0.0.1"),
        ]
        self.stale: list[Binding] = []
        self.proxy = Proxy(self.core, self.store, self.clock,
                           HopConnector(self.table, self.listeners), policy=policy,
                           staleBinding=self.stale.append, resolver=resolver)
        self.proxy.install()
        self.caller = FakeFlow("udp", local=("127.0.0.1", UDP_PORT),
                               remote=("127.0.0.1", 40000))
        self._ruids = 0

    def connect(self, transport: str = "ws", port: int = 50000) -> FakeFlow:
        """
        A live stream connection (in the table) from C{127.0.0.1:port}.
        """
        local = WS_PORT if transport == "ws" else TCP_PORT
        flow = FakeStreamFlow(transport, local=("127.0.0.1", local), remote=("127.0.0.1", port))
        self.table.add(flow)
        return flow

    def bind(self, user: str = "bob", flow: FakeFlow | None = None, **fields: Any) -> Binding:
        """
        Store a binding of C{user@example.com}: over C{flow}'s connection
        when given, else the fields given.
        """
        self._ruids += 1
        values: dict[str, Any] = {
            "ruid": "ruid-{}".format(self._ruids),
            "username": user,
            "domain": "example.com",
            "contact": "sip:{}@client{}.invalid;transport=ws".format(user, self._ruids),
            "expires": self.clock.seconds() + 3600,
            "lastModified": float(self._ruids),
        }
        if flow is not None:
            values["connectionId"] = flow.conid
            values["received"] = "sip:127.0.0.1:{};transport={}".format(
                flow.remote[1], flow.transport)
        values.update(fields)
        binding = Binding(**values)
        self.store.save([binding])
        return binding

    def signedRoute(self, transport: str = "udp", port: int = UDP_PORT, tokens: str = "",
                    callId: str = "call-1", host: str = "127.0.0.1") -> str:
        """
        A Record-Route entry of the proxy, signed for C{callId}, as a UA
        copies it into its Route set.
        """
        value = "<sip:{}:{};transport={};lr".format(host, port, transport)
        if tokens:
            value += ";ftok=" + tokens
        signature = self.proxy.tokens.signRoute(transport, host, port, tokens, callId)
        return value + ";rrsig={}>".format(signature)

    def send(self, data: bytes, flow: FakeFlow | None = None) -> None:
        self.core.messageReceived(data, flow or self.caller)

    def received(self, flow: FakeFlow) -> list[Any]:
        return flow.messages()

    def requestsOn(self, flow: FakeFlow, method: str | None = None) -> list[Request]:
        return [m for m in flow.messages() if isinstance(m, Request)
                and (method is None or m.method == method)]

    def responsesTo(self, flow: FakeFlow) -> list[Response]:
        return [m for m in flow.messages() if isinstance(m, Response)]

    def statuses(self, flow: FakeFlow | None = None) -> list[int]:
        return [r.status for r in self.responsesTo(flow or self.caller)]

    def udpSent(self) -> list[tuple[Any, Any]]:
        return [(parseMessage(data), address)
                for data, address in self.udpTransport.written]

    def answer(self, request: Request, status: int, flow: FakeFlow,
               toTag: str = "bobtag", extra: tuple[tuple[str, str], ...] = ()) -> None:
        """
        Send a response to C{request} (as the callee received it) back over
        C{flow}.
        """
        response = Response.forRequest(request, status, toTag=toTag)
        for rr in request.headers.lines("Record-Route"):
            response.headers.add("Record-Route", rr)
        for name, value in extra:
            response.headers.add(name, value)
        self.core.messageReceived(response.serialize(), flow)


class TransactionUserTests(SynchronousTestCase):
    """
    The TUs of the proxy's client transactions provide
    L{IClientTransactionUser}.
    """

    def test_branch(self) -> None:
        """
        A L{Branch} (one forked request) provides it.
        """
        h = ProxyHarness()
        request = parseMessage(sipRequest("OPTIONS"))
        assert isinstance(request, Request)
        tx = StatelessTransaction(request, h.caller)
        branch = Branch(ResponseContext(h.proxy, tx), Target())
        self.assertTrue(verifyObject(IClientTransactionUser, branch))

    def test_ignoreResponses(self) -> None:
        """
        The TU of the proxy's CANCELs provides it.
        """
        self.assertTrue(verifyObject(IClientTransactionUser, IgnoreResponses()))


class MaxForwardsAndLoopTests(SynchronousTestCase):
    """
    RFC 3261 16.3: Max-Forwards and loop detection.
    """

    def test_maxForwardsZero(self) -> None:
        """
        A request with Max-Forwards 0 is answered 483 and goes nowhere.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("MESSAGE", maxForwards="0"))
        self.assertEqual(h.statuses(), [483])
        self.assertEqual(bob.sent, [])

    def test_maxForwardsDecremented(self) -> None:
        """
        The forwarded copy carries Max-Forwards one less than received.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("MESSAGE", maxForwards="5"))
        [message] = h.requestsOn(bob)
        self.assertEqual(message.maxForwards, 4)

    def test_maxForwardsAdded(self) -> None:
        """
        A request without Max-Forwards is forwarded with Max-Forwards 70.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("MESSAGE", maxForwards=None))
        [message] = h.requestsOn(bob)
        self.assertEqual(message.maxForwards, 70)

    def test_badMaxForwards(self) -> None:
        """
        A malformed Max-Forwards is answered 400.
        """
        h = ProxyHarness()
        h.send(sipRequest("MESSAGE", maxForwards="many"))
        self.assertEqual(h.statuses(), [400])

    def test_loopDetected(self) -> None:
        """
        A request that carries a Via of ours whose branch holds the loop
        hash of this very request came back unchanged: 482.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        first = parseRequest(sipRequest("MESSAGE"))
        ours = "SIP/2.0/UDP 127.0.0.1:5060;branch={};rport".format(
            proxyBranch(loopHash(first)))
        looped = sipRequest("MESSAGE", via="SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKz;rport",
                            extra=(("Via", ours),))
        h.send(looped)
        self.assertEqual(h.statuses(), [482])
        self.assertEqual(bob.sent, [])

    def test_spiralIsNotALoop(self) -> None:
        """
        A request with a Via of ours whose loop hash differs (its
        Request-URI was retargeted) is a spiral and is forwarded.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        other = parseRequest(sipRequest("MESSAGE", uri="sip:carol@example.com"))
        ours = "SIP/2.0/UDP 127.0.0.1:5060;branch={};rport".format(
            proxyBranch(loopHash(other)))
        h.send(sipRequest("MESSAGE", via="SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKz;rport",
                          extra=(("Via", ours),)))
        self.assertEqual(len(h.requestsOn(bob, "MESSAGE")), 1)


class LocationTests(SynchronousTestCase):
    """
    Request-URI lookup in the location store and delivery over the
    registered connection.
    """

    def test_noBinding(self) -> None:
        """
        A request for a user of our domain without a binding gets 404.
        """
        h = ProxyHarness()
        h.send(sipRequest("MESSAGE"))
        self.assertEqual(h.statuses(), [404])

    def test_deliveredOverConnection(self) -> None:
        """
        A binding bound to a live connection of this node gets the request
        over that connection, with the Contact as Request-URI and a Via of
        ours on top carrying a proxy branch.
        """
        h = ProxyHarness()
        bob = h.connect()
        binding = h.bind(flow=bob)
        h.send(sipRequest("MESSAGE", body=b"hello"))
        [message] = h.requestsOn(bob)
        self.assertEqual(str(message.uri), binding.contact)
        top = message.vias[0]
        self.assertEqual((top.transport, top.host, top.port), ("WS", "127.0.0.1", WS_PORT))
        self.assertTrue(str(top.branch).startswith(BRANCH_PREFIX))
        self.assertEqual(message.vias[1].branch, "z9hG4bKcaller1")
        self.assertEqual(message.body, b"hello")
        self.assertEqual(message.headers.lines("Record-Route"), [])

    def test_goneConnection(self) -> None:
        """
        When every binding's connection is gone the caller gets 480 at
        once and each stale binding is handed to C{staleBinding}.
        """
        h = ProxyHarness()
        bob = h.connect()
        binding = h.bind(flow=bob)
        h.table.remove(bob.conid, "tcp:closed", "closed by peer")
        h.send(sipRequest("INVITE"))
        self.assertEqual(h.statuses(), [480])
        self.assertEqual(h.stale, [binding])
        self.assertEqual(h.proxy.stats["staleBindings"], 1)

    def test_staleBindingFailureLogged(self) -> None:
        """
        A failing C{staleBinding} callback is logged; the caller still
        gets 480.
        """
        h = ProxyHarness()
        h.proxy.staleBinding = lambda binding: defer.fail(RuntimeError("db away"))
        bob = h.connect()
        h.bind(flow=bob)
        h.table.remove(bob.conid, "tcp:closed", "closed by peer")
        h.send(sipRequest("MESSAGE"))
        self.assertEqual(h.statuses(), [480])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_otherNodesConnection(self) -> None:
        """
        A binding bound to a connection of another node (and without Path)
        cannot be reached from here: 480, and it is not removed.
        """
        h = ProxyHarness()
        h.bind(connectionId=7, serverId=99, received="sip:127.0.0.1:50000;transport=ws")
        h.send(sipRequest("MESSAGE"))
        self.assertEqual(h.statuses(), [480])
        self.assertEqual(h.stale, [])

    def test_udpBindingUsesReceived(self) -> None:
        """
        A UDP binding is reached at the address its REGISTER came from
        (C{received}), not the Contact host, from the UDP listener socket.
        """
        h = ProxyHarness()
        h.bind(contact="sip:bob@192.0.2.10:5062", received="sip:127.0.0.1:41000;transport=udp")
        h.send(sipRequest("MESSAGE"))
        [(message, address)] = h.udpSent()
        self.assertEqual(address, ("127.0.0.1", 41000))
        self.assertEqual(str(message.uri), "sip:bob@192.0.2.10:5062")
        self.assertEqual(message.vias[0].transport, "UDP")
        self.assertEqual(message.vias[0].port, UDP_PORT)
        self.assertIsNotNone(message.vias[0].rport)

    def test_pathRoute(self) -> None:
        """
        A binding with a Path registered by a trusted peer is reached along
        it: the Path becomes the Route set and the request goes to its
        first hop.
        """
        h = ProxyHarness(ProxyPolicy(trustedPeers=TrustedPeers.fromStrings(["127.0.0.0/8"])))
        h.bind(contact="sip:bob@192.0.2.10", path="<sip:127.0.0.1:6000;lr>",
               received="sip:127.0.0.1:41000;transport=udp")
        h.send(sipRequest("MESSAGE"))
        [(message, address)] = h.udpSent()
        self.assertEqual(address, ("127.0.0.1", 6000))
        self.assertEqual([str(r.uri) for r in message.routes], ["sip:127.0.0.1:6000;lr"])

    def test_untrustedPathIgnored(self) -> None:
        """
        A stored Path whose REGISTER came from a source that is not a
        trusted peer (or from no known source) is not followed: the
        binding is reached at its own flow, with its Contact as
        Request-URI, and no Route is added.
        """
        h = ProxyHarness(ProxyPolicy(trustedPeers=TrustedPeers.fromStrings(["10.0.0.0/8"])))
        h.bind(contact="sip:bob@192.0.2.10", path="<sip:127.0.0.5:25099;lr>",
               received="sip:127.0.0.1:41000;transport=udp")
        h.bind(contact="sip:bob@127.0.0.1:42000", path="<sip:127.0.0.5:25099;lr>",
               received=None)
        h.send(sipRequest("MESSAGE"))
        sent = sorted((address, str(message.uri), message.headers.lines("Route"))
                      for message, address in h.udpSent())
        self.assertEqual(sent, [(("127.0.0.1", 41000), "sip:bob@192.0.2.10", []),
                                (("127.0.0.1", 42000), "sip:bob@127.0.0.1:42000", [])])
        self.assertEqual(h.proxy.stats["pathIgnored"], 2)

    def test_forkCappedByMaxBranches(self) -> None:
        """
        A request to an address of record with more bindings than
        C{maxBranches} forks to that many: the highest C{q} first, then
        the most recently registered.
        """
        h = ProxyHarness(ProxyPolicy(maxBranches=3))
        for port, q, modified in [(41001, 0.5, 9.0), (41002, 1.0, 1.0), (41003, 0.9, 5.0),
                                  (41004, 1.0, 2.0), (41005, 0.1, 10.0)]:
            h.bind(contact="sip:bob@127.0.0.1:{}".format(port), q=q, lastModified=modified,
                   received="sip:127.0.0.1:{};transport=udp".format(port))
        h.send(sipRequest("MESSAGE"))
        ports = [address[1] for _, address in h.udpSent()]
        self.assertEqual(ports, [41004, 41002, 41003])
        self.assertEqual(h.proxy.stats["forksCapped"], 1)

    def test_storeFailure(self) -> None:
        """
        A lookup that fails with an unexpected error is answered 500 and
        logged.
        """
        h = ProxyHarness()
        h.store.lookup = lambda aor, now: defer.fail(RuntimeError("broken"))  # type: ignore[method-assign]
        h.send(sipRequest("MESSAGE"))
        self.assertEqual(h.statuses(), [500])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_optionsToServerStillAnswered(self) -> None:
        """
        OPTIONS addressed to the server itself is answered 200 by the core;
        OPTIONS to a user is proxied.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("OPTIONS", uri="sip:example.com"))
        self.assertEqual(h.statuses(), [200])
        h.send(sipRequest("OPTIONS", branch="z9hG4bKopt2"))
        self.assertEqual(len(h.requestsOn(bob, "OPTIONS")), 1)

    def test_retransmissionsCostOneTransaction(self) -> None:
        """
        However often the caller retransmits an INVITE, it is looked up and
        forwarded once.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        for _ in range(20):
            h.send(sipRequest("INVITE"))
        self.assertEqual(len(h.requestsOn(bob, "INVITE")), 1)
        self.assertEqual(h.store.statementCount["lookup"], 1)
        self.assertEqual(h.core.transactions.serverTransactions, 1)
        self.assertEqual(h.core.transactions.clientTransactions, 1)


class RecordRouteTests(SynchronousTestCase):
    """
    Record-Route on dialog-creating requests.
    """

    def test_doubleRecordRoute(self) -> None:
        """
        An INVITE from UDP to a WebSocket binding gets two Record-Route
        entries: the WS side on top (with the callee's flow token), the UDP
        side below, both with C{lr}, the transport and C{r2=on}.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("INVITE"))
        [invite] = h.requestsOn(bob)
        top, below = [rr.uri for rr in invite.recordRoutes]
        self.assertEqual((top.host, top.port, top.param("transport")),
                         ("127.0.0.1", WS_PORT, "ws"))
        self.assertEqual((below.host, below.port, below.param("transport")),
                         ("127.0.0.1", UDP_PORT, "udp"))
        for uri in (top, below):
            self.assertTrue(uri.hasParam("lr"))
            self.assertEqual(uri.param("r2"), "on")
        self.assertEqual(h.proxy.tokens.fromURIs([top]), [bob.conid])
        self.assertEqual(h.proxy.tokens.fromURIs([below]),
                         [NextHop("udp", "127.0.0.1", 40000)])

    def test_outgoingConnectionNamesListener(self) -> None:
        """
        A request leaving on a connection the proxy opened (its local port
        is not a listener's) names the TCP listener in its Via and
        Record-Route, so the entry is one of ours when the caller's ACK and
        BYE bring it back, and they go over that connection.
        """
        h = ProxyHarness(ProxyPolicy(forwardForeign=True))
        upstream = FakeStreamFlow("tcp", local=("127.0.0.1", 41234), remote=("192.0.2.5", 5060))
        h.table.add(upstream)
        h.send(sipRequest("INVITE", uri="sip:bob@192.0.2.5:5060;transport=tcp"))
        [invite] = h.requestsOn(upstream)
        self.assertEqual((invite.vias[0].host, invite.vias[0].port), ("127.0.0.1", TCP_PORT))
        top, below = [rr.uri for rr in invite.recordRoutes]
        self.assertEqual((top.host, top.port, top.param("transport")),
                         ("127.0.0.1", TCP_PORT, "tcp"))
        h.answer(invite, 200, upstream)
        [ok] = [r for r in h.responsesTo(h.caller) if r.status == 200]
        routes = ", ".join(reversed(ok.headers.values("Record-Route")))
        for method, branch in (("ACK", "z9hG4bKo1"), ("BYE", "z9hG4bKo2")):
            h.send(sipRequest(method, uri="sip:bob@192.0.2.5:5060;transport=tcp",
                              branch=branch, toTag="bobtag", cseq=2 if method == "BYE" else 1,
                              extra=(("Route", routes),)))
        self.assertEqual([r.method for r in h.requestsOn(upstream)], ["INVITE", "ACK", "BYE"])
        for request in h.requestsOn(upstream)[1:]:
            self.assertEqual(request.vias[0].port, TCP_PORT)
            self.assertEqual(request.headers.lines("Route"), [])

    def test_singleRecordRoute(self) -> None:
        """
        Between two connections on the same WS listener one Record-Route
        entry names both flows.
        """
        h = ProxyHarness()
        alice = h.connect(port=50001)
        bob = h.connect(port=50002)
        h.bind(flow=bob)
        h.send(sipRequest("INVITE", via="SIP/2.0/WS a.invalid;branch=z9hG4bKws1"), alice)
        [invite] = h.requestsOn(bob)
        [rr] = invite.recordRoutes
        self.assertNotIn("r2", [name for name, _ in rr.uri.params])
        self.assertEqual(h.proxy.tokens.fromURIs([rr.uri]), [alice.conid, bob.conid])

    def test_noRecordRouteForMessage(self) -> None:
        """
        MESSAGE creates no dialog and is not record-routed.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("MESSAGE"))
        [message] = h.requestsOn(bob)
        self.assertEqual(message.headers.lines("Record-Route"), [])

    def test_recordRouteDisabled(self) -> None:
        """
        With C{recordRoute=False} no Record-Route is added.
        """
        h = ProxyHarness(ProxyPolicy(recordRoute=False))
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("INVITE"))
        [invite] = h.requestsOn(bob)
        self.assertEqual(invite.headers.lines("Record-Route"), [])


class RouteTests(SynchronousTestCase):
    """
    Loose routing of in-dialog requests (RFC 3261 16.4), foreign domains
    and malformed Route headers.
    """

    def routeTo(self, h: ProxyHarness, flow: FakeFlow) -> str:
        """
        The Route set the caller (UDP, 127.0.0.1:40000) holds for a dialog
        with C{flow}: both double Record-Route entries of ours.
        """
        token = h.proxy.tokens.make(conidOf(flow))
        caller = h.proxy.tokens.makeAddress("127.0.0.1", 40000)
        return "{}, {}".format(h.signedRoute("udp", UDP_PORT, caller),
                               h.signedRoute("ws", WS_PORT, token))

    def udpRoute(self, h: ProxyHarness, callId: str = "call-1") -> str:
        """
        Our single Record-Route entry of a dialog between two UDP peers,
        the caller at 127.0.0.1:40000 and the callee at 127.0.0.1:41000.
        """
        tokens = "-".join([h.proxy.tokens.makeAddress("127.0.0.1", 40000),
                           h.proxy.tokens.makeAddress("127.0.0.1", 41000)])
        return h.signedRoute("udp", UDP_PORT, tokens, callId=callId)

    def test_inDialogByFlowToken(self) -> None:
        """
        A BYE whose Route set names us (both double Record-Route entries)
        goes over the connection its flow token names; our Route entries
        are removed and the Request-URI is kept.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.send(sipRequest("BYE", uri="sip:bob@client.invalid;transport=ws", toTag="bobtag",
                          extra=(("Route", self.routeTo(h, bob)),)))
        [bye] = h.requestsOn(bob)
        self.assertEqual(str(bye.uri), "sip:bob@client.invalid;transport=ws")
        self.assertEqual(bye.headers.lines("Route"), [])
        h.answer(bye, 200, bob)
        self.assertEqual(h.statuses(), [200])

    def test_tokenOfOwnConnectionIgnored(self) -> None:
        """
        The flow token of the connection a request came on is not where it
        goes: it goes to the other side's flow (here the caller's UDP
        address), whatever its Request-URI names.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.send(sipRequest("BYE", uri="sip:alice@192.0.2.66:6000", toTag="alicetag",
                          via="SIP/2.0/WS b.invalid;branch=z9hG4bKbye1",
                          extra=(("Route", self.routeTo(h, bob)),)), bob)
        [(bye, address)] = h.udpSent()
        self.assertEqual(bye.method, "BYE")
        self.assertEqual(address, ("127.0.0.1", 40000))
        self.assertEqual(str(bye.uri), "sip:alice@192.0.2.66:6000")

    def test_dialogWithItself(self) -> None:
        """
        When the signed entries name only the flow the request came on (a
        user calling itself), the request goes back over that flow.
        """
        h = ProxyHarness()
        bob = h.connect()
        route = h.signedRoute("ws", WS_PORT, h.proxy.tokens.make(conidOf(bob)))
        h.send(sipRequest("BYE", uri="sip:bob@192.0.2.66:6000", toTag="bobtag",
                          via="SIP/2.0/WS b.invalid;branch=z9hG4bKself",
                          extra=(("Route", route),)), bob)
        self.assertEqual(len(h.requestsOn(bob, "BYE")), 1)
        self.assertEqual(h.udpSent(), [])

    def test_udpDialogBothWays(self) -> None:
        """
        An INVITE between two UDP peers gets one Record-Route entry naming
        both; the callee's BYE goes to the caller's address and the
        caller's ACK to the callee's, whatever their Request-URIs name.
        """
        h = ProxyHarness()
        h.bind(contact="sip:bob@192.0.2.10:5062", received="sip:127.0.0.1:41000;transport=udp")
        h.send(sipRequest("INVITE"))
        [(invite, address)] = h.udpSent()
        self.assertEqual(address, ("127.0.0.1", 41000))
        [rr] = invite.recordRoutes
        self.assertEqual(h.proxy.tokens.fromURIs([rr.uri]),
                         [NextHop("udp", "127.0.0.1", 40000), NextHop("udp", "127.0.0.1", 41000)])
        callee = FakeFlow("udp", local=("127.0.0.1", UDP_PORT), remote=("127.0.0.1", 41000))
        h.send(sipRequest("BYE", uri="sip:alice@192.0.2.66:6000", toTag="alicetag",
                          via="SIP/2.0/UDP 127.0.0.1:41000;branch=z9hG4bKbye2;rport",
                          extra=(("Route", str(rr)),)), callee)
        h.send(sipRequest("ACK", uri="sip:bob@192.0.2.66:6000", toTag="bobtag",
                          branch="z9hG4bKack2", extra=(("Route", str(rr)),)))
        sent = [(m.method, address) for m, address in h.udpSent()[1:]]
        self.assertEqual(sent, [("BYE", ("127.0.0.1", 40000)), ("ACK", ("127.0.0.1", 41000))])

    def test_ownDialogEntryIsNoRelay(self) -> None:
        """
        A caller that holds a signed entry of its own dialog cannot use it
        to reach another address: neither a Route after it nor the
        Request-URI chooses the next hop, the other side of the dialog
        does; a signed entry naming no flow proves nothing.
        """
        h = ProxyHarness()
        victim = "<sip:127.0.0.1:6000;lr>"
        h.send(sipRequest("INVITE", uri="sip:bob@127.0.0.1:6000", toTag="t",
                          extra=(("Route", self.udpRoute(h) + ", " + victim),)))
        h.send(sipRequest("INVITE", uri="sip:bob@127.0.0.1:6000", toTag="t",
                          branch="z9hG4bKnoflow",
                          extra=(("Route", h.signedRoute() + ", " + victim),)))
        h.send(sipRequest("MESSAGE", uri="sip:bob@127.0.0.1:6000", toTag="t",
                          branch="z9hG4bKnoflow2", extra=(("Route", h.signedRoute()),)))
        h.clock.pump([0.5] * 70)
        self.assertEqual({address for _, address in h.udpSent()}, {("127.0.0.1", 41000)})
        self.assertEqual(h.proxy.stats["status:403"], 2)

    def test_unsignedEntryTokenIgnored(self) -> None:
        """
        A valid flow token in an entry of ours that is not signed for the
        request's dialog (copied from another dialog's entry) names no
        flow.
        """
        h = ProxyHarness()
        bob = h.connect()
        token = h.proxy.tokens.make(conidOf(bob))
        for i, route in enumerate([
                "<sip:127.0.0.1:{};transport=ws;lr;ftok={}>".format(WS_PORT, token),
                h.signedRoute("ws", WS_PORT, token, callId="another-call")]):
            h.send(sipRequest("BYE", uri="sip:bob@client.invalid;transport=ws", toTag="t",
                              branch="z9hG4bKu{}".format(i), extra=(("Route", route),)))
        self.assertEqual(bob.sent, [])
        self.assertEqual(h.statuses(), [403, 403])

    def test_addressTokens(self) -> None:
        """
        A UDP peer's token names its address (IPv4 or IPv6) and port; a
        changed address, port or MAC is not one of ours.
        """
        tokens = FlowTokens(b"k" * 32)
        v4 = tokens.makeAddress("192.0.2.1", 5060)
        v6 = tokens.makeAddress("2001:db8::1", 65535)
        self.assertEqual(tokens.check(v4), NextHop("udp", "192.0.2.1", 5060))
        self.assertEqual(tokens.check(v6), NextHop("udp", "2001:db8::1", 65535))
        body, _, mac = v4.partition(".")
        for forged in [body[:-1] + "5." + mac, "u" + "c0000202" + body[9:] + "." + mac,
                       body + "." + mac[:-1] + "0", FlowTokens(b"x" * 32).makeAddress(
                           "192.0.2.1", 5060), "u123.abc", "u" + "g" * 12 + "." + mac,
                       "\u00b2." + mac]:
            self.assertIsNone(tokens.check(forged), forged)

    def test_goneFlow(self) -> None:
        """
        An in-dialog request whose flow token names a closed connection
        gets 430 Flow Failed.
        """
        h = ProxyHarness()
        bob = h.connect()
        route = self.routeTo(h, bob)
        h.table.remove(bob.conid, "tcp:closed", "closed by peer")
        h.send(sipRequest("BYE", toTag="bobtag", extra=(("Route", route),)))
        self.assertEqual(h.statuses(), [430])

    def test_forgedToken(self) -> None:
        """
        A flow token not signed by this proxy is ignored: the request goes
        by its (foreign) Request-URI, which is refused.
        """
        h = ProxyHarness()
        bob = h.connect()
        forged = FlowTokens(b"another key").make(conidOf(bob))
        self.assertEqual(h.proxy.tokens.check(forged), None)
        self.assertEqual(h.proxy.tokens.check("12"), None)
        self.assertEqual(h.proxy.tokens.check("x.y"), None)
        route = "<sip:127.0.0.1:{};transport=ws;lr;ftok={}>".format(WS_PORT, forged)
        h.send(sipRequest("BYE", uri="sip:bob@client.invalid;transport=ws", toTag="t",
                          extra=(("Route", route),)))
        self.assertEqual(bob.sent, [])
        self.assertEqual(h.statuses(), [403])

    def test_remainingRouteKept(self) -> None:
        """
        After our own signed Route entry the remaining Route entries stay
        in the request, which goes to the other side's flow.
        """
        h = ProxyHarness()
        route = self.udpRoute(h) + ", <sip:127.0.0.1:6000;lr>"
        h.send(sipRequest("BYE", uri="sip:bob@192.0.2.1", toTag="t",
                          extra=(("Route", route),)))
        [(bye, address)] = h.udpSent()
        self.assertEqual(address, ("127.0.0.1", 41000))
        self.assertEqual([str(r.uri) for r in bye.routes], ["sip:127.0.0.1:6000;lr"])

    def test_strictRoutingPreviousHop(self) -> None:
        """
        A Request-URI holding our (signed) Record-Route value (a strict
        router sent it) is replaced by the last Route value (16.4).
        """
        h = ProxyHarness()
        uri = self.udpRoute(h)[1:-1]
        h.send(sipRequest("BYE", uri=uri, toTag="t",
                          extra=(("Route", "<sip:bob@127.0.0.1:41000>"),)))
        h.send(sipRequest("BYE", uri=uri, toTag="t", branch="z9hG4bKstrict2",
                          extra=(("Route", "<sip:bob@127.0.0.1:6000>"),)))
        [(bye, address), (other, otherAddress)] = h.udpSent()
        self.assertEqual(str(bye.uri), "sip:bob@127.0.0.1:41000")
        self.assertEqual(address, ("127.0.0.1", 41000))
        self.assertEqual(bye.headers.lines("Route"), [])
        self.assertEqual(str(other.uri), "sip:bob@127.0.0.1:6000")
        self.assertEqual(otherAddress, ("127.0.0.1", 41000))

    def test_preloadedOwnRouteIsNoRelay(self) -> None:
        """
        A Route entry naming this proxy that it did not sign (a preloaded
        C{Route: <sip:US;lr>, <sip:VICTIM;lr>}) does not make the request
        "routed through us": without C{forwardForeign} it is refused with
        403 and nothing (not even a retransmission) reaches the victim;
        an ACK so routed is dropped.
        """
        h = ProxyHarness()
        route = "<sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:6000;lr>"
        h.send(sipRequest("INVITE", uri="sip:bob@127.0.0.1:6000", extra=(("Route", route),)))
        h.send(sipRequest("BYE", uri="sip:bob@127.0.0.1:6000", toTag="t", branch="z9hG4bKb2",
                          extra=(("Route", route),)))
        h.send(sipRequest("ACK", uri="sip:bob@127.0.0.1:6000", toTag="t", branch="z9hG4bKa2",
                          extra=(("Route", route),)))
        h.clock.pump([0.5] * 70)
        self.assertEqual(set(h.statuses()), {403})
        self.assertEqual(h.proxy.stats["status:403"], 2)
        self.assertEqual(h.udpSent(), [])
        self.assertEqual(h.proxy.stats["acksDropped"], 1)
        self.assertEqual(dict(h.proxy.requests), {
            ("INVITE", "4xx"): 1, ("BYE", "4xx"): 1, ("ACK", "dropped"): 1})

    def test_signatureBoundToDialogAndEntry(self) -> None:
        """
        A signed entry of ours counts only for the Call-ID it was signed
        for and unchanged: another dialog's entry, a changed flow token or
        port, a forged signature and a strict-routing Request-URI without
        a signature are all refused.
        """
        h = ProxyHarness()
        victim = "<sip:127.0.0.1:6000;lr>"
        otherCall = h.signedRoute(callId="another-call")
        bob = h.connect()
        tampered = h.signedRoute("ws", WS_PORT, h.proxy.tokens.make(conidOf(bob))).replace(
            ";ftok=", ";ftok=9")
        moved = h.signedRoute().replace(":5060;", ":5070;")
        forged = "<sip:127.0.0.1:5060;transport=udp;lr;rrsig=00112233445566778899>"
        for i, own in enumerate([otherCall, tampered, moved, forged]):
            h.send(sipRequest("BYE", uri="sip:bob@127.0.0.1:6000", toTag="t",
                              branch="z9hG4bKs{}".format(i),
                              extra=(("Route", own + ", " + victim),)))
        h.send(sipRequest("BYE", uri="sip:127.0.0.1:5060;lr", toTag="t", branch="z9hG4bKs9",
                          extra=(("Route", victim),)))
        self.assertEqual(h.udpSent(), [])
        self.assertEqual(h.statuses(), [403, 403, 403, 403, 403])
        self.assertEqual(bob.sent, [])

    def test_preloadedOwnRouteToOwnDomain(self) -> None:
        """
        A UA using this proxy as its outbound proxy (an unsigned Route of
        ours) still reaches the users of our domains.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("MESSAGE", extra=(("Route", "<sip:127.0.0.1:5060;lr>"),)))
        [message] = h.requestsOn(bob, "MESSAGE")
        self.assertEqual(message.headers.lines("Route"), [])

    def test_preloadedRouteWithForwardForeign(self) -> None:
        """
        With C{forwardForeign} a preloaded Route set is followed.
        """
        h = ProxyHarness(ProxyPolicy(forwardForeign=True))
        route = "<sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:6000;lr>"
        h.send(sipRequest("MESSAGE", uri="sip:bob@192.0.2.1", extra=(("Route", route),)))
        [(message, address)] = h.udpSent()
        self.assertEqual(address, ("127.0.0.1", 6000))

    def test_recordRouteSigned(self) -> None:
        """
        Every Record-Route entry the proxy inserts carries a signature
        for the dialog's Call-ID, over its host, port, transport and flow
        tokens.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("INVITE", callId="call-rr"))
        [invite] = h.requestsOn(bob)
        entries = [rr.uri for rr in invite.recordRoutes]
        self.assertEqual(len(entries), 2)
        for uri in entries:
            self.assertTrue(h.proxy.tokens.isSignedRoute(uri, "call-rr"))
            self.assertFalse(h.proxy.tokens.isSignedRoute(uri, "call-1"))
        self.assertFalse(FlowTokens().isSignedRoute(entries[0], "call-rr"))

    def test_foreignRefused(self) -> None:
        """
        By default an initial request for another domain is refused with
        403, and so is one with a preloaded foreign Route.
        """
        h = ProxyHarness()
        h.send(sipRequest("INVITE", uri="sip:bob@192.0.2.1:5080"))
        h.send(sipRequest("MESSAGE", branch="z9hG4bKm2",
                          extra=(("Route", "<sip:192.0.2.1;lr>"),)))
        self.assertEqual(h.statuses(), [403, 403])
        self.assertEqual(h.udpSent(), [])

    def test_foreignForwarded(self) -> None:
        """
        With C{forwardForeign} an initial request for an IP literal goes to
        its host and port; a host name (which would need DNS) gets 404.
        """
        h = ProxyHarness(ProxyPolicy(forwardForeign=True))
        h.send(sipRequest("MESSAGE", uri="sip:bob@127.0.0.1:41000"))
        [(message, address)] = h.udpSent()
        self.assertEqual(address, ("127.0.0.1", 41000))
        h.send(sipRequest("MESSAGE", uri="sip:bob@elsewhere.example.org", branch="z9hG4bKm3"))
        self.assertEqual(h.statuses(), [404])

    def test_streamNextHopNeedsConnection(self) -> None:
        """
        A TCP next hop is reached over an existing connection to it; with
        none (and no outgoing connections configured) the branch fails
        with 503, made by the proxy, which the caller sees as it is.
        """
        h = ProxyHarness(ProxyPolicy(forwardForeign=True))
        h.send(sipRequest("MESSAGE", uri="sip:bob@127.0.0.1:41000;transport=tcp"))
        self.assertEqual(h.statuses(), [503])
        peer = h.connect("tcp", 41000)
        h.send(sipRequest("MESSAGE", uri="sip:bob@127.0.0.1:41000;transport=tcp",
                          branch="z9hG4bKm4"))
        self.assertEqual(len(h.requestsOn(peer, "MESSAGE")), 1)

    def test_malformedRoute(self) -> None:
        """
        A malformed Route is answered 400, never a crash.
        """
        h = ProxyHarness()
        for i, route in enumerate(["<sip:127.0.0.1;lr", "sip:127.0.0.1;lr", "<>", "<sip:@@>"]):
            h.send(sipRequest("BYE", toTag="t", branch="z9hG4bKbad{}".format(i),
                              extra=(("Route", route),)))
        self.assertEqual(h.statuses(), [400, 400, 400, 400])
        self.assertEqual(h.core.stats["errors"], 0)

    def test_malformedRecordRouteInResponse(self) -> None:
        """
        A response with a malformed Record-Route is refused by the parser
        and counted, without disturbing the transaction: a good response
        that follows is relayed.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("INVITE"))
        [invite] = h.requestsOn(bob)
        h.answer(invite, 180, bob, extra=(("Record-Route", "<sip:broken"),))
        self.assertEqual(h.statuses(), [])
        self.assertEqual(h.core.stats["dropped"], 1)
        h.answer(invite, 180, bob, extra=(("Record-Route", "<sip:127.0.0.1:9;lr>"),))
        self.assertEqual(h.statuses(), [180])
        self.assertEqual(h.core.stats["errors"], 0)


class ResponseTests(SynchronousTestCase):
    """
    Responses back to the caller, forking and best-response choice
    (RFC 3261 16.7).
    """

    def test_viaRemovedAndCallCompletes(self) -> None:
        """
        180 and 200 from the callee reach the caller without our Via; the
        ACK for the 200 goes end to end along the Route set.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("INVITE"))
        [invite] = h.requestsOn(bob)
        h.answer(invite, 180, bob)
        h.answer(invite, 200, bob)
        responses = h.responsesTo(h.caller)
        self.assertEqual([r.status for r in responses], [180, 200])
        for response in responses:
            self.assertEqual([v.branch for v in response.vias], ["z9hG4bKcaller1"])
        routes = list(reversed(responses[1].headers.values("Record-Route")))
        ack = sipRequest("ACK", uri=str(invite.uri), branch="z9hG4bKack1", toTag="bobtag",
                         extra=(("Route", ", ".join(routes)),))
        h.send(ack)
        h.send(ack)
        acks = h.requestsOn(bob, "ACK")
        self.assertEqual(len(acks), 2)
        self.assertTrue(str(acks[0].vias[0].branch).startswith(ACK_BRANCH_PREFIX))
        self.assertEqual(acks[0].vias[0].branch, acks[1].vias[0].branch)
        self.assertEqual(acks[0].headers.lines("Route"), [])
        self.assertEqual(h.proxy.stats["acksForwarded"], 2)
        # ACKs for a 2xx forwarded along their dialog's route are not stray.
        self.assertEqual(h.core.transactions.strayAcks, 0)
        self.assertEqual(h.proxy.requests["ACK", "forwarded"], 2)
        self.assertEqual(h.proxy.requests["INVITE", "2xx"], 1)

    def test_badAckDropped(self) -> None:
        """
        An ACK going nowhere (to our own domain, or along a flow token of
        a closed connection) is dropped and counted; one with a malformed
        Route never reaches the proxy (the parser refuses it) and nothing
        is forwarded.
        """
        h = ProxyHarness()
        bob = h.connect()
        token = h.proxy.tokens.make(conidOf(bob))
        h.table.remove(bob.conid, "tcp:closed", "closed by peer")
        h.send(sipRequest("ACK", toTag="t", branch="z9hG4bKa1"))
        h.send(sipRequest("ACK", toTag="t", branch="z9hG4bKa2", extra=(
            ("Route", "<sip:127.0.0.1:8080;transport=ws;lr;ftok={}>".format(token)),)))
        self.assertEqual(h.proxy.stats["acksDropped"], 2)
        # ACKs that match no transaction and go along no dialog are stray.
        self.assertEqual(h.core.transactions.strayAcks, 2)
        self.assertEqual(h.proxy.requests["ACK", "dropped"], 2)
        h.send(sipRequest("ACK", toTag="t", branch="z9hG4bKa3", extra=(("Route", "<sip:x"),)))
        self.assertEqual(h.proxy.stats["acksDropped"], 2)
        self.assertEqual((h.udpSent(), bob.sent), ([], []))
        self.assertEqual(h.core.stats["errors"], 0)

    def test_ackToNameLocated(self) -> None:
        """
        An ACK for a 2xx whose next hop is a host name (its Request-URI,
        no Route) is located by the resolver and sent statelessly to the
        first location, with the stateless ACK branch; a retransmission
        gets the same branch.
        """
        lookups = FakeLookups({("pbx.example", dns.A): [dns.Record_A("192.0.2.7"),
                                                        dns.Record_A("192.0.2.8")]})
        clock = task.Clock()
        resolver = Resolver(lookups, clock)
        h = ProxyHarness(ProxyPolicy(forwardForeign=True), resolver=resolver)
        ack = sipRequest("ACK", uri="sip:bob@pbx.example:5080", toTag="t", branch="z9hG4bKn1")
        h.send(ack)
        h.send(ack)
        sent = h.udpSent()
        self.assertEqual([(m.method, str(m.uri), address) for m, address in sent],
                         [("ACK", "sip:bob@pbx.example:5080", ("192.0.2.7", 5080))] * 2)
        self.assertTrue(str(sent[0][0].vias[0].branch).startswith(ACK_BRANCH_PREFIX))
        self.assertEqual(sent[0][0].vias[0].branch, sent[1][0].vias[0].branch)
        # The second ACK was located from the cache.
        self.assertEqual((resolver.stats["lookups"], resolver.stats["cached"]), (2, 2))
        self.assertEqual((h.proxy.stats["acksForwarded"], h.proxy.stats["acksDropped"]), (2, 0))
        self.assertEqual(h.core.transactions.strayAcks, 0)

    def test_ackToNameNotLocated(self) -> None:
        """
        An ACK whose next hop is a name the resolver cannot locate is
        dropped, counted, and logged in one line naming the URI and why.
        """
        resolver = Resolver(FakeLookups({}), task.Clock())
        h = ProxyHarness(ProxyPolicy(forwardForeign=True), resolver=resolver)
        logs = LogCapture(self, "sipcore.sip.proxy")
        h.send(sipRequest("ACK", uri="sip:bob@nowhere.example", toTag="t", branch="z9hG4bKn2"))
        self.assertEqual(h.udpSent(), [])
        self.assertEqual((h.proxy.stats["acksForwarded"], h.proxy.stats["acksDropped"]), (0, 1))
        self.assertEqual(h.proxy.requests["ACK", "dropped"], 1)
        lines = [formatEvent(e) for e in logs.at(LogLevel.warn)]
        self.assertEqual(len(logs.events), 1)
        self.assertEqual(lines, ["cannot locate sip:bob@nowhere.example for an ACK: "
                                 "no address found for nowhere.example; dropped"])

    def fork(self, h: ProxyHarness, count: int = 2, method: str = "INVITE") -> tuple[
            list[FakeFlow], list[Request]]:
        flows = [h.connect(port=50000 + i) for i in range(count)]
        for flow in flows:
            h.bind(flow=flow)
        h.send(sipRequest(method))
        requests = [h.requestsOn(flow, method)[0] for flow in flows]
        return flows, requests

    def test_forkCancelsOthersOn2xx(self) -> None:
        """
        A request is forked to every binding; the first 2xx goes to the
        caller at once and the other branches are cancelled.
        """
        h = ProxyHarness()
        (a, b), (ia, ib) = self.fork(h)
        h.answer(ia, 180, a, toTag="a")
        h.answer(ib, 200, b, toTag="b")
        self.assertEqual(h.statuses(), [180, 200])
        [cancel] = h.requestsOn(a, "CANCEL")
        self.assertEqual(cancel.vias[0].branch, ia.vias[0].branch)
        h.answer(cancel, 200, a, toTag="a")
        h.answer(ia, 487, a, toTag="a")
        self.assertEqual(h.statuses(), [180, 200])
        self.assertEqual(h.proxy._live, set())

    def test_cancelAfterProvisional(self) -> None:
        """
        A branch cancelled before any provisional response gets its CANCEL
        when its first provisional arrives (RFC 3261 9.1).
        """
        h = ProxyHarness()
        (a, b), (ia, ib) = self.fork(h)
        h.answer(ib, 200, b, toTag="b")
        self.assertEqual(h.requestsOn(a, "CANCEL"), [])
        h.answer(ia, 180, a, toTag="a")
        self.assertEqual(len(h.requestsOn(a, "CANCEL")), 1)
        self.assertEqual(h.statuses(), [200])

    def test_everyTwoHundredForwarded(self) -> None:
        """
        A second 2xx from another fork goes to the caller too.
        """
        h = ProxyHarness()
        (a, b), (ia, ib) = self.fork(h)
        h.answer(ia, 200, a, toTag="a")
        h.answer(ib, 200, b, toTag="b")
        self.assertEqual(h.statuses(), [200, 200])

    def test_bestOfFailures(self) -> None:
        """
        When every branch failed, the caller gets one response, chosen
        only after the last branch answered.
        """
        h = ProxyHarness()
        (a, b), (ia, ib) = self.fork(h)
        h.answer(ia, 486, a, toTag="a")
        self.assertEqual(h.statuses(), [])
        h.answer(ib, 503, b, toTag="b")
        self.assertEqual(h.statuses(), [486])

    def test_sixHundredWins(self) -> None:
        """
        A 6xx cancels the other branches and is the response chosen.
        """
        h = ProxyHarness()
        (a, b), (ia, ib) = self.fork(h)
        h.answer(ib, 180, b, toTag="b")
        h.answer(ia, 603, a, toTag="a")
        self.assertEqual(len(h.requestsOn(b, "CANCEL")), 1)
        h.answer(ib, 487, b, toTag="b")
        self.assertEqual(h.statuses(), [180, 603])

    def test_authChallengesAggregated(self) -> None:
        """
        A 401 and a 407 from two branches reach the caller as one response
        carrying both challenges.
        """
        h = ProxyHarness()
        (a, b), (ia, ib) = self.fork(h, method="MESSAGE")
        h.answer(ia, 401, a, extra=(("WWW-Authenticate", 'Digest realm="a", nonce="1"'),))
        h.answer(ib, 407, b, extra=(("Proxy-Authenticate", 'Digest realm="b", nonce="2"'),))
        [response] = h.responsesTo(h.caller)
        self.assertEqual(response.status, 401)
        self.assertEqual(response.headers.lines("WWW-Authenticate"),
                         ['Digest realm="a", nonce="1"'])
        self.assertEqual(response.headers.lines("Proxy-Authenticate"),
                         ['Digest realm="b", nonce="2"'])

    def test_staleAndLiveBranches(self) -> None:
        """
        With one binding's connection gone and another answering, the
        caller gets the live branch's answer and the stale binding is
        removed.
        """
        h = ProxyHarness()
        gone = h.connect(port=50009)
        stale = h.bind(flow=gone)
        h.table.remove(gone.conid, "tcp:closed", "closed by peer")
        live = h.connect(port=50010)
        h.bind(flow=live)
        h.send(sipRequest("MESSAGE"))
        [message] = h.requestsOn(live)
        h.answer(message, 200, live)
        self.assertEqual(h.statuses(), [200])
        self.assertEqual(h.stale, [stale])

    def answeredInvite(self, h: ProxyHarness) -> tuple[FakeFlow, Request]:
        """
        An INVITE from the UDP caller to Bob on WebSocket, answered 200,
        whose client transaction then ended (timer M, 64*T1).
        """
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("INVITE"))
        [invite] = h.requestsOn(bob)
        h.answer(invite, 200, bob)
        self.assertEqual(h.statuses(), [200])
        h.clock.advance(h.core.transactions.timers.timeout + 1)
        self.assertEqual(h.core.transactions.clientTransactions, 0)
        h.caller.sent.clear()
        return bob, invite

    def test_strayTwoHundredForwarded(self) -> None:
        """
        A 2xx to INVITE matching no transaction, whose top Via is ours with
        the branch of an INVITE the proxy forwarded, goes statelessly
        to where that INVITE's responses went, without our Via; a 180
        with that Via is dropped and counted.
        """
        h = ProxyHarness()
        bob, invite = self.answeredInvite(h)
        stray = Response.forRequest(invite, 200, toTag="bobtag2")
        h.send(stray.serialize(), bob)
        [response] = h.responsesTo(h.caller)
        self.assertEqual(response.status, 200)
        self.assertEqual([v.branch for v in response.vias], ["z9hG4bKcaller1"])
        self.assertEqual(h.caller.sent[0][1], ("127.0.0.1", 40000))
        self.assertEqual(h.proxy.stats["strayForwarded"], 1)
        h.send(Response.forRequest(invite, 180, toTag="bobtag3").serialize(), bob)
        self.assertEqual(len(h.caller.sent), 1)
        self.assertEqual(h.proxy.stats["strayDropped"], 1)

    def test_strayTwoHundredNotReflected(self) -> None:
        """
        A stray 2xx is never sent to an address taken from it: one whose
        top Via is ours but whose branch the proxy never issued is dropped
        and counted (however its second Via's received/rport point at a
        victim), and one with a branch of ours but a forged second Via
        still goes to the INVITE's sender, not to the victim.
        """
        h = ProxyHarness()
        bob, invite = self.answeredInvite(h)
        victim = "SIP/2.0/UDP 10.0.0.1:5060;received=127.0.0.1;rport=45000;branch=z9hG4bKv"
        forged = Response(200, headers=[
            ("Via", "SIP/2.0/WS 127.0.0.1:8080;branch={}".format(
                proxyBranch(loopHash(invite)))),
            ("Via", victim), ("From", "<sip:a@example.com>;tag=1"),
            ("To", "<sip:b@example.com>;tag=2"), ("Call-ID", "call-1"), ("CSeq", "1 INVITE")])
        h.send(forged.serialize(), bob)
        self.assertEqual((h.udpSent(), h.caller.sent), ([], []))
        self.assertEqual(h.proxy.stats["strayUnknownBranch"], 1)
        self.assertEqual(h.proxy.stats["strayDropped"], 1)
        reflected = Response.forRequest(invite, 200, toTag="bobtag2")
        reflected.headers.remove("Via")
        reflected.headers.add("Via", invite.headers.lines("Via")[0])
        reflected.headers.add("Via", victim)
        h.send(reflected.serialize(), bob)
        self.assertEqual(h.udpSent(), [])
        self.assertEqual([address for _, address in h.caller.sent], [("127.0.0.1", 40000)])

    def test_strayBranchForgotten(self) -> None:
        """
        An ended INVITE branch is remembered for 64*T1 after its client
        transaction ended, and at most C{maxRecentBranches} of them: after
        that its stray 2xx is dropped.
        """
        h = ProxyHarness()
        bob, invite = self.answeredInvite(h)
        h.clock.advance(h.core.transactions.timers.timeout)
        h.send(Response.forRequest(invite, 200, toTag="late").serialize(), bob)
        self.assertEqual(h.caller.sent, [])
        self.assertEqual(h.proxy.stats["strayUnknownBranch"], 1)

        h = ProxyHarness()
        h.proxy.maxRecentBranches = 1
        bob, first = self.answeredInvite(h)
        h.send(sipRequest("INVITE", branch="z9hG4bKcaller2", callId="call-2"))
        second = h.requestsOn(bob, "INVITE")[-1]
        h.answer(second, 200, bob)
        h.caller.sent.clear()
        h.send(Response.forRequest(first, 200, toTag="x").serialize(), bob)
        self.assertEqual(h.caller.sent, [])
        h.clock.advance(h.core.transactions.timers.timeout + 1)
        h.send(Response.forRequest(second, 200, toTag="y").serialize(), bob)
        self.assertEqual([r.status for r in h.responsesTo(h.caller)], [200])


class CancelAndTimerTests(SynchronousTestCase):
    """
    CANCEL from the caller, timer C and transaction timeouts.
    """

    def test_callerCancel(self) -> None:
        """
        A CANCEL from the caller gets 200, the INVITE gets 487, and the
        pending branch is cancelled; the branch's own 487 is absorbed.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("INVITE"))
        [invite] = h.requestsOn(bob)
        h.answer(invite, 180, bob)
        h.send(sipRequest("CANCEL"))
        statuses = [(r.status, r.cseq[1]) for r in h.responsesTo(h.caller)]
        self.assertEqual(statuses, [(180, "INVITE"), (200, "CANCEL"), (487, "INVITE")])
        [cancel] = h.requestsOn(bob, "CANCEL")
        h.answer(cancel, 200, bob)
        h.answer(invite, 487, bob)
        self.assertEqual(len(h.responsesTo(h.caller)), 3)
        self.assertEqual(len(h.requestsOn(bob, "ACK")), 1)
        self.assertEqual(h.proxy._live, set())

    def test_cancelDuringLookup(self) -> None:
        """
        A CANCEL that arrives while the location lookup is in flight ends
        the INVITE with 487 and nothing is forwarded.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        pending: defer.Deferred[list[Binding]] = defer.Deferred()
        realLookup = h.store.lookup
        h.store.lookup = lambda aor, now: pending  # type: ignore[method-assign]
        h.send(sipRequest("INVITE"))
        h.send(sipRequest("CANCEL"))
        pending.callback(self.successResultOf(realLookup("bob@example.com", 0)))
        self.assertEqual(bob.sent, [])
        self.assertEqual(h.statuses(), [200, 487])

    def test_lateTwoHundredAfterCancel(self) -> None:
        """
        A 2xx that crosses the CANCEL still reaches the caller (statelessly,
        the INVITE transaction having sent 487).
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("INVITE"))
        [invite] = h.requestsOn(bob)
        h.answer(invite, 180, bob)
        h.send(sipRequest("CANCEL"))
        h.answer(invite, 200, bob)
        self.assertEqual(h.statuses()[-2:], [487, 200])
        self.assertEqual(h.proxy.stats["lateSuccessForwarded"], 1)

    def test_cancelWithoutInvite(self) -> None:
        """
        A CANCEL matching no INVITE gets 481.
        """
        h = ProxyHarness()
        h.send(sipRequest("CANCEL"))
        self.assertEqual(h.statuses(), [481])

    def test_timerCAfterProvisional(self) -> None:
        """
        Timer C fires after a provisional response: the branch is
        cancelled, and its 487 reaches the caller as 408.
        """
        h = ProxyHarness(ProxyPolicy(timerC=60))
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("INVITE"))
        [invite] = h.requestsOn(bob)
        h.clock.advance(30)
        h.answer(invite, 180, bob)
        h.clock.advance(59)
        self.assertEqual(h.requestsOn(bob, "CANCEL"), [])
        h.clock.advance(1)
        [cancel] = h.requestsOn(bob, "CANCEL")
        h.answer(cancel, 200, bob)
        h.answer(invite, 487, bob)
        self.assertEqual(h.statuses(), [100, 180, 408])
        self.assertEqual(h.proxy.stats["timerC"], 1)

    def test_timerCWithoutProvisional(self) -> None:
        """
        Timer C firing before any provisional response ends the branch as
        if it had received 408.
        """
        h = ProxyHarness(ProxyPolicy(timerC=10))
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("INVITE"))
        h.clock.advance(10)
        self.assertEqual(h.statuses(), [100, 408])
        self.assertEqual(h.requestsOn(bob, "CANCEL"), [])
        self.assertEqual(h.core.transactions.clientTransactions, 0)

    def test_cancelGuard(self) -> None:
        """
        A callee that never answers the CANCEL does not hold the branch
        forever: after 64*T1 it ends.
        """
        h = ProxyHarness(ProxyPolicy(timerC=60))
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("INVITE"))
        [invite] = h.requestsOn(bob)
        h.answer(invite, 180, bob)
        h.clock.advance(60)
        self.assertEqual(len(h.requestsOn(bob, "CANCEL")), 1)
        h.clock.advance(32)
        self.assertEqual(h.statuses(), [180, 408])
        self.assertEqual(h.proxy._live, set())

    def test_nonInviteTimeout(self) -> None:
        """
        A MESSAGE nobody answers ends with 408 when the client transaction
        times out (timer F).
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("MESSAGE"))
        h.clock.advance(31.9)
        self.assertEqual(h.statuses(), [])
        h.clock.advance(0.2)
        self.assertEqual(h.statuses(), [408])

    def test_transportErrorOnSend(self) -> None:
        """
        A connection that refuses the request fails its branch with 480.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        bob.closed = True
        h.send(sipRequest("MESSAGE"))
        self.assertEqual(h.statuses(), [480])

    def test_stopCancelsTimers(self) -> None:
        """
        L{Proxy.stop} cancels timer C of every pending branch.
        """
        h = ProxyHarness()
        bob = h.connect()
        h.bind(flow=bob)
        h.send(sipRequest("INVITE"))
        h.proxy.stop()
        h.core.transactions.terminateAll()
        self.assertEqual(h.clock.getDelayedCalls(), [])


class CountingTable(ConnectionTable):
    """
    A L{ConnectionTable} counting iterations over its flows.
    """

    iterations = 0

    def __iter__(self) -> Any:
        self.iterations += 1
        return super().__iter__()


class PerPacketWorkTests(SynchronousTestCase):
    """
    The proxy's per-message work does not grow with its listeners or
    connections.
    """

    def test_listenerAddressesReadOnce(self) -> None:
        """
        The listeners' addresses are read once they all have one, not for
        every Route and Via checked; a listener not started yet is read
        again until it is.
        """
        h = ProxyHarness()
        h.listeners[:] = [FakeListener(listener.spec.transport, listener.port,
                                       listener.factory, host="127.0.0.1")
                          for listener in h.listeners]
        h.listeners[2].started = False
        self.assertFalse(h.proxy.isOwn("127.0.0.1", WS_PORT))
        h.listeners[2].started = True
        self.assertTrue(h.proxy.isOwn("127.0.0.1", WS_PORT))
        before = [listener.calls for listener in h.listeners]
        bob = h.connect()
        for n in range(10):
            h.send(sipRequest("BYE", uri="sip:bob@client.invalid;transport=ws", toTag="t",
                              branch="z9hG4bKn{}".format(n), extra=(
                                  ("Route", RouteTests().routeTo(h, bob)),)))
        self.assertEqual(len(h.requestsOn(bob, "BYE")), 10)
        self.assertEqual([listener.calls for listener in h.listeners], before)
        del h.listeners[1:]
        self.assertFalse(h.proxy.isOwn("127.0.0.1", WS_PORT))

    def test_connectionIndex(self) -> None:
        """
        A stream next hop is found through an index: the table is scanned
        again only after connections were opened or the indexed one
        closed, not for every request.
        """
        table = CountingTable(RecordingBus(), task.Clock())
        h = ProxyHarness(ProxyPolicy(forwardForeign=True), table)
        for port in range(42000, 42050):
            h.connect("tcp", port)
        peer = h.connect("tcp", 41000)
        uri = "sip:bob@127.0.0.1:41000;transport=tcp"
        for n in range(20):
            h.send(sipRequest("MESSAGE", uri=uri, branch="z9hG4bKi{}".format(n)))
        self.assertEqual(len(h.requestsOn(peer, "MESSAGE")), 20)
        self.assertEqual(table.iterations, 1)
        for n in range(5):
            h.send(sipRequest("MESSAGE", uri="sip:bob@127.0.0.1:41001;transport=tcp",
                              branch="z9hG4bKj{}".format(n)))
        self.assertEqual(table.iterations, 1)
        table.remove(peer.conid, "tcp:closed", "closed by peer")
        again = h.connect("tcp", 41000)
        h.send(sipRequest("MESSAGE", uri=uri, branch="z9hG4bKk"))
        self.assertEqual(len(h.requestsOn(again, "MESSAGE")), 1)
        self.assertEqual(h.statuses().count(503), 5)


class SendToSenderTests(SynchronousTestCase):
    """
    L{sendToSender}, the one way responses go back to a request's sender.
    """

    def request(self, via: str) -> Request:
        message = parseMessage(sipRequest("OPTIONS", via=via))
        assert isinstance(message, Request)
        return message

    def test_reliable(self) -> None:
        """
        On a reliable flow the data goes over the connection.
        """
        flow = FakeFlow("tcp", remote=("192.0.2.1", 40000))
        self.assertTrue(sendToSender(flow, self.request("SIP/2.0/TCP h;branch=z9hG4bKr"),
                                     b"x"))
        self.assertEqual(flow.sent, [(b"x", None)])

    def test_unreliable(self) -> None:
        """
        On UDP the data goes to the source address, at the source port
        with C{rport}, else at the Via port; an explicit address wins.
        """
        flow = FakeFlow("udp", remote=("192.0.2.1", 40000))
        sendToSender(flow, self.request("SIP/2.0/UDP h:5062;branch=z9hG4bKu;rport"), b"a")
        sendToSender(flow, self.request("SIP/2.0/UDP h:5062;branch=z9hG4bKu"), b"b")
        sendToSender(flow, self.request("SIP/2.0/UDP h:5062;branch=z9hG4bKu"), b"c",
                     ("192.0.2.9", 9))
        self.assertEqual([address for _, address in flow.sent],
                         [("192.0.2.1", 40000), ("192.0.2.1", 5062), ("192.0.2.9", 9)])

    def test_malformedVia(self) -> None:
        """
        With a malformed top Via the source address of the flow is used.
        """
        flow = FakeFlow("udp", remote=("192.0.2.1", 40000))
        request = Request("OPTIONS", parseURI("sip:example.com"))
        request.headers.add("Via", "SIP/2.0/UDP ;;;")
        sendToSender(flow, request, b"a")
        self.assertEqual(flow.sent, [(b"a", ("192.0.2.1", 40000))])


class RoutingHelperTests(SynchronousTestCase):
    """
    The pure helpers of L{sipcore.sip.routing}.
    """

    def response(self, status: int, *headers: tuple[str, str]) -> Response:
        return Response(status, headers=list(headers))

    def test_chooseBestLowestClass(self) -> None:
        """
        Without a 6xx the lowest class wins; within 4xx the retryable
        statuses are preferred, and received responses over local ones.
        """
        r486, r302, r404 = self.response(486), self.response(302), self.response(404)
        self.assertIs(chooseBest([(r486, False), (r302, False)]), r302)
        r401 = self.response(401)
        self.assertEqual(chooseBest([(r486, False), (r401, False)]).status, 401)
        local408 = self.response(408)
        self.assertIs(chooseBest([(local408, True), (r404, False)]), r404)
        self.assertIs(chooseBest([(local408, True)]), local408)

    def test_chooseBestSixHundred(self) -> None:
        """
        A 6xx wins over any other class.
        """
        r603 = self.response(603)
        self.assertIs(chooseBest([(self.response(302), False), (r603, False)]), r603)

    def test_chooseBest503(self) -> None:
        """
        A chosen 503 becomes a 500 without Retry-After.
        """
        best = chooseBest([(self.response(503, ("Retry-After", "5")), False)])
        self.assertEqual((best.status, best.headers.lines("Retry-After")), (500, []))
        self.assertRaises(ValueError, chooseBest, [])

    def test_routeSignature(self) -> None:
        """
        A signed Record-Route entry verifies as a UA may copy it back:
        with its IPv6 host bracketed, host and transport in another case,
        parameters reordered; not with non-ASCII or missing signatures.
        """
        tokens = FlowTokens(b"k" * 32)
        signature = tokens.signRoute("ws", "[2001:DB8::1]", 8080, "3.abc", "cid")
        for text in ["sip:[2001:db8::1]:8080;transport=ws;lr;ftok=3.abc;rrsig={}",
                     "sip:[2001:DB8::1]:8080;rrsig={};ftok=3.abc;TRANSPORT=WS;lr"]:
            uri = parseURI(text.format(signature))
            self.assertTrue(tokens.isSignedRoute(uri, "cid"))
            self.assertFalse(tokens.isSignedRoute(uri, "cid2"))
        for text in ["sip:[2001:db8::1]:8080;transport=ws;lr;ftok=3.abc",
                     "sip:[2001:db8::1]:8080;transport=ws;lr;ftok=3.abc;rrsig=%C3%A9",
                     "sip:[2001:db8::1]:8080;transport=ws;lr;rrsig=" + signature]:
            self.assertFalse(tokens.isSignedRoute(parseURI(text), "cid"))

    def test_nextHop(self) -> None:
        """
        Next hops come from IP literals with default ports per transport.
        """
        self.assertEqual(nextHopOf(parseURI("sip:a@127.0.0.1")),
                         NextHop("udp", "127.0.0.1", 5060))
        self.assertEqual(nextHopOf(parseURI("sips:a@[::1]")), NextHop("tls", "::1", 5061))
        self.assertEqual(nextHopOf(parseURI("sip:a@127.0.0.1:99;transport=TCP")),
                         NextHop("tcp", "127.0.0.1", 99))
        for text in ("sip:a@example.com", "tel:+123", "sip:a@127.0.0.1;transport=sctp"):
            self.assertRaises(NoRoute, nextHopOf, parseURI(text))


class CompositionTests(SynchronousTestCase):
    """
    L{sipcore.tap.buildService} wires the proxy.
    """

    def test_wired(self) -> None:
        """
        The built service's proxy is the core's default, ACK and stray
        response handler, takes the proxy options, and removes the
        bindings of a stale binding's connection from the store.
        """
        from twisted.internet.testing import MemoryReactorClock

        from sipcore.tap import Options, buildService

        options = Options()
        options.parseOptions(["--listen", "udp:0", "--timer-c", "42", "--forward-foreign",
                              "--advertise-host", "192.0.2.1", "--server-id", "3"])
        service = buildService(options, MemoryReactorClock())
        proxy = service.proxy
        core = service.core
        self.assertIs(core._default, proxy)
        self.assertEqual(core._ackHandler, proxy.ackReceived)
        self.assertEqual(core._responseHandler, proxy.responseReceived)
        self.assertEqual((proxy.policy.timerC, proxy.policy.forwardForeign,
                          proxy.policy.advertiseHost, proxy.serverId),
                         (42.0, True, "192.0.2.1", 3))
        binding = Binding(ruid="r1", username="bob", domain="localhost",
                          contact="sip:bob@x.invalid", expires=10.0**9, serverId=3,
                          connectionId=5)
        service.store.save([binding])
        proxy.staleBinding(binding)
        self.assertEqual(service.store.allBindings(), [])

    def test_staleBindingRemovedByConnection(self) -> None:
        """
        A stale binding is removed by its connection, not its ruid: when
        the same contact re-registered over a new connection (the
        registrar keeps the ruid) after the proxy read the old row, the
        new row survives.
        """
        from twisted.internet.testing import MemoryReactorClock

        from sipcore.tap import Options, buildService

        options = Options()
        options.parseOptions(["--listen", "udp:0", "--server-id", "3"])
        service = buildService(options, MemoryReactorClock())
        old = Binding(ruid="r1", username="bob", domain="localhost",
                      contact="sip:bob@x.invalid", expires=10.0**9, serverId=3,
                      connectionId=5)
        fresh = Binding(ruid="r1", username="bob", domain="localhost",
                        contact="sip:bob@x.invalid", expires=10.0**9, serverId=3,
                        connectionId=6)
        service.store.save([fresh])
        self.successResultOf(defer.maybeDeferred(service.proxy.staleBinding, old))
        self.assertEqual(service.store.allBindings(), [fresh])

    def test_staleBindingFailureLoggedOnce(self) -> None:
        """
        When the store cannot remove a stale binding's connection the
        failure is logged exactly once.
        """
        from twisted.internet.testing import MemoryReactorClock
        from twisted.logger import LogLevel, capturedLogs

        from sipcore.location import StoreUnavailable
        from sipcore.tap import Options, buildService

        options = Options()
        options.parseOptions(["--listen", "udp:0"])
        service = buildService(options, MemoryReactorClock())
        service.store.removeConnections = lambda serverId, conids: defer.fail(
            StoreUnavailable("database away"))
        binding = Binding(ruid="r1", username="bob", domain="localhost",
                          contact="sip:bob@x.invalid", expires=10.0**9, connectionId=5)
        with capturedLogs() as events:
            service.proxy._staleBinding(binding)
        errors = [e for e in events if e["log_level"] >= LogLevel.warn]
        self.assertEqual(len(errors), 1)
        self.assertIn("database away", str(errors[0].get("error")))

    def test_defaults(self) -> None:
        """
        By default timer C is 180 s, foreign requests are refused and the
        advertised host is the first default domain.
        """
        from twisted.internet.testing import MemoryReactorClock

        from sipcore.tap import Options, buildService

        options = Options()
        options.parseOptions(["--listen", "udp:0"])
        proxy = buildService(options, MemoryReactorClock()).proxy
        self.assertEqual((proxy.policy.timerC, proxy.policy.forwardForeign,
                          proxy.policy.foreignStatus, proxy.policy.advertiseHost),
                         (180.0, False, 403, "localhost"))

    def test_advertiseFirstDomain(self) -> None:
        """
        Without C{--advertise-host} a wildcard listener is advertised as
        the first C{--domain} given on the command line (not the
        alphabetically lowest).
        """
        from twisted.internet.testing import MemoryReactorClock

        from sipcore.tap import Options, buildService

        options = Options()
        options.parseOptions(["--listen", "udp:0", "--domain", "zeta.example",
                              "--domain", "alpha.example"])
        proxy = buildService(options, MemoryReactorClock()).proxy
        self.assertEqual(proxy.addresses.advertised("0.0.0.0"), "zeta.example")
        self.assertEqual(proxy.addresses.side(FakeFlow("udp", local=("::", 5060))),
                         ("udp", "zeta.example", 5060))
