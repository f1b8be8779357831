"""
Tests for L{sipcore.cluster.delivery} and the proxy's delivery to
connections of other cluster members: two proxies (server_id 1 and 2) on
one L{task.Clock}, one shared memory store, a L{StaticNodeDirectory} each,
and fake flows between them and to their clients.

The nodes are laid out as the workers of one host: both serve the clients
on the same address (C{127.0.0.1:5070}, a shared socket), and each has a
node port of its own (C{5071} and C{5072}).
"""

from __future__ import annotations

from twisted.internet import task
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from sipcore.cluster import Node, StaticNodeDirectory
from sipcore.cluster.delivery import CONID_PARAM, MAC_PARAM, NODE_PARAM, NodeRoutes
from sipcore.location import Binding
from sipcore.message import Request, Response, parseMessage, parseURI
from sipcore.sip.core import SIPCore
from sipcore.sip.proxy import Proxy
from sipcore.sip.routing import FlowTokens, NodeRef
from sipcore.testing import (
    FakeFlow,
    FakeStreamFlow,
    MemoryLocationStore,
    RecordingBus,
    parseRequest,
)
from sipcore.transport.connections import ConnectionTable
from sipcore.transport.hops import HopConnector
from tests.test_proxy import sipRequest
from tests.test_transport_hops import FakeListener

SECRET = b"cluster secret for the tests"
CLIENT_PORT = 5070
NODE_PORTS = {1: 5071, 2: 5072}


def nodeURI(serverId: int) -> str:
    return "sip:127.0.0.1:{};transport=tcp".format(NODE_PORTS[serverId])


def members() -> dict[int, Node]:
    return {serverId: Node(serverId, nodeURI(serverId)) for serverId in NODE_PORTS}


class FakeNode:
    """
    One member: a core, a connection table, a proxy with a directory.
    """

    def __init__(self, serverId: int, clock: task.Clock, store: MemoryLocationStore,
                 directory: StaticNodeDirectory) -> None:
        self.serverId = serverId
        self.core = SIPCore(clock, domains=["example.com"])
        self.table = ConnectionTable(RecordingBus(), clock, serverId=serverId)
        listeners = [FakeListener("tcp", CLIENT_PORT, host="127.0.0.1"),
                     FakeListener("tcp", NODE_PORTS[serverId], host="127.0.0.1")]
        self.proxy = Proxy(self.core, store, clock, HopConnector(self.table, listeners),
                           serverId=serverId, directory=directory,
                           nodeURI=lambda: nodeURI(serverId))
        self.proxy.install()
        self._port = 50000 + 100 * serverId

    def client(self) -> FakeFlow:
        """
        A client's connection to the shared client port.
        """
        self._port += 1
        flow = FakeStreamFlow("tcp", local=("127.0.0.1", CLIENT_PORT), remote=("127.0.0.1", self._port))
        self.table.add(flow)
        return flow

    def send(self, data: bytes, flow: FakeFlow) -> None:
        self.core.messageReceived(data, flow)


class Link:
    """
    A TCP connection from one node to another's node port: the flow in
    each node's table, and what went across so far.
    """

    def __init__(self, sender: FakeNode, owner: FakeNode, port: int) -> None:
        self.sender = sender
        self.owner = owner
        self.out = FakeStreamFlow("tcp", local=("127.0.0.1", port),
                            remote=("127.0.0.1", NODE_PORTS[owner.serverId]))
        self.inbound = FakeStreamFlow("tcp", local=("127.0.0.1", NODE_PORTS[owner.serverId]),
                                remote=("127.0.0.1", port))
        sender.table.add(self.out)
        owner.table.add(self.inbound)
        self._done = [0, 0]

    def pump(self) -> bool:
        """
        Deliver what was sent on either end to the other node.

        @return: whether anything went across.
        """
        moved = False
        for index, (flow, node, other) in enumerate(
                ((self.out, self.owner, self.inbound), (self.inbound, self.sender, self.out))):
            while self._done[index] < len(flow.sent):
                data, _ = flow.sent[self._done[index]]
                self._done[index] += 1
                node.core.messageReceived(data, other)
                moved = True
        return moved

    def requests(self) -> list[Request]:
        """
        The requests the sender sent to the owner.
        """
        return [m for m in (parseMessage(d) for d, _ in self.out.sent) if isinstance(m, Request)]


