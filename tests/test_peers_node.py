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

import secrets
from typing import Any

from psycopg2 import sql
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.dbhelpers import createTestSchema
from tests.peerhelpers import NodeScript, nodePath, startNode
from tests.serverhelpers import startServer, waitUntil


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
        nodePath()
        service = await self.server(*serverArgs)
        self.addCleanup(service.proxy.stop)  # type: ignore[attr-defined]
        alice = "alice" + secrets.token_hex(3)
        bob = "bob" + secrets.token_hex(3)
        script = startNode(self, "calls.mjs",  # type: ignore[arg-type]
                           "ws://127.0.0.1:{}".format(service.ports["ws"]), "example.com",
                           alice, bob)
        await script.event("dropped")
        # Let the server see the socket go before the last call.
        await waitUntil(lambda: len(service.table) == 1, timeout=20,
                        what="server to notice the dropped socket")
        script.send("go")
        code = await script.ended
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
