"""
End-to-end tests of the close-event cleanup pipeline: a real sipcore
service on loopback, real clients over UDP, TCP and WebSocket, and the
location store (in memory, and the real PostgreSQL).

Each close path must remove exactly that connection's bindings, whatever
the database is doing meanwhile.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from tests.dbhelpers import createTestSchema
from tests.serverhelpers import (
    TCPClient,
    connectTCP,
    connectWS,
    listenUDP,
    optionsRequest,
    registerRequest,
    startServer,
    waitUntil,
)

SERVER_ID = 7


class CleanupPipelineMixin:
    """
    The pipeline's behaviour, written once and run against each store.
    """

    async def server(self, *args: str) -> Any:
        raise NotImplementedError

    async def rows(self, user: str) -> list[tuple[int, int]]:
        """
        C{(server_id, connection_id)} of each binding of C{user}.
        """
        raise NotImplementedError

    async def allRows(self) -> int:
        raise NotImplementedError

    async def registerTCP(self, service: Any, user: str) -> TCPClient:
        client = await connectTCP(service.ports["tcp"])
        response = await client.request(
            registerRequest("tcp", user, localPort=client.localPort))
        self.assertEqual(response.status, 200)  # type: ignore[attr-defined]
        return client

    async def gone(self, user: str) -> None:
        async def empty() -> bool:
            return await self.rows(user) == []

        await waitUntil(empty, what="bindings of {} removed".format(user))

    async def test_registerOverEachTransport(self) -> None:
        """
        REGISTER over UDP, TCP and WebSocket each store a binding; the
        stream ones carry the connection id and the node's server id, the
        UDP one is bound to no connection.
        """
        service = await self.server()
        udp = listenUDP(self, service.ports["udp"])  # type: ignore[arg-type]
        response = await udp.request(registerRequest("udp", "alice"))
        self.assertEqual(response.status, 200)  # type: ignore[attr-defined]
        tcp = await self.registerTCP(service, "bob")
        ws = await connectWS(service.ports["ws"])
        response = await ws.request(registerRequest("ws", "carol", localPort=ws.localPort))
        self.assertEqual(response.status, 200)  # type: ignore[attr-defined]

        self.assertEqual(await self.rows("alice"), [(SERVER_ID, -1)])  # type: ignore[attr-defined]
        [(serverId, bobConid)] = await self.rows("bob")
        [(_, carolConid)] = await self.rows("carol")
        self.assertEqual(serverId, SERVER_ID)  # type: ignore[attr-defined]
        self.assertTrue(bobConid > 0 and carolConid > 0 and bobConid != carolConid)  # type: ignore[attr-defined]
        tcp.transport.loseConnection()
        ws.sendClose(1000)
        await self.gone("bob")
        await self.gone("carol")
        self.assertEqual(await self.rows("alice"), [(SERVER_ID, -1)])  # type: ignore[attr-defined]

    async def test_closePaths(self) -> None:
        """
        Peer FIN, peer RST, idle timeout, a framing error, a WebSocket close
        frame and a WebSocket dropped without one each remove exactly the
        bindings of their own connection.
        """
        service = await self.server("--idle-timeout", "1.5")
        fin = await self.registerTCP(service, "fin")
        rst = await self.registerTCP(service, "rst")
        bad = await self.registerTCP(service, "bad")
        idle = await self.registerTCP(service, "idle")
        wsClose = await connectWS(service.ports["ws"])
        await wsClose.request(registerRequest("ws", "wsclose", localPort=wsClose.localPort))
        wsDrop = await connectWS(service.ports["ws"])
        await wsDrop.request(registerRequest("ws", "wsdrop", localPort=wsDrop.localPort))
        keeper = await self.registerTCP(service, "keeper")

        fin.transport.loseConnection()
        await self.gone("fin")
        rst.reset()
        await self.gone("rst")
        bad.transport.write(b"INVITE sip:x SIP/2.0\r\nContent-Length: -5\r\n\r\n")
        await self.gone("bad")
        wsClose.sendClose(1000)
        await self.gone("wsclose")
        wsDrop.drop()
        await self.gone("wsdrop")
        # Keep "keeper" alive past the idle timeout with keepalives, while
        # "idle" stays silent and is cut off.
        for _ in range(3):
            keeper.transport.write(b"\r\n\r\n")
            await task.deferLater(reactor, 0.7, lambda: None)
        await self.gone("idle")
        await idle.waiters.lost
        self.assertEqual(len(await self.rows("keeper")), 1)  # type: ignore[attr-defined]

    async def test_shutdownRemovesBindings(self) -> None:
        """
        Stopping the server closes its connections and removes their
        bindings before the store is closed.
        """
        service = await self.server()
        await self.registerTCP(service, "shut1")
        ws = await connectWS(service.ports["ws"])
        await ws.request(registerRequest("ws", "shut2", localPort=ws.localPort))
        await service.stopService()
        await self.reopen()
        self.assertEqual(await self.rows("shut1"), [])  # type: ignore[attr-defined]
        self.assertEqual(await self.rows("shut2"), [])  # type: ignore[attr-defined]

    async def reopen(self) -> None:
        """
        Make L{rows} usable after the service stopped.
        """

    async def test_massClose(self) -> None:
        """
        500 registered TCP connections closed at once leave no binding,
        removed with far fewer statements than connections.
        """
        service = await self.server()
        clients = []
        for i in range(0, 500, 50):
            group = await defer.gatherResults([
                defer.Deferred.fromCoroutine(self.registerTCP(service, "mass{}".format(j)))
                for j in range(i, i + 50)
            ])
            clients.extend(group)
        self.assertEqual(await self.allRows(), 500)  # type: ignore[attr-defined]
        before = self.deleteStatements(service)
        for client in clients:
            client.transport.loseConnection()

        async def none() -> bool:
            return await self.allRows() == 0

        await waitUntil(none, what="all 500 bindings removed")
        statements = self.deleteStatements(service) - before
        self.assertTrue(0 < statements < 500 // 5, statements)  # type: ignore[attr-defined]

    def deleteStatements(self, service: Any) -> int:
        return self.cleanupQueue(service).batches  # type: ignore[no-any-return]

    async def test_reconnectRace(self) -> None:
        """
        A client re-registers the same contact on a new connection while the
        server still holds its old one (a NAT rebinding); when the old
        connection closes later, its cleanup leaves the new binding alone.
        """
        service = await self.server()
        contact = "<sip:phoenix@127.0.0.1:5999;transport=tcp>"
        first = await connectTCP(service.ports["tcp"])
        response = await first.request(registerRequest(
            "tcp", "phoenix", contact=contact, callId="phoenix-1"))
        self.assertEqual(response.status, 200)  # type: ignore[attr-defined]
        [(_, oldConid)] = await self.rows("phoenix")
        second = await connectTCP(service.ports["tcp"])
        response = await second.request(registerRequest(
            "tcp", "phoenix", contact=contact, callId="phoenix-2"))
        self.assertEqual(response.status, 200)  # type: ignore[attr-defined]
        [(_, newConid)] = await self.rows("phoenix")
        self.assertNotEqual(newConid, oldConid)  # type: ignore[attr-defined]
        batches = self.cleanupQueue(service).processed
        first.transport.loseConnection()
        await waitUntil(lambda: self.cleanupQueue(service).processed > batches,
                        what="cleanup of the old connection")
        self.assertEqual(await self.rows("phoenix"), [(SERVER_ID, newConid)])  # type: ignore[attr-defined]
        second.transport.loseConnection()
        await self.gone("phoenix")

    def cleanupQueue(self, service: Any) -> Any:
        return service.queues.__iter__().__next__()

    async def test_optionsStillAnswered(self) -> None:
        """
        With the cleanup pipeline running, OPTIONS over each stream is
        answered 200.
        """
        service = await self.server()
        tcp = await connectTCP(service.ports["tcp"])
        self.assertEqual((await tcp.request(optionsRequest("tcp"))).status, 200)  # type: ignore[attr-defined]
        ws = await connectWS(service.ports["ws"])
        self.assertEqual((await ws.request(optionsRequest("ws"))).status, 200)  # type: ignore[attr-defined]
        tcp.transport.loseConnection()
        ws.sendClose(1000)


class MemoryCleanupTests(CleanupPipelineMixin, TestCase):
    """
    The cleanup pipeline with the in-memory store.
    """

    timeout = 60

    async def server(self, *args: str) -> Any:
        self.service = await startServer(self, "--server-id", str(SERVER_ID), *args)
        return self.service

    async def rows(self, user: str) -> list[tuple[int, int]]:
        return sorted((b.serverId, b.connectionId)
                      for b in self.service.store.allBindings() if b.username == user)

    async def allRows(self) -> int:
        return len(self.service.store.allBindings())


class PostgresCleanupTests(CleanupPipelineMixin, TestCase):
    """
    The cleanup pipeline with the PostgreSQL store.
    """

    timeout = 120

    async def server(self, *args: str) -> Any:
        self.schema = await createTestSchema(self)
        self.service = await startServer(
            self, "--server-id", str(SERVER_ID), "--db", self.schema.dsn, *args)
        return self.service

    async def rows(self, user: str) -> list[tuple[int, int]]:
        rows = await self.schema.admin.runQuery(
            sql.SQL("SELECT server_id, connection_id FROM {}.location WHERE username = %s")
            .format(sql.Identifier(self.schema.name)), (user,))
        return sorted((r[0], r[1]) for r in rows)

    async def allRows(self) -> int:
        [(count,)] = await self.schema.admin.runQuery(
            sql.SQL("SELECT count(*) FROM {}.location").format(sql.Identifier(self.schema.name)))
        return int(count)

    def deleteStatements(self, service: Any) -> int:
        return service.store.statementCount["removeConnections"]  # type: ignore[no-any-return]
