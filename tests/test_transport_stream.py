# -*- test-case-name: tests.test_transport_stream -*-
"""
Unit tests for L{sipcore.transport.stream}: framing dispatch, keepalives,
idle timeout and the close-event mapping, with fake transports and a fake
clock.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from OpenSSL import SSL
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipcore.events import TCP_CLOSED, TCP_CONNECTED, TCP_RESET, TCP_TIMEOUT
from sipcore.interfaces import IStreamFlow
from sipcore.transport.connections import ConnectionTable
from sipcore.transport.settings import ConnectionSettings
from sipcore.transport.stream import (
    SIPStreamFactory,
    SIPStreamProtocol,
    StreamFlow,
    classifyLoss,
)
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


def flowOf(protocol: SIPStreamProtocol) -> StreamFlow:
    """
    The flow of a connected C{protocol}.
    """
    assert protocol.flow is not None
    return protocol.flow


def conidOf(protocol: SIPStreamProtocol) -> int:
    """
    The connection id of a connected C{protocol}.
    """
    conid = flowOf(protocol).conid
    assert conid is not None
    return conid


class StreamTestsMixin:
    """
    Builds a connected L{SIPStreamProtocol} on a L{StringTransport}.
    """

    idleTimeout = 30.0
    handshakeTimeout = 0.0
    unregisteredIdleTimeout = 0.0
    maxSize = 1024

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
            settings=ConnectionSettings(
                maxSize=self.maxSize,
                idleTimeout=self.idleTimeout,
                closeGrace=5.0,
                handshakeTimeout=self.handshakeTimeout,
                unregisteredIdleTimeout=self.unregisteredIdleTimeout,
            ),
        )

    def connect(
        self, local: Any = LOCAL, peer: Any = PEER
    ) -> tuple[SIPStreamProtocol, AbortableTransport]:
        protocol = self.factory.buildProtocol(peer)
        assert isinstance(protocol, SIPStreamProtocol)
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
        its addresses; its flow provides L{IStreamFlow}.
        """
        protocol, _ = self.connect()
        flow = flowOf(protocol)
        self.assertTrue(verifyObject(IStreamFlow, flow))
        [event] = self.bus.events
        self.assertEqual(event.name, TCP_CONNECTED)
        self.assertEqual(event.conid, flow.conid)
        self.assertEqual(event.transport, "tcp")
        self.assertEqual(event.local, ("127.0.0.1", 5060))
        self.assertEqual(event.remote, ("192.0.2.7", 40000))
        self.assertIs(self.table.get(conidOf(protocol)), flow)

    def test_ipv6(self) -> None:
        """
        IPv6 addresses are reported as text hosts.
        """
        protocol, _ = self.connect(
            IPv6Address("TCP", "::1", 5060), IPv6Address("TCP", "::1", 40001)
        )
        self.assertEqual(flowOf(protocol).remote, ("::1", 40001))
        self.assertEqual(flowOf(protocol).local, ("::1", 5060))

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
        self.assertTrue(flowOf(protocol).send(b"x"))
        flowOf(protocol).close()
        self.assertFalse(flowOf(protocol).send(b"y"))
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
        self.assertEqual(flowOf(protocol).transport, "tls")
        self.assertEqual(self.bus.events[0].transport, "tls")


class StreamCloseTests(StreamTestsMixin, SynchronousTestCase):
    """
    Each way a connection ends fires exactly one close event.
    """

    def assertClosedWith(self, protocol: SIPStreamProtocol, kind: str, reason: str) -> None:
        conid = conidOf(protocol)
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
        flowOf(protocol).close()
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
        flowOf(protocol).close()
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
        flowOf(protocol).abort()
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
        self.assertTrue(str(event.reason).startswith("TLS error: "), event.reason)
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
        flowOf(protocol).close()
        flowOf(protocol).abort()
        self.assertEqual(self.bus.names(conidOf(protocol)), [TCP_CONNECTED, TCP_RESET])
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
        self.assertIsNone(flowOf(protocol).conid)
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


