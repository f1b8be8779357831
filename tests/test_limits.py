# -*- test-case-name: tests.test_limits -*-
"""
Unit tests for the resource limits: the per-source request-rate limit
(L{sipcore.sip.limits}) in the core, connection limits in the
L{ConnectionTable}, the message-completion timeout of stream and WebSocket
connections, the WebSocket keepalive timeout and Origin policy, per-listener
message sizes and the security options of C{twistd sipcore}.  Fake clocks
and transports only.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sipcore.events import (
    TCP_CLOSED,
    TCP_CONNECTED,
    TCP_TIMEOUT,
    WEBSOCKET_CLOSED,
    WEBSOCKET_CONNECTED,
)
from sipcore.message import Response, parseMessage
from sipcore.sip.core import SIPCore
from sipcore.sip.limits import LogThrottle, RateLimiter, TokenBuckets, Verdict
from sipcore.tap import Options, buildService
from sipcore.testing import FakeFlow, FakeStreamFlow, UDPMemoryReactor
from sipcore.transport.connections import (
    ConnectionLimits,
    ConnectionTable,
    ShuttingDown,
    TooManyConnections,
)
from sipcore.transport.listen import ListenerService, parseListen
from sipcore.transport.settings import ConnectionSettings
from sipcore.transport.stream import SIPStreamFactory, SIPStreamProtocol
from sipcore.transport.websocket import SIPWebSocketFactory, SIPWebSocketProtocol
from tests.test_transport_stream import AbortableTransport
from tests.test_transport_support import OPTIONS, RecordingBus, RecordingSink
from tests.test_transport_websocket import TEXT, clientFrame
from tests.test_transport_websocket import AbortableTransport as WSTransport

LOCAL = IPv4Address("TCP", "127.0.0.1", 5060)


def options(n: int = 1, host: str = "192.0.2.1") -> bytes:
    return (
        "OPTIONS sip:example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP {host}:5070;branch=z9hG4bKlim{n}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:a@example.com>;tag=1\r\n"
        "To: <sip:example.com>\r\n"
        "Call-ID: lim-{n}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).format(n=n, host=host).encode()


class TokenBucketTests(SynchronousTestCase):
    """
    L{TokenBuckets}: burst, then refused, then dropped; refilled with time;
    bounded memory.
    """

    def test_burstRefuseDrop(self) -> None:
        """
        A source gets C{burst} admissions at once, then C{overdraft}
        refusals, then drops; another source is not affected.
        """
        clock = Clock()
        buckets = TokenBuckets(clock, rate=1, burst=3, overdraft=2)
        verdicts = [buckets.take("a") for _ in range(7)]
        self.assertEqual(verdicts, [Verdict.ADMIT] * 3 + [Verdict.REFUSE] * 2 + [Verdict.DROP] * 2)
        self.assertEqual(buckets.take("b"), Verdict.ADMIT)

    def test_refill(self) -> None:
        """
        Tokens come back at C{rate} per second, up to C{burst}; the debt of
        refused requests is paid back first.
        """
        clock = Clock()
        buckets = TokenBuckets(clock, rate=2, burst=2, overdraft=2)
        for _ in range(4):
            buckets.take("a")
        self.assertEqual(buckets.retryAfter("a"), 2)
        clock.advance(1.0)  # -2 + 2 = 0 tokens
        self.assertEqual(buckets.take("a"), Verdict.REFUSE)
        clock.advance(100)
        self.assertEqual([buckets.take("a") for _ in range(3)],
                         [Verdict.ADMIT, Verdict.ADMIT, Verdict.REFUSE])

    def test_boundedMemory(self) -> None:
        """
        At most C{maxSources} buckets are kept; the least recently seen
        source is forgotten first.
        """
        buckets = TokenBuckets(Clock(), rate=1, burst=1, overdraft=0, maxSources=3)
        for source in "abcd":
            buckets.take(source)
        self.assertEqual(len(buckets), 3)
        # "a" was forgotten: it starts with a full bucket again.
        self.assertEqual(buckets.take("a"), Verdict.ADMIT)
        self.assertEqual(buckets.take("d"), Verdict.DROP)

    def test_penalize(self) -> None:
        """
        A penalty empties the bucket: the next request is not admitted.
        """
        buckets = TokenBuckets(Clock(), rate=1, burst=10, overdraft=5)
        buckets.penalize("a", 10)
        self.assertEqual(buckets.take("a"), Verdict.REFUSE)
        buckets.penalize("a", 100)
        self.assertEqual(buckets.take("a"), Verdict.DROP)

    def test_badValues(self) -> None:
        """
        A rate or burst that cannot work is refused.
        """
        self.assertRaises(ValueError, TokenBuckets, Clock(), 0, 1, 0)
        self.assertRaises(ValueError, TokenBuckets, Clock(), 1, 0, 0)
        self.assertRaises(ValueError, TokenBuckets, Clock(), 1, 1, -1)


class LogThrottleTests(SynchronousTestCase):
    """
    L{LogThrottle}: one line per key per interval, with the count of
    suppressed events.
    """

    def test_oncePerInterval(self) -> None:
        """
        The first hit logs, later hits within the interval do not; after
        the interval the next hit logs with the number suppressed.
        """
        clock = Clock()
        throttle = LogThrottle(clock, interval=10)
        self.assertEqual(throttle.hit("a"), 0)
        self.assertEqual([throttle.hit("a") for _ in range(5)], [None] * 5)
        self.assertEqual(throttle.hit("b"), 0)
        clock.advance(10)
        self.assertEqual(throttle.hit("a"), 5)

    def test_bounded(self) -> None:
        """
        At most C{maxKeys} keys are remembered.
        """
        throttle = LogThrottle(Clock(), maxKeys=2)
        for key in range(10):
            throttle.hit(key)
        self.assertEqual(len(throttle), 2)


class CoreRateLimitTests(SynchronousTestCase):
    """
    The core consults its limiter before parsing: 503 with Retry-After,
    then silence.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.core = SIPCore(self.clock, domains=["example.com"])
        self.limiter = RateLimiter(self.clock, rate=1, burst=2, overdraft=2, logInterval=60)
        self.core.limiter = self.limiter
        self.flow = FakeFlow("udp", remote=("192.0.2.1", 5070))

    def statuses(self) -> list[int]:
        return [parseMessage(data).status for data, _ in self.flow.sent]  # type: ignore[union-attr]

    def test_floodAnsweredThenDropped(self) -> None:
        """
        Within the burst OPTIONS is answered 200; the next requests get 503
        with Retry-After (without creating transactions), the rest get no
        answer.  The counters say so, and one warning is logged for the
        whole flood.
        """
        with capturedLogs() as events:
            for n in range(10):
                self.core.messageReceived(options(n), self.flow)
        self.assertEqual(self.statuses(), [200, 200, 503, 503])
        refused = parseMessage(self.flow.sent[2][0])
        self.assertIsInstance(refused, Response)
        # Two requests of debt at one token a second.
        self.assertEqual(refused.headers.first("Retry-After"), "2")
        self.assertEqual(self.limiter.stats["admitted"], 2)
        self.assertEqual(self.limiter.stats["refused"], 2)
        self.assertEqual(self.limiter.stats["dropped"], 6)
        self.assertEqual(self.core.stats["rateLimited"], 8)
        self.assertEqual(self.core.transactions.serverTransactions, 2)
        warnings = [e for e in events if "rate limit" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["host"], "192.0.2.1")

    def test_recoversWithTime(self) -> None:
        """
        Once the bucket refills the source is served again.
        """
        for n in range(10):
            self.core.messageReceived(options(n), self.flow)
        self.clock.advance(60)
        self.flow.sent.clear()
        self.core.messageReceived(options(99), self.flow)
        self.assertEqual(self.statuses(), [200])

    def test_responsesCharged(self) -> None:
        """
        Responses cost their source a token like requests: a flood of
        responses empties the bucket, so the next request gets 503; over
        the limit a response is dropped and counted, never answered and
        never processed.
        """
        handled: list[Any] = []
        self.core.routeResponses(lambda response, flow: handled.append(response))
        response = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n"
                    b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n"
                    b"Call-ID: r\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
        for _ in range(3):
            self.core.messageReceived(response, self.flow)
        self.assertEqual(len(handled), 2)
        self.assertEqual(self.limiter.stats["admitted"], 2)
        self.assertEqual(self.limiter.stats["dropped"], 1)
        self.assertEqual(self.limiter.stats["responsesDropped"], 1)
        self.assertEqual(self.limiter.stats["refused"], 0)
        self.assertEqual(self.flow.sent, [])
        self.core.messageReceived(options(1), self.flow)
        self.assertEqual(self.statuses(), [503])

    def test_exempt(self) -> None:
        """
        An exempt address is never limited.
        """
        self.core.limiter = RateLimiter(self.clock, rate=1, burst=1, overdraft=0,
                                        exempt=["192.0.2.1"])
        for n in range(5):
            self.core.messageReceived(options(n), self.flow)
        self.assertEqual(self.statuses(), [200] * 5)

    def test_ackNeverAnswered(self) -> None:
        """
        A refused ACK gets no 503 (an ACK is never answered).
        """
        self.core.limiter = RateLimiter(self.clock, rate=1, burst=1, overdraft=5)
        self.core.messageReceived(options(1), self.flow)
        ack = options(2).replace(b"OPTIONS sip", b"ACK sip").replace(b"1 OPTIONS", b"1 ACK")
        self.core.messageReceived(ack, self.flow)
        self.assertEqual(self.statuses(), [200])


