# -*- test-case-name: tests.test_capture_integration -*-
"""
SIP capture on a whole sipcore service on loopback: sipp calls sipp
through the proxy over UDP and over TCP with C{--sip-trace}, clients
register over TLS, WebSocket, WSS and IPv6 (C{::1}), and tshark (Debian
package C{tshark}) reads the pcap file back; a HEP collector (a Twisted
datagram protocol here) receives C{--hep} packets.

Without sipp or tshark these tests skip, unless C{SIPCORE_REQUIRE_PEERS=1}
(as C{.ci/run} sets), where a missing tool is a failure.
"""

from __future__ import annotations

import secrets
import shutil
import struct
import subprocess
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from sipcore.message import Response
from tests.peerhelpers import _missing, sippFinished, startSipp, waitRegistered
from tests.serverhelpers import (
    TCPClient,
    UDPClient,
    WSClient,
    connectWS,
    listenUDP,
    optionsRequest,
    portOf,
    registerRequest,
    startServer,
    waitUntil,
)
from tests.test_transport_support import makeCertificate


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


#: The tshark fields of each SIP message in the stream tests.
_FIELDS = ("ip.src", "ipv6.src", "tcp.srcport", "udp.srcport", "ip.dst", "ipv6.dst",
           "tcp.dstport", "udp.dstport", "sip.Method", "sip.Status-Code", "sip.Via.transport",
           "sip.Call-ID")


def _register(viaTransport: str, user: str, localPort: int, host: str = "127.0.0.1") -> bytes:
    """
    A REGISTER whose Via and Contact name C{viaTransport} (C{TLS}, C{WS},
    C{WSS}, C{TCP}, C{UDP}) and C{host:localPort}.
    """
    contact = "<sip:{}@{}:{};transport={}>".format(
        user, "[{}]".format(host) if ":" in host else host, localPort, viaTransport.lower())
    request = registerRequest("tcp", user, contact=contact, callId="trace-" + user,
                              localPort=localPort)
    return request.replace(b"SIP/2.0/TCP 127.0.0.1:", "SIP/2.0/{} {}:".format(
        viaTransport, "[{}]".format(host) if ":" in host else host).encode(), 1)


