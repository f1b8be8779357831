"""
Integration test: the workers of C{python -m sipcore.workers --workers 2}
are members of one cluster.  Two TCP clients registered through the shared
port land on different workers (the kernel's choice: clients are
registered until they do, a bounded number of times); a MESSAGE from each
to the other is delivered over the other's connection and answered 200,
and so is one to a WebSocket client of the other worker; a call between
the two TCP clients crosses both workers both ways; a request from outside
naming a worker's connection with a forged MAC is refused with 403.  With a
TLS and a WSS listener (each worker wrapping the shared sockets in its own
TLS context), TLS clients on both workers and a WSS client on one exchange
MESSAGEs the same way.  No database: the workers share the store process.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import protocol, reactor, ssl
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from sipcore import workers
from sipcore.message import Request, Response, StreamFramer, parseMessage
from tests.serverhelpers import (
    PATIENCE,
    SIPCORE_PATH,
    ChildProcess,
    WSClient,
    registerRequest,
    spawnChild,
    waitUntil,
)
from tests.test_location_shared import _children
from tests.test_transport_support import makeCertificate

#: Clients registered at most until two are on different workers.
MAX_CLIENTS = 16

_Client = TypeVar("_Client")


class AnsweringClient(protocol.Protocol):
    """
    A SIP client on one TCP (or TLS) connection: it keeps the responses it
    gets and answers every request but ACK with 200.

    @ivar via: the transport its requests' Via names.
    """

    via = "TCP"

    def __init__(self) -> None:
        self.framer = StreamFramer()
        self.responses: list[Response] = []
        self.requests: list[Request] = []
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        for item in self.framer.feed(data):
            if not isinstance(item, bytes):
                continue
            message = parseMessage(item)
            if isinstance(message, Response):
                self.responses.append(message)
                continue
            self.requests.append(message)
            if message.method != "ACK":
                self.transport.write(answer(message, self.localPort))  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost = True

    @property
    def localPort(self) -> int:
        port: int = self.transport.getHost().port  # type: ignore[union-attr]
        return port

    async def request(self, data: bytes, callId: str) -> Response:
        """
        Send a request and wait for its final response (by Call-ID).
        """
        self.transport.write(data)  # type: ignore[union-attr]

        def final() -> Response | None:
            for response in self.responses:
                if response.callId == callId and response.status >= 200:
                    return response
            return None

        found: Response = await waitUntil(final, what="a final response to " + callId)
        return found


def answer(request: Request, port: int) -> bytes:
    """
    A 200 to C{request}; to an INVITE with its Record-Route and a Contact
    (the UAS side of a dialog).
    """
    response = Response.forRequest(request, 200, toTag=secrets.token_hex(4))
    if request.method == "INVITE":
        for value in request.headers.lines("Record-Route"):
            response.headers.add("Record-Route", value)
        response.headers.add("Contact", "<sip:callee@127.0.0.1:{};transport=tcp>".format(port))
    return response.serialize()


def inDialog(method: str, ok: Response, sender: AnsweringClient, cseq: int) -> bytes:
    """
    The caller's C{method} in the dialog the 200 C{ok} to its INVITE made:
    to the callee's Contact, along the route set (the Record-Route
    reversed), with the callee's To tag.
    """
    routes: list[str] = []
    for value in ok.headers.lines("Record-Route"):
        routes.extend(v.strip() for v in value.split(","))
    routes.reverse()
    contact = ok.headers.lines("Contact")[0].strip("<>")
    lines = [
        "{} {} SIP/2.0".format(method, contact),
        "Via: SIP/2.0/{} 127.0.0.1:{};branch=z9hG4bK{};rport".format(
            sender.via, sender.localPort, secrets.token_hex(8)),
        "Max-Forwards: 70",
        "From: " + (ok.headers.first("From") or ""),
        "To: " + (ok.headers.first("To") or ""),
        "Call-ID: " + ok.callId,
        "CSeq: {} {}".format(cseq, method),
    ]
    lines += ["Route: " + route for route in routes]
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


class AnsweringWSClient(WSClient):
    """
    A SIP client over WebSocket that keeps the requests it gets and
    answers every request but ACK with 200.
    """

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = parseMessage(payload)
        if not isinstance(message, Request):
            super().onMessage(payload, isBinary)
            return
        self.requests.append(message)
        if message.method != "ACK":
            self.sendMessage(Response.forRequest(message, 200, toTag=secrets.token_hex(4))
                             .serialize(), isBinary=False)


def tlsEndpoint(port: int, trust: ssl.Certificate) -> SSL4ClientEndpoint:
    """
    A TLS client endpoint to C{127.0.0.1:port} that trusts only C{trust}
    and checks the server's name is C{localhost}.
    """
    return SSL4ClientEndpoint(reactor, "127.0.0.1", port,
                              ssl.optionsForClientTLS("localhost", trustRoot=trust),
                              timeout=PATIENCE)


async def connectWS(port: int, trust: ssl.Certificate | None = None) -> AnsweringWSClient:
    """
    Connect an L{AnsweringWSClient} to C{ws://127.0.0.1:port}, or with
    C{trust} to C{wss://localhost:port} (on 127.0.0.1).
    """
    if trust is None:
        factory = WebSocketClientFactory("ws://127.0.0.1:{}".format(port), protocols=["sip"])
        factory.protocol = AnsweringWSClient
        connector = protocol.ClientCreator(reactor, factory.buildProtocol, None)
        client: AnsweringWSClient = await connector.connectTCP("127.0.0.1", port,
                                                               timeout=PATIENCE)
    else:
        factory = WebSocketClientFactory("wss://localhost:{}".format(port), protocols=["sip"],
                                         reactor=reactor)
        factory.protocol = AnsweringWSClient
        client = await connectProtocol(tlsEndpoint(port, trust), factory.buildProtocol(None))
    await client.opened
    return client


async def connect(port: int, host: str = "127.0.0.1") -> AnsweringClient:
    """
    Connect an L{AnsweringClient} to C{host:port}.
    """
    client = AnsweringClient()
    await protocol.ClientCreator(reactor, lambda: client).connectTCP(
        host, port, timeout=PATIENCE)
    return client


async def connectTLS(port: int, trust: ssl.Certificate) -> AnsweringClient:
    """
    Connect an L{AnsweringClient} over TLS to C{localhost:port} (on
    127.0.0.1).
    """
    client = AnsweringClient()
    client.via = "TLS"
    await connectProtocol(tlsEndpoint(port, trust), client)
    return client


def messageRequest(to: str, sender: AnsweringClient, callId: str,
                   route: str | None = None, method: str = "MESSAGE") -> bytes:
    """
    A MESSAGE (or C{method}) from C{sender} to C{to@example.com}.
    """
    lines = [
        "{} sip:{}@example.com SIP/2.0".format(method, to),
        "Via: SIP/2.0/{} 127.0.0.1:{};branch=z9hG4bK{};rport".format(
            sender.via, sender.localPort, secrets.token_hex(8)),
        "Max-Forwards: 70",
        "From: <sip:sender@example.com>;tag={}".format(secrets.token_hex(4)),
        "To: <sip:{}@example.com>".format(to),
        "Call-ID: " + callId,
        "CSeq: 1 " + method,
        "Contact: <sip:caller@127.0.0.1:{};transport=tcp>".format(sender.localPort),
    ]
    if route is not None:
        lines.append("Route: " + route)
    lines += ["Content-Type: text/plain", "Content-Length: 5", "", "hello"]
    return "\r\n".join(lines).encode()


class WorkersClusterTests(TestCase):
    """
    Delivery between the workers of one host.

    @ivar logs: the log file of each worker.
    """

    timeout = 120

    def read(self, path: str) -> str:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    async def startWorkers(self, *listen: str) -> tuple[ChildProcess, Any]:
        """
        Start C{python -m sipcore.workers --workers 2} (in memory, with
        the event log) listening on C{listen}, and wait until each worker
        listens on them and on its node socket.

        @return: the supervisor's L{ChildProcess} and process transport.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        logfile = os.path.join(directory, "sipcore.log")
        self.logfile = logfile
        self.logs = [logfile + ".0", logfile + ".1"]
        env = dict(os.environ, PYTHONPATH=SIPCORE_PATH)
        env.pop(workers.STORE_ENV, None)
        env.pop(workers.CLUSTER_ENV, None)
        args = [sys.executable, "-m", "sipcore.workers", "--workers", "2", "--logfile", logfile,
                "--", "--domain", "example.com", "--log-events", "--admin-listen", "none"]
        for spec in listen:
            args += ["--listen", spec]
        proc, transport = spawnChild(self, args, env, descendants=_children)
        await waitUntil(
            lambda: all(len(re.findall("listening on ", self.read(p))) == len(listen) + 1
                        for p in self.logs),
            timeout=PATIENCE * 3, what="workers listening: " + proc.output[-2000:])
        return proc, transport

    def listening(self, index: int) -> list[tuple[str, int]]:
        """
        The transports and ports worker C{index} listens on (127.0.0.1).
        """
        return [(kind, int(port)) for kind, port in re.findall(
            r"listening on (\w+) 127\.0\.0\.1:(\d+)", self.read(self.logs[index]))]

    def sharedPort(self, transport: str) -> int:
        """
        The port of the shared C{transport} listener, the one every worker
        listens on.
        """
        [port] = {p for kind, p in self.listening(0) if kind == transport} & {
            p for kind, p in self.listening(1) if kind == transport}
        return port

    async def workerOf(self, user: str) -> int:
        """
        The worker whose event log has the registration of C{user}.
        """
        needle = "{}@example.com contact".format(user)

        def logged() -> int | None:
            return next((i + 1 for i, p in enumerate(self.logs) if needle in self.read(p)),
                        None)

        found: int = await waitUntil(logged, what="the event log line of " + user)
        return found - 1

    async def landed(self, prefix: str, register: Callable[[str], Awaitable[_Client]],
                     wanted: set[int]) -> dict[int, tuple[str, _Client]]:
        """
        Register users C{prefix0}, C{prefix1}, ... each over a new
        connection through C{register(user)} until one landed on each
        worker in C{wanted} (at most L{MAX_CLIENTS}).

        @return: for each worker in C{wanted}, its first user and client.
        """
        onWorker: dict[int, tuple[str, _Client]] = {}
        for index in range(MAX_CLIENTS):
            user = "{}{}".format(prefix, index)
            client = await register(user)
            worker = await self.workerOf(user)
            if worker in wanted:
                onWorker.setdefault(worker, (user, client))
            if set(onWorker) == wanted:
                break
        self.assertEqual(set(onWorker), wanted, "no {} client landed on every worker".format(
            prefix))
        return onWorker

    async def registered(self, client: AnsweringClient, user: str,
                         transport: str) -> AnsweringClient:
        """
        Register C{user} over C{client}'s connection (over C{transport});
        close it at cleanup.
        """
        self.addCleanup(client.transport.loseConnection)  # type: ignore[union-attr]
        callId = "reg-" + user
        response = await client.request(
            registerRequest(transport, user, callId=callId, localPort=client.localPort), callId)
        self.assertEqual(response.status, 200)
        return client

    async def registeredWS(self, client: AnsweringWSClient, user: str,
                           transport: str) -> AnsweringWSClient:
        """
        Register C{user} over a WebSocket C{client} (over C{transport},
        C{ws} or C{wss}) with a C{.invalid} Contact; close it at cleanup.
        """
        self.addCleanup(client.transport.loseConnection)
        contact = "<sip:{}@{}.invalid;transport=ws>".format(user, secrets.token_hex(4))
        response = await client.request(registerRequest(transport, user, contact=contact,
                                                        localPort=client.localPort))
        self.assertEqual(response.status, 200)
        return client

    async def exchange(self, onWorker: dict[int, tuple[str, AnsweringClient]]) -> None:
        """
        A MESSAGE from the client on each worker to the user on the other
        is delivered, without a Route, and answered 200.
        """
        (user0, client0), (user1, client1) = onWorker[0], onWorker[1]
        for sender, (to, receiver) in ((client0, (user1, client1)), (client1, (user0, client0))):
            callId = "msg-" + secrets.token_hex(4)
            response = await sender.request(messageRequest(to, sender, callId), callId)
            self.assertEqual(response.status, 200, response)
            [delivered] = [r for r in receiver.requests if r.callId == callId]
            self.assertEqual(delivered.body, b"hello")
            self.assertEqual(delivered.headers.lines("Route"), [])

    async def messageWS(self, sender: AnsweringClient, user: str,
                        receiver: AnsweringWSClient) -> None:
        """
        A MESSAGE from C{sender} to the WebSocket C{receiver}, registered
        as C{user}, is delivered to it alone and answered 200.
        """
        callId = "ws-" + secrets.token_hex(4)
        response = await sender.request(messageRequest(user, sender, callId), callId)
        self.assertEqual(response.status, 200, response)
        self.assertEqual([r.callId for r in receiver.requests], [callId])

    async def stopped(self, proc: ChildProcess, transport: Any) -> None:
        """
        SIGTERM stops the supervisor with status 0, and no worker logged a
        traceback.
        """
        os.kill(transport.pid, signal.SIGTERM)
        self.assertEqual(await proc.ended, 0, proc.output[-3000:])
        for path in self.logs:
            self.assertNotIn("Traceback", self.read(path))

    async def test_messageBetweenWorkers(self) -> None:
        """
        A MESSAGE to a user registered over another worker's connection is
        delivered and answered 200, both ways; a call (INVITE, 200, ACK,
        BYE) between them completes; a MESSAGE to a user registered over
        another worker's WebSocket connection is delivered; a forged flow Route from
        outside gets 403 and is delivered nowhere; the shared secret is in
        no log; each worker runs on the fair reactor.
        """
        proc, transport = await self.startWorkers("tcp:0:interface=127.0.0.1",
                                                  "ws:0:interface=127.0.0.1")
        logs = self.logs
        await waitUntil(lambda: all("] reactor: sipcore.reactor.FairEPollReactor ("
                                    in self.read(path) for path in logs),
                        what="each worker's reactor line")
        shared = self.sharedPort("tcp")
        wsPort = self.sharedPort("ws")
        [nodePort0] = {p for kind, p in self.listening(0) if kind == "tcp"} - {shared}

        async def registerTCP(user: str) -> AnsweringClient:
            return await self.registered(await connect(shared), user, "tcp")

        # Register clients through the shared port until one is on each
        # worker.
        onWorker = await self.landed("user", registerTCP, {0, 1})
        await self.exchange(onWorker)
        (user0, client0), (user1, client1) = onWorker[0], onWorker[1]

        # A call from worker 0's client to worker 1's: INVITE, 200, ACK and
        # BYE, the in-dialog requests along the Record-Route of both.
        callId = "call-" + secrets.token_hex(4)
        ok = await client0.request(messageRequest(user1, client0, callId, method="INVITE"),
                                   callId)
        self.assertEqual(ok.status, 200, ok)
        self.assertEqual(len(ok.headers.lines("Record-Route")), 4, ok)
        client0.transport.write(inDialog("ACK", ok, client0, 1))  # type: ignore[union-attr]
        await waitUntil(lambda: [r for r in client1.requests
                                 if r.callId == callId and r.method == "ACK"],
                        what="the ACK at the callee")
        client0.responses.clear()
        bye = await client0.request(inDialog("BYE", ok, client0, 2), callId)
        self.assertEqual((bye.status, bye.cseq[1]), (200, "BYE"), bye)
        self.assertEqual([r.method for r in client1.requests if r.callId == callId],
                         ["INVITE", "ACK", "BYE"])

        # A WebSocket client on worker 1 gets a MESSAGE from worker 0's.
        async def registerWS(user: str) -> AnsweringWSClient:
            return await self.registeredWS(await connectWS(wsPort), user, "ws")

        [(wsUser, ws)] = (await self.landed("ws", registerWS, {1})).values()
        await self.messageWS(client0, wsUser, ws)

        outsider = await connect(nodePort0)
        self.addCleanup(outsider.transport.loseConnection)  # type: ignore[union-attr]
        route = "<sip:127.0.0.1:{};transport=tcp;lr;flow=1;node=1;mac={}>".format(
            nodePort0, "0" * 32)
        callId = "forged-" + secrets.token_hex(4)
        response = await outsider.request(messageRequest(user0, outsider, callId, route), callId)
        self.assertEqual(response.status, 403)
        self.assertEqual([r for r in client0.requests + client1.requests if r.callId == callId],
                         [])
        await waitUntil(lambda: "no valid cluster MAC" in self.read(logs[0]),
                        what="the refusal's log line")

        secretsSeen = []
        for pid in _children(transport.pid):
            try:
                with open("/proc/{}/environ".format(pid), "rb") as f:
                    environ = f.read().split(b"\0")
            except OSError:
                continue
            for entry in environ:
                if entry.startswith(workers.CLUSTER_ENV.encode() + b"="):
                    found = re.search(rb'"secret": "([0-9a-f]+)"', entry)
                    assert found is not None
                    secretsSeen.append(found.group(1))
        self.assertEqual(len(secretsSeen), 2)
        self.assertEqual(len(set(secretsSeen)), 1)
        for path in logs + [self.logfile + ".store"]:
            self.assertNotIn(secretsSeen[0].decode(), self.read(path))
        await self.stopped(proc, transport)

    async def test_secureListeners(self) -> None:
        """
        With a TLS and a WSS listener the workers share both sockets, each
        with its own TLS context: TLS clients (checking the certificate)
        land on both workers and a MESSAGE from each to the other is
        delivered and answered 200; a WSS client on worker 1 gets a
        MESSAGE from worker 0's TLS client.
        """
        key, cert = makeCertificate(FilePath(self.mktemp()))
        trust = ssl.Certificate.loadPEM(FilePath(cert).getContent())
        files = "privateKey={}:certKey={}".format(key, cert)
        proc, transport = await self.startWorkers("tls:0:interface=127.0.0.1:" + files,
                                                  "wss:0:interface=127.0.0.1:" + files)
        tlsPort, wssPort = self.sharedPort("tls"), self.sharedPort("wss")

        async def registerTLS(user: str) -> AnsweringClient:
            return await self.registered(await connectTLS(tlsPort, trust), user, "tls")

        onWorker = await self.landed("tls", registerTLS, {0, 1})
        await self.exchange(onWorker)

        async def registerWSS(user: str) -> AnsweringWSClient:
            return await self.registeredWS(await connectWS(wssPort, trust), user, "wss")

        [(wssUser, wss)] = (await self.landed("wss", registerWSS, {1})).values()
        await self.messageWS(onWorker[0][1], wssUser, wss)
        await self.stopped(proc, transport)
