# -*- test-case-name: tests.test_capture -*-
"""
SIP capture: every SIP message the transports receive and send, written to
a pcap file (C{--sip-trace FILE}) and/or sent to a HEP v3 collector
(C{--hep HOST:PORT}), off by default (docs/operations.rst, "Capture").

The transports report each message to one L{sipcore.interfaces.IMessageObserver}:
received messages through L{ObservedSink} (wrapped around the core),
sent ones from L{sipcore.transport.udp.DatagramFlow} and
L{sipcore.transport.connections.StreamFlow}.  What is captured is the SIP
message as the transport carried it (for TLS and WSS, the decrypted
message), with the transport's addresses; never anything else.

Neither output blocks the reactor: the pcap file is written by a thread,
a batch at a time, from a buffer of at most C{maxBuffered} bytes (past
that, messages are dropped and counted); HEP datagrams that the socket
does not take at once are dropped and counted.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from sipcore.interfaces import IMessageObserver, IMessageSink

__all__ = [
    "DEFAULT_MAX_BUFFERED",
    "CaptureSettings",
    "HEPSender",
    "ObservedSink",
    "Observers",
    "PcapWriter",
    "hepPacket",
    "ipPacket",
    "parseHEPAddress",
]

#: The most bytes of messages waiting for the pcap writer thread.
DEFAULT_MAX_BUFFERED = 8 * 1024 * 1024

#: LINKTYPE_RAW: each record is an IPv4 or IPv6 packet, no link header.
LINKTYPE_RAW = 101

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_RAW)

#: The largest payload one synthetic IP packet carries (the rest of a
#: larger message is cut off in the file).
_MAX_PAYLOAD = 65535 - 60

_UDP, _TCP = 17, 6


@dataclass(frozen=True)
class CaptureSettings:
    """
    What C{--sip-trace} and C{--hep} asked for.

    @ivar pcapPath: the pcap file to write, or C{""}: none.
    @ivar hepAddress: C{(ip, port)} of the HEP collector, or C{None}.
    @ivar hepAgentId: the capture agent id sent in each HEP packet.
    @ivar maxBuffered: the pcap writer's buffer bound in bytes.
    """

    pcapPath: str = ""
    hepAddress: tuple[str, int] | None = None
    hepAgentId: int = 0
    maxBuffered: int = DEFAULT_MAX_BUFFERED

    @property
    def enabled(self) -> bool:
        return bool(self.pcapPath) or self.hepAddress is not None


def parseHEPAddress(text: str) -> tuple[str, int]:
    """
    Parse C{IP:PORT} or C{[IPv6]:PORT}.

    @raise ValueError: for anything else (a host name included).
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("give the collector as IP:PORT or [IPv6]:PORT, not {!r}".format(text))
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("the collector's address must be an IP address, not {!r}".format(
            host)) from None
    return (str(address), int(port))


def _addresses(source: str, destination: str) -> tuple[Any, Any]:
    """
    The two addresses as one IP family (the destination's or the
    source's): an IPv4-mapped IPv6 address as IPv4, an address of the
    other family (or none, e.g. a wildcard listener's) as that family's
    unspecified address.
    """
    def parse(text: str) -> Any:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped
        return address

    src, dst = parse(source), parse(destination)
    known = dst if dst is not None else src
    family: Any = ipaddress.IPv4Address if known is None else type(known)
    zero = family(0)
    return (src if isinstance(src, family) else zero,
            dst if isinstance(dst, family) else zero)


def _checksum(data: bytes) -> int:
    """
    The Internet checksum (RFC 1071) of C{data}.
    """
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!{}H".format(len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipPacket(transport: str, source: tuple[str, int], destination: tuple[str, int],
             payload: bytes, seq: int = 0) -> bytes:
    """
    A synthetic IPv4 or IPv6 packet carrying C{payload}: UDP for C{"udp"},
    else one TCP segment (PSH, ACK) with sequence number C{seq}.
    """
    payload = payload[:_MAX_PAYLOAD]
    src, dst = _addresses(source[0], destination[0])
    if transport == "udp":
        proto = _UDP
        header = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0)
    else:
        proto = _TCP
        header = struct.pack("!HHIIBBHHH", source[1], destination[1], seq & 0xFFFFFFFF, 1,
                             5 << 4, 0x18, 65535, 0, 0)
    segment = header + payload
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, proto, len(segment))
    else:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", len(segment), proto)
    checksum = _checksum(pseudo + segment) or (0xFFFF if proto == _UDP else 0)
    at = 6 if proto == _UDP else 16
    segment = segment[:at] + struct.pack("!H", checksum) + segment[at + 2:]
    if src.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 0, 0x4000, 64, proto, 0,
                         src.packed, dst.packed)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(segment), proto, 64, src.packed, dst.packed)
    return ip + segment