def makeFlow(host: str = "192.0.2.1", port: int = 40000) -> FakeStreamFlow:
    return FakeStreamFlow("tcp", remote=(host, port))


class ConnectionLimitTests(SynchronousTestCase):
    """
    L{ConnectionTable} refuses connections over its limits, fires nothing
    for them and counts them.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.bus = RecordingBus()

    def test_perSource(self) -> None:
        """
        The C{maxPerSource}+1st connection from one address is refused with
        L{TooManyConnections}; another address is accepted; closing one
        makes room again.
        """
        table = ConnectionTable(self.bus, self.clock, limits=ConnectionLimits(maxPerSource=2))
        first, second = makeFlow(port=1), makeFlow(port=2)
        table.add(first)
        table.add(second)
        self.assertRaises(TooManyConnections, table.add, makeFlow(port=3))
        table.add(makeFlow("192.0.2.2"))
        self.assertEqual(table.refusedByLimit, {"total": 0, "perSource": 1})
        self.assertEqual(self.bus.names(), [TCP_CONNECTED] * 3)
        table.remove(first.conid, TCP_CLOSED, "closed by peer")
        self.assertEqual(table.connectionsFrom("192.0.2.1"), 1)
        table.add(makeFlow(port=4))
        self.assertEqual(table.connectionsFrom("192.0.2.1"), 2)

    def test_total(self) -> None:
        """
        The C{maxConnections}+1st connection is refused whatever its source.
        """
        table = ConnectionTable(self.bus, self.clock, limits=ConnectionLimits(maxConnections=2))
        table.add(makeFlow("192.0.2.1"))
        table.add(makeFlow("192.0.2.2"))
        self.assertRaises(TooManyConnections, table.add, makeFlow("192.0.2.3"))
        self.assertEqual(table.refusedByLimit["total"], 1)
        self.assertEqual(len(table), 2)

    def test_exempt(self) -> None:
        """
        An exempt address is not held to C{maxPerSource}.
        """
        table = ConnectionTable(self.bus, self.clock, limits=ConnectionLimits(
            maxPerSource=1, exempt=frozenset({"192.0.2.1"})))
        for port in range(5):
            table.add(makeFlow(port=port))
        self.assertEqual(len(table), 5)

    def test_loggedOncePerInterval(self) -> None:
        """
        A burst of refusals from one source logs one warning.
        """
        table = ConnectionTable(self.bus, self.clock, limits=ConnectionLimits(
            maxPerSource=1, logInterval=60))
        table.add(makeFlow())
        with capturedLogs() as events:
            for port in range(20):
                self.assertRaises(TooManyConnections, table.add, makeFlow(port=port))
        self.assertEqual(len([e for e in events if "refused" in e.get("log_format", "")]), 1)

    def test_shutdownIsRefusalToo(self) -> None:
        """
        L{ShuttingDown} and L{TooManyConnections} share the base the
        transports catch.
        """
        from sipcore.transport.connections import ConnectionRefused

        self.assertTrue(issubclass(ShuttingDown, ConnectionRefused))
        self.assertTrue(issubclass(TooManyConnections, ConnectionRefused))

    def test_streamRefusedWithoutEvents(self) -> None:
        """
        A TCP connection refused by the limit is aborted at once and fires
        no event at all, not even when its loss is reported.
        """
        table = ConnectionTable(self.bus, self.clock, limits=ConnectionLimits(maxPerSource=1))
        factory = SIPStreamFactory(RecordingSink(), table, self.clock)
        peer = IPv4Address("TCP", "192.0.2.9", 1)
        kept = factory.buildProtocol(peer)
        assert isinstance(kept, SIPStreamProtocol)
        kept.makeConnection(AbortableTransport(hostAddress=LOCAL, peerAddress=peer))
        refused = factory.buildProtocol(peer)
        assert isinstance(refused, SIPStreamProtocol)
        transport = AbortableTransport(hostAddress=LOCAL, peerAddress=peer)
        refused.makeConnection(transport)
        self.assertTrue(transport.aborted)
        refused.connectionLost()
        self.assertEqual(self.bus.names(), [TCP_CONNECTED])
        # Only the kept connection's timers (idle, handshake) run.
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)

    def test_webSocketRefusedWithoutEvents(self) -> None:
        """
        A WebSocket connection refused by the limit fires no event.
        """
        clock = MemoryReactorClock()
        table = ConnectionTable(self.bus, clock, limits=ConnectionLimits(maxConnections=1))
        factory = SIPWebSocketFactory(RecordingSink(), table, clock,
                                      settings=ConnectionSettings(idleTimeout=0))
        peer = IPv4Address("TCP", "192.0.2.9", 1)
        first = factory.buildProtocol(peer)
        assert isinstance(first, SIPWebSocketProtocol)
        first.makeConnection(WSTransport(hostAddress=LOCAL, peerAddress=peer))
        second = factory.buildProtocol(peer)
        assert isinstance(second, SIPWebSocketProtocol)
        transport = WSTransport(hostAddress=LOCAL, peerAddress=peer)
        second.makeConnection(transport)
        self.assertTrue(transport.aborted)
        second.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(self.bus.names(), [TCP_CONNECTED])


class MessageTimeoutTests(SynchronousTestCase):
    """
    A partial message must complete within C{messageTimeout}, however
    slowly its bytes trickle in (each byte restarts the idle timer).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.bus = RecordingBus()
        self.sink = RecordingSink()
        self.table = ConnectionTable(self.bus, self.clock)

    def connectStream(self, **kwargs: Any) -> tuple[Any, AbortableTransport]:
        factory = SIPStreamFactory(self.sink, self.table, self.clock,
                                   settings=ConnectionSettings(**kwargs))
        peer = IPv4Address("TCP", "192.0.2.9", 1)
        protocol = factory.buildProtocol(peer)
        assert isinstance(protocol, SIPStreamProtocol)
        transport = AbortableTransport(hostAddress=LOCAL, peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_slowClientCutOff(self) -> None:
        """
        A client sending one byte a second never trips the 5 s idle timeout
        but is aborted 10 s after its message began: C{tcp:timeout} with a
        reason naming the message timeout; no timer is left.
        """
        protocol, transport = self.connectStream(idleTimeout=5, messageTimeout=10,
                                                 handshakeTimeout=0)
        for i in range(30):
            if transport.aborted:
                break
            protocol.dataReceived(OPTIONS[i:i + 1])
            self.clock.advance(1)
        self.assertTrue(transport.aborted)
        protocol.connectionLost()
        [event] = self.bus.named(TCP_TIMEOUT)
        self.assertIn("message timeout", event.reason)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.sink.received, [])

    def test_completedMessagesKeepConnection(self) -> None:
        """
        A client that keeps completing messages, even with part of the next
        one always buffered, is not cut off.
        """
        protocol, transport = self.connectStream(idleTimeout=5, messageTimeout=3)
        half = len(OPTIONS) // 2
        protocol.dataReceived(OPTIONS[:half])
        for _ in range(10):
            self.clock.advance(2)
            protocol.dataReceived(OPTIONS[half:] + OPTIONS[:half])
        self.assertFalse(transport.aborted)
        self.assertEqual(len(self.sink.received), 10)
        protocol.dataReceived(OPTIONS[half:])
        # Nothing buffered: only the idle timer is left.
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_idleClientCutOff(self) -> None:
        """
        A client that sends nothing is cut off by the idle timeout.
        """
        protocol, transport = self.connectStream(idleTimeout=5, messageTimeout=10)
        protocol.dataReceived(OPTIONS)
        self.clock.advance(5)
        self.assertTrue(transport.aborted)
        protocol.connectionLost()
        [event] = self.bus.named(TCP_TIMEOUT)
        self.assertIn("idle timeout", event.reason)

    def test_webSocketSlowFrame(self) -> None:
        """
        A WebSocket frame trickled one byte a second is cut off by the
        message timeout: C{websocket:closed} and C{tcp:timeout}.
        """
        from tests.test_transport_websocket import handshake

        clock = MemoryReactorClock()
        table = ConnectionTable(self.bus, clock)
        factory = SIPWebSocketFactory(self.sink, table, clock, settings=ConnectionSettings(
            idleTimeout=5, messageTimeout=10))
        peer = IPv4Address("TCP", "192.0.2.9", 1)
        protocol = factory.buildProtocol(peer)
        assert isinstance(protocol, SIPWebSocketProtocol)
        transport = WSTransport(hostAddress=LOCAL, peerAddress=peer)
        protocol.makeConnection(transport)
        protocol.dataReceived(handshake())
        frame = clientFrame(TEXT, OPTIONS)
        for i in range(len(frame)):
            if transport.aborted:
                break
            protocol.dataReceived(frame[i:i + 1])
            clock.advance(1)
        self.assertTrue(transport.aborted)
        protocol.connectionLost(Failure(ConnectionAborted()))
        names = self.bus.names(protocol.sipFlow.conid)
        self.assertEqual(names, [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_TIMEOUT])
        self.assertIn("message timeout", self.bus.named(TCP_TIMEOUT)[0].reason)
        self.assertEqual(clock.getDelayedCalls(), [])


