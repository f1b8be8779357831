# -*- test-case-name: tests.test_transport_udp -*-
"""
Unit tests for L{sipcore.transport.udp}.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipcore.interfaces import IFlow
from sipcore.transport.udp import MAX_FLOWS, DatagramFlow, SIPDatagramProtocol
from tests.test_transport_support import OK, OPTIONS, RecordingSink

PEER = ("192.0.2.9", 5070)


class FakeSocket:
    def __init__(self, fail: bool = False) -> None:
        self.options: list[tuple[int, int, int]] = []
        self.fail = fail

    def setsockopt(self, level: int, name: int, value: int) -> None:
        if self.fail:
            raise OSError("not permitted")
        self.options.append((level, name, value))


class FakeDatagramTransport:
    """
    Records datagrams written; can refuse to send.
    """

    def __init__(self, sock: Any = None, refuse: bool = False) -> None:
        self.written: list[tuple[bytes, Any]] = []
        self.sock = sock or FakeSocket()
        self.refuse = refuse

    def write(self, data: bytes, addr: Any) -> None:
        if self.refuse:
            raise OSError("Message too long")
        self.written.append((data, addr))

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "127.0.0.1", 5060)

    def getHandle(self) -> Any:
        return self.sock


class DatagramTests(SynchronousTestCase):
    """
    Tests for L{SIPDatagramProtocol} and L{DatagramFlow}.
    """

    def setUp(self) -> None:
        self.sink = RecordingSink()
        self.protocol = SIPDatagramProtocol(self.sink, maxSize=1024, receiveBuffer=4096)
        self.transport = FakeDatagramTransport()
        self.protocol.makeConnection(self.transport)

    def test_receiveBuffer(self) -> None:
        """
        C{startProtocol} asks for the configured C{SO_RCVBUF}.
        """
        self.assertEqual(self.transport.sock.options, [(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])

    def test_receiveBufferBestEffort(self) -> None:
        """
        A socket that refuses the option, or a transport without a handle,
        does not stop the protocol.
        """

        class NoHandle:
            def getHost(self) -> IPv4Address:
                return IPv4Address("UDP", "127.0.0.1", 5060)

        for transport in (FakeDatagramTransport(FakeSocket(fail=True)), NoHandle()):
            protocol = SIPDatagramProtocol(self.sink)
            protocol.transport = transport
            protocol.startProtocol()
            self.assertEqual(protocol.localAddress(), ("127.0.0.1", 5060))

    def test_message(self) -> None:
        """
        A datagram goes to the sink with a flow for its peer; the answer
        through the flow goes back to the peer.
        """
        self.protocol.datagramReceived(OPTIONS, PEER)
        [(data, flow)] = self.sink.received
        self.assertEqual(data, OPTIONS)
        self.assertTrue(verifyObject(IFlow, flow))
        self.assertEqual(
            (flow.transport, flow.conid, flow.reliable, flow.remote, flow.local),
            ("udp", None, False, PEER, ("127.0.0.1", 5060)),
        )
        self.assertEqual(self.transport.written, [(OK, PEER)])
        self.assertEqual(self.protocol.received, 1)

    def test_flowPerPeer(self) -> None:
        """
        A peer's datagrams share one flow; another peer gets its own.  Past
        L{MAX_FLOWS} peers the protocol forgets the flows it kept and makes
        new ones.
        """
        self.assertEqual(self.protocol.maxFlows, MAX_FLOWS)
        other = ("192.0.2.7", 5060)
        self.protocol.datagramReceived(OPTIONS, PEER)
        self.protocol.datagramReceived(OPTIONS, PEER)
        self.protocol.datagramReceived(OPTIONS, other)
        first, again, third = [flow for _, flow in self.sink.received]
        self.assertIs(first, again)
        self.assertIsNot(first, third)
        self.assertEqual(third.remote, other)
        self.protocol.maxFlows = 2
        self.protocol.datagramReceived(OPTIONS, ("192.0.2.8", 5060))
        self.protocol.datagramReceived(OPTIONS, PEER)
        self.assertIsNot(self.sink.received[-1][1], first)
        self.assertEqual(self.sink.received[-1][1].remote, PEER)
        self.assertLessEqual(len(self.protocol._flows), 2)

    def test_ipv6Peer(self) -> None:
        """
        An IPv6 peer (a 4-tuple from the socket) has a C{(host, port)}
        remote, and answers go to the address the socket gave.
        """
        addr = ("::1", 5070, 0, 0)
        self.protocol.datagramReceived(OPTIONS, addr)
        flow = self.sink.received[0][1]
        self.assertEqual(flow.remote, ("::1", 5070))
        self.assertEqual(self.transport.written, [(OK, addr)])

    def test_sendTo(self) -> None:
        """
        C{sendTo} writes to another address from the same socket; C{close}
        does nothing.
        """
        flow = DatagramFlow(self.protocol, PEER)
        self.assertTrue(flow.sendTo(b"x", ("198.51.100.1", 5060)))
        flow.close()
        self.assertEqual(self.transport.written, [(b"x", ("198.51.100.1", 5060))])

    def test_sendFailure(self) -> None:
        """
        A socket error on send returns C{False} and is counted, not raised.
        """
        self.transport.refuse = True
        flow = DatagramFlow(self.protocol, PEER)
        self.assertFalse(flow.send(b"x"))
        self.assertEqual(self.protocol.sendErrors, 1)

    def test_tooLarge(self) -> None:
        """
        A datagram over C{maxSize} goes to C{messageRejected} and is counted
        as dropped.
        """
        big = OPTIONS + b"X" * 1024
        self.protocol.datagramReceived(big, PEER)
        self.assertEqual(self.sink.received, [])
        [(data, reason, flow)] = self.sink.rejected
        self.assertEqual((data, reason, flow.remote), (big, "Message Too Large", PEER))
        self.assertEqual(self.protocol.dropped, 1)

    def test_keepalives(self) -> None:
        """
        CRLF-only datagrams are not messages; a CRLF CRLF ping is answered
        with CRLF.
        """
        self.protocol.datagramReceived(b"\r\n\r\n", PEER)
        self.protocol.datagramReceived(b"\r\n", PEER)
        self.protocol.datagramReceived(b"\n\n\n", PEER)
        self.assertEqual(self.sink.received, [])
        self.assertEqual(self.transport.written, [(b"\r\n", PEER)])
        self.assertEqual(self.protocol.keepalives, 3)

    def test_empty(self) -> None:
        """
        An empty datagram is dropped.
        """
        self.protocol.datagramReceived(b"", PEER)
        self.assertEqual((self.sink.received, self.protocol.dropped), ([], 1))

    def test_sinkRaising(self) -> None:
        """
        An exception from the sink does not escape into the reactor: it is
        logged and counted.
        """

        def broken(data: bytes, flow: Any) -> None:
            raise RuntimeError("sink bug")

        self.sink.messageReceived = broken  # type: ignore[method-assign]
        self.protocol.datagramReceived(OPTIONS, PEER)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.protocol.dropped, 1)
