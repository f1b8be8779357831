# -*- test-case-name: tests.test_transport_outgoing -*-
"""
Tests for L{sipcore.transport.outgoing}: opening TCP, TLS, WS and WSS
connections to next hops, with Twisted's memory reactor (no sockets).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sipcore.events import (
    CLOSE_EVENTS,
    TCP_CLOSED,
    TCP_CONNECTED,
    TCP_TIMEOUT,
    WEBSOCKET_CLOSED,
    WEBSOCKET_CONNECTED,
)
from sipcore.sip.routing import NextHop
from sipcore.testing import RecordingBus
from sipcore.transport.connections import ConnectionTable
from sipcore.transport.hops import HopConnector
from sipcore.transport.outgoing import (
    ConnectFailed,
    OutgoingConnector,
    OutgoingSettings,
    loadClientCertificate,
    loadTrustRoot,
)

HOP = NextHop("tcp", "192.0.2.7", 5070)


class _Sink:
    def __init__(self) -> None:
        self.received: list[Any] = []

    def messageReceived(self, message: Any, flow: Any) -> None:
        self.received.append((message, flow))

    def messageRejected(self, data: bytes, reason: str, flow: Any) -> None:
        pass


class ConnectorHarness(SynchronousTestCase):
    """
    An L{OutgoingConnector} on a memory reactor, with a table and a
    recording bus.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.bus = RecordingBus()
        self.table = ConnectionTable(self.bus, self.reactor)
        self.sink = _Sink()
        self.settings = OutgoingSettings(connectTimeout=5.0, idleTimeout=30.0)
        self.connector = OutgoingConnector(self.table, self.sink, self.reactor, self.settings)

    def accept(self, index: int = 0) -> tuple[Any, StringTransport]:
        """
        Let the connection attempt C{index} succeed.

        @return: the protocol built and its transport.
        """
        host, port, factory = self.reactor.tcpClients[index][:3]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        assert protocol is not None
        transport = StringTransport(hostAddress=IPv4Address("TCP", "192.0.2.1", 40001),
                                    peerAddress=IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        return protocol, transport


    def idleOut(self, protocol: Any, transport: StringTransport, flow: Any) -> None:
        """
        Let an open connection (idle timeout 30 s) send once after 20 s,
        then stay silent until the idle timeout closes it, and lose it.
        """
        self.reactor.advance(20)
        self.assertTrue(flow.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n"))
        self.reactor.advance(20)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(10)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))