class WebSocketKeepaliveTests(SynchronousTestCase):
    """
    autobahn's ping/pong keepalive closes dead WebSocket connections.
    """

    def test_pingTimeout(self) -> None:
        """
        No pong within C{autoPingTimeout} after a ping: the connection is
        dropped and fires C{websocket:closed} then C{tcp:timeout}; no timer
        is left.
        """
        from tests.test_transport_websocket import handshake, serverFrames

        clock = MemoryReactorClock()
        bus = RecordingBus()
        table = ConnectionTable(bus, clock)
        factory = SIPWebSocketFactory(RecordingSink(), table, clock, settings=ConnectionSettings(
            idleTimeout=0, autoPingInterval=30, autoPingTimeout=10))
        peer = IPv4Address("TCP", "192.0.2.9", 1)
        protocol = factory.buildProtocol(peer)
        assert isinstance(protocol, SIPWebSocketProtocol)
        transport = WSTransport(hostAddress=LOCAL, peerAddress=peer)
        protocol.makeConnection(transport)
        protocol.dataReceived(handshake())
        transport.clear()
        clock.advance(30)
        self.assertEqual([op for op, _ in serverFrames(transport.value())], [9])
        self.assertFalse(transport.aborted)
        clock.advance(10)
        self.assertTrue(transport.aborted)
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(bus.names(protocol.sipFlow.conid),
                         [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_TIMEOUT])
        self.assertIn("ping timeout", bus.named(TCP_TIMEOUT)[0].reason)
        self.assertEqual(clock.getDelayedCalls(), [])