class HandshakeTimeoutTests(StreamTestsMixin, SynchronousTestCase):
    """
    A connection must deliver its first complete SIP message (for TLS: after
    the TLS handshake) within C{handshakeTimeout} seconds of its accept.
    """

    handshakeTimeout = 10.0

    def assertTimedOut(self, protocol: SIPStreamProtocol, transport: AbortableTransport,
                       reason: str) -> None:
        self.assertTrue(transport.aborted)
        self.lose(protocol, ConnectionAborted())
        [event] = self.closeEvents()
        self.assertEqual((event.name, event.reason), (TCP_TIMEOUT, reason))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_silent(self) -> None:
        """
        A connection that sends nothing is aborted after C{handshakeTimeout}
        seconds, long before the idle timeout: one C{tcp:timeout} naming the
        handshake timeout, and no timer left.
        """
        protocol, transport = self.connect()
        self.clock.advance(9.9)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTimedOut(protocol, transport,
                            "handshake timeout (no complete SIP message within 10s)")

    def test_pingsDoNotCount(self) -> None:
        """
        CRLF keepalives are answered but are not a first message: they do
        not hold the deadline off.
        """
        protocol, transport = self.connect()
        for _ in range(4):
            self.clock.advance(2.5)
            if not transport.aborted:
                protocol.dataReceived(b"\r\n\r\n")
        self.assertTimedOut(protocol, transport,
                            "handshake timeout (no complete SIP message within 10s)")

    def test_firstMessageEndsIt(self) -> None:
        """
        Once a complete message arrived the deadline is gone: only the idle
        timer is left.
        """
        protocol, transport = self.connect()
        self.clock.advance(9)
        protocol.dataReceived(OPTIONS)
        self.assertEqual(len(self.sink.received), 1)
        [idle] = self.clock.getDelayedCalls()
        self.assertEqual(idle.getTime(), 9 + self.idleTimeout)
        self.clock.advance(5)
        self.assertFalse(transport.aborted)

    def test_tlsHandshakeNotDone(self) -> None:
        """
        On TLS, a connection whose TLS handshake did not complete in time
        (a ClientHello trickled a byte a second reaches the protocol as no
        data at all) is timed out with a reason naming the TLS handshake.
        """
        self.factory.transportName = "tls"
        protocol, transport = self.connect()
        self.assertTrue(IHandshakeListener.providedBy(protocol))
        self.clock.advance(10)
        self.assertTimedOut(protocol, transport,
                            "handshake timeout (TLS handshake not completed within 10s)")

    def test_tlsHandshakeDoneNoMessage(self) -> None:
        """
        On TLS, a completed TLS handshake does not end the deadline: the
        first SIP message must still come in time.
        """
        self.factory.transportName = "tls"
        protocol, transport = self.connect()
        self.clock.advance(1)
        protocol.handshakeCompleted()
        self.clock.advance(9)
        self.assertTimedOut(protocol, transport,
                            "handshake timeout (no complete SIP message within 10s)")

    def test_closedBefore(self) -> None:
        """
        A connection that closes before the deadline leaves no timer.
        """
        protocol, _ = self.connect()
        self.lose(protocol, ConnectionDone())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual([e.name for e in self.closeEvents()], [TCP_CLOSED])

    def test_refused(self) -> None:
        """
        A connection the table refused sets no deadline.
        """
        self.table.closeAll()
        _, transport = self.connect()
        self.assertTrue(transport.aborted)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_badValue(self) -> None:
        """
        A negative C{handshakeTimeout} is refused.
        """
        self.assertRaises(ValueError, ConnectionSettings, handshakeTimeout=-1)


