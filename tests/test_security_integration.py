# -*- test-case-name: tests.test_security_integration -*-
"""
Integration tests of the security controls on a whole running server
(C{buildService} on loopback ports with the real reactor) and real clients:
Twisted's TCP and TLS clients, autobahn's WebSocket client over WSS.
"""

from __future__ import annotations

import secrets
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import defer, protocol, reactor, ssl, task
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import ITCPTransport
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from sipcore.events import (
    CLOSE_EVENTS,
    TCP_CONNECTED,
    TCP_RESET,
    TCP_TIMEOUT,
    WEBSOCKET_CLOSED,
    WEBSOCKET_CONNECTED,
)
from sipcore.message import Response
from sipcore.sip.auth import parseDigest
from sipcore.transport._autobahn import useReactorTimers
from tests.serverhelpers import (
    PATIENCE,
    WSClient,
    connectTCP,
    optionsRequest,
    registerRequest,
    startServer,
    waitUntil,
)
from tests.test_auth import credentials
from tests.test_transport_support import makeCertificate


class EventRecorder:
    """
    A bus handler that records every connection event.
    """

    name = "test-recorder"
    events = (TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED) + tuple(CLOSE_EVENTS)
    priority = 0
    timeout: float | None = None
    concurrency: int | None = None
    backlog: int | None = None

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def handle(self, event: Any) -> None:
        self.seen.append(event)

    def names(self, conid: int | None = None) -> list[str]:
        return [e.name for e in self.seen if conid is None or e.conid == conid]

    def closes(self) -> list[Any]:
        return [e for e in self.seen if e.name in CLOSE_EVENTS]


class RawClient(protocol.Protocol):
    """
    Sends bytes as told; records what comes back and when it is cut off.
    """

    transport: ITCPTransport

    def __init__(self) -> None:
        self.data = b""
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        self.lost.callback(None)


async def connectRaw(testCase: TestCase, port: int) -> RawClient:
    client = RawClient()
    creator = protocol.ClientCreator(reactor, lambda: client)
    await creator.connectTCP("127.0.0.1", port, timeout=PATIENCE)

    def cleanup() -> Any:
        if not client.lost.called:
            client.transport.abortConnection()
        return client.lost

    testCase.addCleanup(cleanup)
    return client