class Cluster:
    """
    Two members and a link each way.
    """

    def __init__(self, secrets: tuple[bytes, bytes] = (SECRET, SECRET),
                 live: tuple[int, ...] = (1, 2)) -> None:
        self.clock = task.Clock()
        self.store = MemoryLocationStore(self.clock)
        everyone = members()
        known = {k: v for k, v in everyone.items() if k in live}
        self.a = FakeNode(1, self.clock, self.store,
                          StaticNodeDirectory(1, secrets[0], {**known, 1: everyone[1]}))
        self.b = FakeNode(2, self.clock, self.store,
                          StaticNodeDirectory(2, secrets[1], {**known, 2: everyone[2]}))
        self.ab = Link(self.a, self.b, 41000)
        self.ba = Link(self.b, self.a, 42000)
        self._ruids = 0

    def pump(self) -> None:
        for _ in range(20):
            if not (self.ab.pump() | self.ba.pump()):
                return
        raise AssertionError("messages kept going across")

    def bind(self, node: FakeNode, flow: FakeFlow, user: str = "bob") -> Binding:
        """
        Register C{user} over C{flow}, a connection of C{node}.
        """
        self._ruids += 1
        binding = Binding(
            ruid="ruid-{}".format(self._ruids), username=user, domain="example.com",
            contact="sip:{}@device{}.invalid;transport=tcp".format(user, self._ruids),
            expires=self.clock.seconds() + 3600, lastModified=float(self._ruids),
            serverId=node.serverId, connectionId=flow.conid or 0,
            received="sip:127.0.0.1:{};transport=tcp".format(flow.remote[1]))
        self.store.save([binding])
        return binding

    def send(self, node: FakeNode, data: bytes, flow: FakeFlow) -> None:
        node.send(data, flow)
        self.pump()

    def answer(self, node: FakeNode, request: Request, status: int, flow: FakeFlow,
               toTag: str = "bobtag") -> None:
        response = Response.forRequest(request, status, toTag=toTag)
        for rr in request.headers.lines("Record-Route"):
            response.headers.add("Record-Route", rr)
        response.headers.add("Contact", "<sip:bob@device.invalid;transport=tcp>")
        self.send(node, response.serialize(), flow)


def requestsOn(flow: FakeFlow, method: str | None = None) -> list[Request]:
    return [m for m in flow.messages() if isinstance(m, Request)
            and (method is None or m.method == method)]


def statuses(flow: FakeFlow) -> list[tuple[int, str]]:
    return [(m.status, m.cseq[1]) for m in flow.messages() if isinstance(m, Response)]


def tcpRequest(method: str, port: int, branch: str | None = None, cseq: int = 1,
               **kwargs: object) -> bytes:
    """
    A request from a TCP client at C{127.0.0.1:port} (its Via branch
    derived from the method and CSeq unless given).
    """
    via = "SIP/2.0/TCP 127.0.0.1:{};branch={}".format(
        port, branch or "z9hG4bK{}{}".format(method.lower(), cseq))
    return sipRequest(method, via=via, cseq=cseq, **kwargs)  # type: ignore[arg-type]


