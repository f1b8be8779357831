# -*- test-case-name: tests.test_transport_stream -*-
"""
Unit tests for L{sipcore.transport.stream}: framing dispatch, keepalives,
idle timeout and the close-event mapping, with fake transports and a fake
clock.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipcore.events import TCP_CLOSED, TCP_CONNECTED, TCP_RESET, TCP_TIMEOUT
from sipcore.interfaces import IFlow
from sipcore.transport.connections import ConnectionTable
from sipcore.transport.stream import SIPStreamFactory, SIPStreamProtocol, classifyLoss
from tests.test_transport_support import OK, OPTIONS, RecordingBus, RecordingSink

LOCAL = IPv4Address("TCP", "127.0.0.1", 5060)
PEER = IPv4Address("TCP", "192.0.2.7", 40000)


class AbortableTransport(StringTransport):
    """
    A L{StringTransport} that records whether it was aborted.
    """

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class StreamTestsMixin:
    """
    Builds a connected L{SIPStreamProtocol} on a L{StringTransport}.
    """

    idleTimeout = 30.0

    def setUp(self) -> None:
        self.clock = Clock()
        self.bus = RecordingBus()
        self.sink = RecordingSink()
        self.table = ConnectionTable(self.bus, self.clock, serverId=1)
        self.factory = SIPStreamFactory(
            self.sink,
            self.table,
            self.clock,
            transport="tcp",
            maxSize=1024,
            idleTimeout=self.idleTimeout,
            closeGrace=5.0,
        )

    def connect(
        self, local: Any = LOCAL, peer: Any = PEER
    ) -> tuple[SIPStreamProtocol, AbortableTransport]:
        protocol = self.factory.buildProtocol(peer)
        transport = AbortableTransport(hostAddress=local, peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def lose(self, protocol: SIPStreamProtocol, error: BaseException) -> None:
        protocol.connectionLost(Failure(error))

    def closeEvents(self) -> list[Any]:
        return [e for e in self.bus.events if e.name != TCP_CONNECTED]


class StreamConnectionTests(StreamTestsMixin, SynchronousTestCase):
    """
    Connection set-up and message dispatch.
    """

    def test_connectedEvent(self) -> None:
        """
        An accepted connection gets a conid and fires C{tcp:connected} with
        its addresses; its flow provides L{IFlow}.
        """
        protocol, _ = self.connect()
        flow = protocol.flow
        self.assertTrue(verifyObject(IFlow, flow))
        [event] = self.bus.events
        self.assertEqual(event.name, TCP_CONNECTED)
        self.assertEqual(event.conid, flow.conid)
        self.assertEqual(event.transport, "tcp")
        self.assertEqual(event.local, ("127.0.0.1", 5060))
        self.assertEqual(event.remote, ("192.0.2.7", 40000))
        self.assertIs(self.table.get(flow.conid), flow)

    def test_ipv6(self) -> None:
        """
        IPv6 addresses are reported as text hosts.
        """
        protocol, _ = self.connect(
            IPv6Address("TCP", "::1", 5060), IPv6Address("TCP", "::1", 40001)
        )
        self.assertEqual(protocol.flow.remote, ("::1", 40001))
        self.assertEqual(protocol.flow.local, ("::1", 5060))

    def test_messageDispatched(self) -> None:
        """
        A complete message goes to the sink with the flow, and an answer
        sent through the flow is written to the transport.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(OPTIONS)
        self.assertEqual(self.sink.received, [(OPTIONS, protocol.flow)])
        self.assertEqual(transport.value(), OK)

    def test_splitAndCoalesced(self) -> None:
        """
        A message split over several reads is delivered once complete; two
        messages in one read are delivered in order.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(OPTIONS[:10])
        protocol.dataReceived(OPTIONS[10:50])
        self.assertEqual(self.sink.received, [])
        protocol.dataReceived(OPTIONS[50:] + OPTIONS.replace(b"1@test", b"2@test"))
        self.assertEqual(
            [data for data, _ in self.sink.received],
            [OPTIONS, OPTIONS.replace(b"1@test", b"2@test")],
        )

    def test_ping(self) -> None:
        """
        A CRLF CRLF ping is answered with CRLF and not given to the sink; a
        lone CRLF is ignored.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"\r\n\r\n")
        self.assertEqual(transport.value(), b"\r\n")
        transport.clear()
        protocol.dataReceived(b"\r\n" + OPTIONS)
        self.assertEqual(len(self.sink.received), 1)
        self.assertEqual(transport.value(), OK)

    def test_sinkRaising(self) -> None:
        """
        A sink that raises does not break the connection: the error is
        logged and the next message is delivered.
        """
        protocol, transport = self.connect()

        def broken(data: bytes, flow: Any) -> None:
            raise RuntimeError("sink bug")

        self.sink.messageReceived = broken  # type: ignore[method-assign]
        protocol.dataReceived(OPTIONS + OPTIONS)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertFalse(transport.disconnecting)

    def test_sendAfterClose(self) -> None:
        """
        C{send} returns C{True} while the connection is open and C{False}
        once it is closing or gone.
        """
        protocol, transport = self.connect()
        self.assertTrue(protocol.flow.send(b"x"))
        protocol.flow.close()
        self.assertFalse(protocol.flow.send(b"y"))
        self.assertEqual(transport.value(), b"x")

    def test_badTransportName(self) -> None:
        """
        The factory only takes C{tcp} and C{tls}.
        """
        self.assertRaises(ValueError, SIPStreamFactory, self.sink, self.table, self.clock, "udp")

    def test_tlsName(self) -> None:
        """
        A C{tls} factory's connections carry the transport name C{tls}.
        """
        self.factory.transportName = "tls"
        protocol, _ = self.connect()
        self.assertEqual(protocol.flow.transport, "tls")
        self.assertEqual(self.bus.events[0].transport, "tls")


