# -*- test-case-name: tests.test_transport_websocket -*-
"""
Unit tests for L{sipcore.transport.websocket}: the C{sip} subprotocol, one
SIP message per frame, and the close-event mapping, on a fake transport
with hand-made frames and a fake clock (which also proves that autobahn's
timers use the injected reactor and are all gone after a close).
"""

from __future__ import annotations

import os
import struct
from dataclasses import replace
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipcore.events import (
    TCP_CLOSED,
    TCP_CONNECTED,
    TCP_RESET,
    TCP_TIMEOUT,
    WEBSOCKET_CLOSED,
    WEBSOCKET_CONNECTED,
)
from sipcore.interfaces import IStreamFlow
from sipcore.transport.connections import ConnectionTable
from sipcore.transport.settings import ConnectionSettings
from sipcore.transport.stream import StreamFlow
from sipcore.transport.websocket import SIPWebSocketFactory, SIPWebSocketProtocol
from tests.mixins import SynchronousTestMixin
from tests.test_transport_support import OK, OPTIONS, RecordingBus, RecordingSink

LOCAL = IPv4Address("TCP", "127.0.0.1", 8080)
PEER = IPv4Address("TCP", "192.0.2.7", 40000)

TEXT, BINARY, CLOSE, PING = 1, 2, 8, 9


def handshake(protocols: str | None = "sip", extra: tuple[bytes, ...] = (),
              host: bytes = b"127.0.0.1:8080") -> bytes:
    """
    A client's opening handshake, with C{extra} header lines.
    """
    lines = [
        b"GET / HTTP/1.1",
        b"Host: " + host,
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
    ]
    if protocols is not None:
        lines.append(b"Sec-WebSocket-Protocol: " + protocols.encode("ascii"))
    lines.extend(extra)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def clientFrame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """
    A masked frame, as a client sends it.
    """
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def closeFrame(code: int, reason: bytes = b"") -> bytes:
    return clientFrame(CLOSE, struct.pack("!H", code) + reason)


def serverFrames(data: bytes) -> list[tuple[int, bytes]]:
    """
    Parse the unmasked frames a server wrote.
    """
    frames = []
    while data:
        opcode = data[0] & 0x0F
        length = data[1] & 0x7F
        offset = 2
        if length == 126:
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif length == 127:
            (length,) = struct.unpack("!Q", data[2:10])
            offset = 10
        frames.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return frames


class AbortableTransport(StringTransport):
    """
    A L{StringTransport} that records whether it was aborted and, like real
    transports, lets autobahn unregister a producer it never registered.
    """

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()

    def unregisterProducer(self) -> None:
        self.producer = None


def flowOf(protocol: SIPWebSocketProtocol) -> StreamFlow:
    """
    The flow of a connected C{protocol}.
    """
    assert protocol.sipFlow is not None
    return protocol.sipFlow


def conidOf(protocol: SIPWebSocketProtocol) -> int:
    """
    The connection id of a connected C{protocol}.
    """
    conid = flowOf(protocol).conid
    assert conid is not None
    return conid


class WebSocketTestsMixin(SynchronousTestMixin):
    idleTimeout = 60.0
    unregisteredIdleTimeout = 0.0

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.bus = RecordingBus()
        self.sink = RecordingSink()
        self.table = ConnectionTable(self.bus, self.clock)
        self.factory = SIPWebSocketFactory(
            self.sink,
            self.table,
            self.clock,
            settings=ConnectionSettings(
                maxSize=1024,
                idleTimeout=self.idleTimeout,
                handshakeTimeout=5.0,
                closeHandshakeTimeout=1.0,
                unregisteredIdleTimeout=self.unregisteredIdleTimeout,
                originDomains=frozenset({"example.com"}),
            ),
        )

    def connect(self) -> tuple[SIPWebSocketProtocol, AbortableTransport]:
        protocol = self.factory.buildProtocol(PEER)
        assert isinstance(protocol, SIPWebSocketProtocol)
        transport = AbortableTransport(hostAddress=LOCAL, peerAddress=PEER)
        protocol.makeConnection(transport)
        return protocol, transport

    def open(self) -> tuple[SIPWebSocketProtocol, AbortableTransport]:
        protocol, transport = self.connect()
        protocol.dataReceived(handshake())
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 101"), response)
        transport.clear()
        return protocol, transport

    def frames(self, transport: StringTransport) -> list[tuple[int, bytes]]:
        frames = serverFrames(transport.value())
        transport.clear()
        return frames

    def lose(self, protocol: SIPWebSocketProtocol, error: BaseException) -> None:
        protocol.connectionLost(Failure(error))

    def assertEvents(self, protocol: SIPWebSocketProtocol, names: list[str]) -> None:
        self.assertEqual(self.bus.names(conidOf(protocol)), names)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNotIn(conidOf(protocol), self.table)

    def event(self, name: str) -> Any:
        [event] = self.bus.named(name)
        return event