class SecurityIntegrationTests(TestCase):
    """
    The controls on a running server.
    """

    timeout = 60

    async def server(self, *args: str, transports: tuple[str, ...] = ("udp", "tcp", "ws")) -> Any:
        service = await startServer(self, *args, transports=transports)
        recorder = EventRecorder()
        service.bus.subscribe(recorder)
        service.recorder = recorder
        return service

    async def test_wss(self) -> None:
        """
        autobahn's client connects over WSS (a throwaway certificate),
        its OPTIONS is answered, and the close fires C{websocket:closed}
        and C{tcp:closed} with transport C{wss}.
        """
        key, cert = makeCertificate(FilePath(self.mktemp()))
        service = await self.server(
            "--listen", "wss:0:interface=127.0.0.1:privateKey={}:certKey={}".format(key, cert),
            transports=("udp",))
        port = service.ports["wss"]
        factory = WebSocketClientFactory("wss://localhost:{}".format(port), protocols=["sip"],
                                         reactor=reactor)
        useReactorTimers(factory, reactor)
        factory.protocol = WSClient
        trust = ssl.Certificate.loadPEM(FilePath(cert).getContent())
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port,
                                      ssl.optionsForClientTLS("localhost", trustRoot=trust))
        client = await connectProtocol(endpoint, factory.buildProtocol(None))
        await client.opened
        response = await client.request(optionsRequest("ws"))
        self.assertEqual(response.status, 200)
        client.sendClose(1000)
        await client.waiters.lost
        await waitUntil(lambda: service.recorder.closes(), what="close event")
        names = service.recorder.names()
        self.assertEqual(names, [TCP_CONNECTED, WEBSOCKET_CONNECTED, WEBSOCKET_CLOSED,
                                 "tcp:closed"])
        self.assertEqual({e.transport for e in service.recorder.seen}, {"wss"})

    async def test_tlsHandshakeFailure(self) -> None:
        """
        A client speaking plain text to the TLS listener fails the
        handshake: the server fires C{tcp:reset} ("TLS error") once.
        """
        key, cert = makeCertificate(FilePath(self.mktemp()))
        service = await self.server(
            "--listen", "tls:0:interface=127.0.0.1:privateKey={}:certKey={}".format(key, cert),
            transports=("udp",))
        client = await connectRaw(self, service.ports["tls"])
        client.transport.write(optionsRequest("tcp"))
        await client.lost
        await waitUntil(lambda: service.recorder.closes(), what="close event")
        await task.deferLater(reactor, 0.05, lambda: None)
        [close] = service.recorder.closes()
        self.assertEqual(close.name, TCP_RESET)
        self.assertTrue(close.reason.startswith("TLS error"), close.reason)

    async def test_originRefused(self) -> None:
        """
        A WebSocket handshake from a foreign Origin is refused with HTTP 403
        (no C{websocket:connected}); the same handshake from the server's
        own domain opens.
        """
        service = await self.server(transports=("ws",))
        port = service.ports["ws"]

        def handshake(origin: str) -> bytes:
            return (
                "GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n"
                "Origin: {}\r\n\r\n".format(port, origin)).encode()

        evil = await connectRaw(self, port)
        evil.transport.write(handshake("https://evil.example"))
        await evil.lost
        self.assertTrue(evil.data.startswith(b"HTTP/1.1 403"), evil.data[:80])
        good = await connectRaw(self, port)
        good.transport.write(handshake("https://example.com"))
        await waitUntil(lambda: b"\r\n\r\n" in good.data, what="handshake answer")
        self.assertTrue(good.data.startswith(b"HTTP/1.1 101"), good.data[:80])
        self.assertEqual(service.recorder.names().count(WEBSOCKET_CONNECTED), 1)

    async def test_perSourceConnectionLimit(self) -> None:
        """
        With two connections per address allowed, a third from the same
        address is closed at once and fires no event; closing one lets a
        new one in.
        """
        service = await self.server("--max-connections-per-source", "2",
                                    "--limit-exempt", "none", transports=("tcp",))
        port = service.ports["tcp"]
        first = await connectTCP(port)
        second = await connectTCP(port)
        await waitUntil(lambda: len(service.table) == 2, what="two connections")
        third = await connectRaw(self, port)
        await third.lost
        self.assertEqual(service.table.refusedByLimit["perSource"], 1)
        self.assertEqual(service.recorder.names(), [TCP_CONNECTED] * 2)
        first.transport.loseConnection()
        await waitUntil(lambda: len(service.table) == 1, what="one connection closed")
        fourth = await connectTCP(port)
        response = await fourth.request(optionsRequest("tcp"))
        self.assertEqual(response.status, 200)
        for client in (second, fourth):
            client.transport.loseConnection()
            await client.waiters.lost

    async def test_slowClient(self) -> None:
        """
        A client that sends one byte a second keeps resetting the idle
        timeout (3 s) but is cut off by the message timeout (2 s) as
        C{tcp:timeout}.
        """
        service = await self.server("--idle-timeout", "3", "--message-timeout", "2",
                                    transports=("tcp",))
        client = await connectRaw(self, service.ports["tcp"])
        data = optionsRequest("tcp")
        for i in range(10):  # bounded: at most 10 s
            if client.lost.called:
                break
            client.transport.write(data[i:i + 1])
            await task.deferLater(reactor, 1.0, lambda: None)
        self.assertTrue(client.lost.called)
        await waitUntil(lambda: service.recorder.closes(), what="close event")
        [close] = service.recorder.closes()
        self.assertEqual(close.name, TCP_TIMEOUT)
        self.assertIn("message timeout", close.reason)

    async def test_silentClient(self) -> None:
        """
        A client that connects and sends nothing is cut off by the idle
        timeout as C{tcp:timeout}.
        """
        service = await self.server("--idle-timeout", "1", transports=("tcp",))
        client = await connectRaw(self, service.ports["tcp"])
        await client.lost.addTimeout(PATIENCE, reactor)
        await waitUntil(lambda: service.recorder.closes(), what="close event")
        [close] = service.recorder.closes()
        self.assertEqual(close.name, TCP_TIMEOUT)
        self.assertIn("idle timeout", close.reason)

    async def test_registerWithAuthentication(self) -> None:
        """
        With C{--auth-file}, a REGISTER over TCP is challenged, then
        registered with the right credentials (the binding is stored);
        registering someone else is forbidden.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("alice@example.com:{}\n".format("pw-" + secrets.token_hex(4)))
        password = open(path).read().strip().split(":", 1)[1]
        service = await self.server("--auth-file", path, "--auth-algorithms", "MD5,SHA-256",
                                    transports=("tcp",))
        client = await connectTCP(service.ports["tcp"])
        first = await client.request(registerRequest("tcp", "alice"))
        self.assertEqual(first.status, 401)
        [challenge] = [parseDigest(v) for v in first.headers.lines("WWW-Authenticate")
                       if "SHA-256" in v]
        assert challenge is not None
        signed = registerRequest("tcp", "alice").replace(
            b"Content-Length: 0\r\n",
            "Authorization: {}\r\nContent-Length: 0\r\n".format(
                credentials(challenge, password=password)).encode())
        second: Response = await client.request(signed)
        self.assertEqual(second.status, 200)
        bindings = await service.store.lookup("alice@example.com", reactor.seconds())
        self.assertEqual(len(bindings), 1)
        other = registerRequest("tcp", "bob").replace(
            b"Content-Length: 0\r\n",
            "Authorization: {}\r\nContent-Length: 0\r\n".format(
                credentials(challenge, password=password, nc=2)).encode())
        self.assertEqual((await client.request(other)).status, 403)
        client.transport.loseConnection()
        await client.waiters.lost
