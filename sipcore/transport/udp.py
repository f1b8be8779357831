# -*- test-case-name: tests.test_transport_udp -*-
"""
SIP over UDP: one datagram is one message (RFC 3261 section 18.3).

A datagram from a source the rate limiter drops for now
(L{sipcore.sip.limits.RateLimiter.blocked}) is dropped first thing, before
any other work: a flooding source costs one dictionary lookup and a
comparison per datagram, so the socket is drained faster than it fills and
the datagrams of other sources are not lost in its receive buffer.

A socket reads at most L{DEFAULT_READ_PER_TURN} bytes of datagrams each
time the reactor finds it readable (C{maxThroughput} of Twisted's UDP
port; Twisted's own default is 256 KiB, some 600 SIP messages), so timers,
database answers and the other sockets get their turn during a burst.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from sipcore.interfaces import IFlow, IMessageSink
from sipcore.message.framing import DEFAULT_MAX_SIZE
from sipcore.transport.connections import addressOf

__all__ = [
    "DEFAULT_READ_PER_TURN",
    "DEFAULT_RECEIVE_BUFFER",
    "MAX_FLOWS",
    "DatagramFlow",
    "SIPDatagramProtocol",
]

#: The socket receive buffer asked for (best effort; the kernel may cap it,
#: see C{net.core.rmem_max} on Linux).
DEFAULT_RECEIVE_BUFFER = 4 * 1024 * 1024

#: The most bytes of datagrams a socket reads in one reactor turn.
DEFAULT_READ_PER_TURN = 16384

#: Peers whose flow a UDP socket keeps for their next datagrams (past
#: this many, it starts again from none).
MAX_FLOWS = 4096

_PING = b"\r\n\r\n"
_PONG = b"\r\n"


def _never() -> float:
    """
    The clock of a protocol without a limiter (its blocked table stays
    empty, so this is never called).
    """
    return 0.0


@implementer(IFlow)
class DatagramFlow:
    """
    The L{IFlow} of one UDP peer seen on one listening socket.

    @ivar remote: C{(host, port)} of the peer.
    @ivar local: C{(host, port)} of the listening socket.
    """

    transport = "udp"
    conid = None
    reliable = False

    def __init__(self, protocol: "SIPDatagramProtocol", remote: Any) -> None:
        """
        @param protocol: the L{SIPDatagramProtocol} of the socket.
        @param remote: the peer's address as the socket gave it (C{(host,
            port)}, or the 4-tuple of IPv6).
        """
        self._protocol = protocol
        self._address = remote
        self.remote = addressOf(remote)
        self.local = protocol.localAddress()

    def __repr__(self) -> str:
        return "<DatagramFlow udp {}:{} -> {}:{}>".format(*self.remote, *self.local)

    def send(self, data: bytes) -> bool:
        """
        Send a datagram to the peer.

        @return: C{True} if the socket took it.
        """
        observer = self._protocol.observer
        if observer is not None:
            observer.messageSeen(data, "udp", self.local, self.remote)
        return self._protocol.sendDatagram(data, self._address)

    def sendTo(self, data: bytes, address: Any) -> bool:
        """
        Send a datagram to C{address} from the same socket.

        @return: C{True} if the socket took it.
        """
        observer = self._protocol.observer
        if observer is not None:
            observer.messageSeen(data, "udp", self.local, addressOf(address))
        return self._protocol.sendDatagram(data, address)

    def close(self) -> None:
        """
        Nothing to close for UDP.
        """


class SIPDatagramProtocol(DatagramProtocol):
    """
    One listening UDP socket carrying SIP.

    @ivar received: datagrams handed to the sink.
    @ivar keepalives: CRLF keepalive datagrams seen.
    @ivar dropped: datagrams not handed on as messages: too large, empty,
        or the sink failed on them.
    @ivar sendErrors: datagrams the socket refused to send.
    @ivar maxFlows: peers whose flow is kept for their next datagrams
        (L{MAX_FLOWS}).
    @ivar limiter: the L{sipcore.sip.limits.RateLimiter} whose verdicts
        are applied on arrival, or C{None}.
    """

    noisy = False
    _log = Logger()

    def __init__(
        self,
        sink: IMessageSink,
        maxSize: int = DEFAULT_MAX_SIZE,
        receiveBuffer: int = DEFAULT_RECEIVE_BUFFER,
        limiter: Any = None,
        readPerTurn: int = DEFAULT_READ_PER_TURN,
        observer: Any = None,
    ) -> None:
        """
        @param sink: the L{sipcore.interfaces.IMessageSink}.
        @param maxSize: the largest datagram passed on as a message; a larger
            one goes to C{sink.messageRejected}.
        @param receiveBuffer: the C{SO_RCVBUF} to ask for (C{0}: leave the
            system default).
        @param limiter: the L{sipcore.sip.limits.RateLimiter} the sink
            consults, or C{None}: a datagram from a source in its
            C{blocked} table, until the time entered there, is dropped on
            arrival (and counted in that entry) without reaching the sink.
        @param readPerTurn: the most bytes of datagrams the socket reads
            each time it is readable (C{maxThroughput} of Twisted's UDP
            port); at least one datagram is always read.
        @param observer: the L{sipcore.interfaces.IMessageObserver} its
            flows tell of each message they send, or C{None}.
        @raise ValueError: if C{readPerTurn} is less than 1.
        """
        if readPerTurn < 1:
            raise ValueError("readPerTurn must be at least 1")
        self.readPerTurn = readPerTurn
        self.observer = observer
        self.sink = sink
        self.limiter = limiter
        self._blocked: dict[str, list[float]] = {} if limiter is None else limiter.blocked
        self._now: Callable[[], float] = (
            _never if limiter is None else limiter.clock.seconds)
        self.maxSize = maxSize
        self.receiveBuffer = receiveBuffer
        self.received = 0
        self.keepalives = 0
        self.dropped = 0
        self.sendErrors = 0
        self._local: tuple[str, int] = ("", 0)
        # The flow of each recent peer: a flow holds nothing but the peer's
        # address, so one serves all of a peer's datagrams (and the
        # transactions they start hold one object between them, not one
        # each).
        self._flows: dict[Any, DatagramFlow] = {}
        self.maxFlows = MAX_FLOWS

    def startProtocol(self) -> None:
        assert self.transport is not None
        self._local = addressOf(self.transport.getHost())
        self._flows = {}
        self.transport.maxThroughput = self.readPerTurn  # type: ignore[attr-defined]
        if not self.receiveBuffer:
            return
        try:
            handle = self.transport.getHandle()  # type: ignore[attr-defined]
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receiveBuffer)
        except (AttributeError, OSError) as e:
            self._log.info(
                "could not set the UDP receive buffer to {size}: {error}",
                size=self.receiveBuffer,
                error=str(e),
            )

    def localAddress(self) -> tuple[str, int]:
        """
        @return: C{(host, port)} of the listening socket.
        """
        return self._local

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        # The limiter's verdict for a blocked source, first: the cheapest
        # drop there is (see the module docstring).
        if self._blocked:
            entry = self._blocked.get(addr[0])
            if entry is not None and entry[0] > self._now():
                entry[1] += 1
                return
        try:
            self._handle(datagram, addr)
        except Exception:
            self.dropped += 1
            self._log.failure("UDP datagram from {addr} failed", addr=addr)

    def _handle(self, datagram: bytes, addr: Any) -> None:
        if not datagram.strip(b"\r\n"):
            if not datagram:
                self.dropped += 1
                return
            self.keepalives += 1
            if datagram == _PING:
                self.sendDatagram(_PONG, addr)
            return
        flow = self._flows.get(addr)
        if flow is None:
            if len(self._flows) >= self.maxFlows:
                self._flows = {}
            flow = self._flows[addr] = DatagramFlow(self, addr)
        if len(datagram) > self.maxSize:
            self.dropped += 1
            self.sink.messageRejected(datagram, "Message Too Large", flow)
            return
        self.received += 1
        self.sink.messageReceived(datagram, flow)

    def sendDatagram(self, data: bytes, address: Any) -> bool:
        """
        Write one datagram; never raises.

        @return: C{True} if the socket took it.
        """
        if self.transport is None:
            return False
        try:
            self.transport.write(data, address)
        except Exception:
            # ICMP errors, EMSGSIZE, a bad address from a Via header: not
            # bugs, but nothing the caller can do either.
            # Counted, not logged: a log line per packet would let any
            # sender fill the log.
            self.sendErrors += 1
            return False
        return True
