# -*- test-case-name: tests.test_security_connections -*-
"""
Integration tests of the limits on what a stream connection may hold, on a
whole running server (C{buildService} on loopback ports with the real
reactor): the handshake deadline (a TLS ClientHello sent a byte at a
time), the short idle timeout of connections that never registered, the
WebSocket handshake size, the Origin check against a forged C{Host}, an
over-long header line, and the listen backlog.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from OpenSSL import SSL
from twisted.internet import reactor, task
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, TestCase

from sipcore.events import TCP_CLOSED, TCP_TIMEOUT, WEBSOCKET_CONNECTED
from sipcore.message import Response, StreamFramer, parseMessage
from tests.serverhelpers import (
    PATIENCE,
    connectTCP,
    listenUDP,
    optionsRequest,
    registerRequest,
    waitUntil,
)
from tests.test_security_integration import EventRecorder, connectRaw
from tests.test_transport_support import makeCertificate


def clientHello() -> bytes:
    """
    The first flight of a TLS client: a ClientHello.
    """
    connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)  # type: ignore[no-any-return]


def wsHandshake(port: int, host: str | None = None, extra: str = "") -> bytes:
    """
    A WebSocket opening handshake offering C{sip}.
    """
    return (
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n{}\r\n".format(
            host or "127.0.0.1:{}".format(port), extra)).encode()


def withHeader(request: bytes, line: str) -> bytes:
    """
    C{request} with one more header line before Content-Length.
    """
    return request.replace(b"Content-Length: 0\r\n", line.encode() + b"\r\nContent-Length: 0\r\n")


def responses(data: bytes) -> list[Response]:
    """
    The SIP responses in a byte stream.
    """
    found = []
    for item in StreamFramer().feed(data):
        if isinstance(item, bytes):
            message = parseMessage(item)
            if isinstance(message, Response):
                found.append(message)
    return found


class ConnectionResourceTests(TestCase):
    """
    Connections cannot hold the server's resources for long without doing
    what a SIP client does.
    """

    timeout = 60

    async def server(self, *args: str, transports: tuple[str, ...] = ("tcp",)) -> Any:
        from tests.serverhelpers import startServer

        service = await startServer(self, *args, transports=transports)
        recorder = EventRecorder()
        service.bus.subscribe(recorder)
        service.recorder = recorder
        return service

    async def sleep(self, seconds: float) -> None:
        await task.deferLater(reactor, seconds, lambda: None)

    async def closeOf(self, service: Any, count: int = 1) -> list[Any]:
        await waitUntil(lambda: len(service.recorder.closes()) >= count,
                        what="{} close event(s)".format(count))
        closes: list[Any] = service.recorder.closes()
        return closes

    async def test_slowTLSClientHello(self) -> None:
        """
        A client sending its ClientHello a byte every 0.4 s is cut off at the
        handshake deadline (2 s): C{tcp:timeout} naming the TLS handshake.
        Without the deadline only the hour-long idle timeout would apply,
        since the TLS layer delivers no data until the handshake is done.
        """
        key, cert = makeCertificate(FilePath(self.mktemp()))
        service = await self.server(
            "--handshake-timeout", "2",
            "--listen", "tls:0:interface=127.0.0.1:privateKey={}:certKey={}".format(key, cert),
            transports=("udp",))
        client = await connectRaw(self, service.ports["tls"])
        started = reactor.seconds()
        hello = clientHello()
        for i in range(25):  # bounded: at most 10 s
            if client.lost.called or i >= len(hello):
                break
            client.transport.write(hello[i:i + 1])
            await self.sleep(0.4)
        self.assertTrue(client.lost.called, "still connected after {:.1f}s".format(
            reactor.seconds() - started))
        self.assertLess(reactor.seconds() - started, 4.0)
        [close] = await self.closeOf(service)
        self.assertEqual((close.name, close.reason), (
            TCP_TIMEOUT, "handshake timeout (TLS handshake not completed within 2s)"))
        self.assertEqual(len(service.table), 0)

    async def test_silentTCP(self) -> None:
        """
        A TCP connection that never sends a message is closed at the
        handshake deadline.
        """
        service = await self.server("--handshake-timeout", "1")
        client = await connectRaw(self, service.ports["tcp"])
        await client.lost.addTimeout(PATIENCE, reactor)
        [close] = await self.closeOf(service)
        self.assertEqual((close.name, close.reason), (
            TCP_TIMEOUT, "handshake timeout (no complete SIP message within 1s)"))

    async def test_unregisteredClosedRegisteredKept(self) -> None:
        """
        With C{--unregistered-idle-timeout 1}, a TCP connection that sent an
        OPTIONS and fell silent is closed after about a second
        (C{tcp:timeout}, "never registered"), while one that registered and
        is just as silent keeps the hour-long idle timeout and still works.
        """
        service = await self.server("--unregistered-idle-timeout", "1")
        port = service.ports["tcp"]
        registered = await connectTCP(port)
        ok = await registered.request(registerRequest("tcp", "kept",
                                                      localPort=registered.localPort))
        self.assertEqual(ok.status, 200)
        silent = await connectTCP(port)
        self.assertEqual((await silent.request(optionsRequest("tcp"))).status, 200)
        await silent.waiters.lost.addTimeout(PATIENCE, reactor)
        [close] = await self.closeOf(service)
        self.assertEqual((close.name, close.reason), (
            TCP_TIMEOUT, "idle timeout (1s without data, never registered)"))
        await self.sleep(1.5)
        self.assertFalse(registered.waiters.lost.called)
        self.assertEqual(len(service.table), 1)
        self.assertEqual((await registered.request(optionsRequest("tcp"))).status, 200)
        bindings = await service.store.lookup("kept@example.com", reactor.seconds())
        self.assertEqual(len(bindings), 1)
        registered.transport.loseConnection()
        await registered.waiters.lost

    async def test_largeWebSocketHandshake(self) -> None:
        """
        A WebSocket handshake with a 64 KiB header, sent in 4 KiB pieces, is
        answered HTTP 431 once 16 KiB arrived, and closed (C{tcp:closed},
        no C{websocket:connected}).
        """
        service = await self.server(transports=("ws",))
        port = service.ports["ws"]
        client = await connectRaw(self, port)
        request = wsHandshake(port, extra="X-Big: {}\r\n".format("a" * 65536))
        sent = 0
        for offset in range(0, len(request), 4096):
            if client.data or client.lost.called:
                break
            client.transport.write(request[offset:offset + 4096])
            sent += 4096
            await self.sleep(0.02)
        await client.lost.addTimeout(PATIENCE, reactor)
        self.assertTrue(client.data.startswith(b"HTTP/1.1 431 "), client.data[:80])
        self.assertLess(sent, len(request))
        [close] = await self.closeOf(service)
        self.assertEqual((close.name, close.reason), (
            TCP_CLOSED, "websocket handshake refused: Request Header Fields Too Large"))
        self.assertNotIn(WEBSOCKET_CONNECTED, service.recorder.names())

    async def test_forgedHost(self) -> None:
        """
        A page on a foreign origin cannot pass the Origin check by sending a
        C{Host} header that names its own host: 403.  An Origin on the
        address the client connected to passes.
        """
        service = await self.server(transports=("ws",))
        port = service.ports["ws"]
        evil = await connectRaw(self, port)
        evil.transport.write(wsHandshake(port, host="evil.example",
                                         extra="Origin: https://evil.example\r\n"))
        await evil.lost.addTimeout(PATIENCE, reactor)
        self.assertTrue(evil.data.startswith(b"HTTP/1.1 403"), evil.data[:80])
        good = await connectRaw(self, port)
        good.transport.write(wsHandshake(port, host="evil.example",
                                         extra="Origin: http://127.0.0.1:3000\r\n"))
        await waitUntil(lambda: b"\r\n\r\n" in good.data or good.lost.called,
                        what="an answer to the handshake")
        self.assertTrue(good.data.startswith(b"HTTP/1.1 101"), good.data[:80])

    async def test_longHeaderLineTCP(self) -> None:
        """
        A request over TCP with a 9000-byte Authorization line is answered
        C{400 Line too long} and the connection is closed (C{tcp:closed},
        protocol error).
        """
        service = await self.server()
        client = await connectRaw(self, service.ports["tcp"])
        client.transport.write(withHeader(
            registerRequest("tcp", "alice"), "Authorization: Digest " + "a" * 9000))
        await client.lost.addTimeout(PATIENCE, reactor)
        [response] = responses(client.data)
        self.assertEqual((response.status, response.reason), (400, "Line too long"))
        [close] = await self.closeOf(service)
        self.assertEqual((close.name, close.reason), (TCP_CLOSED, "protocol error: Line too long"))

    async def test_longHeaderLineUDP(self) -> None:
        """
        Over UDP the same request is answered C{400 Line too long} instead
        of being dropped.
        """
        service = await self.server(transports=("udp",))
        client = listenUDP(self, service.ports["udp"])
        response = await client.request(withHeader(
            registerRequest("udp", "alice"), "Authorization: Digest " + "a" * 9000))
        self.assertEqual((response.status, response.reason), (400, "Line too long"))

    async def test_listenBacklog(self) -> None:
        """
        TCP and WS listeners listen with C{--listen-backlog} (the kernel
        shows it as the listening socket's send queue); C{backlog=} in a
        listen spec overrides it.
        """
        if shutil.which("ss") is None:
            raise SkipTest("needs ss (iproute2)")
        service = await self.server(
            "--listen-backlog", "700", "--listen", "tcp:0:interface=127.0.0.1:backlog=30",
            transports=("tcp", "ws"))
        ports = [listener.port for listener in service.listeners]
        output = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True,
                                check=True, timeout=PATIENCE).stdout
        backlogs = {}
        for line in output.splitlines():
            fields = line.split()
            port = int(fields[3].rsplit(":", 1)[1])
            if port in ports:
                backlogs[port] = int(fields[2])
        self.assertEqual([backlogs.get(port) for port in ports], [700, 700, 30])
