# -*- test-case-name: tests.test_transport_integration -*-
"""
Integration tests on loopback: real sockets, real Twisted TCP/TLS/UDP
clients and autobahn's WebSocket client, the real reactor.  Each close path
is checked for the exact connection events, once each, with the right
conid.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, cast

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor as _reactor
from twisted.internet import ssl
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    TCP4ClientEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISystemHandle, ITCPTransport, IUDPTransport
from twisted.internet.protocol import DatagramProtocol, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from sipcore.events import (
    CLOSE_EVENTS,
    TCP_CLOSED,
    TCP_CONNECTED,
    TCP_RESET,
    TCP_TIMEOUT,
    WEBSOCKET_CLOSED,
    WEBSOCKET_CONNECTED,
)
from sipcore.transport._autobahn import useReactorTimers
from sipcore.transport.connections import ConnectionTable
from sipcore.transport.listen import ListenerService, parseListen
from tests.test_transport_support import (
    OK,
    OPTIONS,
    RecordingBus,
    RecordingSink,
    makeCertificate,
)

reactor: Any = _reactor

#: Seconds any single wait may take before the test fails.
WAIT = 10.0

WS_OPEN_AND_CLOSE = [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED]


class StreamClient(Protocol):
    """
    A plain TCP (or TLS) client that records what it receives.
    """

    transport: ITCPTransport

    def __init__(self) -> None:
        self.data = b""
        self.lost: Deferred[BaseException | None] = Deferred()
        self._waits: list[tuple[bytes, Deferred[bytes]]] = []
        self.port = 0

    def connectionMade(self) -> None:
        self.port = self.transport.getHost().port

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for wait in list(self._waits):
            if wait[0] in self.data:
                self._waits.remove(wait)
                wait[1].callback(self.data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # The exception, not the Failure: a Failure would errback.
        self.lost.callback(reason.value)

    def waitFor(self, needle: bytes) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        if needle in self.data:
            d.callback(self.data)
        else:
            self._waits.append((needle, d))
        return d.addTimeout(WAIT, reactor)

    def localPort(self) -> int:
        return self.port

    def reset(self) -> None:
        """
        Close with a TCP RST (SO_LINGER 0).
        """
        sock = cast(socket.socket, ISystemHandle(self.transport).getHandle())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abortConnection()


class SIPWebSocketClient(WebSocketClientProtocol):
    """
    autobahn's client, recording messages and the close.
    """

    transport: ITCPTransport

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[bytes] = []
        self.opened: Deferred[None] = Deferred()
        self.closed: Deferred[tuple[bool, Any, Any]] = Deferred()
        self.gotMessage: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.port = self.transport.getHost().port

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append(payload)
        if not self.gotMessage.called:
            self.gotMessage.callback(payload)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if not self.opened.called:
            self.opened.errback(Failure(ConnectionDone(str(reason))))
        if not self.closed.called:
            self.closed.callback((wasClean, code, reason))

    def localPort(self) -> int:
        return self.port


class UDPClient(DatagramProtocol):
    """
    A UDP socket that keeps the first datagram it receives.
    """

    transport: IUDPTransport

    def __init__(self) -> None:
        self.received: Deferred[bytes] = Deferred()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if not self.received.called:
            self.received.callback(datagram)


class LoopbackTests(TestCase):
    """
    Real connections to real listeners on 127.0.0.1.
    """

    timeout = 60

    def setUp(self) -> None:
        self.bus = RecordingBus()
        self.sink = RecordingSink()
        self.table = ConnectionTable(self.bus, reactor, closeGrace=1.0)
        self._clients: list[Any] = []
        # Runs last: every server-side connection is closed and reported.
        self.addCleanup(self.cleanUpTable)

    @inlineCallbacks
    def listen(self, text: str, **options: Any) -> Any:
        """
        Start a listener on C{text} (port 0, loopback); stop it at cleanup.

        @return: the bound port number.
        """
        service = ListenerService(parseListen(text), reactor, self.sink, self.table, **options)
        yield service.startService()
        self.addCleanup(service.stopService)
        return service.port

    def cleanUpTable(self) -> Deferred[None]:
        return self.table.closeAll("test over").addTimeout(WAIT, reactor)

    @inlineCallbacks
    def connectTCP(self, port: int) -> Any:
        client = StreamClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        self._track(client, client.lost)
        return client

    @inlineCallbacks
    def connectWS(self, port: int, protocols: list[str] | None = None, wait: bool = True) -> Any:
        factory = WebSocketClientFactory(
            "ws://127.0.0.1:{}/".format(port),
            protocols=["sip"] if protocols is None else protocols,
            reactor=reactor,
        )
        # Keep every client timer on the real reactor as real delayed calls
        # (autobahn's batched timer leaves its bucket call pending).
        useReactorTimers(factory, reactor)
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=2)
        factory.protocol = SIPWebSocketClient
        client = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), factory.buildProtocol(None)
        )
        self._track(client, client.closed)
        if wait:
            yield client.opened.addTimeout(WAIT, reactor)
        return client

    def _track(self, client: Any, done: Deferred[Any]) -> None:
        self._clients.append(client)

        @inlineCallbacks
        def cleanup() -> Any:
            if not done.called:
                client.transport.abortConnection()
            yield done.addTimeout(WAIT, reactor)

        self.addCleanup(cleanup)

    @inlineCallbacks
    def closeEvent(self, conid: int) -> Any:
        """
        Wait for the close event of C{conid}, then one more reactor turn so
        a duplicate would show.
        """
        event = yield self.bus.waitFor(CLOSE_EVENTS, conid=conid).addTimeout(WAIT, reactor)
        yield deferLater(reactor, 0, lambda: None)
        return event

    @inlineCallbacks
    def conidOf(self, client: Any) -> Any:
        event = yield self.bus.waitFor(TCP_CONNECTED, remotePort=client.localPort()).addTimeout(
            WAIT, reactor
        )
        return event.conid

    def assertEvents(self, conid: int, names: list[str]) -> None:
        self.assertEqual(self.bus.names(conid), names)
        self.assertNotIn(conid, self.table)

    # -- TCP --------------------------------------------------------------

    @inlineCallbacks
    def optionsOverTCP(self, **options: Any) -> Any:
        port = yield self.listen("tcp:0:interface=127.0.0.1", **options)
        client = yield self.connectTCP(port)
        conid = yield self.conidOf(client)
        client.transport.write(OPTIONS)
        yield client.waitFor(b"SIP/2.0 200 OK")
        [(data, flow)] = self.sink.received
        self.assertEqual((data, flow.conid, flow.transport), (OPTIONS, conid, "tcp"))
        return client, conid

    @inlineCallbacks
    def test_tcpPeerFin(self) -> Any:
        """
        OPTIONS over TCP is answered; the client's FIN fires C{tcp:closed}
        "closed by peer" once.
        """
        client, conid = yield self.optionsOverTCP()
        client.transport.loseConnection()
        event = yield self.closeEvent(conid)
        self.assertEvents(conid, [TCP_CONNECTED, TCP_CLOSED])
        self.assertEqual((event.reason, event.transport), ("closed by peer", "tcp"))
        self.assertEqual(event.remote, ("127.0.0.1", client.localPort()))

    @inlineCallbacks
    def test_tcpPeerReset(self) -> Any:
        """
        A client that resets the connection (SO_LINGER 0) fires
        C{tcp:reset}.
        """
        client, conid = yield self.optionsOverTCP()
        client.reset()
        event = yield self.closeEvent(conid)
        self.assertEvents(conid, [TCP_CONNECTED, TCP_RESET])
        self.assertIn("connection lost", event.reason)

    @inlineCallbacks
    def test_tcpIdleTimeout(self) -> Any:
        """
        A silent client is dropped after the idle timeout: C{tcp:timeout},
        and the client sees the connection go.
        """
        client, conid = yield self.optionsOverTCP(idleTimeout=0.3)
        event = yield self.closeEvent(conid)
        self.assertEvents(conid, [TCP_CONNECTED, TCP_TIMEOUT])
        self.assertIn("idle timeout", event.reason)
        yield client.lost.addTimeout(WAIT, reactor)

    @inlineCallbacks
    def test_tcpFramingError(self) -> Any:
        """
        A bad Content-Length is rejected, the server closes the connection
        and fires C{tcp:closed} "protocol error: ...".
        """
        port = yield self.listen("tcp:0:interface=127.0.0.1")
        client = yield self.connectTCP(port)
        conid = yield self.conidOf(client)
        client.transport.write(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: x"))
        event = yield self.closeEvent(conid)
        self.assertEvents(conid, [TCP_CONNECTED, TCP_CLOSED])
        self.assertEqual(event.reason, "protocol error: Invalid Content-Length")
        self.assertEqual(self.sink.rejected[0][1], "Invalid Content-Length")
        yield client.lost.addTimeout(WAIT, reactor)

    @inlineCallbacks
    def test_tcpOversized(self) -> Any:
        """
        A message over C{maxSize} closes the connection with C{tcp:closed}
        "protocol error: Message Too Large".
        """
        port = yield self.listen("tcp:0:interface=127.0.0.1", maxSize=512)
        client = yield self.connectTCP(port)
        conid = yield self.conidOf(client)
        client.transport.write(b"X" * 600)
        event = yield self.closeEvent(conid)
        self.assertEvents(conid, [TCP_CONNECTED, TCP_CLOSED])
        self.assertEqual(event.reason, "protocol error: Message Too Large")
        yield client.lost.addTimeout(WAIT, reactor)

    @inlineCallbacks
    def test_tcpPing(self) -> Any:
        """
        A CRLF CRLF ping over TCP is answered with CRLF.
        """
        port = yield self.listen("tcp:0:interface=127.0.0.1")
        client = yield self.connectTCP(port)
        client.transport.write(b"\r\n\r\n")
        data = yield client.waitFor(b"\r\n")
        self.assertEqual(data, b"\r\n")

    # -- TLS --------------------------------------------------------------

    @inlineCallbacks
    def test_tls(self) -> Any:
        """
        OPTIONS over TLS (throwaway certificate) is answered; the flow and
        events say C{tls}; the client's close fires C{tcp:closed}.
        """
        key, cert = makeCertificate(FilePath(self.mktemp()))
        port = yield self.listen(
            "tls:0:interface=127.0.0.1:privateKey={}:certKey={}".format(key, cert)
        )
        trust = ssl.Certificate.loadPEM(FilePath(cert).getContent())
        options = ssl.optionsForClientTLS("localhost", trustRoot=trust)
        client = StreamClient()
        yield connectProtocol(SSL4ClientEndpoint(reactor, "127.0.0.1", port, options), client)
        self._track(client, client.lost)
        conid = yield self.conidOf(client)
        client.transport.write(OPTIONS)
        yield client.waitFor(b"SIP/2.0 200 OK")
        self.assertEqual(self.sink.received[0][1].transport, "tls")
        client.transport.loseConnection()
        event = yield self.closeEvent(conid)
        self.assertEqual(event.transport, "tls")
        self.assertEvents(conid, [TCP_CONNECTED, TCP_CLOSED])

    @inlineCallbacks
    def test_tlsHandshakeFailure(self) -> Any:
        """
        Plain text sent to a TLS listener fails the handshake: C{tcp:reset}
        with a TLS error, and nothing reaches the sink.
        """
        key, cert = makeCertificate(FilePath(self.mktemp()))
        port = yield self.listen(
            "tls:0:interface=127.0.0.1:privateKey={}:certKey={}".format(key, cert)
        )
        client = yield self.connectTCP(port)
        conid = yield self.conidOf(client)
        client.transport.write(OPTIONS)
        event = yield self.closeEvent(conid)
        self.assertEvents(conid, [TCP_CONNECTED, TCP_RESET])
        self.assertTrue(event.reason.startswith("TLS error"), event.reason)
        self.assertEqual(self.sink.received, [])

    # -- UDP --------------------------------------------------------------

    @inlineCallbacks
    def test_udp(self) -> Any:
        """
        OPTIONS over UDP is answered to the sender; no connection event
        fires.
        """
        port = yield self.listen("udp:0:interface=127.0.0.1")
        client = UDPClient()
        clientPort = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(clientPort.stopListening)
        client.transport.write(OPTIONS, ("127.0.0.1", port))
        answer = yield client.received.addTimeout(WAIT, reactor)
        self.assertEqual(answer, OK)
        [(data, flow)] = self.sink.received
        self.assertEqual((flow.transport, flow.conid), ("udp", None))
        self.assertEqual(flow.remote, ("127.0.0.1", clientPort.getHost().port))
        self.assertEqual(self.bus.events, [])

    # -- WebSocket --------------------------------------------------------

    @inlineCallbacks
    def optionsOverWS(self, **options: Any) -> Any:
        port = yield self.listen("ws:0:interface=127.0.0.1", **options)
        client = yield self.connectWS(port)
        conid = yield self.conidOf(client)
        yield self.bus.waitFor(WEBSOCKET_CONNECTED, conid=conid).addTimeout(WAIT, reactor)
        client.sendMessage(OPTIONS)
        answer = yield client.gotMessage.addTimeout(WAIT, reactor)
        self.assertEqual(answer, OK)
        [(data, flow)] = self.sink.received
        self.assertEqual((data, flow.conid, flow.transport), (OPTIONS, conid, "ws"))
        return client, conid

    @inlineCallbacks
    def test_wsCloseFrame(self) -> Any:
        """
        OPTIONS over WebSocket is answered; the client's close frame fires
        C{websocket:closed} with its code and reason and C{tcp:closed}.
        """
        client, conid = yield self.optionsOverWS()
        client.sendClose(1000, "bye")
        event = yield self.closeEvent(conid)
        self.assertEvents(conid, WS_OPEN_AND_CLOSE + [TCP_CLOSED])
        self.assertEqual(event.reason, "closed by peer")
        [wsClosed] = self.bus.named(WEBSOCKET_CLOSED)
        self.assertEqual((wsClosed.wsCode, wsClosed.wsReason), (1000, "bye"))
        wasClean, _, _ = yield client.closed
        self.assertTrue(wasClean)

    @inlineCallbacks
    def test_wsDroppedWithoutCloseFrame(self) -> Any:
        """
        A client that drops the TCP connection without a close frame fires
        C{websocket:closed} without a code and C{tcp:reset}.
        """
        client, conid = yield self.optionsOverWS()
        client.transport.loseConnection()
        yield self.closeEvent(conid)
        self.assertEvents(conid, WS_OPEN_AND_CLOSE + [TCP_RESET])
        self.assertIsNone(self.bus.named(WEBSOCKET_CLOSED)[0].wsCode)

    @inlineCallbacks
    def test_wsClosedBeforeHandshake(self) -> Any:
        """
        A client that closes before the handshake ends fires C{tcp:closed}
        only.
        """
        port = yield self.listen("ws:0:interface=127.0.0.1")
        client = yield self.connectTCP(port)
        conid = yield self.conidOf(client)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        client.transport.loseConnection()
        yield self.closeEvent(conid)
        self.assertEvents(conid, [TCP_CONNECTED, TCP_CLOSED])

    @inlineCallbacks
    def test_wsNoSubprotocol(self) -> Any:
        """
        A client not offering C{sip} is refused; only C{tcp:*} fires.
        """
        port = yield self.listen("ws:0:interface=127.0.0.1")
        client = yield self.connectWS(port, protocols=[], wait=False)
        conid = yield self.conidOf(client)
        event = yield self.closeEvent(conid)
        self.assertEvents(conid, [TCP_CONNECTED, TCP_CLOSED])
        self.assertIn("subprotocol 'sip' required", event.reason)
        yield self.assertFailure(client.opened, ConnectionDone)

    @inlineCallbacks
    def test_wsOversized(self) -> Any:
        """
        A WebSocket message over C{maxSize} is rejected and the connection
        closed with 1009.
        """
        client, conid = yield self.optionsOverWS(maxSize=512)
        client.sendMessage(b"X" * 600)
        event = yield self.closeEvent(conid)
        self.assertEvents(conid, WS_OPEN_AND_CLOSE + [TCP_CLOSED])
        self.assertEqual(event.reason, "protocol error: Message Too Large")
        self.assertEqual(self.bus.named(WEBSOCKET_CLOSED)[0].wsCode, 1009)
        _, code, _ = yield client.closed
        self.assertEqual(self.sink.rejected[0][1], "Message Too Large")

    @inlineCallbacks
    def test_wsIdleTimeout(self) -> Any:
        """
        A silent WebSocket client is dropped after the idle timeout.
        """
        client, conid = yield self.optionsOverWS(idleTimeout=0.3)
        yield self.closeEvent(conid)
        self.assertEvents(conid, WS_OPEN_AND_CLOSE + [TCP_TIMEOUT])

    # -- shutdown ---------------------------------------------------------

    @inlineCallbacks
    def test_shutdown(self) -> Any:
        """
        C{closeAll} closes a TCP and a WebSocket connection: each fires
        C{tcp:closed} "server shutdown" (the WebSocket after a 1001 close
        frame), the L{Deferred} fires, and a connection made afterwards is
        dropped without events.
        """
        tcpPort = yield self.listen("tcp:0:interface=127.0.0.1")
        wsPort = yield self.listen("ws:0:interface=127.0.0.1")
        tcpClient = yield self.connectTCP(tcpPort)
        tcpConid = yield self.conidOf(tcpClient)
        wsClient = yield self.connectWS(wsPort)
        wsConid = yield self.conidOf(wsClient)
        yield self.bus.waitFor(WEBSOCKET_CONNECTED, conid=wsConid).addTimeout(WAIT, reactor)

        yield self.table.closeAll().addTimeout(WAIT, reactor)
        yield deferLater(reactor, 0, lambda: None)
        self.assertEvents(tcpConid, [TCP_CONNECTED, TCP_CLOSED])
        self.assertEvents(wsConid, WS_OPEN_AND_CLOSE + [TCP_CLOSED])
        self.assertEqual([e.reason for e in self.bus.named(TCP_CLOSED)], ["server shutdown"] * 2)
        self.assertEqual(self.bus.named(WEBSOCKET_CLOSED)[0].wsCode, 1001)
        yield tcpClient.lost.addTimeout(WAIT, reactor)
        _, code, _ = yield wsClient.closed.addTimeout(WAIT, reactor)
        self.assertEqual(code, 1001)

        count = len(self.bus.events)
        late = yield self.connectTCP(tcpPort)
        yield late.lost.addTimeout(WAIT, reactor)
        self.assertEqual(len(self.bus.events), count)
        self.assertEqual(self.table.refused, 1)