class OriginPolicyTests(SynchronousTestCase):
    """
    The WebSocket Origin allow-list.
    """

    def factory(self, allowed: list[str] | None = None) -> SIPWebSocketFactory:
        return SIPWebSocketFactory(
            RecordingSink(), ConnectionTable(RecordingBus(), Clock()), MemoryReactorClock(),
            settings=ConnectionSettings(
                allowedOrigins=None if allowed is None else tuple(allowed),
                originDomains=frozenset({"example.com"})))

    def test_ownAddressDefault(self) -> None:
        """
        By default an origin on the local address the connection was
        accepted on, or on one of the server's domains, is allowed; any
        other (and C{null}) is not.
        """
        factory = self.factory()
        self.assertTrue(factory.originAllowed("https://10.0.0.1:8443", "10.0.0.1"))
        self.assertTrue(factory.originAllowed("https://example.com:8443", "10.0.0.1"))
        self.assertTrue(factory.originAllowed("http://[::1]:3000", "::1"))
        self.assertFalse(factory.originAllowed("https://sip.example.net", "10.0.0.1"))
        self.assertFalse(factory.originAllowed("https://evil.example", "10.0.0.1"))
        self.assertFalse(factory.originAllowed("null", "10.0.0.1"))

    def test_patterns(self) -> None:
        """
        With a list, origins must match one of its wildcard patterns.
        """
        factory = self.factory(["https://*.example.org", "http://localhost:3000"])
        self.assertTrue(factory.originAllowed("https://app.example.org", "x"))
        self.assertTrue(factory.originAllowed("HTTP://localhost:3000/", "x"))
        self.assertFalse(factory.originAllowed("https://example.com", "example.com"))
        self.assertTrue(self.factory(["*"]).originAllowed("https://anything", "x"))

    def test_refusedWith403(self) -> None:
        """
        A handshake from a refused origin is answered C{403} and fires
        C{tcp:closed} only; one without Origin (not a browser) is accepted.
        """
        clock = MemoryReactorClock()
        bus = RecordingBus()
        factory = SIPWebSocketFactory(RecordingSink(), ConnectionTable(bus, clock), clock,
                                      settings=ConnectionSettings(idleTimeout=0))
        peer = IPv4Address("TCP", "192.0.2.9", 1)
        request = (b"GET / HTTP/1.1\r\nHost: sip.example.net:8080\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n")
        protocol = factory.buildProtocol(peer)
        assert isinstance(protocol, SIPWebSocketProtocol)
        transport = WSTransport(hostAddress=LOCAL, peerAddress=peer)
        protocol.makeConnection(transport)
        protocol.dataReceived(request + b"Origin: https://evil.example\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403"), transport.value())
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(bus.names(), [TCP_CONNECTED, TCP_CLOSED])
        self.assertIn("origin", bus.named(TCP_CLOSED)[0].reason)
        self.assertEqual(factory.originsRefused, 1)

        good = factory.buildProtocol(peer)
        assert isinstance(good, SIPWebSocketProtocol)
        transport = WSTransport(hostAddress=LOCAL, peerAddress=peer)
        good.makeConnection(transport)
        good.dataReceived(request + b"Origin: https://127.0.0.1\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101"), transport.value())


