# -*- test-case-name: tests.test_websocket_memory -*-
"""
Tests for what an open, idle WebSocket connection of
L{sipcore.transport.websocket} keeps: the protocol options are read from
the factory, the opening handshake and autobahn's per-frame state are
released, the send queue is made only when a send needs it, and the
connection still does everything it did before.
"""

from __future__ import annotations

import gc
import struct
import tracemalloc
from typing import Any

import txaio
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sipcore.events import (
    TCP_CLOSED,
    TCP_CONNECTED,
    TCP_RESET,
    TCP_TIMEOUT,
    WEBSOCKET_CLOSED,
    WEBSOCKET_CONNECTED,
)
from sipcore.transport._autobahn import HANDSHAKE_STATE
from sipcore.transport.connections import ConnectionTable
from sipcore.transport.settings import ConnectionSettings
from sipcore.transport.websocket import SIPWebSocketFactory, SIPWebSocketProtocol
from tests.test_transport_support import OK, OPTIONS, RecordingBus, RecordingSink
from tests.test_transport_websocket import (
    BINARY,
    CLOSE,
    PEER,
    PING,
    TEXT,
    AbortableTransport,
    WebSocketTestsMixin,
    clientFrame,
    closeFrame,
    handshake,
    serverFrames,
)

PONG = 10

#: The most Python heap an open, idle connection (protocol, flow, table
#: entry and the test's fake transport) may take, in bytes.  It takes about
#: 3,300; keeping autobahn's option copies, opening handshake and
#: per-frame state would take about 8,300.
IDLE_CONNECTION_BUDGET = 4500


class OptionTests(WebSocketTestsMixin, SynchronousTestCase):
    """
    autobahn's protocol options are read from the factory, not copied onto
    each connection.
    """

    def test_notCopied(self) -> None:
        """
        An open connection has none of autobahn's options as its own
        attributes; it reads the factory's values.
        """
        protocol, _ = self.open()
        own = set(vars(protocol))
        self.assertEqual(own & set(SIPWebSocketProtocol.CONFIG_ATTRS), set())
        for name in SIPWebSocketProtocol.CONFIG_ATTRS:
            self.assertEqual(getattr(protocol, name), getattr(self.factory, name), name)
        # autobahn's options are not declared on its protocol classes.
        self.assertEqual(protocol.maxMessagePayloadSize, 1024)  # type: ignore[attr-defined]
        self.assertEqual(protocol.closeHandshakeTimeout, 1.0)  # type: ignore[attr-defined]

    def test_ownValue(self) -> None:
        """
        A connection may still set an option of its own; other connections
        keep the factory's.
        """
        first, _ = self.open()
        second, _ = self.open()
        # autobahn's options are not declared on its protocol classes.
        first.autoPingSize = 20  # type: ignore[attr-defined]
        self.assertEqual(first.autoPingSize, 20)  # type: ignore[attr-defined]
        self.assertEqual(second.autoPingSize, self.factory.autoPingSize)  # type: ignore[attr-defined]
        self.assertNotEqual(self.factory.autoPingSize, 20)

    def test_limitStillApplies(self) -> None:
        """
        The message size limit, read from the factory, still closes the
        connection with C{1009}.
        """
        protocol, transport = self.open()
        protocol.dataReceived(clientFrame(TEXT, b"X" * 1025))
        [(opcode, payload)] = self.frames(transport)
        self.assertEqual((opcode, payload[:2]), (CLOSE, struct.pack("!H", 1009)))
        self.assertEqual(len(self.sink.rejected), 1)


