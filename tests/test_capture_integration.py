# -*- test-case-name: tests.test_capture_integration -*-
"""
SIP capture on a whole sipcore service on loopback: sipp calls sipp
through the proxy over UDP and over TCP with C{--sip-trace}, and tshark
(Debian package C{tshark}) reads the pcap file back; a HEP collector (a
Twisted datagram protocol here) receives C{--hep} packets.

Without sipp or tshark these tests skip, unless C{SIPCORE_REQUIRE_PEERS=1}
(as C{.ci/run} sets), where a missing tool is a failure.
"""

from __future__ import annotations

import secrets
import shutil
import struct
import subprocess
from typing import Any

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from tests.peerhelpers import _missing, sippFinished, startSipp, waitRegistered
from tests.serverhelpers import listenUDP, optionsRequest, portOf, startServer, waitUntil


def tshark(path: str, *args: str) -> list[list[str]]:
    """
    Run tshark on a pcap file.

    @return: its field lines, split at tabs.
    """
    executable = shutil.which("tshark")
    if executable is None:
        _missing("tshark is not installed (apt-get install tshark)")
    assert executable is not None
    # A short, bounded run on a small file after the server stopped.
    out = subprocess.run([executable, "-r", path, *args], capture_output=True, timeout=60,
                         check=True).stdout.decode()
    return [line.split("\t") for line in out.splitlines() if line]


class PcapTests(TestCase):
    """
    C{--sip-trace} writes a pcap file tshark decodes as SIP.
    """

    timeout = 120

    async def call(self, transport: str) -> tuple[str, str, int]:
        path = self.mktemp()
        service = await startServer(self, "--sip-trace", path)
        self.addCleanup(service.proxy.stop)
        port = service.ports[transport]
        user = "bob" + secrets.token_hex(3)
        callId = "sipcore-" + secrets.token_hex(8)
        callee = startSipp(self, "uas.xml", transport, port, user, callId)
        await waitRegistered(service, user + "@example.com")
        caller = startSipp(self, "uac.xml", transport, port, user, callId)
        self.assertEqual((await sippFinished(caller), await sippFinished(callee)), (0, 0))
        await service.stopService()
        return path, callId + "-1", port

    def assertCall(self, rows: list[list[str]], callId: str, transport: str) -> None:
        """
        The call's requests are each in the file twice (received from the
        caller, sent to the callee), and so are its responses.
        """
        call = [row for row in rows if row[2] == callId]
        methods = sorted(row[0] for row in call if row[0] and row[0] != "REGISTER")
        self.assertEqual(methods, sorted(["INVITE", "INVITE", "ACK", "ACK", "BYE", "BYE"]))
        statuses = sorted(row[1] for row in call if row[1])
        self.assertIn("200", statuses)
        self.assertEqual(statuses.count("180"), 2)
        self.assertTrue({row[3] for row in call} <= {"127.0.0.1"})
        registers = [row for row in rows if row[0] == "REGISTER"]
        self.assertTrue(registers)

    async def test_udp(self) -> None:
        """
        Over UDP: the INVITE, ACK and BYE and the responses, in and out.
        """
        path, callId, port = await self.call("udp")
        rows = tshark(path, "-d", "udp.port=={},sip".format(port), "-Y", "sip", "-T", "fields",
                      "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.Call-ID",
                      "-e", "ip.src")
        self.assertCall(rows, callId, "udp")

    async def test_tcp(self) -> None:
        """
        Over TCP (one synthetic segment per message) the same.
        """
        path, callId, port = await self.call("tcp")
        rows = tshark(path, "-d", "tcp.port=={},sip".format(port), "-Y", "sip", "-T", "fields",
                      "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.Call-ID",
                      "-e", "ip.src")
        self.assertCall(rows, callId, "tcp")


class Collector(DatagramProtocol):
    """
    A HEP collector: the chunks of each packet received.
    """

    def __init__(self) -> None:
        self.packets: list[dict[int, bytes]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        assert data[:4] == b"HEP3"
        (total,) = struct.unpack("!H", data[4:6])
        assert total == len(data)
        chunks = {}
        at = 6
        while at < total:
            vendor, kind, length = struct.unpack("!HHH", data[at:at + 6])
            assert vendor == 0 and length >= 6
            chunks[kind] = data[at + 6:at + length]
            at += length
        self.packets.append(chunks)


class HEPTests(TestCase):
    """
    C{--hep} sends each message to the collector.
    """

    async def test_options(self) -> None:
        """
        An OPTIONS over UDP and its answer reach the collector as HEP v3
        packets with the real addresses, ports, SIP protocol type, agent id
        and the message.
        """
        collector = Collector()
        port = IReactorUDP(reactor).listenUDP(0, collector, interface="127.0.0.1",
                                              maxPacketSize=65535)
        self.addCleanup(port.stopListening)
        service = await startServer(self, "--hep", "127.0.0.1:{}".format(
            portOf(port)), "--hep-agent-id", "4242", transports=("udp",))
        self.addCleanup(service.proxy.stop)
        client = listenUDP(self, service.ports["udp"])
        response = await client.request(optionsRequest("udp"))
        self.assertEqual(response.status, 200)
        await waitUntil(lambda: len(collector.packets) >= 2, what="two HEP packets")
        received, sent = collector.packets[:2]
        serverPort = struct.pack("!H", service.ports["udp"])
        self.assertTrue(received[15].startswith(b"OPTIONS "))
        self.assertTrue(sent[15].startswith(b"SIP/2.0 200"))
        self.assertEqual((received[8], sent[7]), (serverPort, serverPort))
        self.assertEqual(received[7], sent[8])
        for chunks in (received, sent):
            self.assertEqual((chunks[1], chunks[2], chunks[11]), (b"\x02", b"\x11", b"\x01"))
            self.assertEqual((chunks[3], chunks[4]), (bytes([127, 0, 0, 1]),) * 2)
            self.assertEqual(struct.unpack("!I", chunks[12]), (4242,))
            self.assertLessEqual(abs(struct.unpack("!I", chunks[9])[0] - reactor.seconds()), 60)
