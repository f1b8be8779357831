# -*- test-case-name: tests.test_connections -*-
"""
Tests for L{sipcore.transport.connections}.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipcore.events import (
    TCP_CLOSED,
    TCP_CONNECTED,
    TCP_RESET,
    TCP_TIMEOUT,
    WEBSOCKET_CLOSED,
    WEBSOCKET_CONNECTED,
    ConnectionEvent,
)
from sipcore.interfaces import IStreamFlow
from sipcore.testing import FakeStreamFlow
from sipcore.transport.connections import (
    ConnectionTable,
    ShuttingDown,
    StreamFlow,
    addressOf,
)
from tests.test_transport_support import RecordingBus


class FakeProtocol:
    """
    What a L{StreamFlow} delegates to; records the calls and can report its
    close to a table when asked to close.
    """

    def __init__(self, table: ConnectionTable | None = None, closes: bool = True) -> None:
        self.table = table
        self.closes = closes
        self.sent: list[bytes] = []
        self.closeCalls = 0
        self.abortCalls = 0
        self.flow: StreamFlow | None = None

        self.boundUntil: list[float] = []

    def flowSend(self, data: bytes) -> bool:
        self.sent.append(data)
        return True

    def flowClose(self) -> None:
        self.closeCalls += 1
        if self.closes and self.table is not None and self.flow is not None:
            self.table.remove(self.flow.conid, TCP_RESET, "whatever the transport says")

    def flowAbort(self) -> None:
        self.abortCalls += 1

    def flowBound(self, until: float) -> None:
        self.boundUntil.append(until)


def makeFlow(
    transport: str = "tcp", table: ConnectionTable | None = None, closes: bool = True
) -> tuple[StreamFlow, FakeProtocol]:
    protocol = FakeProtocol(table, closes)
    flow = StreamFlow(protocol, transport, ("127.0.0.1", 5060), ("192.0.2.1", 40000))
    protocol.flow = flow
    return flow, protocol


class FlakyBus(RecordingBus):
    """
    A bus that breaks its promise never to raise.
    """

    def fire(self, event: ConnectionEvent) -> Deferred[None]:
        raise RuntimeError("bus bug")


class StreamFlowTests(SynchronousTestCase):
    """
    Tests for L{StreamFlow}.
    """

    def test_interface(self) -> None:
        """
        A L{StreamFlow} provides L{IStreamFlow} and is reliable.
        """
        flow, _ = makeFlow()
        self.assertTrue(verifyObject(IStreamFlow, flow))
        self.assertTrue(flow.reliable)
        self.assertIsNone(flow.conid)

    def test_delegates(self) -> None:
        """
        C{send}, C{sendTo} (ignoring the address), C{close}, C{abort} and
        C{bound} call the protocol.
        """
        flow, protocol = makeFlow()
        self.assertTrue(flow.send(b"a"))
        self.assertTrue(flow.sendTo(b"b", ("203.0.113.9", 1)))
        flow.close()
        flow.abort()
        flow.bound(30.0)
        self.assertEqual(protocol.sent, [b"a", b"b"])
        self.assertEqual((protocol.closeCalls, protocol.abortCalls), (1, 1))
        self.assertEqual(protocol.boundUntil, [30.0])


class FakeStreamFlowTests(SynchronousTestCase):
    """
    Tests for L{sipcore.testing.FakeStreamFlow}.
    """

    def test_interface(self) -> None:
        """
        A L{FakeStreamFlow} provides L{IStreamFlow}; C{abort} closes it and
        C{bound} records the expiry.
        """
        flow = FakeStreamFlow()
        self.assertTrue(verifyObject(IStreamFlow, flow))
        flow.bound(12.5)
        flow.abort()
        self.assertEqual((flow.boundUntil, flow.aborted, flow.closed), ([12.5], True, True))
        self.assertFalse(flow.send(b"x"))


class AddressOfTests(SynchronousTestCase):
    """
    Tests for L{addressOf}.
    """

    def test_addresses(self) -> None:
        """
        IPv4 and IPv6 addresses and UDP tuples become C{(host, port)} with
        text hosts.
        """
        self.assertEqual(addressOf(IPv4Address("TCP", "10.0.0.1", 5)), ("10.0.0.1", 5))
        self.assertEqual(addressOf(IPv6Address("TCP", "::1", 6)), ("::1", 6))
        self.assertEqual(addressOf(("::1", 7, 0, 0)), ("::1", 7))
        self.assertEqual(addressOf((b"10.0.0.2", 8)), ("10.0.0.2", 8))
        self.assertEqual(addressOf(object()), ("", 0))


class ConnectionTableTests(SynchronousTestCase):
    """
    Tests for L{ConnectionTable}.
    """

    def setUp(self) -> None:
        self.bus = RecordingBus()
        self.clock = Clock()
        self.clock.advance(1000)
        self.table = ConnectionTable(self.bus, self.clock, serverId=7, closeGrace=2.0)

    def test_addAssignsIncreasingIds(self) -> None:
        """
        C{add} gives each connection a new positive id, larger than the
        previous one, sets it on the flow, and counts it.
        """
        flow1, _ = makeFlow()
        flow2, _ = makeFlow()
        conid1 = self.table.add(flow1)
        conid2 = self.table.add(flow2)
        self.assertGreater(conid1, 0)
        self.assertGreater(conid2, conid1)
        self.assertEqual((flow1.conid, flow2.conid), (conid1, conid2))
        self.assertEqual(self.table.opened, 2)

    def test_idsNeverReused(self) -> None:
        """
        Ids are unique in the process, even across tables and after removal.
        """
        other = ConnectionTable(RecordingBus(), self.clock)
        seen = set()
        for table in (self.table, other, self.table):
            flow, _ = makeFlow()
            conid = table.add(flow)
            table.remove(conid, TCP_CLOSED, "x")
            seen.add(conid)
        self.assertEqual(len(seen), 3)

    def test_addFiresConnected(self) -> None:
        """
        C{add} fires C{tcp:connected} with the flow's transport and
        addresses, the clock's time and the server id.
        """
        flow, _ = makeFlow("wss")
        conid = self.table.add(flow)
        [event] = self.bus.events
        self.assertEqual(event.name, TCP_CONNECTED)
        self.assertEqual(event.conid, conid)
        self.assertEqual(event.transport, "wss")
        self.assertEqual(event.local, ("127.0.0.1", 5060))
        self.assertEqual(event.remote, ("192.0.2.1", 40000))
        self.assertEqual(event.time, 1000)
        self.assertEqual(event.serverId, 7)
        self.assertIsNone(event.reason)

    def test_queries(self) -> None:
        """
        C{get}, C{len}, C{in} and iteration see live connections only.
        """
        flow1, _ = makeFlow()
        flow2, _ = makeFlow()
        conid1 = self.table.add(flow1)
        conid2 = self.table.add(flow2)
        self.assertEqual(len(self.table), 2)
        self.assertIs(self.table.get(conid1), flow1)
        self.assertEqual(set(self.table), {flow1, flow2})
        self.table.remove(conid1, TCP_CLOSED, "closed by peer")
        self.assertIsNone(self.table.get(conid1))
        self.assertNotIn(conid1, self.table)
        self.assertIn(conid2, self.table)
        self.assertEqual(list(self.table), [flow2])
        self.assertEqual(len(self.table), 1)

    def test_removeFiresOneCloseEvent(self) -> None:
        """
        C{remove} fires exactly the close event it is given, with the reason
        and the time the connection was open, and counts it.
        """
        for kind in (TCP_CLOSED, TCP_RESET, TCP_TIMEOUT):
            self.bus.events.clear()
            flow, _ = makeFlow()
            conid = self.table.add(flow)
            self.clock.advance(12.5)
            self.assertTrue(self.table.remove(conid, kind, "because"))
            self.assertEqual(self.bus.names(), [TCP_CONNECTED, kind])
            event = self.bus.events[-1]
            self.assertEqual(
                (event.conid, event.reason, event.duration, event.transport),
                (conid, "because", 12.5, "tcp"),
            )
            self.assertIsNone(event.wsCode)
        self.assertEqual(self.table.closed, {TCP_CLOSED: 1, TCP_RESET: 1, TCP_TIMEOUT: 1})

    def test_removeIdempotent(self) -> None:
        """
        A second C{remove} of the same connection, or of an unknown or
        C{None} id, fires nothing.
        """
        flow, _ = makeFlow()
        conid = self.table.add(flow)
        self.assertTrue(self.table.remove(conid, TCP_RESET, "first"))
        self.assertFalse(self.table.remove(conid, TCP_CLOSED, "second"))
        self.assertFalse(self.table.remove(10**9, TCP_CLOSED, "unknown"))
        self.assertFalse(self.table.remove(None, TCP_CLOSED, "none"))
        self.assertEqual(self.bus.names(), [TCP_CONNECTED, TCP_RESET])
        self.assertEqual(self.table.closed[TCP_CLOSED], 0)

    def test_removeRejectsOtherKinds(self) -> None:
        """
        C{remove} only takes close event names.
        """
        flow, _ = makeFlow()
        conid = self.table.add(flow)
        self.assertRaises(ValueError, self.table.remove, conid, WEBSOCKET_CLOSED, "x")
        self.assertIn(conid, self.table)

    def test_websocketEvents(self) -> None:
        """
        After C{websocketOpened}, C{remove} fires C{websocket:closed} with the
        close code and reason, and the C{tcp:*} event.
        """
        flow, _ = makeFlow("ws")
        conid = self.table.add(flow)
        self.table.websocketOpened(conid)
        self.table.websocketOpened(conid)
        self.clock.advance(3)
        self.table.remove(conid, TCP_CLOSED, "closed by peer", 1000, "bye")
        self.assertEqual(
            self.bus.names(),
            [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED, TCP_CLOSED],
        )
        wsClosed = self.bus.named(WEBSOCKET_CLOSED)[0]
        self.assertEqual(
            (wsClosed.conid, wsClosed.wsCode, wsClosed.wsReason, wsClosed.duration),
            (conid, 1000, "bye", 3),
        )
        self.assertIsNone(self.bus.named(TCP_CLOSED)[0].wsCode)

    def test_websocketNeverOpened(self) -> None:
        """
        A WebSocket connection whose handshake never completed fires no
        C{websocket:closed}.
        """
        flow, _ = makeFlow("ws")
        conid = self.table.add(flow)
        self.table.remove(conid, TCP_CLOSED, "refused")
        self.assertEqual(self.bus.names(), [TCP_CONNECTED, TCP_CLOSED])

    def test_websocketOpenedUnknown(self) -> None:
        """
        C{websocketOpened} of an unknown connection does nothing.
        """
        self.table.websocketOpened(10**9)
        self.assertEqual(self.bus.events, [])

    def test_busRaising(self) -> None:
        """
        A bus that raises does not stop C{add} or C{remove}; the error is
        logged.
        """
        table = ConnectionTable(FlakyBus(), self.clock)
        flow, _ = makeFlow()
        conid = table.add(flow)
        self.assertTrue(table.remove(conid, TCP_CLOSED, "x"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_closeAllEmpty(self) -> None:
        """
        C{closeAll} with no connection fires at once and leaves no timer.
        """
        self.assertIsNone(self.successResultOf(self.table.closeAll()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeAllClosesEveryConnection(self) -> None:
        """
        C{closeAll} asks every connection to close; each ends with one
        C{tcp:closed} carrying the shutdown reason, whatever the transport
        reported; the L{Deferred} fires when the last one is gone and no
        timer is left.
        """
        flows = [makeFlow(table=self.table) for _ in range(3)]
        conids = [self.table.add(flow) for flow, _ in flows]
        d = self.table.closeAll("going down")
        self.successResultOf(d)
        self.assertEqual([p.closeCalls for _, p in flows], [1, 1, 1])
        self.assertEqual(len(self.table), 0)
        for conid in conids:
            self.assertEqual(self.bus.names(conid), [TCP_CONNECTED, TCP_CLOSED])
        self.assertEqual({e.reason for e in self.bus.named(TCP_CLOSED)}, {"going down"})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeAllWaits(self) -> None:
        """
        The L{Deferred} of C{closeAll} has no result while a connection is
        still open, and fires when it reports its close.
        """
        flow, protocol = makeFlow(table=self.table, closes=False)
        conid = self.table.add(flow)
        d = self.table.closeAll()
        self.assertNoResult(d)
        self.assertEqual(protocol.closeCalls, 1)
        self.table.remove(conid, TCP_RESET, "peer reset")
        self.successResultOf(d)
        self.assertEqual(self.bus.named(TCP_CLOSED)[0].reason, "server shutdown")
        self.assertEqual(self.bus.named(TCP_RESET), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeAllAbortsAfterGrace(self) -> None:
        """
        A connection still open after the grace period is aborted; one that
        never reports its close is removed after a second grace period.
        """
        flow, protocol = makeFlow(table=self.table, closes=False)
        conid = self.table.add(flow)
        d = self.table.closeAll()
        self.clock.advance(1.9)
        self.assertEqual(protocol.abortCalls, 0)
        self.clock.advance(0.1)
        self.assertEqual(protocol.abortCalls, 1)
        self.assertNoResult(d)
        self.clock.advance(2.0)
        self.successResultOf(d)
        self.assertEqual(self.bus.names(conid), [TCP_CONNECTED, TCP_CLOSED])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_refuseDuringShutdown(self) -> None:
        """
        After C{closeAll}, C{add} raises L{ShuttingDown}, fires nothing and
        counts the refusal.
        """
        self.table.closeAll()
        flow, _ = makeFlow()
        self.assertRaises(ShuttingDown, self.table.add, flow)
        self.assertIsNone(flow.conid)
        self.assertEqual(self.bus.events, [])
        self.assertEqual(self.table.refused, 1)
        self.assertTrue(self.table.shuttingDown)

    def test_closeAllTwice(self) -> None:
        """
        A second C{closeAll} does not ask connections to close again, and
        both L{Deferred}s fire when they are gone.
        """
        flow, protocol = makeFlow(table=self.table, closes=False)
        conid = self.table.add(flow)
        d1 = self.table.closeAll()
        d2 = self.table.closeAll()
        self.assertEqual(protocol.closeCalls, 1)
        self.table.remove(conid, TCP_CLOSED, "x")
        self.successResultOf(d1)
        self.successResultOf(d2)