class HandshakeReleaseTests(WebSocketTestsMixin, SynchronousTestCase):
    """
    What autobahn kept of the opening handshake is released when the
    WebSocket opens; the connection works as before.
    """

    def test_released(self) -> None:
        """
        Once open, the request headers, response, key and transport details
        are gone.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(handshake())
        for name in HANDSHAKE_STATE:
            self.assertIsNone(getattr(protocol, name), name)
        self.assertEqual(protocol.websocket_protocol_in_use, "sip")

    def test_worksAfterRelease(self) -> None:
        """
        After the release the connection takes and answers messages, answers
        pings, and closes with the usual events, code and reason.
        """
        protocol, transport = self.open()
        protocol.dataReceived(clientFrame(TEXT, OPTIONS))
        protocol.dataReceived(clientFrame(BINARY, OPTIONS))
        protocol.dataReceived(clientFrame(PING, b"p"))
        self.assertEqual([data for data, _ in self.sink.received], [OPTIONS, OPTIONS])
        self.assertEqual(self.frames(transport), [(TEXT, OK), (TEXT, OK), (PONG, b"p")])
        protocol.dataReceived(closeFrame(1000, b"bye"))
        self.assertEqual(self.frames(transport)[0][0], CLOSE)
        self.lose(protocol, ConnectionDone())
        self.assertEvents(
            protocol, [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_CLOSED]
        )
        wsClosed = self.event(WEBSOCKET_CLOSED)
        self.assertEqual((wsClosed.wsCode, wsClosed.wsReason), (1000, "bye"))

    def test_teardownCountsAndQuiet(self) -> None:
        """
        A connection dropped by the peer is taken off autobahn's connection
        count, fires its close events, and does not render its reason as text (autobahn's
        debug line did, for every connection, even with debug off).
        """
        protocol, _ = self.open()
        self.assertEqual(protocol.factory.countConnections, 1)
        rendered: list[bool] = []

        class Watched(Failure):
            def __str__(self) -> str:
                rendered.append(True)
                return Failure.__str__(self)

        protocol.connectionLost(Watched(ConnectionDone()))
        self.assertEqual(protocol.factory.countConnections, 0)
        # dropped without a closing handshake: a reset, as on any path
        self.assertEvents(
            protocol, [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_RESET]
        )
        self.assertEqual(rendered, [])

    def test_messageWithHandshake(self) -> None:
        """
        A message that arrives together with the handshake (autobahn handles
        it after C{onOpen}) is delivered and answered.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(handshake() + clientFrame(TEXT, OPTIONS))
        self.assertEqual(self.sink.received, [(OPTIONS, protocol.sipFlow)])
        response, frames = transport.value().split(b"\r\n\r\n", 1)
        self.assertTrue(response.startswith(b"HTTP/1.1 101"))
        self.assertEqual(serverFrames(frames), [(TEXT, OK)])


class SendQueueTests(WebSocketTestsMixin, SynchronousTestCase):
    """
    autobahn's queue of chopped or synchronous sends is made only for such
    a send.
    """

    def test_idle(self) -> None:
        """
        An open connection that sent and received messages has no queue.
        """
        protocol, transport = self.open()
        protocol.dataReceived(clientFrame(TEXT, OPTIONS))
        self.assertEqual(self.frames(transport), [(TEXT, OK)])
        self.assertEqual(protocol.send_queue, ())

    def test_choppedSend(self) -> None:
        """
        A chopped send goes out whole and in order, one piece per reactor
        turn, ahead of a send made after it.
        """
        self.patch(txaio.config, "loop", self.clock)  # type: ignore[attr-defined]
        protocol, transport = self.open()
        protocol.sendData(b"abcdefg", chopsize=3)
        protocol.sendData(b"XY")
        self.assertEqual(transport.value(), b"abc")
        for _ in range(4):
            self.clock.advance(0.001)
        self.assertEqual(transport.value(), b"abcdefgXY")
        self.assertEqual(len(protocol.send_queue), 0)

    def test_syncSend(self) -> None:
        """
        A synchronous message is sent.
        """
        self.patch(txaio.config, "loop", self.clock)  # type: ignore[attr-defined]
        protocol, transport = self.open()
        protocol.sendMessage(OK, sync=True)
        self.clock.advance(0.001)
        self.assertEqual(self.frames(transport), [(TEXT, OK)])