class NodeRoutesTests(SynchronousTestCase):
    """
    L{NodeRoutes}: the Route naming another node's connection.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.sender = NodeRoutes(StaticNodeDirectory(1, SECRET, members()), self.clock)
        self.owner = NodeRoutes(StaticNodeDirectory(2, SECRET, members()), self.clock)

    def test_routeNamesOwnerAndConnection(self) -> None:
        """
        The Route goes to the owner's node URI and names the connection,
        the sender and a MAC the owner accepts for that Call-ID.
        """
        flow = self.sender.flowOf(2, 7, "call-1")
        assert flow is not None
        self.assertEqual((flow.hop.transport, flow.hop.host, flow.hop.port),
                         ("tcp", "127.0.0.1", 5072))
        uri = parseURI(flow.route.strip("<>"))
        self.assertEqual((uri.param(CONID_PARAM), uri.param(NODE_PARAM)), ("7", "1"))
        self.assertTrue(uri.hasParam("lr"))
        self.assertEqual(len(uri.param(MAC_PARAM) or ""), 32)
        self.assertEqual(self.owner.check(uri, "call-1", "127.0.0.1"), (7, 1))

    def test_otherCallId(self) -> None:
        """
        A Route made for one Call-ID is refused for another.
        """
        from sipcore.cluster.delivery import FlowRefused

        flow = self.sender.flowOf(2, 7, "call-1")
        assert flow is not None
        uri = parseURI(flow.route.strip("<>"))
        self.assertRaises(FlowRefused, self.owner.check, uri, "call-2", "127.0.0.1")

    def test_otherSecret(self) -> None:
        """
        A Route made under another secret is refused.
        """
        from sipcore.cluster.delivery import FlowRefused

        outsider = NodeRoutes(StaticNodeDirectory(1, b"guess", members()), self.clock)
        flow = outsider.flowOf(2, 7, "call-1")
        assert flow is not None
        uri = parseURI(flow.route.strip("<>"))
        self.assertRaises(FlowRefused, self.owner.check, uri, "call-1", "127.0.0.1")

    def test_unknownNode(self) -> None:
        """
        No Route to a node that is not a live member.
        """
        self.assertIsNone(self.sender.flowOf(9, 7, "call-1"))

    def test_nodeTokens(self) -> None:
        """
        A flow token naming a member is checked like the others.
        """
        tokens = FlowTokens(b"k" * 32)
        token = tokens.makeNode(2)
        self.assertEqual(tokens.check(token), NodeRef(2))
        self.assertIsNone(FlowTokens(b"j" * 32).check(token))
        self.assertIsNone(tokens.check("n2.0123456789abcdef"))
        self.assertIsNone(tokens.check("nx." + token.partition(".")[2]))


class DeliveryTests(SynchronousTestCase):
    """
    A request for a user registered over another node's connection.
    """

    def test_deliveredOverOwnersConnection(self) -> None:
        """
        Node 1 sends the MESSAGE to node 2's node URI with a Route naming
        the connection and a valid MAC; node 2 removes the Route and sends
        it over exactly that connection; the 200 comes back to the caller.
        """
        c = Cluster()
        bob = c.b.client()
        other = c.b.client()
        binding = c.bind(c.b, bob)
        alice = c.a.client()
        c.send(c.a, tcpRequest("MESSAGE", alice.remote[1], body=b"hi"), alice)
        [crossed] = c.ab.requests()
        self.assertEqual(str(crossed.uri), binding.contact)
        route = crossed.routes[0].uri
        self.assertEqual((route.host, route.port), ("127.0.0.1", 5072))
        self.assertEqual(route.param(CONID_PARAM), str(bob.conid))
        owner = NodeRoutes(StaticNodeDirectory(2, SECRET, members()), c.clock)
        self.assertEqual(owner.check(route, "call-1", "127.0.0.1"), (bob.conid, 1))
        self.assertEqual((crossed.vias[0].host, crossed.vias[0].port), ("127.0.0.1", 5071))
        [delivered] = requestsOn(bob)
        self.assertEqual(other.sent, [])
        self.assertEqual(delivered.headers.lines("Route"), [])
        self.assertEqual(delivered.body, b"hi")
        self.assertEqual(len(delivered.vias), 3)
        c.answer(c.b, delivered, 200, bob)
        self.assertEqual(statuses(alice), [(200, "MESSAGE")])

    def test_noLiveNode(self) -> None:
        """
        A binding of a node the directory does not have live: 480, as for
        a single node, and nothing is sent.
        """
        c = Cluster(live=())
        bob = c.b.client()
        c.bind(c.b, bob)
        alice = c.a.client()
        c.send(c.a, tcpRequest("MESSAGE", alice.remote[1]), alice)
        self.assertEqual(statuses(alice), [(480, "MESSAGE")])
        self.assertEqual(c.ab.out.sent, [])

    def test_goneConnection(self) -> None:
        """
        The owner answers 430 for a connection that has closed (RFC 5626
        section 5.3); the caller gets 480, as when the connection was the
        first node's own.
        """
        c = Cluster()
        bob = c.b.client()
        c.bind(c.b, bob)
        c.b.table.remove(bob.conid, "tcp:closed", "closed by peer")
        alice = c.a.client()
        c.send(c.a, tcpRequest("MESSAGE", alice.remote[1]), alice)
        self.assertEqual(statuses(c.ab.inbound), [(430, "MESSAGE")])
        self.assertEqual(statuses(alice), [(480, "MESSAGE")])

    def test_forgedRouteRefused(self) -> None:
        """
        A request from outside naming a connection with a wrong MAC, with
        none, or with one made under another secret, gets 403 and nothing
        is delivered; the refusals are counted and logged once per source
        per interval.
        """
        c = Cluster()
        bob = c.b.client()
        c.bind(c.b, bob)
        outsider = FakeStreamFlow("tcp", local=("127.0.0.1", 5072), remote=("127.0.0.9", 43000))
        c.b.table.add(outsider)
        guessed = NodeRoutes(StaticNodeDirectory(1, b"guess", members()), c.clock)
        forged = guessed.flowOf(2, bob.conid or 0, "call-1")
        assert forged is not None
        routes = [
            "<sip:127.0.0.1:5072;transport=tcp;lr;flow={};node=1;mac={}>".format(
                bob.conid, "0" * 32),
            "<sip:127.0.0.1:5072;transport=tcp;lr;flow={};node=1>".format(bob.conid),
            forged.route,
        ]
        with capturedLogs() as events:
            for cseq, route in enumerate(routes, 1):
                c.send(c.b, tcpRequest("MESSAGE", 43000, cseq=cseq,
                                       uri="sip:bob@device.invalid;transport=tcp",
                                       extra=(("Route", route),)), outsider)
        self.assertEqual(statuses(outsider), [(403, "MESSAGE")] * 3)
        self.assertEqual(bob.sent, [])
        self.assertEqual(c.b.proxy.stats["nodeFlowsRefused"], 3)
        lines = [e for e in events if "no valid cluster MAC" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["source"], "127.0.0.9")

    def test_routeReplayedForAnotherCall(self) -> None:
        """
        A valid Route copied into a request of another Call-ID gets 403.
        """
        c = Cluster()
        bob = c.b.client()
        c.bind(c.b, bob)
        alice = c.a.client()
        c.send(c.a, tcpRequest("MESSAGE", alice.remote[1]), alice)
        [crossed] = c.ab.requests()
        route = crossed.headers.lines("Route")[0]
        outsider = FakeStreamFlow("tcp", local=("127.0.0.1", 5072), remote=("127.0.0.9", 43000))
        c.b.table.add(outsider)
        c.send(c.b, tcpRequest("MESSAGE", 43000, callId="call-2",
                               uri="sip:bob@device.invalid;transport=tcp",
                               extra=(("Route", route),)), outsider)
        self.assertEqual(statuses(outsider), [(403, "MESSAGE")])
        self.assertEqual(len(requestsOn(bob)), 1)


class DialogTests(SynchronousTestCase):
    """
    Dialogs whose two sides are on different nodes: both nodes
    record-route, so in-dialog requests and their responses cross the
    same nodes both ways.
    """

    def setUp(self) -> None:
        c = self.c = Cluster()
        self.bob = c.b.client()
        c.bind(c.b, self.bob)
        self.alice = c.a.client()
        c.send(c.a, tcpRequest("INVITE", self.alice.remote[1]), self.alice)
        [self.invite] = requestsOn(self.bob, "INVITE")
        c.answer(c.b, self.invite, 200, self.bob)
        [self.ok] = [m for m in self.alice.messages() if isinstance(m, Response)
                     and m.status == 200]

    def test_recordRoute(self) -> None:
        """
        The callee sees four Record-Route entries: node 2's towards it and
        towards node 1 (its node port), node 1's towards node 2 (its node
        port) and towards the caller.
        """
        hosts = [(a.uri.host, a.uri.port) for a in self.invite.recordRoutes]
        self.assertEqual(hosts, [("127.0.0.1", 5070), ("127.0.0.1", 5072),
                                 ("127.0.0.1", 5071), ("127.0.0.1", 5070)])

    def routeSet(self, reverse: bool) -> tuple[tuple[str, str], ...]:
        values = self.invite.headers.lines("Record-Route")
        entries: list[str] = []
        for value in values:
            entries.extend(v.strip() for v in value.split(","))
        if reverse:
            entries.reverse()
        return tuple(("Route", entry) for entry in entries)

    def test_byeFromCaller(self) -> None:
        """
        The caller's BYE along its route set reaches the callee over its
        connection on node 2; the 200 comes back the same way.
        """
        c = self.c
        c.send(c.a, tcpRequest("BYE", self.alice.remote[1], cseq=2, toTag="bobtag",
                               uri="sip:bob@device.invalid;transport=tcp",
                               extra=self.routeSet(reverse=True)), self.alice)
        [bye] = requestsOn(self.bob, "BYE")
        self.assertEqual(bye.headers.lines("Route"), [])
        c.answer(c.b, bye, 200, self.bob)
        self.assertIn((200, "BYE"), statuses(self.alice))

    def test_byeFromCallee(self) -> None:
        """
        The callee's BYE along its route set reaches the caller over its
        connection on node 1; the 200 comes back the same way.
        """
        c = self.c
        bye = parseRequest(sipRequest(
            "BYE", uri="sip:alice@127.0.0.1:40000", cseq=1, callId="call-1",
            via="SIP/2.0/TCP 127.0.0.1:{};branch=z9hG4bKbobbye".format(self.bob.remote[1]),
            extra=self.routeSet(reverse=False)))
        # The callee's BYE: From and To as the callee sees them.
        bye.headers.set("From", "<sip:bob@example.com>;tag=bobtag")
        bye.headers.set("To", "<sip:alice@example.com>;tag=alicetag")
        c.send(c.b, bye.serialize(), self.bob)
        [delivered] = requestsOn(self.alice, "BYE")
        self.assertEqual(delivered.headers.lines("Route"), [])
        response = Response.forRequest(delivered, 200)
        c.send(c.a, response.serialize(), self.alice)
        self.assertIn((200, "BYE"), statuses(self.bob))

    def test_ackForTwoHundred(self) -> None:
        """
        The caller's ACK for the 200 crosses to the callee.
        """
        c = self.c
        ack = tcpRequest("ACK", self.alice.remote[1], toTag="bobtag",
                         uri="sip:bob@device.invalid;transport=tcp",
                         extra=self.routeSet(reverse=True))
        c.send(c.a, ack, self.alice)
        self.assertEqual(len(requestsOn(self.bob, "ACK")), 1)


class ForkingTests(SynchronousTestCase):
    """
    An address of record with contacts on both nodes: the INVITE forks to
    bob's device on node 1 and, through node 2, to the one on node 2; the
    one on node 1 rings.
    """

    def setUp(self) -> None:
        c = self.c = Cluster()
        self.near = c.a.client()
        self.far = c.b.client()
        c.bind(c.a, self.near)
        c.bind(c.b, self.far)
        self.alice = c.a.client()
        c.send(c.a, tcpRequest("INVITE", self.alice.remote[1]), self.alice)
        [self.nearInvite] = requestsOn(self.near, "INVITE")
        [self.farInvite] = requestsOn(self.far, "INVITE")
        c.answer(c.a, self.nearInvite, 180, self.near, toTag="near")

    def test_cancelReachesEveryBranch(self) -> None:
        """
        The caller's CANCEL cancels both branches, each member cancelling
        the one it sent to its client, and the caller gets 487.
        """
        c, near, far = self.c, self.near, self.far
        c.answer(c.b, self.farInvite, 180, far, toTag="far")
        c.send(c.a, tcpRequest("CANCEL", self.alice.remote[1], branch="z9hG4bKinvite1"),
               self.alice)
        self.assertEqual(len(requestsOn(near, "CANCEL")), 1)
        self.assertEqual(len(requestsOn(c.ab.out, "CANCEL")), 1)
        [farCancel] = requestsOn(far, "CANCEL")
        c.answer(c.b, farCancel, 200, far)
        c.answer(c.b, self.farInvite, 487, far, toTag="far")
        [nearCancel] = requestsOn(near, "CANCEL")
        c.answer(c.a, nearCancel, 200, near)
        c.answer(c.a, self.nearInvite, 487, near, toTag="near")
        self.assertEqual([s for s in statuses(self.alice) if s[1] == "INVITE"],
                         [(180, "INVITE"), (180, "INVITE"), (487, "INVITE")])
        self.assertEqual(c.a.proxy._live, set())
        self.assertEqual(c.b.proxy._live, set())

    def test_remoteAnswerWins(self) -> None:
        """
        The branch through node 2 answers 200: the caller gets it, and the
        branch on node 1 is cancelled.
        """
        c = self.c
        c.answer(c.b, self.farInvite, 200, self.far, toTag="far")
        self.assertIn((200, "INVITE"), statuses(self.alice))
        self.assertEqual(len(requestsOn(self.near, "CANCEL")), 1)


class AuthenticationTests(SynchronousTestCase):
    """
    A node that challenges MESSAGE does not challenge one a member
    forwarded to its connection (the member authenticated the caller).
    """

    def setUp(self) -> None:
        from sipcore.sip.auth import DigestAuthenticator, MemoryCredentials

        c = self.c = Cluster()
        self.auth = DigestAuthenticator(
            MemoryCredentials(), c.clock, isLocalDomain=c.b.core.isLocal, secret=b"nonces",
            methods=["MESSAGE"],
            members=NodeRoutes(StaticNodeDirectory(2, SECRET, members()), c.clock))
        c.b.core.addGuard(self.auth)
        self.bob = c.b.client()
        c.bind(c.b, self.bob)

    def test_memberNotChallenged(self) -> None:
        """
        The MESSAGE from node 1 is delivered without a challenge.
        """
        c = self.c
        alice = c.a.client()
        c.send(c.a, tcpRequest("MESSAGE", alice.remote[1]), alice)
        self.assertEqual(len(requestsOn(self.bob, "MESSAGE")), 1)
        self.assertEqual(self.auth.stats["fromMember"], 1)
        self.assertEqual(self.auth.stats["challenged"], 0)

    def test_outsiderChallenged(self) -> None:
        """
        A request naming the connection with a wrong MAC is challenged and
        not delivered.
        """
        c = self.c
        outsider = FakeStreamFlow("tcp", local=("127.0.0.1", 5072), remote=("127.0.0.9", 43000))
        c.b.table.add(outsider)
        route = "<sip:127.0.0.1:5072;transport=tcp;lr;flow={};node=1;mac={}>".format(
            self.bob.conid, "0" * 32)
        c.send(c.b, tcpRequest("MESSAGE", 43000, extra=(("Route", route),)), outsider)
        self.assertEqual(statuses(outsider), [(407, "MESSAGE")])
        self.assertEqual(self.bob.sent, [])
        self.assertEqual(self.auth.stats["fromMember"], 0)
