"""
Tests for L{sipcore.capture}: the synthetic packets, the pcap writer's
bounded buffer, HEP v3 packets and the transport hooks.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from sipcore.capture import (
    CaptureSettings,
    HEPSender,
    ObservedSink,
    Observers,
    PcapWriter,
    _checksum,
    hepPacket,
    ipPacket,
    parseHEPAddress,
)
from sipcore.interfaces import IMessageObserver, IMessageSink
from sipcore.tap import Options
from sipcore.transport.connections import StreamFlow
from sipcore.transport.udp import SIPDatagramProtocol
from tests.test_connections import FakeProtocol

MESSAGE = b"OPTIONS sip:example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n"


@implementer(IMessageObserver)
class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def messageSeen(self, *args: Any) -> None:
        self.seen.append(args)


class PacketTests(SynchronousTestCase):
    def test_udpIPv4(self) -> None:
        """
        A UDP message becomes an IPv4 packet with the real addresses and
        ports and valid IP and UDP checksums.
        """
        packet = ipPacket("udp", ("192.0.2.1", 5060), ("198.51.100.2", 5070), MESSAGE)
        self.assertEqual(packet[0], 0x45)
        self.assertEqual(struct.unpack("!H", packet[2:4])[0], len(packet))
        self.assertEqual(_checksum(packet[:20]), 0)
        self.assertEqual((packet[9], packet[12:16], packet[16:20]),
                         (17, bytes([192, 0, 2, 1]), bytes([198, 51, 100, 2])))
        self.assertEqual(struct.unpack("!HHH", packet[20:26]), (5060, 5070, 8 + len(MESSAGE)))
        pseudo = packet[12:20] + struct.pack("!BBH", 0, 17, 8 + len(MESSAGE))
        self.assertEqual(_checksum(pseudo + packet[20:]), 0)
        self.assertEqual(packet[28:], MESSAGE)

    def test_tcpIPv6(self) -> None:
        """
        A stream message to an IPv6 peer becomes an IPv6 packet with one TCP
        segment (PSH, ACK) with the sequence number given.
        """
        packet = ipPacket("tls", ("2001:db8::1", 5061), ("2001:db8::2", 40000), MESSAGE, seq=77)
        self.assertEqual(packet[0] >> 4, 6)
        self.assertEqual((struct.unpack("!H", packet[4:6])[0], packet[6]), (20 + len(MESSAGE), 6))
        self.assertEqual(ipaddress.ip_address(packet[8:24]), ipaddress.ip_address("2001:db8::1"))
        ports, seq = struct.unpack("!HH", packet[40:44]), struct.unpack("!I", packet[44:48])[0]
        self.assertEqual((ports, seq, packet[53]), ((5061, 40000), 77, 0x18))
        pseudo = packet[8:40] + struct.pack("!IxxxB", 20 + len(MESSAGE), 6)
        self.assertEqual(_checksum(pseudo + packet[40:]), 0)
        self.assertEqual(packet[60:], MESSAGE)

    def test_mixedFamilies(self) -> None:
        """
        A wildcard or IPv4-mapped address is written in the peer's family.
        """
        packet = ipPacket("udp", ("::", 5060), ("::ffff:192.0.2.9", 5070), MESSAGE)
        self.assertEqual((packet[0], packet[12:16], packet[16:20]),
                         (0x45, bytes(4), bytes([192, 0, 2, 9])))

    def test_hep(self) -> None:
        """
        A HEP v3 packet has its length, then generic chunks for every field.
        """
        packet = hepPacket(1000.25, "tcp", ("192.0.2.1", 5060), ("192.0.2.2", 5999), MESSAGE, 7)
        self.assertEqual((packet[:4], struct.unpack("!H", packet[4:6])[0]), (b"HEP3", len(packet)))
        chunks, at = {}, 6
        while at < len(packet):
            vendor, kind, length = struct.unpack("!HHH", packet[at:at + 6])
            chunks[kind] = packet[at + 6:at + length]
            at += length
        self.assertEqual(chunks, {
            1: b"\x02", 2: b"\x06", 3: bytes([192, 0, 2, 1]), 4: bytes([192, 0, 2, 2]),
            7: struct.pack("!H", 5060), 8: struct.pack("!H", 5999),
            9: struct.pack("!I", 1000), 10: struct.pack("!I", 250000), 11: b"\x01",
            12: struct.pack("!I", 7), 15: MESSAGE})


class PcapWriterTests(SynchronousTestCase):
    def writer(self, maxBuffered: int = 1 << 20) -> tuple[PcapWriter, list[Any]]:
        """
        A writer whose thread runs are held until the test fires them.
        """
        held: list[Any] = []

        def runInThread(f: Any, *args: Any) -> defer.Deferred[Any]:
            d: defer.Deferred[Any] = defer.Deferred()
            held.append((d, f, args))
            return d

        writer = PcapWriter(self.mktemp(), Clock(), maxBuffered, runInThread)
        verifyObject(IMessageObserver, writer)
        writer.startService()
        return writer, held

    def test_writes(self) -> None:
        """
        The file gets the pcap header (raw IP) and one record per message;
        messages seen while a write runs go in the next batch.
        """
        writer, held = self.writer()
        writer.messageSeen(MESSAGE, "udp", ("192.0.2.1", 1), ("192.0.2.2", 2))
        writer.messageSeen(MESSAGE, "tcp", ("192.0.2.1", 1), ("192.0.2.2", 2))
        self.assertEqual(len(held), 1)
        d, f, args = held.pop()
        d.callback(f(*args))
        self.assertEqual(len(held), 1)
        d, f, args = held.pop()
        d.callback(f(*args))
        self.assertEqual((writer.written, writer.dropped), (2, 0))
        self.successResultOf(writer.stopService())
        with open(writer.path, "rb") as f:
            data = f.read()
        self.assertEqual(struct.unpack("<IHHiIII", data[:24])[0::6], (0xA1B2C3D4, 101))
        first = struct.unpack("<IIII", data[24:40])
        self.assertEqual(data[40:40 + first[2]][28:], MESSAGE)
        rest = data[40 + first[2]:]
        second = struct.unpack("<IIII", rest[:16])
        self.assertEqual(rest[16:16 + second[2]][40:], MESSAGE)

    def test_boundedBuffer(self) -> None:
        """
        While the disk is slow, messages past the buffer bound are dropped
        and counted, not queued.
        """
        writer, held = self.writer(maxBuffered=len(MESSAGE) * 2)
        for _ in range(5):
            writer.messageSeen(MESSAGE, "udp", ("192.0.2.1", 1), ("192.0.2.2", 2))
        # One in the write in progress, two buffered, two dropped.
        self.assertEqual(writer.dropped, 2)
        d, f, args = held.pop()
        d.callback(f(*args))
        d, f, args = held.pop()
        d.callback(f(*args))
        self.assertEqual((writer.written, writer.dropped), (3, 2))
        self.successResultOf(writer.stopService())

    def test_failedWrite(self) -> None:
        """
        A write that fails counts its messages as dropped; writing goes on.
        """
        writer, held = self.writer()
        writer.messageSeen(MESSAGE, "udp", ("192.0.2.1", 1), ("192.0.2.2", 2))
        d, f, args = held.pop()
        d.errback(OSError("disk full"))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(writer.dropped, 1)
        self.successResultOf(writer.stopService())


class HEPSenderTests(SynchronousTestCase):
    def test_fullSocket(self) -> None:
        """
        A datagram the socket refuses is dropped and counted.
        """
        class Refusing:
            def write(self, data: bytes, address: Any) -> None:
                raise OSError("EAGAIN")

        sender = HEPSender(Clock(), ("127.0.0.1", 9060))
        verifyObject(IMessageObserver, sender)
        sender.makeConnection(Refusing())  # type: ignore[arg-type]
        sender.messageSeen(MESSAGE, "udp", ("127.0.0.1", 1), ("127.0.0.1", 2))
        self.assertEqual((sender.sent, sender.dropped), (0, 1))


class HookTests(SynchronousTestCase):
    def test_observedSink(self) -> None:
        """
        The sink wrapper reports received and rejected messages from the
        peer to us, then passes them on.
        """
        recorder, inner = Recorder(), Recorder()

        class Inner:
            def messageReceived(self, data: bytes, flow: Any) -> None:
                inner.seen.append(("received", data))

            def messageRejected(self, data: bytes, reason: str, flow: Any) -> None:
                inner.seen.append(("rejected", data))

        sink = ObservedSink(Inner(), Observers([recorder]))
        verifyObject(IMessageObserver, recorder)
        verifyObject(IMessageSink, sink)
        flow = StreamFlow(FakeProtocol(), "wss", ("192.0.2.1", 443), ("192.0.2.9", 5555))
        sink.messageReceived(MESSAGE, flow)
        sink.messageRejected(b"junk", "bad", flow)
        self.assertEqual(recorder.seen, [
            (MESSAGE, "wss", ("192.0.2.9", 5555), ("192.0.2.1", 443)),
            (b"junk", "wss", ("192.0.2.9", 5555), ("192.0.2.1", 443))])
        self.assertEqual(inner.seen, [("received", MESSAGE), ("rejected", b"junk")])

    def test_streamFlowSend(self) -> None:
        """
        A stream flow reports what it sends, from us to the peer.
        """
        recorder = Recorder()
        protocol = FakeProtocol()
        flow = StreamFlow(protocol, "tcp", ("192.0.2.1", 5060), ("192.0.2.9", 5555), recorder)
        self.assertTrue(flow.send(MESSAGE))
        self.assertEqual(protocol.sent, [MESSAGE])
        self.assertEqual(recorder.seen,
                         [(MESSAGE, "tcp", ("192.0.2.1", 5060), ("192.0.2.9", 5555))])

    def test_datagramFlowSend(self) -> None:
        """
        A UDP flow reports what it sends (to its peer or another address);
        the keepalive answer of the socket is not reported.
        """
        from sipcore.testing import UDPMemoryReactor

        flows: list[Any] = []

        @implementer(IMessageSink)
        class Sink:
            def messageReceived(self, data: bytes, flow: Any) -> None:
                flows.append(flow)

            def messageRejected(self, data: bytes, reason: str, flow: Any) -> None:
                pass

        recorder = Recorder()
        protocol = SIPDatagramProtocol(Sink(), observer=recorder)
        UDPMemoryReactor().listenUDP(5060, protocol, interface="192.0.2.1")
        protocol.datagramReceived(b"\r\n\r\n", ("192.0.2.9", 5555))
        protocol.datagramReceived(MESSAGE, ("192.0.2.9", 5555))
        [flow] = flows
        flow.send(MESSAGE)
        flow.sendTo(MESSAGE, ("192.0.2.7", 5060))
        self.assertEqual([(args[0], args[1], args[3]) for args in recorder.seen], [
            (MESSAGE, "udp", ("192.0.2.9", 5555)),
            (MESSAGE, "udp", ("192.0.2.7", 5060))])


class OptionTests(SynchronousTestCase):
    def test_options(self) -> None:
        """
        C{--sip-trace} and C{--hep} become the capture settings; off by
        default; a host name for the collector is refused.
        """
        options = Options()
        options.parseOptions([])
        self.assertFalse(options["capture"].enabled)
        options = Options()
        options.parseOptions(["--sip-trace", "x.pcap", "--hep", "[::1]:9060",
                              "--hep-agent-id", "3"])
        self.assertEqual(options["capture"], CaptureSettings(
            pcapPath="x.pcap", hepAddress=("::1", 9060), hepAgentId=3))
        from twisted.python import usage

        self.assertRaises(usage.UsageError, Options().parseOptions, ["--hep", "collector:9060"])
        self.assertEqual(parseHEPAddress("127.0.0.1:9060"), ("127.0.0.1", 9060))
        self.assertRaises(ValueError, parseHEPAddress, "127.0.0.1")


class WiringTests(SynchronousTestCase):
    def test_everyTransportObserved(self) -> None:
        """
        With C{--sip-trace} the listeners and the outgoing connections
        hand their messages to the capture's sink wrapper, and the
        connection table gives the stream flows the capture as observer;
        without it, none of them has one.
        """
        from sipcore.tap import buildService
        from sipcore.testing import UDPMemoryReactor

        options = Options()
        options.parseOptions(["--sip-trace", self.mktemp()])
        service = buildService(options, UDPMemoryReactor())
        self.assertIsInstance(service.proxy.hops.outgoing.sink, ObservedSink)
        self.assertIsInstance(service.table.observer, PcapWriter)
        options = Options()
        options.parseOptions([])
        service = buildService(options, UDPMemoryReactor())
        self.assertIs(service.proxy.hops.outgoing.sink, service.core)
        self.assertIsNone(service.table.observer)
