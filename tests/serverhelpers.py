"""
Helpers for integration tests that run a whole sipcore service on loopback:
the service itself, and small real SIP clients over UDP, TCP and WebSocket.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any, cast

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, error, protocol, reactor, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorUDP,
    ISystemHandle,
    ITCPTransport,
    IUDPTransport,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

import sipcore
from sipcore.message import Response, SIPParseError, StreamFramer, parseMessage
from sipcore.tap import Options, buildService

_counter = itertools.count(1)

#: The directory the sipcore under test is imported from: the checkout, or
#: the site-packages directory of an installed wheel.  Child processes put
#: it first on C{PYTHONPATH} so that they run the same sipcore, with its
#: C{twisted/plugins}.
SIPCORE_PATH = os.path.dirname(os.path.dirname(os.path.abspath(sipcore.__file__)))

#: How long a test waits for something that should happen at once.
PATIENCE = 10.0


async def startServer(testCase: TestCase, *args: str, transports: tuple[str, ...] = (
        "udp", "tcp", "ws")) -> Any:
    """
    Build and start a sipcore service on ephemeral loopback ports, and
    stop it at cleanup.

    @param args: extra C{twistd sipcore} options; without C{--admin-listen}
        the admin API is off (so tests never take its default port).
    @return: the running L{sipcore.service.SIPCoreService}; its
        C{ports} attribute maps each transport to its bound port.
    """
    options = Options()
    listen: list[str] = []
    for transport in transports:
        listen += ["--listen", "{}:0:interface=127.0.0.1".format(transport)]
    if "--admin-listen" not in args:
        listen += ["--admin-listen", "none"]
    options.parseOptions(listen + ["--domain", "example.com"] + list(args))
    service = buildService(options, reactor)
    testCase.addCleanup(lambda: service.stopService() if service.running else None)
    await service.startService()
    if service.startFailure is not None:
        service.startFailure.raiseException()
    service.ports = {
        listener.spec.transport: listener.port for listener in service.listeners
    }
    return service


def portOf(port: IListeningPort) -> int:
    """
    The port number a listening TCP or UDP C{port} is bound to.
    """
    address = port.getHost()
    assert isinstance(address, (IPv4Address, IPv6Address))
    return address.port


async def waitUntil(condition: Callable[[], Any], timeout: float = PATIENCE,
                    interval: float = 0.02, what: str = "condition") -> Any:
    """
    Poll C{condition} (which may return a Deferred) until it is true.

    @return: its last (true) value.
    @raise AssertionError: when C{timeout} passes first.
    """
    deadline = reactor.seconds() + timeout
    while True:
        value = await defer.maybeDeferred(condition)
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError("timed out waiting for " + what)
        await task.deferLater(reactor, interval, lambda: None)


class ChildProcess(protocol.ProcessProtocol):
    """
    A child process's output (standard output and error together), how it
    ended (C{ended} fires with the exit code, C{None} after a signal) and
    the signal that ended it, if one did (C{signal}).
    """

    def __init__(self) -> None:
        self.output = ""
        self.signal: int | None = None
        self.ended: defer.Deferred[int | None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:  # type: ignore[override]
        value = getattr(reason, "value", None)
        self.signal = getattr(value, "signal", None)
        self.ended.callback(getattr(value, "exitCode", None))


def spawnChild(testCase: TestCase, args: list[str], env: dict[str, str],
               descendants: Callable[[int], Iterable[int]] | None = None,
               ) -> tuple[ChildProcess, Any]:
    """
    Start C{sys.executable} with C{args}; at cleanup, SIGKILL it (and the
    processes C{descendants(pid)} names first) if it still runs, and wait
    for its end.

    @return: the L{ChildProcess} and the process transport.
    """
    proc = ChildProcess()
    transport = reactor.spawnProcess(proc, sys.executable, args, env=env)

    def kill() -> defer.Deferred[int | None]:
        for pid in descendants(transport.pid) if descendants and transport.pid else ():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
        return proc.ended

    testCase.addCleanup(kill)
    return proc, transport


def registerRequest(
    transport: str,
    user: str,
    contact: str | None = None,
    expires: int = 600,
    callId: str | None = None,
    cseq: int = 1,
    localPort: int = 5999,
) -> bytes:
    """
    A REGISTER for C{user@example.com} over C{transport} (C{udp},
    C{tcp}, C{tls}, C{ws} or C{wss}: the Via names it in capitals).
    """
    via = transport.upper()
    contact = contact or "<sip:{}@127.0.0.1:{};transport={}>".format(user, localPort, transport)
    return (
        "REGISTER sip:example.com SIP/2.0\r\n"
        "Via: SIP/2.0/{via} 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:{user}@example.com>;tag={tag}\r\n"
        "To: <sip:{user}@example.com>\r\n"
        "Call-ID: {callId}\r\n"
        "CSeq: {cseq} REGISTER\r\n"
        "Contact: {contact}\r\n"
        "Expires: {expires}\r\n"
        "User-Agent: sipcore-tests\r\n"
        "Content-Length: 0\r\n\r\n"
    ).format(via=via, port=localPort, branch=secrets.token_hex(8), user=user,
             tag=secrets.token_hex(4), callId=callId or secrets.token_hex(8), cseq=cseq,
             contact=contact, expires=expires).encode()


def optionsRequest(transport: str = "tcp") -> bytes:
    """
    An OPTIONS addressed to the server itself.
    """
    via = {"ws": "WS", "udp": "UDP", "tcp": "TCP"}[transport]
    return (
        "OPTIONS sip:example.com SIP/2.0\r\n"
        "Via: SIP/2.0/{via} 127.0.0.1:5999;branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:probe@example.com>;tag=p{n}\r\n"
        "To: <sip:example.com>\r\n"
        "Call-ID: options-{branch}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).format(via=via, branch=secrets.token_hex(8), n=next(_counter)).encode()


class _Waiters:
    """
    Responses received, and the Deferreds waiting for them.
    """

    def __init__(self) -> None:
        self.responses: list[Response] = []
        self._waiting: list[defer.Deferred[Response]] = []
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.malformed: list[bytes] = []

    def received(self, data: bytes) -> None:
        try:
            message = parseMessage(data)
        except SIPParseError:
            self.malformed.append(data)
            return
        if not isinstance(message, Response) or message.status < 200:
            return
        if self._waiting:
            self._waiting.pop(0).callback(message)
        else:
            self.responses.append(message)

    def next(self) -> defer.Deferred[Response]:
        if self.responses:
            return defer.succeed(self.responses.pop(0))
        d: defer.Deferred[Response] = defer.Deferred()
        self._waiting.append(d)
        timer = reactor.callLater(PATIENCE, d.cancel)

        def stopTimer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(stopTimer)


class TCPClient(protocol.Protocol):
    """
    A SIP client over one TCP connection.
    """

    transport: ITCPTransport

    def __init__(self) -> None:
        self.waiters = _Waiters()
        self.framer = StreamFramer()

    def dataReceived(self, data: bytes) -> None:
        for item in self.framer.feed(data):
            if isinstance(item, bytes):
                self.waiters.received(item)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lostReason = reason
        self.waiters.lost.callback(None)

    def request(self, data: bytes) -> defer.Deferred[Response]:
        self.transport.write(data)
        return self.waiters.next()

    @property
    def localPort(self) -> int:
        port: int = self.transport.getHost().port
        return port

    def reset(self) -> None:
        """
        Drop the connection with an RST.
        """
        import socket
        import struct

        sock = cast(socket.socket, ISystemHandle(self.transport).getHandle())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.loseConnection()


async def connectTCP(port: int) -> TCPClient:
    """
    Connect a L{TCPClient} to C{127.0.0.1:port}.
    """
    client = TCPClient()
    endpoint = protocol.ClientCreator(reactor, lambda: client)
    await endpoint.connectTCP("127.0.0.1", port, timeout=PATIENCE)
    return client


class UDPClient(protocol.DatagramProtocol):
    """
    A SIP client on one UDP socket.
    """

    transport: IUDPTransport

    def __init__(self, port: int) -> None:
        self.serverPort = port
        self.waiters = _Waiters()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.waiters.received(data)

    def request(self, data: bytes) -> defer.Deferred[Response]:
        self.transport.write(data, ("127.0.0.1", self.serverPort))
        return self.waiters.next()


def listenUDP(testCase: TestCase, port: int) -> UDPClient:
    """
    A L{UDPClient} for the server's UDP C{port}, closed at cleanup.
    """
    client = UDPClient(port)
    listening = IReactorUDP(reactor).listenUDP(0, client, interface="127.0.0.1",
                                               maxPacketSize=8192)
    testCase.addCleanup(listening.stopListening)
    return client


class WSClient(WebSocketClientProtocol):
    """
    A SIP client over WebSocket (RFC 7118), subprotocol C{sip}.
    """

    transport: ITCPTransport

    def __init__(self) -> None:
        super().__init__()
        self.waiters = _Waiters()
        self.opened: defer.Deferred[WSClient] = defer.Deferred()

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.waiters.received(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(Failure(ConnectionError("closed: {} {}".format(code, reason))))
        if not self.waiters.lost.called:
            self.waiters.lost.callback(None)  # type: ignore[arg-type]

    def request(self, data: bytes) -> defer.Deferred[Response]:
        self.sendMessage(data, isBinary=False)
        return self.waiters.next()

    @property
    def localPort(self) -> int:
        port: int = self.transport.getHost().port
        return port

    def drop(self) -> None:
        """
        Drop the TCP connection without a close frame.
        """
        self.transport.abortConnection()


async def connectWS(port: int) -> WSClient:
    """
    Connect a L{WSClient} to C{ws://127.0.0.1:port}.
    """
    factory = WebSocketClientFactory("ws://127.0.0.1:{}".format(port), protocols=["sip"])
    factory.protocol = WSClient
    connector = protocol.ClientCreator(reactor, factory.buildProtocol, None)
    client: WSClient = await connector.connectTCP("127.0.0.1", port, timeout=PATIENCE)
    await client.opened
    return client