class ListenerSizeTests(SynchronousTestCase):
    """
    C{maxSize=} in a listen spec sets that listener's message size.
    """

    def test_maxSizeKey(self) -> None:
        """
        C{maxSize} is accepted on every transport, kept out of the endpoint
        description, and used by the listener's factory; a bad value is
        refused.
        """
        spec = parseListen("tcp:0:interface=127.0.0.1:maxSize=2048")
        self.assertEqual(spec.description, "tcp:0:interface=127.0.0.1")
        service = ListenerService(spec, MemoryReactorClock(), RecordingSink(),
                                  ConnectionTable(RecordingBus(), Clock()), maxSize=65536)
        self.assertEqual(service.settings.maxSize, 2048)
        self.assertEqual(parseListen("udp:0:maxSize=900").options["maxSize"], "900")
        self.assertRaises(ValueError, parseListen, "ws:0:maxSize=0")
        self.assertRaises(ValueError, parseListen, "ws:0:maxSize=big")


class SecurityOptionsTests(SynchronousTestCase):
    """
    The security options of C{twistd sipcore} reach the objects they
    control.
    """

    def build(self, *args: str) -> Any:
        options = Options()
        options.parseOptions(["--listen", "udp:0", "--listen", "ws:0"] + list(args))
        return buildService(options, UDPMemoryReactor())

    def test_defaults(self) -> None:
        """
        By default every limit is on: connection limits, transaction cap,
        rate limit (loopback exempt), message timeout, WebSocket keepalive
        and same-host Origin policy; authentication is off (no credentials)
        and a warning says so.
        """
        with capturedLogs() as events:
            service = self.build()
        self.assertEqual(service.table.limits, ConnectionLimits(
            maxConnections=10000, maxPerSource=256, exempt=frozenset({"127.0.0.1", "::1"}),
            logInterval=60.0))
        self.assertEqual(service.core.transactions.maxTransactions, 50000)
        self.assertEqual(service.core.limiter.buckets.rate, 50.0)
        self.assertEqual(service.core._guards, [])
        ws = service.listeners[1].settings
        self.assertEqual((ws.messageTimeout, ws.allowedOrigins), (20.0, None))
        self.assertEqual((ws.autoPingInterval, ws.autoPingTimeout), (60.0, 20.0))
        self.assertTrue(any("authentication is off" in e.get("log_format", "") for e in events))

    def test_settings(self) -> None:
        """
        Each option sets its control; C{--rate-limit 0} turns the rate
        limit off; C{--limit-exempt none} exempts nobody.
        """
        service = self.build(
            "--max-connections", "5", "--max-connections-per-source", "2",
            "--max-transactions", "7", "--rate-limit", "0", "--limit-exempt", "none",
            "--message-timeout", "3", "--ws-ping-interval", "9", "--ws-ping-timeout", "4",
            "--ws-origin", "https://*.example.org")
        self.assertEqual((service.table.limits.maxConnections,
                          service.table.limits.maxPerSource), (5, 2))
        self.assertEqual(service.table.limits.exempt, frozenset())
        self.assertEqual(service.core.transactions.maxTransactions, 7)
        self.assertIsNone(service.core.limiter)
        ws = service.listeners[1].settings
        self.assertEqual((ws.messageTimeout, ws.autoPingInterval, ws.autoPingTimeout),
                         (3.0, 9.0, 4.0))
        self.assertEqual(ws.allowedOrigins, ("https://*.example.org",))

    def test_authFromFile(self) -> None:
        """
        C{--auth-file} turns authentication on with its users.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("alice@example.com:secret\n")
        service = self.build("--auth-file", path, "--auth-methods", "register,invite")
        [guard] = service.core._guards
        self.assertEqual(guard.methods, frozenset({"REGISTER", "INVITE"}))
        self.assertEqual(guard.algorithms, ("MD5",))

    def test_authFromDatabase(self) -> None:
        """
        C{--auth-db} authenticates with the subscriber table through the
        database's pool.
        """
        from sipcore.sip.auth import PostgresCredentials

        service = self.build("--db", "host=127.0.0.1 dbname=sipcore", "--auth-db")
        [guard] = service.core._guards
        self.assertIsInstance(guard.credentials, PostgresCredentials)
        self.assertIs(guard.credentials.pool, service.database.pool)

    def test_badSecurityOptions(self) -> None:
        """
        Contradictory or unusable security options are usage errors.
        """
        for args in (["--auth-db"], ["--auth-algorithms", "SHA-512"],
                     ["--auth-file", "/nonexistent/users.txt"],
                     ["--ws-ping-timeout", "0"]):
            self.assertRaises(usage.UsageError, Options().parseOptions, args)


class SourceKeyTests(SynchronousTestCase):
    """
    Per-source limits count an IPv6 source per /64 and an IPv4-mapped
    address as its IPv4 address.
    """

    def test_keys(self) -> None:
        """
        Addresses of one /64 share a key; other /64s and IPv4 do not.
        """
        from sipcore.throttle import sourceKey

        self.assertEqual(sourceKey("2001:db8:1:2::1"), sourceKey("2001:db8:1:2:ffff::9"))
        self.assertNotEqual(sourceKey("2001:db8:1:2::1"), sourceKey("2001:db8:1:3::1"))
        self.assertEqual(sourceKey("::ffff:192.0.2.7"), "192.0.2.7")
        self.assertEqual(sourceKey("192.0.2.7"), "192.0.2.7")
        self.assertEqual(sourceKey("Example.COM"), "example.com")

    def test_rotatingAddressesShareBucket(self) -> None:
        """
        A host cycling through addresses of its /64 drains one bucket.
        """
        from twisted.internet.task import Clock

        from sipcore.sip.limits import RateLimiter
        from sipcore.testing import FakeFlow

        limiter = RateLimiter(Clock(), rate=1, burst=2, overdraft=0)
        admitted = [
            limiter.admit(b"OPTIONS sip:x SIP/2.0\r\n\r\n",
                          FakeFlow(remote=("2001:db8:0:1::{:x}".format(i), 5060)))
            for i in range(1, 6)
        ]
        self.assertEqual(admitted, [True, True, False, False, False])


class EarlyDropTests(SynchronousTestCase):
    """
    The limiter publishes its C{DROP} verdicts in advance
    (L{RateLimiter.blocked}) so that a transport can apply them before any
    other work, and counts the messages dropped that way.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = RateLimiter(self.clock, rate=1, burst=2, overdraft=2, logInterval=60)
        self.flow = FakeFlow("udp", remote=("192.0.2.1", 5070))

    def test_dropUntilIsTheVerdict(self) -> None:
        """
        L{TokenBuckets.dropUntil} is C{None} while the next request would
        not be dropped; once it would, every request until that time gets
        C{DROP} and the first one at that time does not.
        """
        buckets = TokenBuckets(self.clock, rate=1, burst=2, overdraft=2)
        self.assertIsNone(buckets.dropUntil("a"))
        for expected in [Verdict.ADMIT, Verdict.ADMIT, Verdict.REFUSE]:
            self.assertEqual(buckets.take("a"), expected)
            self.assertIsNone(buckets.dropUntil("a"))
        self.assertEqual(buckets.take("a"), Verdict.REFUSE)
        self.assertEqual(buckets.dropUntil("a"), 1.0)
        self.clock.advance(0.999)
        self.assertEqual(buckets.take("a"), Verdict.DROP)
        self.assertAlmostEqual(buckets.dropUntil("a"), 1.0)
        self.clock.advance(0.001)
        self.assertEqual(buckets.take("a"), Verdict.REFUSE)
        self.assertEqual(buckets.dropUntil("a"), 2.0)

    def test_blockedWhenNextIsDropped(self) -> None:
        """
        A source enters C{blocked}, under its address as its flow gives
        it, with the message that makes the next one a drop; a source
        within its rate does not.
        """
        other = FakeFlow("udp", remote=("192.0.2.2", 5070))
        self.limiter.admit(options(1), other)
        for n in range(3):
            self.limiter.admit(options(n), self.flow)
            self.assertEqual(self.limiter.blocked, {})
        self.limiter.admit(options(4), self.flow)
        self.assertEqual(self.limiter.blocked, {"192.0.2.1": [1.0, 0]})

    def test_exemptNeverBlocked(self) -> None:
        """
        An exempt source never enters C{blocked}.
        """
        limiter = RateLimiter(self.clock, rate=1, burst=1, overdraft=0, exempt=["192.0.2.1"])
        for n in range(10):
            self.assertTrue(limiter.admit(options(n), self.flow))
        self.assertEqual(limiter.blocked, {})

    def test_earlyDropsCounted(self) -> None:
        """
        Messages a transport dropped on a C{blocked} entry are counted as
        C{dropped} and C{droppedEarly} when the source next reaches the
        limiter, and in the number of the next log line about it.
        """
        with capturedLogs() as events:
            for n in range(4):
                self.limiter.admit(options(n), self.flow)
            self.limiter.blocked["192.0.2.1"][1] += 500
            self.clock.advance(61)
            self.assertTrue(self.limiter.admit(options(9), self.flow))
            self.assertEqual(self.limiter.stats["droppedEarly"], 500)
            self.assertEqual(self.limiter.stats["dropped"], 500)
            for n in range(4):
                self.limiter.admit(options(10 + n), self.flow)
        warnings = [e for e in events if "rate limit" in e.get("log_format", "")]
        self.assertEqual([w["suppressed"] for w in warnings], [0, 501])

    def test_countsIncludePending(self) -> None:
        """
        L{RateLimiter.counts} adds the early drops of the current
        C{blocked} entries, which C{stats} counts only later.
        """
        for n in range(4):
            self.limiter.admit(options(n), self.flow)
        self.limiter.blocked["192.0.2.1"][1] += 7
        counts = self.limiter.counts()
        self.assertEqual((counts["dropped"], counts["droppedEarly"], counts["admitted"]),
                         (7, 7, 2))
        self.assertEqual(self.limiter.stats["droppedEarly"], 0)

    def test_blockedBounded(self) -> None:
        """
        C{blocked} holds at most C{maxSources} entries: entries that ended
        make room first (their drops counted), else all are removed.
        """
        limiter = RateLimiter(self.clock, rate=1, burst=1, overdraft=0, maxSources=2)
        flows = [FakeFlow("udp", remote=("192.0.2.{}".format(n), 5070)) for n in range(1, 5)]
        for flow in flows[:2]:
            limiter.admit(options(1), flow)
            limiter.blocked[flow.remote[0]][1] += 1
        self.assertEqual(sorted(limiter.blocked), ["192.0.2.1", "192.0.2.2"])
        limiter.admit(options(1), flows[2])
        self.assertEqual(sorted(limiter.blocked), ["192.0.2.3"])
        self.assertEqual(limiter.stats["droppedEarly"], 2)
        self.clock.advance(0.5)
        limiter.admit(options(1), flows[3])
        self.assertEqual(sorted(limiter.blocked), ["192.0.2.3", "192.0.2.4"])
        self.clock.advance(0.6)
        limiter.admit(options(1), flows[0])
        self.assertEqual(sorted(limiter.blocked), ["192.0.2.1", "192.0.2.4"])

    def test_wiredToUDPListeners(self) -> None:
        """
        C{twistd sipcore} gives its UDP listeners the core's rate limiter,
        and none when C{--rate-limit 0} turns it off.
        """
        for args, expectLimiter in [((), True), (("--rate-limit", "0"), False)]:
            options = Options()
            options.parseOptions(["--listen", "udp:0"] + list(args))
            service = buildService(options, UDPMemoryReactor())
            udp = service.listeners[0]._buildFactory()
            self.assertIs(udp.limiter, service.core.limiter)
            self.assertEqual(udp.limiter is not None, expectLimiter)
