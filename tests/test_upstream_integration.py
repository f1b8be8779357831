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

from sipcore.events import (
    ALL_EVENTS,
    CLOSE_EVENTS,
    TCP_CONNECTED,
    WEBSOCKET_CLOSED,
    WEBSOCKET_CONNECTED,
)
from sipcore.message import Response, generateTag
from sipcore.testing import parseRequest, parseResponse
from tests.peerhelpers import (
    SCENARIOS,
    SIPP_TIMEOUT,
    SippProcess,
    freePort,
    sippFinished,
    sippPath,
    startPeer,
    startSipp,
)
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


def startUAS(testCase: TestCase, transport: str, port: int, timeout: float = 30,
             scenario: str | None = None) -> SippProcess:
    """
    Run sipp's built-in UAS, or the UAS C{scenario} (a file in
    L{SCENARIOS}), for one call on C{127.0.0.1:port}; it fails when no
    call completed within C{timeout} seconds.
    """
    workdir = os.path.abspath(testCase.mktemp())
    os.makedirs(workdir)
    script = ["-sn", "uas"] if scenario is None else ["-sf", os.path.join(SCENARIOS, scenario)]
    args = [sippPath(), *script, "-t", "u1" if transport == "udp" else "t1",
            "-i", "127.0.0.1", "-p", str(port), "-m", "1",
            "-timeout", "{:g}s".format(timeout), "-timeout_error", "-nostdin"]
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