class StreamCloseTests(StreamTestsMixin, SynchronousTestCase):
    """
    Each way a connection ends fires exactly one close event.
    """

    def assertClosedWith(self, protocol: SIPStreamProtocol, kind: str, reason: str) -> None:
        conid = protocol.flow.conid
        self.assertEqual(self.bus.names(conid), [TCP_CONNECTED, kind])
        self.assertEqual(self.bus.events[-1].reason, reason)
        self.assertNotIn(conid, self.table)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_peerFin(self) -> None:
        """
        A clean close by the peer fires C{tcp:closed} "closed by peer".
        """
        protocol, _ = self.connect()
        self.clock.advance(4)
        self.lose(protocol, ConnectionDone())
        self.assertClosedWith(protocol, TCP_CLOSED, "closed by peer")
        self.assertEqual(self.bus.events[-1].duration, 4)

    def test_serverClose(self) -> None:
        """
        C{flow.close()} closes gracefully; the close fires C{tcp:closed}
        "closed by server".
        """
        protocol, transport = self.connect()
        protocol.flow.close()
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)
        self.lose(protocol, ConnectionDone())
        self.assertClosedWith(protocol, TCP_CLOSED, "closed by server")

    def test_closeGrace(self) -> None:
        """
        A peer that does not let a graceful close finish is aborted after
        the grace period; the close is still C{tcp:closed}.
        """
        protocol, transport = self.connect()
        protocol.flow.close()
        self.clock.advance(4.9)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.lose(protocol, ConnectionAborted())
        self.assertClosedWith(protocol, TCP_CLOSED, "closed by server (peer did not close in time)")

    def test_reset(self) -> None:
        """
        A connection lost in a non-clean fashion fires C{tcp:reset} with the
        error's text.
        """
        protocol, _ = self.connect()
        self.lose(protocol, ConnectionLost("Connection reset by peer"))
        self.assertClosedWith(protocol, TCP_RESET, "connection lost: Connection reset by peer")

    def test_otherError(self) -> None:
        """
        Any other error also fires C{tcp:reset}.
        """
        protocol, _ = self.connect()
        self.lose(protocol, OSError("EPIPE"))
        self.assertClosedWith(protocol, TCP_RESET, "EPIPE")

    def test_serverAbort(self) -> None:
        """
        C{flow.abort()} aborts the connection: C{tcp:reset} "aborted by
        server".
        """
        protocol, transport = self.connect()
        protocol.flow.abort()
        self.assertTrue(transport.aborted)
        self.lose(protocol, ConnectionAborted())
        self.assertClosedWith(protocol, TCP_RESET, "aborted by server")

    def test_tlsError(self) -> None:
        """
        A TLS failure (as a failed handshake reports it) fires C{tcp:reset}
        naming the TLS error.
        """
        protocol, _ = self.connect()
        self.lose(protocol, SSL.Error([("SSL routines", "", "wrong version number")]))
        event = self.bus.events[-1]
        self.assertEqual(event.name, TCP_RESET)
        self.assertTrue(event.reason.startswith("TLS error: "), event.reason)
        self.assertIn("wrong version number", event.reason)

    def test_idleTimeout(self) -> None:
        """
        A connection that receives nothing for C{idleTimeout} seconds is
        aborted and fires C{tcp:timeout}.
        """
        protocol, transport = self.connect()
        self.clock.advance(29.9)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.lose(protocol, ConnectionAborted())
        self.assertClosedWith(protocol, TCP_TIMEOUT, "idle timeout (30s without data)")

    def test_idleTimeoutResetByData(self) -> None:
        """
        Received data, a ping included, restarts the idle timer.
        """
        protocol, transport = self.connect()
        self.clock.advance(20)
        protocol.dataReceived(b"\r\n\r\n")
        self.clock.advance(20)
        self.assertFalse(transport.aborted)
        self.clock.advance(10)
        self.assertTrue(transport.aborted)

    def test_protocolErrorTooLarge(self) -> None:
        """
        An oversized message is passed to C{messageRejected} with what was
        buffered, the connection is closed gracefully (so an answer can be
        flushed) and fires C{tcp:closed} "protocol error: Message Too
        Large"; later data is ignored.
        """
        protocol, transport = self.connect()

        def reject(data: bytes, reason: str, flow: Any) -> None:
            RecordingSink.messageRejected(self.sink, data, reason, flow)
            flow.send(b"SIP/2.0 413 Message Too Large\r\n\r\n")

        self.sink.messageRejected = reject  # type: ignore[method-assign]
        junk = b"X" * 1100
        protocol.dataReceived(junk)
        self.assertEqual(self.sink.rejected, [(junk, "Message Too Large", protocol.flow)])
        self.assertEqual(transport.value(), b"SIP/2.0 413 Message Too Large\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        protocol.dataReceived(OPTIONS)
        self.assertEqual(self.sink.received, [])
        self.lose(protocol, ConnectionDone())
        self.assertClosedWith(protocol, TCP_CLOSED, "protocol error: Message Too Large")

    def test_protocolErrorBadLength(self) -> None:
        """
        An invalid Content-Length is a protocol error too; a reset after it
        still fires C{tcp:closed} with the protocol error.
        """
        protocol, _ = self.connect()
        bad = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: -3")
        protocol.dataReceived(bad)
        self.assertEqual(self.sink.rejected[0][1], "Invalid Content-Length")
        self.lose(protocol, ConnectionLost())
        self.assertClosedWith(protocol, TCP_CLOSED, "protocol error: Invalid Content-Length")

    def test_exactlyOnce(self) -> None:
        """
        However often Twisted reports the loss, one close event fires.
        """
        protocol, _ = self.connect()
        self.lose(protocol, ConnectionLost())
        self.lose(protocol, ConnectionDone())
        protocol.flow.close()
        protocol.flow.abort()
        self.assertEqual(self.bus.names(protocol.flow.conid), [TCP_CONNECTED, TCP_RESET])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeoutThenError(self) -> None:
        """
        Once the idle timeout decided the close, a later error report does
        not change it.
        """
        protocol, _ = self.connect()
        self.clock.advance(30)
        self.lose(protocol, ConnectionLost("Connection reset by peer"))
        self.assertEqual(self.closeEvents()[0].name, TCP_TIMEOUT)

    def test_shutdown(self) -> None:
        """
        L{ConnectionTable.closeAll} closes the connection gracefully; it ends
        as C{tcp:closed} "server shutdown" and the shutdown L{Deferred}
        fires.
        """
        protocol, transport = self.connect()
        d = self.table.closeAll()
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(d)
        self.lose(protocol, ConnectionDone())
        self.successResultOf(d)
        self.assertClosedWith(protocol, TCP_CLOSED, "server shutdown")

    def test_refusedDuringShutdown(self) -> None:
        """
        A connection accepted during shutdown is aborted at once and fires
        no event, not even when it is lost.
        """
        self.table.closeAll()
        protocol, transport = self.connect()
        self.assertTrue(transport.aborted)
        self.assertIsNone(protocol.flow.conid)
        protocol.dataReceived(OPTIONS)
        self.lose(protocol, ConnectionAborted())
        self.assertEqual(self.bus.events, [])
        self.assertEqual(self.sink.received, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class NoIdleTimeoutTests(StreamTestsMixin, SynchronousTestCase):
    """
    C{idleTimeout=0} disables the idle timer.
    """

    idleTimeout = 0

    def test_noTimer(self) -> None:
        """
        No timer is set, and the connection stays up.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(OPTIONS)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10**6)
        self.assertFalse(transport.disconnecting)


class ClassifyLossTests(SynchronousTestCase):
    """
    Tests for L{classifyLoss}.
    """

    def test_mapping(self) -> None:
        """
        Clean closes are C{tcp:closed}; everything else is C{tcp:reset}.
        """
        self.assertEqual(
            classifyLoss(Failure(ConnectionDone()), False), (TCP_CLOSED, "closed by peer")
        )
        self.assertEqual(
            classifyLoss(Failure(ConnectionDone()), True), (TCP_CLOSED, "closed by server")
        )
        self.assertEqual(
            classifyLoss(Failure(ConnectionAborted()), False), (TCP_RESET, "aborted by server")
        )
        self.assertEqual(
            classifyLoss(Failure(ConnectionLost()), False), (TCP_RESET, "connection lost")
        )
        self.assertEqual(
            classifyLoss(Failure(ConnectionLost("x")), False), (TCP_RESET, "connection lost: x")
        )
