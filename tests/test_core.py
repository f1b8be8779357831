"""
Tests for L{sipcore.sip.core}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipcore.interfaces import IMessageSink, ITransactionUser
from sipcore.message import Response, parseMessage
from sipcore.sip.core import (
    SERVER,
    ServerTransactionLike,
    SIPCore,
    StatelessTransaction,
    respond,
    supportedTags,
)
from sipcore.sip.machine import TERMINATED, TIMER_J, TIMER_UNANSWERED
from sipcore.sip.servertransaction import ServerTransaction
from sipcore.testing import FakeFlow, parseRequest


def request(
    method: str = "OPTIONS",
    uri: str = "sip:example.com",
    extra: str = "",
    via: str = "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKcore1",
    cseqMethod: str | None = None,
    body: bytes = b"",
) -> bytes:
    head = (
        "{method} {uri} SIP/2.0\r\n"
        "Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\n"
        "To: <sip:bob@example.com>\r\n"
        "Call-ID: core-call-1\r\n"
        "CSeq: 1 {cseqMethod}\r\n"
        "{extra}"
        "Content-Length: {length}\r\n\r\n"
    ).format(
        method=method,
        uri=uri,
        via=via,
        cseqMethod=cseqMethod or method,
        extra=extra,
        length=len(body),
    )
    return head.encode() + body


class CoreTests(SynchronousTestCase):
    """
    The core answers what it can itself and hands the rest on.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.core = SIPCore(self.clock, domains=["example.com"])
        self.flow = FakeFlow("udp", remote=("192.0.2.1", 40000))

    def responses(self) -> list[Response]:
        return [m for m in self.flow.messages() if isinstance(m, Response)]

    def test_interface(self) -> None:
        """
        L{SIPCore} provides L{IMessageSink}, and L{ITransactionUser} for its
        transaction layer.
        """
        self.assertTrue(verifyObject(IMessageSink, self.core))
        self.assertTrue(verifyObject(ITransactionUser, self.core))

    def test_optionsToServer(self) -> None:
        """
        OPTIONS addressed to the server itself is answered C{200} with
        Allow, Accept and Supported, sent back to the source address on the
        Via's port.
        """
        self.core.messageReceived(request(), self.flow)
        [response] = self.responses()
        self.assertEqual(response.status, 200)
        self.assertIn("REGISTER", response.headers.values("Allow"))
        self.assertIn("OPTIONS", response.headers.values("Allow"))
        self.assertIsNotNone(response.headers.first("Accept"))
        self.assertIsNotNone(response.headers.first("Supported"))
        self.assertEqual(response.callId, "core-call-1")
        self.assertEqual(self.flow.sent[0][1], ("192.0.2.1", 5070))

    def test_optionsToLocalAddress(self) -> None:
        """
        OPTIONS to the address the server listens on counts as addressed to
        the server.
        """
        self.core.messageReceived(request(uri="sip:127.0.0.1:5060"), self.flow)
        self.assertEqual([r.status for r in self.responses()], [200])

    def test_rportStamped(self) -> None:
        """
        A request asking for C{rport} gets its answer on the source port,
        and the response's Via says C{received} and C{rport}.
        """
        self.core.messageReceived(
            request(via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKcore2;rport"), self.flow
        )
        [response] = self.responses()
        self.assertEqual(self.flow.sent[0][1], ("192.0.2.1", 40000))
        via = response.vias[0]
        self.assertEqual(via.received, "192.0.2.1")
        self.assertEqual(via.rport, 40000)

    def test_retransmissionAbsorbed(self) -> None:
        """
        A retransmitted request is answered from the transaction (the same
        response again) without reaching the handler a second time.
        """
        seen: list[ServerTransactionLike] = []

        def handler(tx: ServerTransactionLike) -> None:
            seen.append(tx)
            tx.respond(Response.forRequest(tx.request, 202))

        self.core.route("MESSAGE", handler)
        data = request("MESSAGE", "sip:bob@example.com")
        self.core.messageReceived(data, self.flow)
        self.core.messageReceived(data, self.flow)
        self.assertEqual(len(seen), 1)
        self.assertEqual([r.status for r in self.responses()], [202, 202])

    def test_malformedAnswered400WithReason(self) -> None:
        """
        A request whose CSeq method disagrees with its method is answered
        C{400} with a reason phrase that says what is wrong.
        """
        self.core.messageReceived(request("OPTIONS", cseqMethod="INVITE"), self.flow)
        [response] = self.responses()
        self.assertEqual(response.status, 400)
        self.assertIn("CSeq", response.reason)
        self.assertEqual(self.core.stats["rejected"], 1)

    def test_garbageDropped(self) -> None:
        """
        Bytes that are no SIP message at all are dropped and counted.
        """
        self.core.messageReceived(b"\x00\xffnot sip\r\n\r\n", self.flow)
        self.assertEqual(self.flow.sent, [])
        self.assertEqual(self.core.stats["dropped"], 1)

    def test_versionNotSupported(self) -> None:
        """
        A request in an unknown SIP version is answered C{505}.
        """
        data = request().replace(
            b"OPTIONS sip:example.com SIP/2.0", b"OPTIONS sip:example.com SIP/7.0"
        )
        self.core.messageReceived(data, self.flow)
        self.assertEqual([r.status for r in self.responses()], [505])

    def test_unknownScheme(self) -> None:
        """
        A Request-URI of an unknown scheme is answered C{416}.
        """
        self.core.messageReceived(request(uri="nobodyKnowsThisScheme:x"), self.flow)
        self.assertEqual([r.status for r in self.responses()], [416])

    def test_proxyRequireUnknown(self) -> None:
        """
        An option tag the server does not support in Proxy-Require is
        answered C{420} listing it in Unsupported.
        """
        self.core.messageReceived(request(extra="Proxy-Require: foo, outbound\r\n"),
                                  self.flow)
        [response] = self.responses()
        self.assertEqual(response.status, 420)
        self.assertEqual(response.headers.values("Unsupported"), ["foo"])

    def test_pathOnlyWhenAccepted(self) -> None:
        """
        By default (no trusted peers) C{path} is neither advertised in the
        OPTIONS answer nor accepted in C{Require}; a core made with
        C{supportedTags(True)} does both.
        """
        self.core.messageReceived(request(extra="Require: path\r\n"), self.flow)
        self.core.messageReceived(
            request(via="SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKcore2"), self.flow)
        refused, answered = self.responses()
        self.assertEqual((refused.status, refused.headers.values("Unsupported")),
                         (420, ["path"]))
        self.assertEqual(answered.headers.values("Supported"), ["outbound"])
        core = SIPCore(self.clock, domains=["example.com"], supported=supportedTags(True))
        flow = FakeFlow("udp", remote=("192.0.2.1", 40000))
        core.messageReceived(request(extra="Require: path\r\n"), flow)
        [response] = [m for m in flow.messages() if isinstance(m, Response)]
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers.values("Supported"), ["path", "outbound"])

    def test_routedByMethod(self) -> None:
        """
        A request goes to the handler routed for its method, with a server
        transaction that can answer it.
        """
        seen: list[ServerTransactionLike] = []
        self.core.route("REGISTER", seen.append)
        self.core.messageReceived(request("REGISTER"), self.flow)
        [tx] = seen
        self.assertEqual(tx.request.method, "REGISTER")
        self.assertIs(tx.flow, self.flow)

    def test_timersAfterTheHandler(self) -> None:
        """
        A transaction its handler answered at once runs no timer for an
        answer that is late, only Timer J; one it left unanswered (even by
        raising) runs the unanswered-request timer and ends after 64 s.
        """
        seen: list[ServerTransactionLike] = []

        def answer(tx: ServerTransactionLike) -> None:
            seen.append(tx)
            self.core.respond(tx, 200)

        self.core.route("REGISTER", answer)
        self.core.messageReceived(request("REGISTER"), self.flow)
        [answered] = seen
        assert isinstance(answered, ServerTransaction)
        self.assertEqual(answered.timerNames, [TIMER_J])

        def broken(tx: ServerTransactionLike) -> None:
            seen.append(tx)
            raise RuntimeError("bug")

        self.core.route("MESSAGE", broken)
        self.core.messageReceived(request("MESSAGE", "sip:bob@example.com"), self.flow)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        unanswered = seen[-1]
        assert isinstance(unanswered, ServerTransaction)
        self.assertEqual(unanswered.timerNames, [TIMER_UNANSWERED])
        self.clock.advance(64.1)
        self.assertEqual(unanswered.state, TERMINATED)
        self.assertEqual(self.core.stats["unanswered"], 1)

    def test_notImplemented(self) -> None:
        """
        With no handler for the method and no default handler, the answer
        is C{501}.
        """
        self.core.messageReceived(request("INFO", "sip:bob@example.com"), self.flow)
        self.assertEqual([r.status for r in self.responses()], [501])

    def test_handlerErrorContained(self) -> None:
        """
        A handler that raises does not take the core down: the error is
        logged and counted and the next message is served.
        """

        def broken(tx: object) -> None:
            raise RuntimeError("bug")

        self.core.route("MESSAGE", broken)
        self.core.messageReceived(request("MESSAGE", "sip:bob@example.com"), self.flow)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.core.stats["errors"], 1)
        self.core.messageReceived(
            request(via="SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKx"), self.flow
        )
        self.assertEqual([r.status for r in self.responses()], [200])

    def test_rejectedFramingAnswered(self) -> None:
        """
        A message the transport could not frame is answered with the reason
        when its headers allow a response.
        """
        flow = FakeFlow("tcp", conid=1)
        data = request().replace(b"Content-Length: 0", b"Content-Length: 99999999")
        self.core.messageRejected(data, "Invalid Content-Length", flow)
        [response] = flow.responses()
        self.assertEqual(response.status, 400)
        self.assertEqual(response.reason, "Invalid Content-Length")

    def test_rejectedGarbageDropped(self) -> None:
        """
        A rejected stream prefix with nothing to answer is dropped and
        counted.
        """
        flow = FakeFlow("tcp", conid=1)
        self.core.messageRejected(b"x" * 100, "Message Too Large", flow)
        self.assertEqual(flow.sent, [])
        self.assertEqual(self.core.stats["dropped"], 1)

    def test_responseWithoutTransactionDropped(self) -> None:
        """
        A response that matches no transaction is counted and dropped.
        """
        data = (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnone\r\n"
            b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n"
            b"Call-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        self.core.messageReceived(data, self.flow)
        self.assertEqual(self.flow.sent, [])
        self.assertEqual(self.core.stats["responsesDropped"], 1)

    def test_parsedResponsesRoundTrip(self) -> None:
        """
        What the core sends parses as SIP.
        """
        self.core.messageReceived(request(), self.flow)
        parseMessage(self.flow.sent[0][0])


class ServerHeaderTests(SynchronousTestCase):
    """
    The C{Server} header of the responses the core makes is its
    C{serverHeader}: C{sipcore} without a version by default, omitted when
    empty.
    """

    def statusAndServer(self, core: SIPCore, data: bytes) -> tuple[int, str | None]:
        flow = FakeFlow("udp", remote=("192.0.2.1", 40000))
        core.messageReceived(data, flow)
        [response] = [m for m in flow.messages() if isinstance(m, Response)]
        return response.status, response.headers.first("Server")

    def test_defaultWithoutVersion(self) -> None:
        """
        By default an answer says C{Server: sipcore}, no version.
        """
        core = SIPCore(Clock(), domains=["example.com"])
        self.assertEqual(self.statusAndServer(core, request()), (200, "sipcore"))
        self.assertEqual(SERVER, "sipcore")

    def test_configured(self) -> None:
        """
        A configured value is used on answers, on handler answers through
        L{SIPCore.respond} and on answers to malformed requests.
        """
        core = SIPCore(Clock(), domains=["example.com"], serverHeader="edge 2")
        core.route("MESSAGE", lambda tx: core.respond(tx, 202))
        self.assertEqual(self.statusAndServer(core, request()), (200, "edge 2"))
        self.assertEqual(self.statusAndServer(core, request("MESSAGE", "sip:bob@example.com")),
                         (202, "edge 2"))
        self.assertEqual(self.statusAndServer(core, request(extra="Max-Forwards: x\r\n")),
                         (400, "edge 2"))

    def test_emptyOmitted(self) -> None:
        """
        An empty value: no C{Server} header at all.
        """
        core = SIPCore(Clock(), domains=["example.com"], serverHeader="")
        self.assertEqual(self.statusAndServer(core, request()), (200, None))
        self.assertEqual(self.statusAndServer(core, request(extra="Max-Forwards: x\r\n")),
                         (400, None))

    def test_respondFunction(self) -> None:
        """
        L{respond}, as guards use it, puts the value it is given, by
        default L{SERVER}, and none for an empty one.
        """
        data = request("MESSAGE", "sip:bob@example.com")
        flow = FakeFlow("udp", remote=("192.0.2.1", 40000))
        tx = StatelessTransaction(parseMessage(data), flow)  # type: ignore[arg-type]
        self.assertEqual(respond(tx, 401).headers.first("Server"), SERVER)
        self.assertEqual(respond(tx, 401, server="x").headers.first("Server"), "x")
        self.assertIsNone(respond(tx, 401, server="").headers.first("Server"))


def manyContacts(count: int, last: str = "<sip:last@192.0.2.1>") -> bytes:
    """
    A REGISTER with C{count} Contact values, C{last} the last of them.
    """
    values = ["<sip:u{}@192.0.2.1>".format(i) for i in range(count - 1)] + [last]
    lines = ["Contact: " + ", ".join(values[i:i + 300]) for i in range(0, count, 300)]
    return request("REGISTER", extra="\r\n".join(lines) + "\r\n", cseqMethod="REGISTER")


class ContactCountTests(SynchronousTestCase):
    """
    With C{maxContacts}, a REGISTER with more Contact values is handed on
    with them counted, not parsed; others are parsed as usual.
    """

    def handled(self, core: SIPCore, data: bytes) -> list[object]:
        seen: list[object] = []
        core.route("REGISTER", seen.append)
        core.messageReceived(data, FakeFlow("udp", remote=("192.0.2.1", 40000)))
        return seen

    def test_overTheCapNotParsed(self) -> None:
        """
        A REGISTER with 10,000 Contact values, the last one malformed,
        reaches its handler (it would be answered C{400} if they were
        parsed), which can count them.
        """
        core = SIPCore(Clock(), domains=["example.com"], maxSize=2**20, maxContacts=10)
        [tx] = self.handled(core, manyContacts(10000, last="<bad"))
        self.assertEqual(tx.request.countContacts(10), 11)  # type: ignore[attr-defined]

    def test_withinTheCapParsed(self) -> None:
        """
        Up to the cap, and at any count without one, Contact values are
        parsed: a malformed one is answered C{400}.
        """
        for core, data in ((SIPCore(Clock(), maxContacts=10), manyContacts(10, last="<bad")),
                           (SIPCore(Clock(), maxSize=2**20), manyContacts(10000, last="<bad"))):
            flow = FakeFlow("udp", remote=("192.0.2.1", 40000))
            core.route("REGISTER", lambda tx: self.fail("handled"))
            core.messageReceived(data, flow)
            [response] = [m for m in flow.messages() if isinstance(m, Response)]
            self.assertEqual(response.status, 400)


class MalformedWithoutHeadersTests(SynchronousTestCase):
    """
    A malformed request is answered only when it carries what a response
    needs.
    """

    def test_noViaNoAnswer(self) -> None:
        """
        A rejected request without Via is dropped, not answered with a
        response that has no Via.
        """
        core = SIPCore(Clock(), domains=["example.com"])
        flow = FakeFlow("tcp", conid=1)
        core.messageRejected(b"INVITE sip:x SIP/2.0\r\nContent-Length: -5\r\n\r\n",
                             "Invalid Content-Length", flow)
        self.assertEqual(flow.sent, [])
        self.assertEqual(core.stats["dropped"], 1)


class ToTagTests(SynchronousTestCase):
    """
    Responses the server makes itself carry a To tag (RFC 3261 8.2.6.2).
    """

    def test_optionsTagged(self) -> None:
        """
        The C{200} to OPTIONS and a C{400} to a malformed request both add a
        tag to an untagged To.
        """
        core = SIPCore(Clock(), domains=["example.com"])
        flow = FakeFlow("udp", remote=("192.0.2.1", 40000))
        core.messageReceived(request(), flow)
        core.messageReceived(request("OPTIONS", cseqMethod="INVITE",
                                     via="SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKtag2"), flow)
        tags = [m.toAddr.tag for m in flow.messages()]
        self.assertEqual(len(tags), 2)
        self.assertTrue(all(tags), tags)

    def test_trying100Untagged(self) -> None:
        """
        C{100 Trying} gets no tag.
        """
        trying = Response.forRequest(parseRequest(request()), 100)
        self.assertIsNone(trying.toAddr.tag)
