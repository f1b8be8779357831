"""
Integration test: the workers of C{python -m sipcore.workers --workers 2}
are members of one cluster.  Two TCP clients registered through the shared
port land on different workers (the kernel's choice: clients are
registered until they do, a bounded number of times); a MESSAGE from each
to the other is delivered over the other's connection and answered 200,
and so is one to a WebSocket client of the other worker; a call between
the two TCP clients crosses both workers both ways; a request from outside naming a worker's connection with a forged MAC is
refused with 403.  No database: the workers share the store process.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import sys

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import protocol, reactor
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from sipcore import workers
from sipcore.message import Request, Response, StreamFramer, parseMessage
from tests.serverhelpers import (
    PATIENCE,
    SIPCORE_PATH,
    WSClient,
    registerRequest,
    spawnChild,
    waitUntil,
)
from tests.test_location_shared import _children

#: Clients registered at most until two are on different workers.
MAX_CLIENTS = 16


class AnsweringClient(protocol.Protocol):
    """
    A SIP client on one TCP connection: it keeps the responses it gets and
    answers every request but ACK with 200.
    """

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
        "Via: SIP/2.0/TCP 127.0.0.1:{};branch=z9hG4bK{};rport".format(
            sender.localPort, secrets.token_hex(8)),
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


async def connectWS(port: int) -> AnsweringWSClient:
    """
    Connect an L{AnsweringWSClient} to C{ws://127.0.0.1:port}.
    """
    factory = WebSocketClientFactory("ws://127.0.0.1:{}".format(port), protocols=["sip"])
    factory.protocol = AnsweringWSClient
    connector = protocol.ClientCreator(reactor, factory.buildProtocol, None)
    client: AnsweringWSClient = await connector.connectTCP("127.0.0.1", port,
                                                           timeout=PATIENCE)
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


def messageRequest(to: str, sender: AnsweringClient, callId: str,
                   route: str | None = None, method: str = "MESSAGE") -> bytes:
    """
    A MESSAGE (or C{method}) from C{sender} to C{to@example.com}.
    """
    lines = [
        "{} sip:{}@example.com SIP/2.0".format(method, to),
        "Via: SIP/2.0/TCP 127.0.0.1:{};branch=z9hG4bK{};rport".format(
            sender.localPort, secrets.token_hex(8)),
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
    """

    timeout = 120

    def read(self, path: str) -> str:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    async def test_messageBetweenWorkers(self) -> None:
        """
        A MESSAGE to a user registered over another worker's connection is
        delivered and answered 200, both ways; a call (INVITE, 200, ACK,
        BYE) between them completes; a MESSAGE to a user registered over
        another worker's WebSocket connection is delivered; a forged flow Route from
        outside gets 403 and is delivered nowhere; the shared secret is in
        no log; each worker runs on the fair reactor.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        logfile = os.path.join(directory, "sipcore.log")
        logs = [logfile + ".0", logfile + ".1"]
        env = dict(os.environ, PYTHONPATH=SIPCORE_PATH)
        env.pop(workers.STORE_ENV, None)
        env.pop(workers.CLUSTER_ENV, None)
        args = [sys.executable, "-m", "sipcore.workers", "--workers", "2", "--logfile", logfile,
                "--", "--domain", "example.com", "--log-events",
                "--listen", "tcp:0:interface=127.0.0.1", "--listen", "ws:0:interface=127.0.0.1"]
        proc, transport = spawnChild(self, args, env, descendants=_children)
        pattern = re.compile(r"listening on tcp 127\.0\.0\.1:(\d+)")
        await waitUntil(lambda: all(len(pattern.findall(self.read(p))) == 2 for p in logs),
                        timeout=PATIENCE * 3, what="workers listening: " + proc.output[-2000:])
        ports = [set(int(p) for p in pattern.findall(self.read(path))) for path in logs]
        for path in logs:
            self.assertIn("] reactor: sipcore.reactor.FairEPollReactor (", self.read(path))
        wsPattern = re.compile(r"listening on ws 127\.0\.0\.1:(\d+)")
        [wsPort] = set(int(p) for p in wsPattern.findall(self.read(logs[0])))
        [shared] = ports[0] & ports[1]
        [nodePort0] = ports[0] - {shared}

        async def workerOf(user: str) -> int:
            # The worker whose event log has the user's registration.
            needle = "{}@example.com contact".format(user)

            def logged() -> int | None:
                return next((i + 1 for i, p in enumerate(logs) if needle in self.read(p)), None)

            found: int = await waitUntil(logged, what="the event log line of " + user)
            return found - 1

        # Register clients through the shared port until one is on each
        # worker.
        onWorker: dict[int, tuple[str, AnsweringClient]] = {}
        for index in range(MAX_CLIENTS):
            user = "user{}".format(index)
            client = await connect(shared)
            self.addCleanup(client.transport.loseConnection)  # type: ignore[union-attr]
            callId = "reg-{}".format(index)
            response = await client.request(
                registerRequest("tcp", user, callId=callId, localPort=client.localPort), callId)
            self.assertEqual(response.status, 200)
            onWorker.setdefault(await workerOf(user), (user, client))
            if len(onWorker) == 2:
                break
        self.assertEqual(len(onWorker), 2, "every client landed on one worker")
        (user0, client0), (user1, client1) = onWorker[0], onWorker[1]

        for sender, (to, receiver) in ((client0, (user1, client1)), (client1, (user0, client0))):
            callId = "msg-" + secrets.token_hex(4)
            response = await sender.request(messageRequest(to, sender, callId), callId)
            self.assertEqual(response.status, 200, response)
            [delivered] = [r for r in receiver.requests if r.callId == callId]
            self.assertEqual(delivered.body, b"hello")
            self.assertEqual(delivered.headers.lines("Route"), [])

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
        wsUser = None
        for index in range(MAX_CLIENTS):
            user = "ws{}".format(index)
            ws = await connectWS(wsPort)
            self.addCleanup(ws.transport.loseConnection)
            contact = "<sip:{}@{}.invalid;transport=ws>".format(user, secrets.token_hex(4))
            response = await ws.request(registerRequest("ws", user, contact=contact,
                                                        localPort=ws.localPort))
            self.assertEqual(response.status, 200)
            if await workerOf(user) == 1:
                wsUser = user
                break
        self.assertIsNotNone(wsUser, "no WebSocket client landed on worker 1")
        assert wsUser is not None
        callId = "ws-" + secrets.token_hex(4)
        response = await client0.request(messageRequest(wsUser, client0, callId), callId)
        self.assertEqual(response.status, 200, response)
        self.assertEqual([r.callId for r in ws.requests], [callId])

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
        for path in logs + [logfile + ".store"]:
            self.assertNotIn(secretsSeen[0].decode(), self.read(path))

        os.kill(transport.pid, signal.SIGTERM)
        self.assertEqual(await proc.ended, 0, proc.output[-3000:])
        for path in logs:
            self.assertNotIn("Traceback", self.read(path))
