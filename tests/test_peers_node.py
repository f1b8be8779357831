# -*- test-case-name: tests.test_peers_node -*-
"""
Two real browser-style SIP user agents (SIP.js on Node.js, with the C{ws}
package as their WebSocket) register over WebSocket, exchange a MESSAGE
and make a call through a whole sipcore service on loopback; then one of
them loses its socket without a WebSocket close, and a new call to it
fails with 480 or 404 while its binding disappears.

The Node script is C{tests/peers/calls.mjs}; its packages are installed
with C{npm ci --prefix tests/peers}.  Without Node or those packages the
tests skip, unless C{SIPCORE_REQUIRE_PEERS=1} (as C{.ci/run} sets).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from typing import Any

from psycopg2 import sql
from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import SkipTest, TestCase

from tests.dbhelpers import createTestSchema
from tests.serverhelpers import startServer, waitUntil
from tests.test_peers_sipp import peersRequired

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers")
SCRIPT = os.path.join(PEERS, "calls.mjs")

#: Seconds the script may run (it stops itself after 40).
SCRIPT_TIMEOUT = 60.0


def nodePath() -> str:
    """
    @return: the node executable, with SIP.js and ws installed.
    @raise SkipTest: when either is missing (and peers are not required).
    """
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "Node.js is not installed"
    else:
        for package in ("sip.js", "ws"):
            if not os.path.isdir(os.path.join(PEERS, "node_modules", package)):
                problem = "npm package {} is missing (run: npm ci --prefix tests/peers)".format(
                    package)
    if problem is not None:
        if peersRequired():
            raise AssertionError(problem + " and SIPCORE_REQUIRE_PEERS=1")
        raise SkipTest(problem)
    assert node is not None
    return node


class NodeScript(protocol.ProcessProtocol):
    """
    The running script: the JSON events it printed, a Deferred per event
    name, and its exit code.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self._buffer = b""
        self._waiting: dict[str, list[defer.Deferred[dict[str, Any]]]] = {}
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "unparsed", "line": line.decode("utf-8", "replace")}
            self.events.append(event)
            for d in self._waiting.pop(event.get("event"), []):
                d.callback(event)

    def errReceived(self, data: bytes) -> None:
        if len(self.stderr) < 100000:
            self.stderr += data

    def processEnded(self, reason: Any) -> None:
        code = getattr(reason.value, "exitCode", None)
        for waiters in self._waiting.values():
            for d in waiters:
                d.errback(AssertionError("script ended first: " + self.describe()))
        self._waiting = {}
        self.ended.callback(-1 if code is None else code)

    def event(self, name: str) -> defer.Deferred[dict[str, Any]]:
        """
        A Deferred firing with the first event called C{name}.
        """
        for event in self.events:
            if event.get("event") == name:
                return defer.succeed(event)
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._waiting.setdefault(name, []).append(d)
        return d

    def named(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("event") == name]

    def describe(self) -> str:
        return "events: {}\nstderr: {}".format(
            json.dumps(self.events, indent=1)[-6000:],
            self.stderr.decode("utf-8", "replace")[-3000:])

    def kill(self) -> None:
        if not self.ended.called:
            try:
                self.transport.signalProcess("KILL")
            except Exception:
                pass


