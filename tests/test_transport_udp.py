# -*- test-case-name: tests.test_transport_udp -*-
"""
Unit tests for L{sipcore.transport.udp}.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.interfaces import ISystemHandle
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

import sipcore.message
import sipcore.sip.core
from sipcore.interfaces import IFlow
from sipcore.message import parseMessage
from sipcore.sip.core import SIPCore
from sipcore.sip.limits import RateLimiter
from sipcore.testing import FakeDatagramTransport
from sipcore.transport.udp import (
    DEFAULT_READ_PER_TURN,
    MAX_FLOWS,
    DatagramFlow,
    SIPDatagramProtocol,
)
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


@implementer(ISystemHandle)
class SocketTransport(FakeDatagramTransport):
    """
    A L{FakeDatagramTransport} whose handle is a L{FakeSocket}.
    """

    def __init__(self, sock: FakeSocket | None = None) -> None:
        super().__init__()
        self.sock = sock or FakeSocket()

    def getHandle(self) -> FakeSocket:
        return self.sock


class DatagramTests(SynchronousTestCase):
    """
    Tests for L{SIPDatagramProtocol} and L{DatagramFlow}.
    """

    def setUp(self) -> None:
        self.sink = RecordingSink()
        self.protocol = SIPDatagramProtocol(self.sink, maxSize=1024, receiveBuffer=4096)
        self.transport = SocketTransport()
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
        for transport in (SocketTransport(FakeSocket(fail=True)), FakeDatagramTransport()):
            protocol = SIPDatagramProtocol(self.sink)
            protocol.transport = transport
            protocol.startProtocol()
            self.assertEqual(protocol.localAddress(), ("127.0.0.1", 5060))

    def test_readPerTurn(self) -> None:
        """
        The socket reads at most C{readPerTurn} bytes of datagrams per
        turn: C{startProtocol} sets the port's C{maxThroughput}, here on a
        real port of Twisted's epoll reactor.
        """
        from twisted.internet.epollreactor import EPollReactor

        self.assertEqual(self.transport.maxThroughput, DEFAULT_READ_PER_TURN)  # type: ignore[attr-defined]
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        port = reactor.listenUDP(0, SIPDatagramProtocol(self.sink, readPerTurn=1000),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertEqual(port.maxThroughput, 1000)
        self.assertRaises(ValueError, SIPDatagramProtocol, self.sink, readPerTurn=0)

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


FLOODER = ("192.0.2.66", 5070)


def request(n: int, host: str) -> bytes:
    """
    An OPTIONS for the server itself from C{host}, the C{n}th.
    """
    return (
        "OPTIONS sip:example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP {host}:5070;branch=z9hG4bKudp{n}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:a@example.com>;tag=1\r\n"
        "To: <sip:example.com>\r\n"
        "Call-ID: udp-{host}-{n}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).format(n=n, host=host).encode()


class EarlyDropTests(SynchronousTestCase):
    """
    A datagram from a source the rate limiter drops for now is dropped on
    arrival: it never reaches the core and is never parsed, while other
    sources are served as before.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.core = SIPCore(self.clock, domains=["example.com"])
        self.limiter = RateLimiter(self.clock, rate=1, burst=2, overdraft=2)
        self.core.limiter = self.limiter
        self.protocol = SIPDatagramProtocol(self.core, receiveBuffer=0, limiter=self.limiter)
        self.transport = SocketTransport()
        self.protocol.makeConnection(self.transport)
        self.parsed = 0
        real = parseMessage

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.parsed += 1
            return real(*args, **kwargs)

        # The core parses what it admits, the limiter what it answers 503.
        self.patch(sipcore.sip.core, "parseMessage", counting)
        self.patch(sipcore.message, "parseMessage", counting)

    def statuses(self, peer: tuple[str, int]) -> list[int]:
        return [parseMessage(data).status  # type: ignore[union-attr]
                for data, addr in self.transport.written if addr == peer]

    def test_floodDroppedBeforeParsing(self) -> None:
        """
        Of 100 datagrams from a flooding source, the core sees only those
        the limiter decides on (two admitted, then two answered 503, the
        second of which leaves the next ones to be dropped); the other 96
        are neither handed to the core nor parsed.  A source within its rate, sending among them, is
        answered every time.
        """
        for n in range(100):
            self.protocol.datagramReceived(request(n, FLOODER[0]), FLOODER)
            if n % 50 == 0:
                self.protocol.datagramReceived(request(n, PEER[0]), PEER)
        self.assertEqual(self.core.stats["received"], 4 + 2)
        self.assertEqual(self.parsed, 4 + 2)
        self.assertEqual(self.statuses(FLOODER), [200, 200, 503, 503])
        self.assertEqual(self.statuses(PEER), [200, 200])
        self.assertEqual(self.limiter.blocked[FLOODER[0]][1], 96)

    def test_blockEnds(self) -> None:
        """
        When its drop window ends the source reaches the limiter again and
        gets the limiter's own verdict (here a 503); the datagrams dropped
        on arrival are counted then.
        """
        for n in range(100):
            self.protocol.datagramReceived(request(n, FLOODER[0]), FLOODER)
        self.clock.advance(self.limiter.blocked[FLOODER[0]][0])
        self.transport.written.clear()
        self.protocol.datagramReceived(request(100, FLOODER[0]), FLOODER)
        self.assertEqual(self.statuses(FLOODER), [503])
        self.assertEqual(self.limiter.stats["droppedEarly"], 96)
        self.assertEqual(self.limiter.stats["dropped"], 96)
        self.assertEqual(self.limiter.stats["refused"], 3)

    def test_exemptSourceServed(self) -> None:
        """
        An exempt source is never dropped on arrival: every request is
        handed to the core and answered.
        """
        self.limiter = RateLimiter(self.clock, rate=1, burst=1, overdraft=0,
                                   exempt=[FLOODER[0]])
        self.core.limiter = self.limiter
        self.protocol = SIPDatagramProtocol(self.core, receiveBuffer=0, limiter=self.limiter)
        self.protocol.makeConnection(self.transport)
        for n in range(20):
            self.protocol.datagramReceived(request(n, FLOODER[0]), FLOODER)
        self.assertEqual(self.statuses(FLOODER), [200] * 20)
        self.assertEqual(self.limiter.blocked, {})

    def test_keepalivesOfBlockedSourceDropped(self) -> None:
        """
        A blocked source's CRLF keepalives are dropped too (they would cost
        a pong each).
        """
        for n in range(5):
            self.protocol.datagramReceived(request(n, FLOODER[0]), FLOODER)
        self.transport.written.clear()
        self.protocol.datagramReceived(b"\r\n\r\n", FLOODER)
        self.assertEqual((self.transport.written, self.protocol.keepalives), ([], 0))