class HandshakeTests(WebSocketTestsMixin, SynchronousTestCase):
    """
    The opening handshake.
    """

    def test_acceptsSip(self) -> None:
        """
        A handshake offering C{sip} is accepted with C{sip}; the connection
        fires C{tcp:connected} (transport C{ws}) on accept and
        C{websocket:connected} once the handshake is done.
        """
        protocol, transport = self.connect()
        self.assertEqual(self.bus.names(), [TCP_CONNECTED])
        self.assertEqual(self.bus.events[0].transport, "ws")
        protocol.dataReceived(handshake("foo, sip"))
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 101"))
        self.assertIn(b"Sec-WebSocket-Protocol: sip\r\n", response)
        conid = conidOf(protocol)
        self.assertEqual(self.bus.names(conid), [TCP_CONNECTED, WEBSOCKET_CONNECTED])
        self.assertTrue(verifyObject(IStreamFlow, protocol.sipFlow))
        self.assertEqual(flowOf(protocol).remote, ("192.0.2.7", 40000))

    def test_refusesWithoutSip(self) -> None:
        """
        A handshake without the C{sip} subprotocol is refused with C{400};
        the close fires C{tcp:closed} only (no C{websocket:*}: the
        WebSocket never opened).
        """
        for offered in (None, "chat"):
            self.bus.events.clear()
            protocol, transport = self.connect()
            protocol.dataReceived(handshake(offered))
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400"), transport.value())
            self.assertTrue(transport.disconnecting)
            self.lose(protocol, ConnectionDone())
            self.assertEvents(protocol, [TCP_CONNECTED, TCP_CLOSED])
            self.assertIn("subprotocol 'sip' required", self.bus.events[-1].reason)
            self.assertTrue(str(self.bus.events[-1].reason).startswith(
                "websocket handshake refused"))

    def test_closedBeforeHandshakeEnds(self) -> None:
        """
        A peer that closes during the handshake fires C{tcp:closed} only; the
        handshake timer is gone.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(handshake()[:20])
        self.lose(protocol, ConnectionDone())
        self.assertEvents(protocol, [TCP_CONNECTED, TCP_CLOSED])
        self.assertEqual(self.bus.events[-1].reason, "closed by peer")

    def test_resetBeforeHandshakeEnds(self) -> None:
        """
        A reset during the handshake fires C{tcp:reset} only.
        """
        protocol, _ = self.connect()
        self.lose(protocol, ConnectionLost())
        self.assertEvents(protocol, [TCP_CONNECTED, TCP_RESET])

    def test_handshakeTimeout(self) -> None:
        """
        A client that does not finish the handshake in time is dropped; the
        timer runs on the injected clock and the close is C{tcp:timeout}.
        """
        protocol, transport = self.connect()
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)  # handshake + idle
        self.clock.advance(4.9)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.lose(protocol, ConnectionAborted())
        self.assertEvents(protocol, [TCP_CONNECTED, TCP_TIMEOUT])
        self.assertEqual(self.bus.events[-1].reason, "websocket handshake timeout")

    def test_refusedDuringShutdown(self) -> None:
        """
        A connection accepted during shutdown is aborted and fires nothing.
        """
        self.table.closeAll()
        protocol, transport = self.connect()
        self.assertTrue(transport.aborted)
        protocol.dataReceived(handshake())
        self.lose(protocol, ConnectionAborted())
        self.assertEqual(self.bus.events, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class MessageTests(WebSocketTestsMixin, SynchronousTestCase):
    """
    One SIP message per WebSocket message.
    """

    def test_textMessage(self) -> None:
        """
        A text frame is one message for the sink; the answer goes back as a
        text frame.
        """
        protocol, transport = self.open()
        protocol.dataReceived(clientFrame(TEXT, OPTIONS))
        self.assertEqual(self.sink.received, [(OPTIONS, protocol.sipFlow)])
        self.assertEqual(self.frames(transport), [(TEXT, OK)])

    def test_binaryMessage(self) -> None:
        """
        A binary frame is a message too; data that is not UTF-8 is sent as
        a binary frame.
        """
        protocol, transport = self.open()
        protocol.dataReceived(clientFrame(BINARY, OPTIONS))
        self.assertEqual(self.sink.received[0][0], OPTIONS)
        transport.clear()
        self.assertTrue(flowOf(protocol).send(b"SIP/2.0 200 OK\r\nX: \xff\r\n\r\n"))
        self.assertEqual(self.frames(transport), [(BINARY, b"SIP/2.0 200 OK\r\nX: \xff\r\n\r\n")])

    def test_fragmentedMessage(self) -> None:
        """
        A message in several fragments is delivered once, whole.
        """
        protocol, _ = self.open()
        protocol.dataReceived(clientFrame(TEXT, OPTIONS[:30], fin=False))
        protocol.dataReceived(clientFrame(0, OPTIONS[30:]))
        self.assertEqual([data for data, _ in self.sink.received], [OPTIONS])

    def test_crlfKeepalive(self) -> None:
        """
        A CRLF CRLF frame is answered with a CRLF frame and not given to the
        sink.
        """
        protocol, transport = self.open()
        protocol.dataReceived(clientFrame(TEXT, b"\r\n\r\n"))
        self.assertEqual(self.sink.received, [])
        self.assertEqual(self.frames(transport), [(TEXT, b"\r\n")])

    def test_webSocketPing(self) -> None:
        """
        A WebSocket ping is answered with a pong by autobahn.
        """
        protocol, transport = self.open()
        protocol.dataReceived(clientFrame(PING, b"p"))
        self.assertEqual(self.frames(transport), [(10, b"p")])

    def test_sendBeforeOpen(self) -> None:
        """
        C{send} before the handshake completes returns C{False}.
        """
        protocol, transport = self.connect()
        self.assertFalse(flowOf(protocol).send(OK))
        self.assertEqual(transport.value(), b"")

    def test_oversized(self) -> None:
        """
        A message larger than C{maxSize} goes to C{messageRejected} and the
        connection is closed with C{1009}; after the closing handshake it
        fires C{websocket:closed} (code 1009) and C{tcp:closed} "protocol
        error: Message Too Large".
        """
        protocol, transport = self.open()
        protocol.dataReceived(clientFrame(TEXT, b"X" * 2000))
        self.assertEqual(self.sink.received, [])
        self.assertEqual(len(self.sink.rejected), 1)
        self.assertEqual(self.sink.rejected[0][1:], ("Message Too Large", protocol.sipFlow))
        [(opcode, payload)] = self.frames(transport)
        self.assertEqual((opcode, struct.unpack("!H", payload[:2])[0]), (CLOSE, 1009))
        protocol.dataReceived(closeFrame(1009))
        self.assertTrue(transport.disconnecting)
        self.lose(protocol, ConnectionAborted())
        self.assertEvents(
            protocol, [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_CLOSED]
        )
        self.assertEqual(self.event(WEBSOCKET_CLOSED).wsCode, 1009)
        self.assertEqual(self.event(TCP_CLOSED).reason, "protocol error: Message Too Large")

    def test_sinkRaising(self) -> None:
        """
        A sink that raises does not break the connection; the error is
        logged.
        """
        protocol, transport = self.open()

        def broken(data: bytes, flow: Any) -> None:
            raise RuntimeError("sink bug")

        self.sink.messageReceived = broken  # type: ignore[method-assign]
        protocol.dataReceived(clientFrame(TEXT, OPTIONS))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(transport.disconnecting)


class CloseTests(WebSocketTestsMixin, SynchronousTestCase):
    """
    Each way an open WebSocket ends fires C{websocket:closed} and exactly
    one C{tcp:*} event, and leaves no timer.
    """

    def test_peerCloseFrame(self) -> None:
        """
        A close frame from the peer is answered, the server closes the TCP
        connection, and the close is C{tcp:closed} "closed by peer" with the
        peer's code and reason.
        """
        protocol, transport = self.open()
        protocol.dataReceived(closeFrame(1000, b"bye"))
        [(opcode, payload)] = self.frames(transport)
        self.assertEqual(opcode, CLOSE)
        self.assertTrue(transport.disconnecting)
        self.lose(protocol, ConnectionDone())
        self.assertEvents(
            protocol, [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_CLOSED]
        )
        wsClosed = self.event(WEBSOCKET_CLOSED)
        self.assertEqual((wsClosed.wsCode, wsClosed.wsReason), (1000, "bye"))
        self.assertEqual(self.event(TCP_CLOSED).reason, "closed by peer")

    def test_droppedWithoutCloseFrame(self) -> None:
        """
        A connection lost without a close frame is C{tcp:reset}, with
        C{websocket:closed} carrying no code, whether the TCP ended with a
        FIN or an error.
        """
        for error in (ConnectionDone(), ConnectionLost()):
            self.bus.events.clear()
            protocol, _ = self.open()
            self.lose(protocol, error)
            self.assertEvents(
                protocol, [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_RESET]
            )
            self.assertIsNone(self.event(WEBSOCKET_CLOSED).wsCode)

    def test_serverClose(self) -> None:
        """
        C{flow.close()} sends a close frame (1000); after the peer's reply
        the close is C{tcp:closed} "closed by server".
        """
        protocol, transport = self.open()
        flowOf(protocol).close()
        [(opcode, payload)] = self.frames(transport)
        self.assertEqual((opcode, payload[:2]), (CLOSE, struct.pack("!H", 1000)))
        protocol.dataReceived(closeFrame(1000))
        self.assertTrue(transport.aborted)
        self.lose(protocol, ConnectionAborted())
        self.assertEvents(
            protocol, [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_CLOSED]
        )
        self.assertEqual(self.event(TCP_CLOSED).reason, "closed by server")
        self.assertEqual(self.event(WEBSOCKET_CLOSED).wsCode, 1000)

    def test_serverCloseNoReply(self) -> None:
        """
        A peer that does not answer our close frame is dropped after the
        closing handshake timeout (on the injected clock).
        """
        protocol, transport = self.open()
        flowOf(protocol).close()
        self.clock.advance(0.9)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.lose(protocol, ConnectionAborted())
        self.assertEvents(
            protocol, [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_CLOSED]
        )
        self.assertEqual(
            self.event(TCP_CLOSED).reason, "closed by server (no close frame in reply)"
        )

    def test_serverCloseThenDrop(self) -> None:
        """
        A peer that drops the TCP connection instead of answering our close
        frame leaves no closing handshake timer behind.
        """
        protocol, _ = self.open()
        flowOf(protocol).close()
        self.lose(protocol, ConnectionLost())
        self.assertEvents(
            protocol, [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_CLOSED]
        )

    def test_idleTimeout(self) -> None:
        """
        An open WebSocket that receives nothing for C{idleTimeout} seconds
        is aborted: C{tcp:timeout} and C{websocket:closed} without a code.
        """
        protocol, transport = self.open()
        self.clock.advance(59)
        protocol.dataReceived(clientFrame(TEXT, b"\r\n\r\n"))
        self.clock.advance(59)
        self.assertFalse(transport.aborted)
        self.clock.advance(1)
        self.assertTrue(transport.aborted)
        self.lose(protocol, ConnectionAborted())
        self.assertEvents(
            protocol, [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_TIMEOUT]
        )
        self.assertIsNone(self.event(WEBSOCKET_CLOSED).wsCode)

    def test_shutdown(self) -> None:
        """
        L{ConnectionTable.closeAll} sends a 1001 close frame; the close is
        C{tcp:closed} "server shutdown" and the shutdown L{Deferred} fires.
        """
        protocol, transport = self.open()
        d = self.table.closeAll()
        [(opcode, payload)] = self.frames(transport)
        self.assertEqual((opcode, payload[:2]), (CLOSE, struct.pack("!H", 1001)))
        self.assertNoResult(d)
        protocol.dataReceived(closeFrame(1001))
        self.lose(protocol, ConnectionAborted())
        self.successResultOf(d)
        self.assertEvents(
            protocol, [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_CLOSED]
        )
        self.assertEqual(self.event(TCP_CLOSED).reason, "server shutdown")
        self.assertEqual(self.event(WEBSOCKET_CLOSED).wsCode, 1001)

    def test_exactlyOnce(self) -> None:
        """
        However often the loss is reported, the events fire once.
        """
        protocol, _ = self.open()
        self.lose(protocol, ConnectionLost())
        self.lose(protocol, ConnectionDone())
        protocol.onClose(False, 1006, "again")
        flowOf(protocol).close()
        flowOf(protocol).abort()
        self.assertEvents(
            protocol, [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_RESET]
        )


class NoIdleTimeoutTests(WebSocketTestsMixin, SynchronousTestCase):
    """
    With C{idleTimeout=0} only autobahn's handshake timer runs, and it is
    gone once the WebSocket is open.
    """

    idleTimeout = 0

    def test_noTimers(self) -> None:
        """
        An open WebSocket has no timer.
        """
        self.open()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class HandshakeSizeTests(WebSocketTestsMixin, SynchronousTestCase):
    """
    An opening handshake over C{maxHandshakeSize} bytes is answered HTTP
    C{431} and closed without being buffered or parsed further.
    """

    def test_largeHeaderRefused(self) -> None:
        """
        A handshake with a 64 KiB header, sent in pieces as TCP delivers
        it, is refused with C{431} once the limit is passed: what autobahn
        buffers is dropped, later data is ignored, and the close is
        C{tcp:closed} naming the reason, with no timer left.
        """
        protocol, transport = self.connect()
        request = handshake(extra=(b"X-Big: " + b"a" * 65536,))
        pieces = [request[i:i + 4096] for i in range(0, len(request), 4096)]
        sent = 0
        for piece in pieces:
            if transport.value():
                break
            protocol.dataReceived(piece)
            sent += len(piece)
        self.assertTrue(
            transport.value().startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            transport.value())
        self.assertLessEqual(sent, 16384 + 4096)
        self.assertEqual(protocol.data, b"")
        protocol.dataReceived(b"a" * 4096)
        self.assertEqual(protocol.data, b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.factory.handshakesTooLarge, 1)
        self.lose(protocol, ConnectionDone())
        self.assertEvents(protocol, [TCP_CONNECTED, TCP_CLOSED])
        self.assertEqual(self.bus.events[-1].reason,
                         "websocket handshake refused: Request Header Fields Too Large")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_oneLargeRead(self) -> None:
        """
        A handshake whose end lies past the limit is refused even when it
        arrives in one read.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(handshake(extra=(b"X-Big: " + b"a" * 20000,)))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431"), transport.value())

    def test_withinLimit(self) -> None:
        """
        A handshake just under the limit opens, and frames that follow it in
        the same read are processed.
        """
        base = handshake()
        pad = 16384 - len(base) - len(b"X-Pad: \r\n")
        request = handshake(extra=(b"X-Pad: " + b"a" * pad,))
        self.assertEqual(len(request), 16384)
        protocol, transport = self.connect()
        protocol.dataReceived(request + clientFrame(TEXT, OPTIONS))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101"), transport.value()[:80])
        self.assertEqual(self.sink.received, [(OPTIONS, protocol.sipFlow)])

    def test_configurable(self) -> None:
        """
        The settings' C{maxHandshakeSize} sets the limit; C{0} lifts it.
        """
        self.factory.settings = replace(self.factory.settings, maxHandshakeSize=200)
        protocol, transport = self.connect()
        protocol.dataReceived(handshake(extra=(b"X-Pad: " + b"a" * 100,)))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431"), transport.value())
        self.factory.settings = replace(self.factory.settings, maxHandshakeSize=0)
        protocol, transport = self.connect()
        protocol.dataReceived(handshake(extra=(b"X-Pad: " + b"a" * 30000,)))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101"), transport.value()[:80])

    def test_autobahnBuffersInData(self) -> None:
        """
        The size check relies on autobahn calling C{processHandshake} with
        the bytes received so far in C{self.data} each time more arrive
        during the handshake.  If autobahn changes that, this fails.
        """
        seen: list[bytes] = []
        protocol, _ = self.connect()
        original = protocol.processHandshake

        def spy() -> None:
            seen.append(protocol.data)
            original()

        protocol.processHandshake = spy  # type: ignore[method-assign]
        request = handshake()
        protocol.dataReceived(request[:10])
        protocol.dataReceived(request[10:])
        self.assertEqual(seen, [request[:10], request])


