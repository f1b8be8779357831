# -*- test-case-name: tests.test_transport_listen -*-
"""
Unit tests for L{sipcore.transport.listen}: the C{--listen} syntax and
L{ListenerService} on a memory reactor.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IPushProducer
from twisted.logger import capturedLogs
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sipcore.testing import UDPMemoryReactor
from sipcore.transport.connections import ConnectionTable
from sipcore.transport.listen import (
    DEFAULT_LISTEN,
    AdoptedTLSServerEndpoint,
    DatagramServerService,
    ListenerService,
    ListenSpec,
    parseListen,
    streamEndpoint,
    tlsOf,
)
from sipcore.transport.settings import ConnectionSettings
from sipcore.transport.stream import SIPStreamFactory
from sipcore.transport.udp import SIPDatagramProtocol
from sipcore.transport.websocket import SIPWebSocketFactory
from tests.test_transport_support import RecordingBus, RecordingSink, makeCertificate


class ParseListenTests(SynchronousTestCase):
    """
    Tests for L{parseListen}.
    """

    def setUp(self) -> None:
        directory = FilePath(self.mktemp())
        self.key, self.cert = makeCertificate(directory)

    def test_table(self) -> None:
        """
        Each accepted spec maps to its transport, endpoint description,
        port and interface.
        """
        key, cert = self.key, self.cert
        cases = [
            ("udp:5060", ("udp", "udp:5060", 5060, "")),
            ("UDP:0", ("udp", "udp:0", 0, "")),
            (
                "udp:5060:interface=127.0.0.1",
                ("udp", "udp:5060:interface=127.0.0.1", 5060, "127.0.0.1"),
            ),
            ("udp:5060:interface=::1", ("udp", "udp:5060:interface=\\:\\:1", 5060, "::1")),
            ("udp:5060:interface=\\:\\:1", ("udp", "udp:5060:interface=\\:\\:1", 5060, "::1")),
            ("udp:5060:interface=[::1]", ("udp", "udp:5060:interface=\\:\\:1", 5060, "::1")),
            ("tcp:5060", ("tcp", "tcp:5060", 5060, "")),
            (
                "tcp:5060:interface=::1:backlog=10",
                ("tcp", "tcp:5060:interface=\\:\\:1:backlog=10", 5060, "::1"),
            ),
            ("ws:8080", ("ws", "tcp:8080", 8080, "")),
            (
                "ws:8080:interface=fe80::1",
                ("ws", "tcp:8080:interface=fe80\\:\\:1", 8080, "fe80::1"),
            ),
            (
                "tls:5061:privateKey={}:certKey={}".format(key, cert),
                ("tls", "ssl:5061:privateKey={}:certKey={}".format(key, cert), 5061, ""),
            ),
            (
                "wss:443:privateKey={}".format(key),
                ("wss", "ssl:443:privateKey={}".format(key), 443, ""),
            ),
            ("tcp:65535", ("tcp", "tcp:65535", 65535, "")),
        ]
        for text, (transport, description, port, interface) in cases:
            spec = parseListen(text)
            self.assertEqual(
                (spec.transport, spec.description, spec.port, spec.interface),
                (transport, description, port, interface),
                text,
            )

    def test_secure(self) -> None:
        """
        C{secure} is true for TLS and WSS only.
        """
        self.assertTrue(parseListen("tls:5061:privateKey=" + self.key).secure)
        self.assertTrue(parseListen("wss:5061:privateKey=" + self.key).secure)
        self.assertFalse(parseListen("ws:8080").secure)

    def test_errors(self) -> None:
        """
        A bad spec raises L{ValueError} saying what is wrong.
        """
        cases = [
            ("sctp:5060", "unknown transport 'sctp'"),
            ("", "unknown transport ''"),
            ("tcp", "missing port"),
            ("tcp:", "missing port"),
            ("tcp:http", "port must be a number"),
            ("tcp:-1", "port must be a number"),
            ("tcp:65536", "port must be a number"),
            ("tcp:5060:colour=blue", "unknown option 'colour'"),
            ("udp:5060:backlog=5", "unknown option 'backlog'"),
            ("tcp:5060:privateKey=x", "unknown option 'privateKey'"),
            ("tcp:5060:interface=1.2.3.4:interface=1.2.3.5", "given twice"),
            ("tcp:5060:backlog=many", "backlog must be a number"),
            ("udp:5060:fd=x", "fd must be a file descriptor number"),
            ("tls:5061:fd=x", "fd must be a file descriptor number"),
            ("tcp:5060:=x", "expected key=value"),
            ("tls:5061", "needs privateKey"),
            ("wss:5061:certKey=" + self.cert, "needs privateKey"),
            (
                "tls:5061:privateKey=/nonexistent/key.pem",
                "privateKey file '/nonexistent/key.pem' not found",
            ),
            (
                "tls:5061:privateKey={}:certKey=/nonexistent/c.pem".format(self.key),
                "certKey file '/nonexistent/c.pem' not found",
            ),
        ]
        for text, message in cases:
            error = self.assertRaises(ValueError, parseListen, text)
            self.assertIn(message, str(error), text)
            self.assertIn(repr(text), str(error))

    def test_defaults(self) -> None:
        """
        The defaults parse and name UDP and TCP 5060 and WS 8080.
        """
        specs = [parseListen(text) for text in DEFAULT_LISTEN]
        self.assertEqual(
            [(s.transport, s.port) for s in specs], [("udp", 5060), ("tcp", 5060), ("ws", 8080)]
        )


class FailingReactor(UDPMemoryReactor):
    def listenTCP(self, *args: Any, **kwargs: Any) -> Any:
        raise CannotListenError("", 5060, OSError("Address already in use"))


@implementer(IPushProducer)
class PausablePort:
    """
    A listening port that records whether it reads.
    """

    reading = True

    def __init__(self, portNumber: int) -> None:
        self.portNumber = portNumber

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "0.0.0.0", self.portNumber)

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True

    def stopProducing(self) -> None:
        self.reading = False

    def stopListening(self) -> None:
        self.reading = False


class PausablePortReactor(UDPMemoryReactor):
    def listenTCP(self, port: int, *args: Any, **kwargs: Any) -> Any:
        UDPMemoryReactor.listenTCP(self, port, *args, **kwargs)
        self.listening = PausablePort(port)
        return self.listening


class ListenerServiceTests(SynchronousTestCase):
    """
    Tests for L{ListenerService}.
    """

    def setUp(self) -> None:
        self.reactor = UDPMemoryReactor()
        self.sink = RecordingSink()
        self.table = ConnectionTable(RecordingBus(), self.reactor)

    def service(self, text: str, reactor: Any = None, **kwargs: Any) -> ListenerService:
        return ListenerService(
            parseListen(text), reactor or self.reactor, self.sink, self.table, **kwargs
        )

    def test_tcp(self) -> None:
        """
        A TCP listener listens with a L{SIPStreamFactory} on the spec's port
        and interface, records the bound port and logs it once.
        """
        service = self.service("tcp:5070:interface=127.0.0.1", maxSize=2048, idleTimeout=9)
        self.assertIsNone(service.port)
        with capturedLogs() as logged:
            port = self.successResultOf(service.startService())
        [(portNumber, factory, _, interface)] = self.reactor.tcpServers
        self.assertEqual((portNumber, interface), (5070, "127.0.0.1"))
        assert isinstance(factory, SIPStreamFactory)
        self.assertEqual(
            (factory.transportName, factory.settings.maxSize, factory.settings.idleTimeout,
             factory.table),
            ("tcp", 2048, 9, self.table),
        )
        self.assertIs(service.listeningPort, port)
        self.assertEqual(service.port, 5070)
        self.assertIs(service.getHost(), port.getHost())
        self.assertTrue(service.running)
        messages = [e for e in logged if e.get("log_format", "").startswith("listening on")]
        self.assertEqual(len(messages), 1)
        self.assertEqual(messages[0]["transport"], "tcp")

    def test_ws(self) -> None:
        """
        A WS listener listens with a L{SIPWebSocketFactory} whose reactor is
        the service's.
        """
        service = self.service("ws:8080", closeHandshakeTimeout=0.5)
        self.successResultOf(service.startService())
        [(portNumber, factory, _, _)] = self.reactor.tcpServers
        assert isinstance(factory, SIPWebSocketFactory)
        self.assertEqual((factory.transportName, factory.reactor), ("ws", self.reactor))
        self.assertEqual(factory.closeHandshakeTimeout, 0.5)

    def test_tls(self) -> None:
        """
        A TLS listener listens with SSL and a C{tls} stream factory.
        """
        key, cert = makeCertificate(FilePath(self.mktemp()))
        service = self.service("tls:5061:privateKey={}:certKey={}".format(key, cert))
        self.successResultOf(service.startService())
        [(portNumber, factory, contextFactory, _, _)] = self.reactor.sslServers
        self.assertEqual((portNumber, factory.transportName), (5061, "tls"))
        self.assertIsNotNone(contextFactory)

    def test_adoptedUDP(self) -> None:
        """
        A UDP spec with C{fd=N} adopts that descriptor, with the family of
        its interface, instead of binding a socket.
        """
        service = self.service("udp:5060:interface=::1:fd=7", maxSize=1000)
        self.successResultOf(service.startService())
        [(fileno, family, protocol, maxPacketSize)] = self.reactor.adoptedPorts
        self.assertEqual((fileno, family, maxPacketSize), (7, socket.AF_INET6, 1001))
        self.assertIs(protocol, service.factory)
        self.assertEqual(self.reactor.udpServers, [])
        self.assertEqual(service.spec.description, "udp:5060:interface=\\:\\:1")

    def test_adoptedStream(self) -> None:
        """
        A TCP or WS spec with C{fd=N} listens on that descriptor with an
        L{AdoptedStreamServerEndpoint}, which closes it once the reactor
        adopted a copy.
        """
        sock = socket.socket()
        self.addCleanup(sock.close)
        fileno = os.dup(sock.fileno())
        service = self.service("ws:8080:fd={}".format(fileno))
        self.successResultOf(service.startService())
        [(adopted, family, factory)] = self.reactor.adoptedPorts
        self.assertEqual((adopted, family), (fileno, socket.AF_INET))
        self.assertIsInstance(factory, SIPWebSocketFactory)
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertRaises(OSError, os.fstat, fileno)
        endpoint = streamEndpoint(self.reactor, parseListen("tcp:5060:fd=9"))
        self.assertIsInstance(endpoint, AdoptedStreamServerEndpoint)

    def test_adoptedSecure(self) -> None:
        """
        A TLS or WSS spec with C{fd=N} reads its certificate and key and
        listens on that descriptor with an L{AdoptedTLSServerEndpoint}: the
        adopted port's factory wraps the listener's SIP factory in TLS.
        """
        key, cert = makeCertificate(FilePath(self.mktemp()))
        for transport, factoryType in (("tls", SIPStreamFactory),
                                       ("wss", SIPWebSocketFactory)):
            sock = socket.socket(socket.AF_INET6)
            self.addCleanup(sock.close)
            fileno = os.dup(sock.fileno())
            service = self.service("{}:5061:interface=::1:privateKey={}:certKey={}:fd={}".format(
                transport, key, cert, fileno))
            self.assertIsNotNone(service.tls)
            self.successResultOf(service.startService())
            (adopted, family, factory) = self.reactor.adoptedPorts.pop()
            self.assertEqual((adopted, family), (fileno, socket.AF_INET6))
            assert isinstance(factory, TLSMemoryBIOFactory)
            self.assertIs(factory.wrappedFactory, service.factory)
            self.assertIsInstance(service.factory, factoryType)
            self.assertEqual(service.factory.transportName, transport)
            self.assertRaises(OSError, os.fstat, fileno)
        self.assertEqual((self.reactor.tcpServers, self.reactor.sslServers), ([], []))
        spec = parseListen("tls:5061:privateKey={}:certKey={}:fd=9".format(key, cert))
        self.assertIsInstance(streamEndpoint(self.reactor, spec, tls=tlsOf(spec)),
                              AdoptedTLSServerEndpoint)
        self.assertEqual(spec.description,
                         "ssl:5061:privateKey={}:certKey={}".format(key, cert))

    def test_udp(self) -> None:
        """
        A UDP listener uses C{listenUDP} with the interface; with port 0 the
        bound port is recorded.
        """
        service = self.service("udp:0:interface=::1", receiveBuffer=0)
        self.successResultOf(service.startService())
        [(portNumber, protocol, interface)] = self.reactor.udpServers
        self.assertEqual((portNumber, interface), (0, "::1"))
        self.assertIsInstance(protocol, SIPDatagramProtocol)
        self.assertEqual(protocol.receiveBuffer, 0)
        self.assertEqual(service.port, 40404)

    def test_stop(self) -> None:
        """
        C{stopService} stops listening and forgets the port.
        """
        service = self.service("udp:5060")
        self.successResultOf(service.startService())
        udpPort = service.listeningPort
        self.assertIsNone(self.successResultOf(service.stopService()))
        self.assertTrue(udpPort.stopped)
        self.assertIsNone(service.port)
        self.assertIsNone(service.listeningPort)
        self.assertFalse(service.running)

    def test_privilegedStart(self) -> None:
        """
        C{privilegedStartService} binds; C{startService} then does not bind
        again.
        """
        service = self.service("tcp:506")
        service.privilegedStartService()
        self.assertEqual(len(self.reactor.tcpServers), 1)
        self.successResultOf(service.startService())
        self.assertEqual(len(self.reactor.tcpServers), 1)

    def test_privilegedStartHolds(self) -> None:
        """
        A port bound by C{privilegedStartService} reads nothing (what
        arrives waits in the kernel) until C{startService}; a port bound by
        C{startService} reads at once.
        """
        reactor = PausablePortReactor()
        service = self.service("tcp:80", reactor=reactor)
        service.privilegedStartService()
        self.assertFalse(reactor.listening.reading)
        self.successResultOf(service.startService())
        self.assertTrue(reactor.listening.reading)
        self.assertEqual(len(reactor.tcpServers), 1)
        self.successResultOf(service.stopService())
        later = self.service("tcp:81", reactor=reactor)
        self.successResultOf(later.startService())
        self.assertTrue(reactor.listening.reading)

    def test_cannotListen(self) -> None:
        """
        A listen failure fails the L{Deferred} of C{startService} and is
        logged once.
        """
        service = self.service("tcp:5060", reactor=FailingReactor())
        with capturedLogs() as logged:
            service.privilegedStartService()
            self.failureResultOf(service.startService(), CannotListenError)
        self.assertIsNone(service.port)
        errors = [e for e in logged if e.get("log_format", "").startswith("cannot listen")]
        self.assertEqual(len(errors), 1)

    def test_endpointServices(self) -> None:
        """
        A stream listener listens through a L{StreamServerEndpointService},
        a UDP one through a L{DatagramServerService}; each runs while its
        listener does.
        """
        tcp, udp = self.service("tcp:0"), self.service("udp:0")
        for listener in (tcp, udp):
            self.successResultOf(listener.startService())
        tcpServer, udpServer = tcp.server, udp.server
        self.assertIsInstance(tcpServer, StreamServerEndpointService)
        self.assertIsInstance(udpServer, DatagramServerService)
        self.assertTrue(tcpServer is not None and tcpServer.running)
        self.assertTrue(udpServer is not None and udpServer.running)
        for listener in (tcp, udp):
            self.successResultOf(listener.stopService())
        self.assertEqual((tcp.server, udp.server), (None, None))

    def test_name(self) -> None:
        """
        The service is named after its transport and description.
        """
        service = ListenerService(ListenSpec("ws", "tcp:1", 1), self.reactor, self.sink, self.table)
        self.assertEqual(service.name, "ws tcp:1")

    def test_backlog(self) -> None:
        """
        Stream listeners listen with the given backlog (default 1024) unless
        their spec names one; a backlog below 1 is refused.
        """
        self.successResultOf(self.service("tcp:0").startService())
        self.successResultOf(self.service("ws:0", backlog=300).startService())
        self.successResultOf(self.service("tcp:0:backlog=7", backlog=300).startService())
        self.assertEqual([server[2] for server in self.reactor.tcpServers], [1024, 300, 7])
        self.assertRaises(ValueError, self.service, "tcp:0", backlog=0)

    def test_connectionOptions(self) -> None:
        """
        The stream and WebSocket factories get one frozen
        L{ConnectionSettings}, the listener's, made of its options and its
        spec's C{maxSize}; the WebSocket factory gives autobahn its
        handshake timeout.
        """
        options = dict(handshakeTimeout=3.0, unregisteredIdleTimeout=50.0,
                       maxHandshakeSize=2048, allowedOrigins=["https://a.example"],
                       originDomains=["example.com"])
        services = [self.service(text, **options) for text in ("tcp:0", "ws:0:maxSize=900")]
        for service in services:
            self.successResultOf(service.startService())
        tcpFactory, wsFactory = (server[1] for server in self.reactor.tcpServers)
        assert isinstance(tcpFactory, SIPStreamFactory)
        assert isinstance(wsFactory, SIPWebSocketFactory)
        self.assertIs(tcpFactory.settings, services[0].settings)
        self.assertIs(wsFactory.settings, services[1].settings)
        self.assertEqual(
            services[1].settings,
            ConnectionSettings(maxSize=900, handshakeTimeout=3.0, unregisteredIdleTimeout=50.0,
                               maxHandshakeSize=2048, allowedOrigins=("https://a.example",),
                               originDomains=frozenset({"example.com"})))
        self.assertEqual(wsFactory.openHandshakeTimeout, 3.0)
        self.assertRaises(ValueError, self.service, "tcp:0", messageTimeout=-1)

    def test_optionsFiltered(self) -> None:
        """
        Each listener takes the options of its transport and ignores the
        others, so one set serves all; an option nobody knows is an error.
        """
        options = dict(receiveBuffer=0, closeGrace=1.5, closeHandshakeTimeout=0.25)
        for text in ("udp:0", "tcp:0", "ws:0"):
            self.successResultOf(self.service(text, **options).startService())
        self.assertEqual(self.reactor.udpServers[0][1].receiveBuffer, 0)
        tcpFactory, wsFactory = (server[1] for server in self.reactor.tcpServers)
        assert isinstance(tcpFactory, SIPStreamFactory)
        assert isinstance(wsFactory, SIPWebSocketFactory)
        self.assertEqual(tcpFactory.settings.closeGrace, 1.5)
        self.assertEqual(wsFactory.closeHandshakeTimeout, 0.25)
        self.assertRaises(TypeError, self.service, "tcp:0", colour="blue")
