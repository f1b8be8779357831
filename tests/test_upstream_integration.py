# -*- test-case-name: tests.test_upstream_integration -*-
"""
Requests to a host reached only by name: a whole sipcore service on
loopback locates it through SRV records served by a DNS server the test
runs (C{twisted.names.server}), opens the connections it needs, and fails
over to the next SRV target when the first one is down.

The callee is sipp's built-in UAS over UDP and TCP; this sipp has no TLS,
so the TLS tests use a small Twisted TLS server answering C{MESSAGE}.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import socket
from typing import Any

from twisted.internet import defer, ssl
from twisted.internet import reactor as _reactor
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.names import common, dns, server
from twisted.names.error import DNSNameError
from twisted.trial.unittest import TestCase

from sipcore.events import ALL_EVENTS, CLOSE_EVENTS, TCP_CONNECTED
from sipcore.message import Response, generateTag
from sipcore.testing import parseRequest, parseResponse
from tests.peerhelpers import SippProcess, freePort, sippFinished, sippPath, startPeer, startSipp
from tests.serverhelpers import startServer, waitUntil
from tests.test_bus import RecordingHandler

reactor: Any = _reactor


class Zone(common.ResolverBase):
    """
    An authority answering from C{records}: C{(name, type) -> [payload]}.
    """

    def __init__(self, records: dict[tuple[str, int], list[Any]]) -> None:
        common.ResolverBase.__init__(self)
        self.records = records

    def _lookup(self, name: Any, cls: Any, type: Any, timeout: Any) -> defer.Deferred[Any]:
        text = name.decode("ascii") if isinstance(name, bytes) else str(name)
        payloads = self.records.get((text.lower(), type))
        if payloads is None:
            return defer.fail(DNSNameError(text))
        answers = [dns.RRHeader(text, type, dns.IN, 60, payload, auth=True)
                   for payload in payloads]
        return defer.succeed((answers, [], []))


def startDNS(testCase: TestCase, records: dict[tuple[str, int], list[Any]]) -> int:
    """
    Serve C{records} over UDP on loopback until cleanup.

    @return: the port.
    """
    factory = server.DNSServerFactory(authorities=[Zone(records)])
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    testCase.addCleanup(port.stopListening)
    return int(port.getHost().port)


def startUAS(testCase: TestCase, transport: str, port: int) -> SippProcess:
    """
    Run sipp's built-in UAS for one call on C{127.0.0.1:port}.
    """
    workdir = os.path.abspath(testCase.mktemp())
    os.makedirs(workdir)
    args = [sippPath(), "-sn", "uas", "-t", "u1" if transport == "udp" else "t1",
            "-i", "127.0.0.1", "-p", str(port), "-m", "1",
            "-timeout", "30s", "-timeout_error", "-nostdin"]
    return startPeer(testCase, "uas", args, workdir)


def makeCA(directory: str, name: str) -> tuple[Any, Any, str]:
    """
    A CA key and certificate, its PEM written to C{directory/name.pem}.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = os.path.join(directory, name + ".pem")
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def serverCertificate(caKey: Any, caCert: Any, hostname: str) -> ssl.PrivateCertificate:
    """
    A certificate for C{hostname} signed by the CA, as Twisted wants it.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(caCert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(caKey, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    return ssl.PrivateCertificate.loadPEM(pem)


class _MessageUAS(Protocol):
    """
    Answers every request (without a body) with 200.
    """

    def __init__(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            request = parseRequest(head + b"\r\n\r\n")
            self.factory.requests.append(request)  # type: ignore[attr-defined]
            response = Response.forRequest(request, 200, "OK", toTag=generateTag())
            assert self.transport is not None
            self.transport.write(response.serialize())


class _Client(DatagramProtocol):
    """
    A UDP user agent that keeps the responses it gets.
    """

    def __init__(self) -> None:
        self.responses: list[Any] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.responses.append(parseResponse(data))


class UpstreamTests(TestCase):
    """
    Calls and requests to C{uas.test}, a name only the test DNS server
    knows.
    """

    timeout = 120

    async def server(self, records: dict[tuple[str, int], list[Any]], *args: str) -> Any:
        dnsPort = startDNS(self, records)
        service = await startServer(self, "--forward-foreign", "--dns-server",
                                    "127.0.0.1:{}".format(dnsPort), *args,
                                    transports=("udp", "tcp"))
        self.addCleanup(service.proxy.stop)
        self.events = RecordingHandler("upstream-test-recorder", events=ALL_EVENTS)
        service.bus.subscribe(self.events)
        return service

    async def call(self, transport: str, ports: list[int]) -> Any:
        """
        A sipp caller calls C{bob@uas.test} over UDP; C{uas.test} has one
        SRV record per port of C{ports} (in priority order) for
        C{transport}, and a sipp UAS listens on the last one.
        """
        srvName = "_sip._{}.uas.test".format("udp" if transport == "udp" else "tcp")
        records: dict[tuple[str, int], list[Any]] = {
            (srvName, dns.SRV): [dns.Record_SRV(10 * (i + 1), 0, port, "host.uas.test")
                                 for i, port in enumerate(ports)],
            ("host.uas.test", dns.A): [dns.Record_A("127.0.0.1")],
        }
        service = await self.server(records)
        callee = startUAS(self, transport, ports[-1])
        caller = startSipp(self, "uac_upstream.xml", "udp", service.ports["udp"], "bob",
                           "sipcore-" + secrets.token_hex(8))
        callerCode = await sippFinished(caller)
        calleeCode = await sippFinished(callee)
        self.assertEqual(
            (callerCode, calleeCode), (0, 0),
            "sipp caller:\n{}\nsipp callee:\n{}".format(caller.text(), callee.text()))
        return service

    async def test_callOverUDP(self) -> None:
        """
        Over UDP: the INVITE reaches the UAS found through SRV, and the
        call completes end to end.
        """
        service = await self.call("udp", [freePort(socket.SOCK_DGRAM)])
        self.assertGreaterEqual(service.proxy.stats["forwarded"], 2)

    async def test_callOverTCPWithFailover(self) -> None:
        """
        Over TCP with the first SRV target down: the connection to it is
        refused, the branch goes on to the second target over a new
        outgoing connection, the call completes; when the service stops,
        that connection fires exactly one close event, outbound.
        """
        dead = freePort(socket.SOCK_STREAM)
        service = await self.call("tcp", [dead, freePort(socket.SOCK_STREAM)])
        self.assertEqual(service.proxy.stats["failovers"], 1)
        outbound = [e for e in self.events.received
                    if e.name == TCP_CONNECTED and e.direction == "outbound"]
        self.assertEqual(len(outbound), 1)
        await service.stopService()
        closes = [e for e in self.events.received
                  if e.conid == outbound[0].conid and e.name in CLOSE_EVENTS]
        self.assertEqual([e.direction for e in closes], ["outbound"])

    async def tls(self, trusted: bool) -> tuple[Any, list[Any], Any]:
        """
        Send a MESSAGE to C{sip:bob@uas.test;transport=tls}, served by a
        TLS server whose certificate is signed by a CA that is (or is
        not) the one given with C{--tls-ca-file}.

        @return: the service, the requests the TLS server got, and the
            response the sender got.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        caKey, caCert, caFile = makeCA(directory, "ca")
        if trusted:
            signingKey, signingCert = caKey, caCert
        else:
            signingKey, signingCert, _ = makeCA(directory, "rogue")
        certificate = serverCertificate(signingKey, signingCert, "uas.test")
        factory = Factory.forProtocol(_MessageUAS)
        requests: list[Any] = []
        factory.requests = requests  # type: ignore[attr-defined]
        port = reactor.listenSSL(0, factory, certificate.options(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        records: dict[tuple[str, int], list[Any]] = {
            ("_sips._tcp.uas.test", dns.SRV): [
                dns.Record_SRV(10, 0, port.getHost().port, "host.uas.test")],
            ("host.uas.test", dns.A): [dns.Record_A("127.0.0.1")],
        }
        service = await self.server(records, "--tls-ca-file", caFile)
        client = _Client()
        clientPort = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(clientPort.stopListening)
        message = (
            "MESSAGE sip:bob@uas.test;transport=tls SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:alice@example.com>;tag=a1\r\n"
            "To: <sip:bob@uas.test>\r\n"
            "Call-ID: {branch}\r\n"
            "CSeq: 1 MESSAGE\r\n"
            "Content-Length: 0\r\n\r\n").format(port=clientPort.getHost().port,
                                               branch=secrets.token_hex(8))
        clientPort.write(message.encode("ascii"), ("127.0.0.1", service.ports["udp"]))
        await waitUntil(lambda: [r for r in client.responses if r.status >= 200],
                        what="a final response")
        final = [r for r in client.responses if r.status >= 200][0]
        return service, requests, final

    async def test_tls(self) -> None:
        """
        Over TLS to a server whose certificate the configured CA signed
        for the URI's host: the MESSAGE arrives and its 200 comes back.
        """
        _, requests, final = await self.tls(trusted=True)
        self.assertEqual(final.status, 200)
        self.assertEqual([r.method for r in requests], ["MESSAGE"])
        outbound = [e for e in self.events.received if e.name == TCP_CONNECTED]
        self.assertEqual([(e.transport, e.direction) for e in outbound], [("tls", "outbound")])

    async def test_tlsVerificationFails(self) -> None:
        """
        A server whose certificate no trusted CA signed never gets the
        request: the sender gets C{503}, and the connection fired one close
        event.
        """
        _, requests, final = await self.tls(trusted=False)
        self.assertEqual(final.status, 503)
        self.assertEqual(requests, [])
        connected = [e for e in self.events.received if e.name == TCP_CONNECTED]
        closes = [e for e in self.events.received if e.name in CLOSE_EVENTS]
        self.assertEqual(len(connected), 1)
        self.assertEqual([e.conid for e in closes], [connected[0].conid])