def serverCertificate(caKey: Any, caCert: Any, hostname: str,
                      address: str = "127.0.0.1") -> ssl.PrivateCertificate:
    """
    A certificate for C{hostname} and the IP C{address} signed by the CA,
    as Twisted wants it.
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
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address(address))]),
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

    def __init__(self, server: _MessageServer) -> None:
        self.server = server
        self.buffer = b""

    def connectionMade(self) -> None:
        self.server.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            request = parseRequest(head + b"\r\n\r\n")
            self.server.requests.append(request)
            response = Response.forRequest(request, 200, "OK", toTag=generateTag())
            assert self.transport is not None
            self.transport.write(response.serialize())


class _MessageServer(Factory):
    """
    Makes L{_MessageUAS} connections.

    @ivar requests: every request received, in order.
    @ivar connections: every connection accepted.
    """

    noisy = False

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.connections: list[_MessageUAS] = []

    def buildProtocol(self, addr: Any) -> _MessageUAS:
        return _MessageUAS(self)


class _Client(DatagramProtocol):
    """
    A UDP user agent that keeps the responses it gets.
    """

    def __init__(self) -> None:
        self.responses: list[Any] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.responses.append(parseResponse(data))


async def sendMessage(testCase: TestCase, service: Any, uri: str,
                      method: str = "MESSAGE") -> Any:
    """
    Send a C{MESSAGE} (or another C{method}) to C{uri} from a UDP client
    on loopback to the service's UDP listener.

    @return: the first final response it gets.
    """
    client = _Client()
    clientPort = reactor.listenUDP(0, client, interface="127.0.0.1")
    testCase.addCleanup(clientPort.stopListening)
    message = (
        "{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\n"
        "To: <{uri}>\r\n"
        "Call-ID: {branch}\r\n"
        "CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n").format(method=method, uri=uri,
                                           port=clientPort.getHost().port,
                                           branch=secrets.token_hex(8))
    clientPort.write(message.encode("ascii"), ("127.0.0.1", service.ports["udp"]))
    await waitUntil(lambda: [r for r in client.responses if r.status >= 200],
                    what="a final response")
    return [r for r in client.responses if r.status >= 200][0]


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
        factory = _MessageServer()
        requests = factory.requests
        port = reactor.listenSSL(0, factory, certificate.options(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        records: dict[tuple[str, int], list[Any]] = {
            ("_sips._tcp.uas.test", dns.SRV): [
                dns.Record_SRV(10, 0, port.getHost().port, "host.uas.test")],
            ("host.uas.test", dns.A): [dns.Record_A("127.0.0.1")],
        }
        service = await self.server(records, "--tls-ca-file", caFile)
        final = await sendMessage(self, service, "sip:bob@uas.test;transport=tls")
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


#: Seconds a branch to a stopped UDP server waits before it fails over:
#: its client transaction's timer B or F (64*T1).
UDP_FAILOVER = 32


class RouteTargetByNameTests(TestCase):
    """
    The C{routes} handler's default route names its target by host name
    only (C{pbx.test}): sipcore locates it through the SRV records the
    test DNS server serves over UDP (C{--dns-server}), and once the first
    SRV target has stopped, requests fail over to the second.
    """

    timeout = 180

    async def server(self, target: str, records: dict[tuple[str, int], list[Any]],
                     *args: str) -> Any:
        dnsPort = startDNS(self, records)
        service = await startServer(
            self, "--dns-server", "127.0.0.1:{}".format(dnsPort), "--trusted-peer",
            "127.0.0.1", "--handler", "routes", "--handler-option", "routes:default=" + target,
            "--handler-option", "routes:allow=users,peers", "--router", "routes", *args,
            transports=("udp", "tcp"))
        self.addCleanup(service.proxy.stop)
        self.events = RecordingHandler("route-by-name-recorder", events=ALL_EVENTS)
        service.bus.subscribe(self.events)
        return service

    @staticmethod
    def srvRecords(name: str, ports: list[int]) -> dict[tuple[str, int], list[Any]]:
        """
        One SRV record of C{name} per port, in priority order, all on
        C{host.pbx.test} (C{127.0.0.1}).
        """
        return {
            (name, dns.SRV): [dns.Record_SRV(10 * (i + 1), 0, port, "host.pbx.test")
                              for i, port in enumerate(ports)],
            ("host.pbx.test", dns.A): [dns.Record_A("127.0.0.1")],
        }

    async def callTwice(self, transport: str, target: str, srvName: str,
                        failoverWait: float) -> tuple[Any, list[int]]:
        """
        Two sipp UASes (C{upstream.xml}, which keeps sipcore's
        Record-Route) are the two SRV targets of C{target}; a sipp caller
        (a trusted peer, over UDP) calls a number of another domain
        through the default route: the first call reaches the first UAS,
        which stops after it; the second call fails over to the second.

        @param failoverWait: how long the failover can take (seconds).
        @return: the service and the two UAS ports.
        """
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        ports = [freePort(kind), freePort(kind)]
        service = await self.server(target, self.srvRecords(srvName, ports))
        first = startUAS(self, transport, ports[0], scenario="upstream.xml")
        second = startUAS(self, transport, ports[1], timeout=failoverWait + SIPP_TIMEOUT * 2,
                          scenario="upstream.xml")
        caller = startSipp(self, "uac_upstream.xml", "udp", service.ports["udp"], "+4930",
                           "sipcore-" + secrets.token_hex(8))
        self.assertEqual(
            (await sippFinished(caller), await sippFinished(first)), (0, 0),
            "caller:\n{}\nfirst UAS:\n{}".format(caller.text(), first.text()))
        self.assertEqual(service.proxy.stats["failovers"], 0)
        caller = startSipp(self, "uac_upstream.xml", "udp", service.ports["udp"], "+4930",
                           "sipcore-" + secrets.token_hex(8),
                           timeout=failoverWait + SIPP_TIMEOUT)
        callerCode = await sippFinished(caller, timeout=failoverWait + SIPP_TIMEOUT)
        secondCode = await sippFinished(second, timeout=failoverWait + SIPP_TIMEOUT * 2)
        self.assertEqual(
            (callerCode, secondCode), (0, 0),
            "caller:\n{}\nsecond UAS:\n{}".format(caller.text(), second.text()))
        self.assertEqual(service.proxy.stats["failovers"], 1)
        self.assertEqual(service.proxy.routers.stats["routed"], 2)
        return service, ports

    async def test_udp(self) -> None:
        """
        Over UDP (C{sip:pbx.test}: no NAPTR records, so the
        C{_sip._udp} SRV records): the second call's INVITE to the stopped
        UAS goes unanswered until timer B, then goes to the second UAS and
        the call completes.
        """
        await self.callTwice("udp", "sip:pbx.test", "_sip._udp.pbx.test", UDP_FAILOVER)

    async def test_tcp(self) -> None:
        """
        Over TCP (C{sip:pbx.test;transport=tcp}): the first call opens an
        outgoing connection to the first UAS, which closes when that UAS
        stops; the second call's connection to it is refused and it fails
        over at once to a new connection to the second UAS.  Each outgoing
        connection fires exactly one close event, outbound.
        """
        service, ports = await self.callTwice("tcp", "sip:pbx.test;transport=tcp",
                                              "_sip._tcp.pbx.test", 0)
        connected = [e for e in self.events.received
                     if e.name == TCP_CONNECTED and e.direction == "outbound"]
        self.assertEqual([e.remote[1] for e in connected], ports)
        await service.stopService()
        for event in connected:
            closes = [e for e in self.events.received
                      if e.conid == event.conid and e.name in CLOSE_EVENTS]
            self.assertEqual([e.direction for e in closes], ["outbound"])

    async def test_tls(self) -> None:
        """
        Over TLS (C{sips:pbx.test}: the C{_sips._tcp} SRV records), two
        servers with certificates for C{pbx.test}: a MESSAGE reaches the
        first; once it stopped (its listener and its connection closed),
        the next MESSAGE fails over to the second and its 200 comes back.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        caKey, caCert, caFile = makeCA(directory, "ca")
        servers, listening = [], []
        for _ in range(2):
            factory = _MessageServer()
            certificate = serverCertificate(caKey, caCert, "pbx.test")
            port = reactor.listenSSL(0, factory, certificate.options(), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            servers.append(factory)
            listening.append(port)
        records = self.srvRecords("_sips._tcp.pbx.test",
                                  [port.getHost().port for port in listening])
        service = await self.server("sips:pbx.test", records, "--tls-ca-file", caFile)
        first = await sendMessage(self, service, "sip:bob@elsewhere.test")
        self.assertEqual(first.status, 200)
        self.assertEqual([len(f.requests) for f in servers], [1, 0])
        [conid] = [e.conid for e in self.events.received if e.name == TCP_CONNECTED]
        await listening[0].stopListening()
        for connection in servers[0].connections:
            assert connection.transport is not None
            connection.transport.loseConnection()
        await waitUntil(lambda: [e for e in self.events.received
                                 if e.conid == conid and e.name in CLOSE_EVENTS],
                        what="the close of the first server's connection")
        second = await sendMessage(self, service, "sip:bob@elsewhere.test")
        self.assertEqual(second.status, 200)
        self.assertEqual([len(f.requests) for f in servers], [1, 1])
        self.assertEqual(service.proxy.stats["failovers"], 1)
        connected = [e for e in self.events.received if e.name == TCP_CONNECTED]
        self.assertEqual([(e.transport, e.direction) for e in connected],
                         [("tls", "outbound")] * 2)


class OutgoingWebSocketTests(TestCase):
    """
    A request to a WS or WSS next hop opens a WebSocket client connection
    to it: here the WS or WSS listener of a second sipcore service on
    C{127.0.0.2}, which answers the C{OPTIONS} sent to it.
    """

    timeout = 60

    async def optionsThrough(self, transport: str, *serverArgs: str,
                             clientArgs: tuple[str, ...] = ()) -> None:
        """
        Send C{OPTIONS sip:127.0.0.2:PORT;transport=T} to the first
        service, which forwards it over a new outgoing connection to the
        second service's listener; the second answers, the 200 comes back,
        and a second OPTIONS reuses the connection.  When the first
        service stops, the connection fires exactly one C{tcp:*} event and
        one C{websocket:closed}, outbound.
        """
        upstream = await startServer(self, *serverArgs, transports=())
        sender = await startServer(self, "--forward-foreign", *clientArgs, transports=("udp",))
        self.addCleanup(sender.proxy.stop)
        events = RecordingHandler("outgoing-ws-recorder", events=ALL_EVENTS)
        sender.bus.subscribe(events)
        upstreamEvents = RecordingHandler("upstream-ws-recorder", events=ALL_EVENTS)
        upstream.bus.subscribe(upstreamEvents)
        uri = "sip:127.0.0.2:{};transport={}".format(upstream.ports[transport], transport)
        for _ in range(2):
            final = await sendMessage(self, sender, uri, method="OPTIONS")
            self.assertEqual(final.status, 200)
        self.assertEqual([(e.name, e.transport, e.direction) for e in events.received],
                         [(TCP_CONNECTED, transport, "outbound"),
                          (WEBSOCKET_CONNECTED, transport, "outbound")])
        self.assertEqual([(e.name, e.direction) for e in upstreamEvents.received],
                         [(TCP_CONNECTED, "inbound"), (WEBSOCKET_CONNECTED, "inbound")])
        self.assertEqual(upstream.core.stats["received"], 2)
        [conid] = {e.conid for e in events.received}
        await sender.stopService()
        closes = [e for e in events.received if e.conid == conid and e.name not in (
            TCP_CONNECTED, WEBSOCKET_CONNECTED)]
        self.assertEqual(len([e for e in closes if e.name in CLOSE_EVENTS]), 1)
        self.assertEqual([e.name for e in closes if e.name == WEBSOCKET_CLOSED],
                         [WEBSOCKET_CLOSED])
        self.assertEqual({e.direction for e in closes}, {"outbound"})
        await waitUntil(lambda: [e for e in upstreamEvents.received if e.name in CLOSE_EVENTS],
                        what="the upstream's close event")

    async def test_ws(self) -> None:
        """
        Over WS.
        """
        await self.optionsThrough("ws", "--listen", "ws:0:interface=127.0.0.2")

    async def test_wss(self) -> None:
        """
        Over WSS, the upstream's certificate verified against the CA given
        with C{--tls-ca-file} for the address of the URI.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        caKey, caCert, caFile = makeCA(directory, "ca")
        pem = os.path.join(directory, "server.pem")
        with open(pem, "wb") as f:
            f.write(serverCertificate(caKey, caCert, "uas.test", "127.0.0.2").dumpPEM())
        await self.optionsThrough(
            "wss", "--listen", "wss:0:interface=127.0.0.2:privateKey={0}:certKey={0}".format(pem),
            clientArgs=("--tls-ca-file", caFile))

    async def test_wssVerificationFails(self) -> None:
        """
        A WSS upstream whose certificate no trusted CA signed never gets
        the request: the sender gets C{503}, and the attempt fired one
        close event and no C{websocket:connected}.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        _, _, caFile = makeCA(directory, "ca")
        rogueKey, rogueCert, _ = makeCA(directory, "rogue")
        pem = os.path.join(directory, "server.pem")
        with open(pem, "wb") as f:
            f.write(serverCertificate(rogueKey, rogueCert, "uas.test", "127.0.0.2").dumpPEM())
        upstream = await startServer(
            self, "--listen", "wss:0:interface=127.0.0.2:privateKey={0}:certKey={0}".format(pem),
            transports=())
        sender = await startServer(self, "--forward-foreign", "--tls-ca-file", caFile,
                                   transports=("udp",))
        self.addCleanup(sender.proxy.stop)
        events = RecordingHandler("outgoing-wss-recorder", events=ALL_EVENTS)
        sender.bus.subscribe(events)
        final = await sendMessage(self, sender, "sip:127.0.0.2:{};transport=wss".format(
            upstream.ports["wss"]), method="OPTIONS")
        self.assertEqual(final.status, 503)
        self.assertEqual(upstream.core.stats["received"], 0)
        names = [e.name for e in events.received]
        self.assertEqual(names[0], TCP_CONNECTED)
        self.assertEqual(len(names), 2)
        self.assertIn(names[1], CLOSE_EVENTS)