class OriginTests(WebSocketTestsMixin, SynchronousTestCase):
    """
    The default Origin policy compares the Origin with the server's domains
    and the connection's local address, never with the C{Host} header.
    """

    def attempt(self, origin: bytes, host: bytes = b"127.0.0.1:8080") -> bytes:
        protocol, transport = self.connect()
        protocol.dataReceived(handshake(extra=(b"Origin: " + origin,), host=host))
        return transport.value()

    def test_forgedHost(self) -> None:
        """
        An Origin that only matches the C{Host} header the client sent is
        refused with C{403}.
        """
        response = self.attempt(b"https://evil.example", host=b"evil.example")
        self.assertTrue(response.startswith(b"HTTP/1.1 403"), response)
        self.assertEqual(self.factory.originsRefused, 1)

    def test_localAddress(self) -> None:
        """
        An Origin on the address the connection was accepted on is allowed,
        whatever the C{Host} header says.
        """
        response = self.attempt(b"http://127.0.0.1:3000", host=b"evil.example")
        self.assertTrue(response.startswith(b"HTTP/1.1 101"), response[:80])

    def test_domain(self) -> None:
        """
        An Origin on one of the server's domains is allowed.
        """
        response = self.attempt(b"https://EXAMPLE.com", host=b"10.1.1.1")
        self.assertTrue(response.startswith(b"HTTP/1.1 101"), response[:80])