def hepPacket(timestamp: float, transport: str, source: tuple[str, int],
              destination: tuple[str, int], payload: bytes, agentId: int) -> bytes:
    """
    One HEP v3 packet (HEP3/EEP, the Homer capture format) carrying a SIP
    message: IP family, protocol, source and destination address and
    port, timestamp (seconds and microseconds), protocol type SIP (1),
    capture agent id and the payload, each a generic chunk (vendor 0).
    """
    src, dst = _addresses(source[0], destination[0])
    seconds = int(timestamp)
    micros = int(round((timestamp - seconds) * 1e6)) % 1000000

    def chunk(kind: int, value: bytes) -> bytes:
        return struct.pack("!HHH", 0, kind, 6 + len(value)) + value

    v4 = src.version == 4
    body = b"".join([
        chunk(1, bytes([2 if v4 else 10])),
        chunk(2, bytes([_UDP if transport == "udp" else _TCP])),
        chunk(3 if v4 else 5, src.packed),
        chunk(4 if v4 else 6, dst.packed),
        chunk(7, struct.pack("!H", source[1])),
        chunk(8, struct.pack("!H", destination[1])),
        chunk(9, struct.pack("!I", seconds)),
        chunk(10, struct.pack("!I", micros)),
        chunk(11, b"\x01"),
        chunk(12, struct.pack("!I", agentId & 0xFFFFFFFF)),
        chunk(15, payload[:65535 - 200]),
    ])
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


@implementer(IMessageSink)
class ObservedSink:
    """
    An L{IMessageSink} that reports each message (received or rejected) to
    an observer, then hands it to the sink it wraps.
    """

    def __init__(self, sink: Any, observer: IMessageObserver) -> None:
        self._sink = sink
        self._observer = observer

    def messageReceived(self, data: bytes, flow: Any) -> None:
        self._observer.messageSeen(data, flow.transport, flow.remote, flow.local)
        self._sink.messageReceived(data, flow)

    def messageRejected(self, data: bytes, reason: str, flow: Any) -> None:
        self._observer.messageSeen(data, flow.transport, flow.remote, flow.local)
        self._sink.messageRejected(data, reason, flow)


@implementer(IMessageObserver)
class Observers:
    """
    Several observers as one.
    """

    def __init__(self, observers: Sequence[IMessageObserver]) -> None:
        self._observers = tuple(observers)

    def messageSeen(self, data: bytes, transport: str, source: tuple[str, int],
                    destination: tuple[str, int]) -> None:
        for observer in self._observers:
            observer.messageSeen(data, transport, source, destination)