class WebSocketCallsMixin:
    """
    The scenario, written once and run against each store.
    """

    timeout = 120

    async def server(self, *args: str) -> Any:
        raise NotImplementedError

    async def rowsOf(self, service: Any, user: str) -> int:
        """
        How many bindings C{user} has in the store.
        """
        return len(await service.store.lookup(user + "@example.com", reactor.seconds()))

    async def runScript(self, *serverArgs: str) -> tuple[Any, NodeScript, str]:
        """
        Run the script against a new server; return once it ended.
        """
        node = nodePath()
        service = await self.server(*serverArgs)
        self.addCleanup(service.proxy.stop)  # type: ignore[attr-defined]
        alice = "alice" + secrets.token_hex(3)
        bob = "bob" + secrets.token_hex(3)
        script = NodeScript()
        args = [node, SCRIPT, "ws://127.0.0.1:{}".format(service.ports["ws"]), "example.com",
                alice, bob]
        reactor.spawnProcess(script, node, args, env=dict(os.environ), path=PEERS)
        self.addCleanup(script.kill)  # type: ignore[attr-defined]
        timer = reactor.callLater(SCRIPT_TIMEOUT, script.kill)
        try:
            await script.event("dropped")
            # Let the server see the socket go before the last call.
            await waitUntil(lambda: len(service.table) == 1, timeout=20,
                            what="server to notice the dropped socket")
            script.transport.write(b"go\n")
            code = await script.ended
        finally:
            if timer.active():
                timer.cancel()
        self.assertEqual(code, 0, script.describe())  # type: ignore[attr-defined]
        return service, script, bob

    def checkCall(self, script: NodeScript, bob: str) -> None:
        """
        Registration, MESSAGE and the answered call happened as they should.
        """
        test: Any = self
        test.assertEqual([e["status"] for e in script.named("registered")], [200, 200],
                         script.describe())
        [sent] = script.named("messageSent")
        test.assertEqual(sent["status"], 200)
        [received] = script.named("messageReceived")
        test.assertEqual(received["body"], "hello " + bob)
        [invite] = script.named("inviteReceived")
        test.assertTrue(invite["hasSdp"])
        test.assertEqual(len(invite["recordRoute"]), 1)
        test.assertIn(";lr", invite["recordRoute"][0])
        test.assertIn("transport=ws", invite["recordRoute"][0])
        [established] = script.named("callEstablished")
        test.assertTrue(established["ringing"], script.describe())
        [bye] = script.named("byeAnswered")
        test.assertEqual(bye["status"], 200)
        test.assertEqual(len(script.named("callEnded")), 1)

    async def test_callsAndDroppedSocket(self) -> None:
        """
        Two SIP.js agents register over WebSocket; a MESSAGE reaches the
        other; a call is answered (with an SDP body) and hung up; after
        one agent's socket is destroyed without a close, a call to it gets
        480 or 404 and its binding is gone.
        """
        service, script, bob = await self.runScript()
        self.checkCall(script, bob)
        # The ACK for the 200 went end to end, by the flow token.
        self.assertEqual(service.proxy.stats["acksForwarded"], 1)  # type: ignore[attr-defined]
        [final] = script.named("unreachableCall")
        self.assertIn(final["status"], (480, 404))  # type: ignore[attr-defined]
        await waitUntil(lambda: self.gone(service, bob), what="binding of " + bob + " gone")

    async def test_staleBindingRemovedByProxy(self) -> None:
        """
        With the location-cleanup handler disabled the binding of the dead
        socket survives its close; the next call to it gets 480 and the
        proxy removes the stale binding.
        """
        service, script, bob = await self.runScript("--disable-handler", "location-cleanup")
        [final] = script.named("unreachableCall")
        self.assertEqual(final["status"], 480)  # type: ignore[attr-defined]
        self.assertEqual(service.proxy.stats["staleBindings"], 1)  # type: ignore[attr-defined]
        await waitUntil(lambda: self.gone(service, bob), what="binding of " + bob + " gone")

    async def gone(self, service: Any, user: str) -> bool:
        return await self.rowsOf(service, user) == 0


class MemoryWebSocketCallsTests(WebSocketCallsMixin, TestCase):
    """
    The WebSocket scenario with the in-memory store.
    """

    async def server(self, *args: str) -> Any:
        return await startServer(self, *args)


class PostgresWebSocketCallsTests(WebSocketCallsMixin, TestCase):
    """
    The WebSocket scenario with the PostgreSQL store: the dead socket's
    binding row is gone from the location table.
    """

    async def server(self, *args: str) -> Any:
        nodePath()
        self.schema = await createTestSchema(self)
        return await startServer(self, "--db", self.schema.dsn, *args)

    async def rowsOf(self, service: Any, user: str) -> int:
        rows = await self.schema.admin.runQuery(
            sql.SQL("SELECT count(*) FROM {}.location WHERE username = %s").format(
                sql.Identifier(self.schema.name)), (user,))
        return int(rows[0][0])