class UnregisteredIdleTimeoutTests(WebSocketTestsMixin, SynchronousTestCase):
    """
    WebSocket connections have the short idle timeout until the registrar
    binds them, like TCP ones.
    """

    idleTimeout = 3600.0
    unregisteredIdleTimeout = 120.0

    def test_unregistered(self) -> None:
        """
        An open WebSocket that never registered is closed after the short
        timeout: C{websocket:closed} and C{tcp:timeout}, no timer left.
        """
        protocol, transport = self.open()
        self.clock.advance(119.9)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.lose(protocol, ConnectionAborted())
        self.assertEvents(protocol, [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED,
                                     TCP_TIMEOUT])
        self.assertEqual(self.bus.events[-1].reason,
                         "idle timeout (120s without data, never registered)")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_registered(self) -> None:
        """
        A bound WebSocket keeps the long timeout.
        """
        protocol, transport = self.open()
        self.table.bound(conidOf(protocol), 10**5)
        self.clock.advance(3599)
        self.assertFalse(transport.aborted)
        self.clock.advance(1)
        self.assertTrue(transport.aborted)


class FactoryTests(SynchronousTestCase):
    """
    Tests for L{SIPWebSocketFactory}.
    """

    def test_defaults(self) -> None:
        """
        By default the opening handshake must complete within 10 s and be
        at most 16 KiB; unregistered connections idle out after 120 s.
        """
        clock = MemoryReactorClock()
        factory = SIPWebSocketFactory(RecordingSink(), ConnectionTable(RecordingBus(), clock),
                                      clock)
        self.assertEqual(
            (factory.openHandshakeTimeout, factory.settings.maxHandshakeSize,
             factory.settings.unregisteredIdleTimeout),
            (10.0, 16384, 120.0))

    def test_badTransport(self) -> None:
        """
        Only C{ws} and C{wss} are accepted.
        """
        self.assertRaises(
            ValueError,
            SIPWebSocketFactory,
            RecordingSink(),
            ConnectionTable(RecordingBus(), MemoryReactorClock()),
            MemoryReactorClock(),
            "tcp",
        )