def _inThread(reactor: Any) -> Callable[..., defer.Deferred[Any]]:
    from twisted.internet.threads import deferToThreadPool

    def run(f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    return run


@implementer(IMessageObserver)
class PcapWriter(Service):
    """
    Writes the messages it observes to a pcap file (LINKTYPE_RAW: IPv4 or
    IPv6 packets with a synthetic UDP header, or one synthetic TCP segment
    per message on stream transports).

    @ivar written: messages written to the file.
    @ivar dropped: messages dropped because the buffer was full (the disk
        is slower than the traffic) or a write failed.
    """

    _log = Logger()

    def __init__(self, path: str, reactor: Any, maxBuffered: int = DEFAULT_MAX_BUFFERED,
                 runInThread: Callable[..., defer.Deferred[Any]] | None = None) -> None:
        """
        @param runInThread: runs C{f(*args)} away from the reactor thread
            and returns a L{Deferred} of its result (default: the reactor's
            thread pool).
        """
        self.path = path
        self.maxBuffered = maxBuffered
        self._reactor = reactor
        self._runInThread = runInThread or _inThread(reactor)
        self._file: BinaryIO | None = None
        self._pending: list[tuple[float, str, tuple[str, int], tuple[str, int], bytes]] = []
        self._buffered = 0
        self._writing: defer.Deferred[Any] | None = None
        self._dropping = False
        # The next sequence number of each stream direction (touched only
        # by the one write in progress).
        self._seq: dict[tuple[Any, ...], int] = {}
        self.written = 0
        self.dropped = 0

    def startService(self) -> None:
        """
        Open (truncate) the file and write the pcap header.

        @raise OSError: if the file cannot be opened.
        """
        self._file = open(self.path, "wb")
        self._file.write(_PCAP_HEADER)
        self._file.flush()
        self._log.info("writing SIP messages to {path}", path=self.path)
        super().startService()

    def messageSeen(self, data: bytes, transport: str, source: tuple[str, int],
                    destination: tuple[str, int]) -> None:
        if self._file is None:
            return
        if self._buffered + len(data) > self.maxBuffered:
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                self._log.warn("SIP capture buffer full ({size} bytes): dropping messages "
                               "until the file catches up", size=self.maxBuffered)
            return
        self._pending.append((self._reactor.seconds(), transport, source, destination, data))
        self._buffered += len(data)
        if self._writing is None:
            self._flush()

    def _flush(self) -> None:
        batch, self._pending, self._buffered = self._pending, [], 0
        writing = self._writing = self._runInThread(self._write, batch)
        writing.addCallbacks(self._written, self._failed, errbackArgs=(len(batch),))

    def _write(self, batch: list[tuple[float, str, tuple[str, int], tuple[str, int], bytes]]
               ) -> int:
        """
        Build and write the records of C{batch} (in the writer thread).
        """
        out = []
        for timestamp, transport, source, destination, data in batch:
            seq = 0
            if transport != "udp":
                key = (source, destination)
                if key not in self._seq and len(self._seq) >= 65536:
                    self._seq.clear()
                seq = self._seq.get(key, 1)
                self._seq[key] = seq + len(data)
            packet = ipPacket(transport, source, destination, data, seq)
            seconds = int(timestamp)
            micros = min(int((timestamp - seconds) * 1e6), 999999)
            out.append(struct.pack("<IIII", seconds, micros, len(packet), len(packet)))
            out.append(packet)
        assert self._file is not None
        self._file.write(b"".join(out))
        self._file.flush()
        return len(batch)

    def _written(self, count: int) -> None:
        self.written += count
        self._writing = None
        if self._dropping and not self._pending:
            self._dropping = False
            self._log.info("SIP capture caught up ({dropped} messages dropped so far)",
                           dropped=self.dropped)
        if self._pending:
            self._flush()

    def _failed(self, failure: Any, count: int) -> None:
        self.dropped += count
        self._writing = None
        self._log.failure("writing {path} failed", failure, path=self.path)
        if self._pending:
            self._flush()

    async def _stop(self) -> None:
        while self._writing is not None:
            await self._writing
        if self._file is not None:
            f, self._file = self._file, None
            f.close()

    def stopService(self) -> defer.Deferred[None]:
        """
        Stop taking messages once those buffered are written; close the
        file.
        """
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())


@implementer(IMessageObserver)
class HEPSender(DatagramProtocol):
    """
    Sends each message it observes to a HEP v3 collector over UDP.

    @ivar sent: HEP packets the socket took.
    @ivar dropped: packets the socket refused (its buffer full, the
        collector unreachable) or sent before the socket was open.
    """

    noisy = False

    def __init__(self, reactor: Any, address: tuple[str, int], agentId: int = 0) -> None:
        self._reactor = reactor
        self.address = address
        self.agentId = agentId
        self.sent = 0
        self.dropped = 0

    def messageSeen(self, data: bytes, transport: str, source: tuple[str, int],
                    destination: tuple[str, int]) -> None:
        if self.transport is None:
            self.dropped += 1
            return
        packet = hepPacket(self._reactor.seconds(), transport, source, destination, data,
                           self.agentId)
        try:
            self.transport.write(packet, self.address)
        except Exception:
            # A full socket buffer or an ICMP error: counted, never logged
            # per packet.
            self.dropped += 1
            return
        self.sent += 1

    def connectionRefused(self) -> None:
        self.dropped += 1


class HEPService(Service):
    """
    The UDP socket of a L{HEPSender}, open while the service runs.
    """

    _log = Logger()

    def __init__(self, reactor: Any, sender: HEPSender) -> None:
        self._reactor = reactor
        self.sender = sender
        self._port: Any = None

    def startService(self) -> None:
        interface = "::" if ":" in self.sender.address[0] else ""
        self._port = self._reactor.listenUDP(0, self.sender, interface=interface)
        self._log.info("sending SIP messages to the HEP collector at {host} port {port}",
                       host=self.sender.address[0], port=self.sender.address[1])
        super().startService()

    def stopService(self) -> Any:
        super().stopService()
        port, self._port = self._port, None
        return port.stopListening() if port is not None else None


def buildCapture(settings: CaptureSettings, reactor: Any) -> tuple[Any, list[Any]]:
    """
    @return: the observer for the transports (C{None} when capture is off)
        and the services to run it.
    """
    observers: list[Any] = []
    services: list[Any] = []
    if settings.pcapPath:
        writer = PcapWriter(settings.pcapPath, reactor, settings.maxBuffered)
        observers.append(writer)
        services.append(writer)
    if settings.hepAddress is not None:
        sender = HEPSender(reactor, settings.hepAddress, settings.hepAgentId)
        observers.append(sender)
        services.append(HEPService(reactor, sender))
    if not observers:
        return None, []
    return (observers[0] if len(observers) == 1 else Observers(observers)), services