class OutgoingConnectorTests(ConnectorHarness):
    """
    L{OutgoingConnector} opens one connection per hop, shares the attempt,
    and bounds it in time.
    """

    def test_connectShared(self) -> None:
        """
        Two requests for the same hop while it is being opened share one
        attempt; both get the connection once it is made, and it joins the
        table as an outbound connection.
        """
        first = self.connector.connect(HOP)
        second = self.connector.connect(NextHop("tcp", "192.0.2.7", 5070))
        self.assertNoResult(first)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(self.reactor.tcpClients[0][:2], ("192.0.2.7", 5070))
        self.accept()
        flow = self.successResultOf(first)
        self.assertIs(self.successResultOf(second), flow)
        self.assertIs(self.table.get(flow.conid), flow)
        (event,) = self.bus.named(TCP_CONNECTED)
        self.assertEqual((event.direction, event.transport, event.remote),
                         ("outbound", "tcp", ("192.0.2.7", 5070)))
        self.assertEqual(self.connector.opening, {})
        self.assertEqual(self.connector.stats, {"opened": 1, "failed": 0})

    def test_reusedThroughHopConnector(self) -> None:
        """
        L{HopConnector.openFlow} opens a connection once; later requests to
        the same hop reuse it without another attempt.
        """
        hops = HopConnector(self.table, [], self.connector)
        d = hops.openFlow(HOP)
        self.accept()
        flow = self.successResultOf(d)
        self.assertIs(self.successResultOf(hops.openFlow(HOP)), flow)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_refused(self) -> None:
        """
        A refused connection fails every waiter with L{ConnectFailed}
        naming the hop, and fires no event.
        """
        first = self.connector.connect(HOP)
        second = self.connector.connect(HOP)
        factory = self.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(self.reactor.connectors[0],
                                       Failure(ConnectionRefusedError()))
        for d in (first, second):
            error = self.failureResultOf(d, ConnectFailed).value
            self.assertIn("192.0.2.7:5070", error.reason)
        self.assertEqual(self.bus.events, [])
        self.assertEqual(self.connector.stats["failed"], 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_connectTimeout(self) -> None:
        """
        A connection not made within C{connectTimeout} fails its waiters
        with a timeout and leaves no timer behind; a new request starts a
        new attempt.
        """
        d = self.connector.connect(HOP)
        self.reactor.advance(4.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        error = self.failureResultOf(d, ConnectFailed).value
        self.assertIn("connect timeout", error.reason)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.connector.connect(HOP)
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_idleClose(self) -> None:
        """
        An outgoing connection without traffic for C{idleTimeout} seconds
        is closed and fires exactly one C{tcp:timeout}, outbound; sending
        counts as traffic.
        """
        d = self.connector.connect(HOP)
        protocol, transport = self.accept()
        flow = self.successResultOf(d)
        self.idleOut(protocol, transport, flow)
        protocol.connectionLost(Failure(ConnectionDone()))
        closes = [e for e in self.bus.events if e.name != TCP_CONNECTED]
        self.assertEqual([(e.name, e.direction) for e in closes], [(TCP_TIMEOUT, "outbound")])
        self.assertIsNone(self.table.get(flow.conid))

    def test_closedBeforeReady(self) -> None:
        """
        A TLS connection lost before its handshake completed fails its
        waiters (it never carries a message) and fires one close event.
        """
        d = self.connector.connect(NextHop("tls", "192.0.2.7", 5071), "sip.example.test")
        protocol, _ = self.accept()
        self.assertNoResult(d)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, ConnectFailed)
        names = self.bus.names()
        self.assertEqual(names[0], TCP_CONNECTED)
        self.assertEqual(len(names), 2)
        self.assertIn(names[1], CLOSE_EVENTS)

    def test_notStream(self) -> None:
        """
        Only TCP, TLS, WS and WSS connections are opened.
        """
        self.failureResultOf(self.connector.connect(NextHop("udp", "192.0.2.7", 5060)),
                             ConnectFailed)

    def test_shuttingDown(self) -> None:
        """
        While the table closes every connection, none is opened.
        """
        self.table.closeAll()
        self.failureResultOf(self.connector.connect(HOP), ConnectFailed)
        self.assertEqual(self.reactor.tcpClients, [])


def handshakeAnswer(request: bytes, protocol: str | None = "sip") -> bytes:
    """
    A WebSocket server's C{101} answer to the opening handshake
    C{request} (RFC 6455 section 4.2.2), choosing C{protocol}.
    """
    headers = dict(line.split(b": ", 1) for line in request.split(b"\r\n")[1:] if b": " in line)
    key = headers[b"Sec-WebSocket-Key"]
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    lines = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade",
             b"Sec-WebSocket-Accept: " + accept]
    if protocol is not None:
        lines.append(b"Sec-WebSocket-Protocol: " + protocol.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


class OutgoingWebSocketTests(ConnectorHarness):
    """
    WS and WSS hops get autobahn WebSocket client connections offering
    the C{sip} subprotocol, with the same table, events and timers.
    """

    WS = NextHop("ws", "192.0.2.7", 8080)

    def opened(self, hop: NextHop = WS, serverName: str | None = None) -> tuple[
            Any, StringTransport, Any]:
        """
        Connect to C{hop} and complete the WebSocket handshake.

        @return: the protocol, its transport and the flow.
        """
        d = self.connector.connect(hop, serverName)
        protocol, transport = self.accept()
        self.request = transport.value()
        transport.clear()
        self.assertNoResult(d)
        self.assertEqual(self.bus.names(), [TCP_CONNECTED])
        protocol.dataReceived(handshakeAnswer(self.request))
        return protocol, transport, self.successResultOf(d)

    def test_webSocketOpened(self) -> None:
        """
        The handshake asks for C{/} on the hop, offers the C{sip}
        subprotocol; once the server accepts, the flow is ready and
        C{tcp:connected} and C{websocket:connected} fired, outbound; a SIP
        message goes in one (masked) frame and a frame from the server goes
        to the sink.
        """
        protocol, transport, flow = self.opened(self.WS, "pbx.example")
        request = self.request
        self.assertTrue(request.startswith(b"GET / HTTP/1.1\r\n"), request)
        self.assertIn(b"Host: pbx.example:8080\r\n", request)
        self.assertIn(b"Sec-WebSocket-Protocol: sip\r\n", request)
        self.assertEqual(flow.transport, "ws")
        self.assertEqual([(e.name, e.direction) for e in self.bus.events],
                         [(TCP_CONNECTED, "outbound"), (WEBSOCKET_CONNECTED, "outbound")])
        self.assertTrue(flow.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n"))
        frame = transport.value()
        self.assertEqual((frame[0], frame[1] & 0x80), (0x81, 0x80))
        protocol.dataReceived(b"\x81\x05hello")
        self.assertEqual([m for m, f in self.sink.received if f is flow], [b"hello"])

    def test_reused(self) -> None:
        """
        A later request for the same WS hop reuses the open connection.
        """
        hops = HopConnector(self.table, [], self.connector)
        _, _, flow = self.opened()
        self.assertIs(self.successResultOf(hops.openFlow(self.WS)), flow)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_closeEvents(self) -> None:
        """
        The server's close frame ends the connection with exactly one
        C{tcp:closed} and one C{websocket:closed} with its code, outbound,
        and no timer left behind.
        """
        protocol, _, flow = self.opened()
        protocol.dataReceived(b"\x88\x02\x03\xe8")
        protocol.connectionLost(Failure(ConnectionDone()))
        protocol.connectionLost(Failure(ConnectionDone()))
        closes = [(e.name, e.direction) for e in self.bus.events
                  if e.name not in (TCP_CONNECTED, WEBSOCKET_CONNECTED)]
        self.assertEqual(closes, [(WEBSOCKET_CLOSED, "outbound"), (TCP_CLOSED, "outbound")])
        self.assertEqual(self.bus.named(WEBSOCKET_CLOSED)[0].wsCode, 1000)
        self.assertIsNone(self.table.get(flow.conid))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_idleClose(self) -> None:
        """
        An open WS connection without traffic for C{idleTimeout} seconds
        is closed as C{tcp:timeout}; sending counts as traffic.
        """
        protocol, transport, flow = self.opened()
        self.idleOut(protocol, transport, flow)
        closes = [e.name for e in self.bus.events
                  if e.name not in (TCP_CONNECTED, WEBSOCKET_CONNECTED)]
        self.assertEqual(closes, [WEBSOCKET_CLOSED, TCP_TIMEOUT])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_subprotocolRefused(self) -> None:
        """
        A server that does not choose C{sip} fails the attempt, and the
        connection fires one close event and no C{websocket:connected}.
        """
        d = self.connector.connect(self.WS)
        protocol, transport = self.accept()
        protocol.dataReceived(handshakeAnswer(transport.value(), protocol=None))
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        error = self.failureResultOf(d, ConnectFailed).value
        self.assertIn("did not accept the sip subprotocol", error.reason)
        self.assertEqual(self.bus.names(), [TCP_CONNECTED, TCP_CLOSED])

    def test_handshakeTimeout(self) -> None:
        """
        A server that never answers the handshake fails the attempt after
        C{connectTimeout} (C{tcp:timeout}), with no timer left behind.
        """
        d = self.connector.connect(self.WS)
        protocol, transport = self.accept()
        self.reactor.advance(5)
        self.assertIn("connect timeout", self.failureResultOf(d, ConnectFailed).value.reason)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.bus.names(), [TCP_CONNECTED, TCP_TIMEOUT])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_wssUsesTLS(self) -> None:
        """
        A WSS hop's connection starts with a TLS handshake (the same client
        TLS as a TLS hop), not with the WebSocket request.
        """
        for name in ("wss", "tls"):
            self.connector.connect(NextHop(name, "192.0.2.7", 8443), "pbx.example")
        for index in (0, 1):
            _, transport = self.accept(index)
            self.assertEqual(transport.value()[:1], b"\x16")


class SettingsTests(SynchronousTestCase):
    """
    L{OutgoingSettings} and the TLS files are checked when built.
    """

    def test_badTimeouts(self) -> None:
        """
        A connect timeout must be positive, an idle timeout not negative.
        """
        self.assertRaises(ValueError, OutgoingSettings, connectTimeout=0)
        self.assertRaises(ValueError, OutgoingSettings, idleTimeout=-1)
        self.assertRaises(ValueError, OutgoingSettings, tlsKeyFile="k.pem")

    def test_missingFiles(self) -> None:
        """
        A CA or client certificate file that cannot be read is a
        L{ValueError} naming it.
        """
        error = self.assertRaises(ValueError, loadTrustRoot, "/nonexistent/ca.pem")
        self.assertIn("/nonexistent/ca.pem", str(error))
        self.assertRaises(ValueError, loadClientCertificate, "/nonexistent/c.pem", None)

    def test_notPEM(self) -> None:
        """
        A CA file without a certificate is refused.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a certificate\n")
        error = self.assertRaises(ValueError, loadTrustRoot, path)
        self.assertIn("no PEM certificate", str(error))
