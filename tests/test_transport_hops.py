# -*- test-case-name: tests.test_transport_hops -*-
"""
Tests for L{sipcore.transport.hops}: the flow to a next hop.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipcore.interfaces import IHopConnector
from sipcore.testing import FakeDatagramTransport, FakeStreamFlow, RecordingBus
from sipcore.transport.connections import ConnectionTable
from sipcore.transport.hops import HopConnector
from sipcore.transport.udp import DatagramFlow, SIPDatagramProtocol
from tests.test_transport_support import RecordingSink


class _Spec:
    def __init__(self, transport: str) -> None:
        self.transport = transport


class FakeListener:
    """
    What L{HopConnector} reads of a listener; no address until started.

    @ivar calls: how many times L{getHost} was called.
    """

    def __init__(self, transport: str, port: int, factory: Any = None,
                 host: str = "0.0.0.0") -> None:
        self.spec = _Spec(transport)
        self.port = port
        self.factory = factory
        self.host = host
        self.started = True
        self.calls = 0

    def getHost(self) -> IPv4Address | None:
        self.calls += 1
        return IPv4Address("UDP", self.host, self.port) if self.started else None


class HopConnectorTests(SynchronousTestCase):
    """
    L{HopConnector} finds connections and UDP addresses, never opening one.
    """

    def setUp(self) -> None:
        self.table = ConnectionTable(RecordingBus(), task.Clock())
        self.udp = SIPDatagramProtocol(RecordingSink(), receiveBuffer=0)
        self.udpTransport = FakeDatagramTransport()
        self.udp.transport = self.udpTransport
        self.listeners: list[Any] = [FakeListener("tcp", 5060),
                                     FakeListener("udp", 5060, self.udp)]
        self.hops = HopConnector(self.table, self.listeners)

    def test_interface(self) -> None:
        """
        L{HopConnector} provides L{IHopConnector}.
        """
        self.assertTrue(verifyObject(IHopConnector, self.hops))

    def test_connection(self) -> None:
        """
        A live connection is found by its conid until it closes.
        """
        flow = FakeStreamFlow("tcp", remote=("192.0.2.1", 40000))
        conid = self.table.add(flow)
        self.assertIs(self.hops.connection(conid), flow)
        self.table.remove(conid, "tcp:closed", "closed by peer")
        self.assertIsNone(self.hops.connection(conid))

    def test_udp(self) -> None:
        """
        A UDP hop is reached through the UDP listener's socket.
        """
        flow = self.hops.flowTo("udp", "192.0.2.7", 5062)
        assert isinstance(flow, DatagramFlow)
        self.assertTrue(flow.send(b"x"))
        self.assertEqual(self.udpTransport.written,
                         [(b"x", ("192.0.2.7", 5062))])

    def test_noUDPListener(self) -> None:
        """
        Without a UDP listener a UDP hop cannot be reached.
        """
        del self.listeners[1]
        self.assertIsNone(self.hops.flowTo("udp", "192.0.2.7", 5062))

    def test_stream(self) -> None:
        """
        A stream hop is reached over a live connection of its transport to
        its address, the host compared without case; none is opened.
        """
        flow = FakeStreamFlow("tls", remote=("2001:DB8::1", 5061))
        self.table.add(flow)
        self.assertIs(self.hops.flowTo("tls", "2001:db8::1", 5061), flow)
        self.assertIsNone(self.hops.flowTo("tcp", "2001:db8::1", 5061))
        self.assertIsNone(self.hops.flowTo("tls", "2001:db8::1", 5062))
        self.assertEqual(len(self.table), 1)

    def test_listening(self) -> None:
        """
        The listeners' addresses are read until every listener has one,
        then the same tuple is returned without reading them again, until
        the listeners change.
        """
        self.listeners[0].started = False
        self.assertEqual(self.hops.listening(), (("udp", "0.0.0.0", 5060),))
        self.listeners[0].started = True
        first = self.hops.listening()
        self.assertEqual(first, (("tcp", "0.0.0.0", 5060), ("udp", "0.0.0.0", 5060)))
        calls = [listener.calls for listener in self.listeners]
        self.assertIs(self.hops.listening(), first)
        self.assertEqual([listener.calls for listener in self.listeners], calls)
        del self.listeners[0]
        self.assertEqual(self.hops.listening(), (("udp", "0.0.0.0", 5060),))