class StreamPcapTests(TestCase):
    """
    C{--sip-trace} over TLS, WebSocket, WSS (each message as the transport
    carried it, decrypted and unframed, in a synthetic TCP segment between
    the real addresses and ports) and over IPv6: tshark decodes each REGISTER
    and its C{200} with the client's and the server's addresses and ports and
    the transport in the Via.
    """

    timeout = 120

    async def trace(self, *listen: str) -> tuple[str, Any]:
        path = self.mktemp()
        service = await startServer(self, "--sip-trace", path, *listen, transports=())
        self.addCleanup(service.proxy.stop)
        return path, service

    def read(self, path: str, port: int, kind: str = "tcp") -> list[dict[str, str]]:
        fields: list[str] = []
        for name in _FIELDS:
            fields += ["-e", name]
        rows = tshark(path, "-d", "{}.port=={},sip".format(kind, port), "-Y", "sip",
                      "-T", "fields", "-E", "occurrence=f", *fields)
        return [dict(zip(_FIELDS, row, strict=True)) for row in rows]

    def assertExchange(self, rows: list[dict[str, str]], user: str, via: str,
                       client: tuple[str, int], server: tuple[str, int],
                       kind: str = "tcp") -> None:
        """
        The REGISTER of C{user} went from C{client} to C{server}, its C{200}
        back, both with C{via} as the Via transport.
        """
        family = "ipv6" if ":" in client[0] else "ip"
        mine = [row for row in rows if row["sip.Call-ID"] == "trace-" + user]
        seen = sorted((row["sip.Method"] or row["sip.Status-Code"],
                       row[family + ".src"], int(row[kind + ".srcport"]),
                       row[family + ".dst"], int(row[kind + ".dstport"]),
                       row["sip.Via.transport"]) for row in mine)
        self.assertEqual(seen, [
            ("200", server[0], server[1], client[0], client[1], via),
            ("REGISTER", client[0], client[1], server[0], server[1], via),
        ])

    async def registerOver(self, client: TCPClient | WSClient, via: str, user: str) -> int:
        localPort = client.localPort
        response: Response = await client.request(_register(via, user, localPort))
        self.assertEqual(response.status, 200)
        return localPort

    async def test_tls(self) -> None:
        """
        Over TLS the file holds the decrypted SIP, as received and sent.
        """
        key, cert = makeCertificate(FilePath(self.mktemp()))
        path, service = await self.trace(
            "--listen", "tls:0:interface=127.0.0.1:privateKey={}:certKey={}".format(key, cert))
        port = service.ports["tls"]
        trust = ssl.Certificate.loadPEM(FilePath(cert).getContent())
        client = TCPClient()
        await connectProtocol(SSL4ClientEndpoint(
            reactor, "127.0.0.1", port, ssl.optionsForClientTLS("localhost", trustRoot=trust)),
            client)
        localPort = await self.registerOver(client, "TLS", "tina")
        client.transport.loseConnection()
        await client.waiters.lost
        await service.stopService()
        self.assertExchange(self.read(path, port), "tina", "TLS", ("127.0.0.1", localPort),
                            ("127.0.0.1", port))

    async def test_websocket(self) -> None:
        """
        Over WebSocket the file holds each message's payload, without the
        WebSocket framing.
        """
        path, service = await self.trace("--listen", "ws:0:interface=127.0.0.1")
        port = service.ports["ws"]
        client = await connectWS(port)
        localPort = await self.registerOver(client, "WS", "walt")
        client.sendClose(1000)
        await client.waiters.lost
        await service.stopService()
        self.assertExchange(self.read(path, port), "walt", "WS", ("127.0.0.1", localPort),
                            ("127.0.0.1", port))

    async def test_wss(self) -> None:
        """
        Over WSS the file holds each message decrypted and unframed.
        """
        key, cert = makeCertificate(FilePath(self.mktemp()))
        path, service = await self.trace(
            "--listen", "wss:0:interface=127.0.0.1:privateKey={}:certKey={}".format(key, cert))
        port = service.ports["wss"]
        factory = WebSocketClientFactory("wss://localhost:{}".format(port), protocols=["sip"],
                                         reactor=reactor)
        factory.protocol = WSClient
        trust = ssl.Certificate.loadPEM(FilePath(cert).getContent())
        client = await connectProtocol(SSL4ClientEndpoint(
            reactor, "127.0.0.1", port, ssl.optionsForClientTLS("localhost", trustRoot=trust)),
            factory.buildProtocol(None))
        await client.opened
        localPort = await self.registerOver(client, "WSS", "wendy")
        client.sendClose(1000)
        await client.waiters.lost
        await service.stopService()
        self.assertExchange(self.read(path, port), "wendy", "WSS", ("127.0.0.1", localPort),
                            ("127.0.0.1", port))

    async def test_ipv6(self) -> None:
        """
        Over UDP and TCP on C{::1} the file holds IPv6 packets with the
        real addresses and ports.
        """
        path, service = await self.trace("--listen", "udp:0:interface=::1",
                                         "--listen", "tcp:0:interface=::1")
        udpPort, tcpPort = service.ports["udp"], service.ports["tcp"]
        udp = UDPClient(udpPort)
        listening = IReactorUDP(reactor).listenUDP(0, udp, interface="::1", maxPacketSize=8192)
        self.addCleanup(listening.stopListening)
        udpLocal = portOf(listening)
        udp.transport.write(_register("UDP", "uma", udpLocal, "::1"), ("::1", udpPort))
        self.assertEqual((await udp.waiters.next()).status, 200)
        tcp = TCPClient()
        await connectProtocol(TCP6ClientEndpoint(reactor, "::1", tcpPort), tcp)
        tcpLocal = tcp.localPort
        response = await tcp.request(_register("TCP", "ted", tcpLocal, "::1"))
        self.assertEqual(response.status, 200)
        tcp.transport.loseConnection()
        await tcp.waiters.lost
        await service.stopService()
        self.assertExchange(self.read(path, udpPort, "udp"), "uma", "UDP",
                            ("::1", udpLocal), ("::1", udpPort), kind="udp")
        self.assertExchange(self.read(path, tcpPort), "ted", "TCP",
                            ("::1", tcpLocal), ("::1", tcpPort))


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