class UnregisteredIdleTimeoutTests(StreamTestsMixin, SynchronousTestCase):
    """
    A connection without a live binding has the short
    C{unregisteredIdleTimeout}; one the registrar bound
    (L{ConnectionTable.bound}) keeps the long C{idleTimeout} until its
    binding's expiry.
    """

    idleTimeout = 3600.0
    unregisteredIdleTimeout = 120.0

    def assertIdleClose(self, protocol: SIPStreamProtocol, transport: AbortableTransport,
                        at: float, reason: str) -> None:
        self.clock.advance(at - 0.1 - self.clock.seconds())
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.lose(protocol, ConnectionAborted())
        [event] = self.closeEvents()
        self.assertEqual((event.name, event.reason), (TCP_TIMEOUT, reason))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_neverRegistered(self) -> None:
        """
        A connection that never got a binding is closed after the short
        timeout, even though it sent a message.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(OPTIONS)
        self.assertIdleClose(protocol, transport, 120,
                             "idle timeout (120s without data, never registered)")

    def test_registered(self) -> None:
        """
        A connection bound until well after the long timeout keeps the long
        one.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(OPTIONS)
        self.table.bound(conidOf(protocol), self.clock.seconds() + 7200)
        self.assertIdleClose(protocol, transport, 3600, "idle timeout (3600s without data)")

    def test_boundedByExpiry(self) -> None:
        """
        A silent connection whose binding expires first is closed the short
        timeout after the expiry.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(OPTIONS)
        self.table.bound(conidOf(protocol), 600)
        self.assertIdleClose(protocol, transport, 720,
                             "idle timeout (720s without data, registration expired)")

    def test_afterExpiry(self) -> None:
        """
        After its binding expired, a connection is an unregistered one
        again: data restarts the short timeout.
        """
        protocol, transport = self.connect()
        self.table.bound(conidOf(protocol), 600)
        self.clock.advance(700)
        protocol.dataReceived(b"\r\n\r\n")
        self.assertIdleClose(protocol, transport, 820,
                             "idle timeout (120s without data, registration expired)")

    def test_neverShortened(self) -> None:
        """
        A binding that ends sooner than one already saved (another address
        of record on the same connection) does not shorten the timeout.
        """
        protocol, transport = self.connect()
        self.table.bound(conidOf(protocol), 600)
        self.table.bound(conidOf(protocol), 300)
        self.assertIdleClose(protocol, transport, 720,
                             "idle timeout (720s without data, registration expired)")

    def test_unknownConnection(self) -> None:
        """
        L{ConnectionTable.bound} ignores a connection that is not live, and
        a connection that closed leaves no timer.
        """
        protocol, _ = self.connect()
        conid = conidOf(protocol)
        self.lose(protocol, ConnectionDone())
        self.table.bound(conid, 600)
        self.table.bound(10**9, 600)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_longerThanIdle(self) -> None:
        """
        An unregistered timeout not shorter than the idle timeout changes
        nothing: the idle timeout applies.
        """
        self.factory.settings = replace(self.factory.settings, unregisteredIdleTimeout=7200)
        protocol, transport = self.connect()
        self.assertIdleClose(protocol, transport, 3600, "idle timeout (3600s without data)")


class NoLongIdleTimeoutTests(StreamTestsMixin, SynchronousTestCase):
    """
    C{idleTimeout=0} with a short unregistered timeout: connections without
    a live binding still time out, bound ones only once their binding
    expired.
    """

    idleTimeout = 0
    unregisteredIdleTimeout = 60.0

    def test_bound(self) -> None:
        """
        A bound connection is kept until its binding's expiry plus the short
        timeout.
        """
        protocol, transport = self.connect()
        self.clock.advance(30)
        self.table.bound(conidOf(protocol), 10**5)
        self.clock.advance(10**5 + 29 - self.clock.seconds())
        self.assertFalse(transport.aborted)
        self.clock.advance(31)
        self.assertTrue(transport.aborted)


class LongLineTests(StreamTestsMixin, SynchronousTestCase):
    """
    A start or header line over C{maxLineLength} bytes is a framing error:
    the sink may answer it, then the connection closes.
    """

    maxSize = 65536

    def test_longHeaderLine(self) -> None:
        """
        A complete message with a 9000-byte header line is handed to
        C{messageRejected} ("Line too long"), the connection is closed
        gracefully and fires C{tcp:closed} with the protocol error.
        """
        protocol, transport = self.connect()
        long = OPTIONS.replace(b"Content-Length: 0", b"X-Long: " + b"a" * 9000 +
                               b"\r\nContent-Length: 0")
        protocol.dataReceived(long)
        self.assertEqual(self.sink.received, [])
        self.assertEqual(self.sink.rejected, [(long, "Line too long", protocol.flow)])
        self.assertTrue(transport.disconnecting)
        self.lose(protocol, ConnectionDone())
        [event] = self.closeEvents()
        self.assertEqual((event.name, event.reason), (TCP_CLOSED, "protocol error: Line too long"))

    def test_trickledLine(self) -> None:
        """
        A line that never ends is refused once it passes the limit, not once
        the message size is reached.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"OPTIONS sip:x SIP/2.0\r\nX-Long: ")
        for _ in range(20):
            if transport.disconnecting:
                break
            protocol.dataReceived(b"a" * 1000)
        self.assertTrue(transport.disconnecting)
        [(data, reason, _)] = self.sink.rejected
        self.assertEqual(reason, "Line too long")
        self.assertLess(len(data), 10000)

    def test_limitConfigurable(self) -> None:
        """
        The settings' C{maxLineLength} sets the limit.
        """
        factory = SIPStreamFactory(self.sink, self.table, self.clock,
                                   settings=ConnectionSettings(maxLineLength=100))
        protocol = factory.buildProtocol(PEER)
        assert isinstance(protocol, SIPStreamProtocol)
        transport = AbortableTransport(hostAddress=LOCAL, peerAddress=PEER)
        protocol.makeConnection(transport)
        protocol.dataReceived(OPTIONS.replace(b"Content-Length: 0", b"X: " + b"a" * 101 +
                                              b"\r\nContent-Length: 0"))
        self.assertEqual(self.sink.rejected[0][1], "Line too long")


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