class FrameStateTests(WebSocketTestsMixin, SynchronousTestCase):
    """
    autobahn's unmasker and UTF-8 validator are kept while a frame or a
    message is being received, and released between messages.
    """

    def test_releasedBetweenMessages(self) -> None:
        """
        After a complete message the connection holds no unmasker and no
        UTF-8 validator.
        """
        protocol, _ = self.open()
        protocol.dataReceived(clientFrame(TEXT, OPTIONS))
        self.assertEqual(len(self.sink.received), 1)
        self.assertIsNone(protocol.current_frame_masker)
        held = [v for v in vars(protocol).values() if isinstance(v, Utf8Validator)]
        self.assertEqual(held, [])

    def test_frameByteByByte(self) -> None:
        """
        A masked frame that arrives one byte at a time is unmasked whole.
        """
        protocol, _ = self.open()
        frame = clientFrame(TEXT, OPTIONS)
        for i in range(len(frame)):
            protocol.dataReceived(frame[i : i + 1])
        self.assertEqual([data for data, _ in self.sink.received], [OPTIONS])

    def test_utf8AcrossFragments(self) -> None:
        """
        A character split between two fragments, received separately, is
        valid UTF-8.
        """
        protocol, transport = self.open()
        text = "REGISTER sip:\u00e9t\u00e9@example.com".encode("utf-8")
        cut = text.index(b"\xc3") + 1
        protocol.dataReceived(clientFrame(TEXT, text[:cut], fin=False))
        protocol.dataReceived(clientFrame(0, text[cut:]))
        self.assertEqual([data for data, _ in self.sink.received], [text])
        self.assertFalse(transport.disconnecting)

    def test_invalidUtf8(self) -> None:
        """
        A text message that is not UTF-8 still fails the connection with
        C{1007}, also when the bad byte comes in a later fragment after a
        message completed.
        """
        protocol, transport = self.open()
        protocol.dataReceived(clientFrame(TEXT, OPTIONS))
        self.frames(transport)
        protocol.dataReceived(clientFrame(TEXT, b"OPTIONS \xc3", fin=False))
        self.assertEqual(self.frames(transport), [])
        protocol.dataReceived(clientFrame(0, b"(x"))
        [(opcode, payload)] = self.frames(transport)
        self.assertEqual((opcode, payload[:2]), (CLOSE, struct.pack("!H", 1007)))
        self.assertEqual(len(self.sink.received), 1)


class KeepaliveTests(SynchronousTestCase):
    """
    WebSocket pings still run on an open connection whose handshake state
    was released.
    """

    def test_pingPong(self) -> None:
        """
        A ping goes out every C{autoPingInterval}; a pong keeps the
        connection open; without one it closes as C{tcp:timeout}, leaving
        no timer.
        """
        clock = MemoryReactorClock()
        bus = RecordingBus()
        factory = SIPWebSocketFactory(
            RecordingSink(), ConnectionTable(bus, clock), clock,
            settings=ConnectionSettings(idleTimeout=0, autoPingInterval=30, autoPingTimeout=10))
        protocol = factory.buildProtocol(PEER)
        assert isinstance(protocol, SIPWebSocketProtocol)
        transport = AbortableTransport(peerAddress=PEER)
        protocol.makeConnection(transport)
        protocol.dataReceived(handshake())
        transport.clear()
        clock.advance(30)
        [(opcode, payload)] = serverFrames(transport.value())
        transport.clear()
        self.assertEqual(opcode, PING)
        protocol.dataReceived(clientFrame(PONG, payload))
        clock.advance(10)
        self.assertFalse(transport.aborted)
        clock.advance(20)
        self.assertEqual([op for op, _ in serverFrames(transport.value())], [PING])
        clock.advance(10)
        self.assertTrue(transport.aborted)
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(bus.names(protocol.sipFlow.conid),
                         [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_TIMEOUT])
        self.assertEqual(clock.getDelayedCalls(), [])


class FootprintTests(WebSocketTestsMixin, SynchronousTestCase):
    """
    The memory an open, idle connection takes.
    """

    idleTimeout = 0

    def openIdle(self) -> Any:
        protocol, transport = self.open()
        protocol.dataReceived(clientFrame(TEXT, OPTIONS))
        transport.clear()
        return protocol, transport

    def test_budget(self) -> None:
        """
        An open connection that received and answered one message takes at
        most L{IDLE_CONNECTION_BUDGET} bytes of Python heap.
        """
        count = 200
        self.openIdle()
        self.sink.received.clear()
        self.bus.events.clear()
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
            self.addCleanup(tracemalloc.stop)
        connections = []
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(count):
            connections.append(self.openIdle())
            self.sink.received.clear()
            self.bus.events.clear()
        gc.collect()
        perConnection = (tracemalloc.get_traced_memory()[0] - before) / count
        self.assertEqual(len(self.table), count + 1)
        self.assertLess(perConnection, IDLE_CONNECTION_BUDGET)
