"""
The cleanup pipeline while PostgreSQL misbehaves: down at start, down while
connections close, backends killed, writes still in flight when their
connection dies.  A real sipcore service on loopback talks to the real
PostgreSQL through a TCP relay the test can switch off and on.
"""

from __future__ import annotations

from typing import Any

import psycopg2.extensions
from psycopg2 import sql
from twisted.internet import protocol, reactor
from twisted.protocols import portforward
from twisted.trial.unittest import TestCase

from sipcore.location import Binding, PostgresLocationStore
from tests.dbhelpers import connect, createTestSchema, startDatabase
from tests.serverhelpers import connectTCP, registerRequest, startServer, waitUntil

SERVER_ID = 7


class _RelayServer(portforward.ProxyServer):
    def connectionMade(self) -> None:
        self.factory.live.add(self)  # type: ignore[attr-defined]
        super().connectionMade()

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        self.factory.live.discard(self)  # type: ignore[attr-defined]
        super().connectionLost(reason)


class Relay:
    """
    A TCP relay to PostgreSQL on a fixed loopback port that can be switched
    off (refusing new connections and cutting live ones) and on again.
    """

    def __init__(self, host: str, port: int) -> None:
        self.factory = portforward.ProxyFactory(host, port)
        self.factory.protocol = _RelayServer
        self.factory.live = set()  # type: ignore[attr-defined]
        self.port = 0
        self._listening: Any = None

    def up(self) -> None:
        # Twisted's annotation asks for a ServerFactory; any IProtocolFactory listens.
        self._listening = reactor.listenTCP(
            self.port, self.factory, interface="127.0.0.1")  # type: ignore[arg-type]
        self.port = self._listening.getHost().port

    async def down(self) -> None:
        if self._listening is not None:
            await self._listening.stopListening()
            self._listening = None
        for server in list(self.factory.live):  # type: ignore[attr-defined]
            server.transport.abortConnection()
            if server.peer is not None:
                server.peer.transport.abortConnection()

    def dsn(self, base: str) -> str:
        return psycopg2.extensions.make_dsn(base, host="127.0.0.1", port=str(self.port))


class FaultTests(TestCase):
    """
    No cleanup is lost while the database is away, and no binding written
    just after its connection died is left behind.
    """

    timeout = 120

    async def setUpSchema(self) -> None:
        self.schema = await createTestSchema(self)
        params = psycopg2.extensions.parse_dsn(self.schema.dsn)
        self.relay = Relay(params.get("host", "127.0.0.1"), int(params.get("port", 5432)))
        self.relay.up()
        self.addCleanup(self.relay.down)

    async def rows(self, user: str | None = None) -> list[tuple[int, int]]:
        query = sql.SQL("SELECT server_id, connection_id FROM {}.location").format(
            sql.Identifier(self.schema.name))
        params: tuple[Any, ...] = ()
        if user is not None:
            query = query + sql.SQL(" WHERE username = %s")
            params = (user,)
        return sorted((r[0], r[1]) for r in await self.schema.admin.runQuery(query, params))

    async def start(self, *args: str) -> Any:
        return await startServer(
            self, "--server-id", str(SERVER_ID), "--db", self.relay.dsn(self.schema.dsn),
            *args, transports=("tcp",))

    async def test_databaseDownAtStart(self) -> None:
        """
        With PostgreSQL away the server still starts and answers REGISTER
        with 503 and Retry-After; when the database returns it registers
        again without a restart.
        """
        await self.setUpSchema()
        await self.relay.down()
        service = await self.start()
        client = await connectTCP(service.ports["tcp"])
        response = await client.request(registerRequest("tcp", "early", cseq=1))
        self.assertEqual(response.status, 503)
        self.assertIsNotNone(response.headers.first("Retry-After"))
        self.relay.up()
        cseq = [1]

        async def registered() -> bool:
            cseq[0] += 1
            answer = await client.request(registerRequest(
                "tcp", "early", cseq=cseq[0], callId="early-call"))
            return answer.status == 200

        await waitUntil(registered, timeout=30, interval=0.5, what="REGISTER accepted")
        # The start purge, retried until the database answered, must not
        # take the binding registered since the start.
        await waitUntil(lambda: not service.storeService.purgePending, timeout=30,
                        what="the start purge done")
        self.assertEqual(len(await self.rows("early")), 1)
        client.transport.loseConnection()
        await waitUntil(lambda: self.rowsGone("early"), what="binding removed")

    async def rowsGone(self, user: str | None = None) -> bool:
        return await self.rows(user) == []

    async def test_databaseDownWhileConnectionsClose(self) -> None:
        """
        Connections that close while PostgreSQL is away keep their cleanup
        queued (retried with backoff); when the database returns, every one
        of their bindings is removed, and the bindings of live connections
        stay.
        """
        await self.setUpSchema()
        service = await self.start()
        clients = []
        for i in range(20):
            client = await connectTCP(service.ports["tcp"])
            response = await client.request(registerRequest("tcp", "down{}".format(i)))
            self.assertEqual(response.status, 200)
            clients.append(client)
        await self.relay.down()
        for client in clients[:15]:
            client.transport.loseConnection()
        queue = next(iter(service.queues))
        await waitUntil(lambda: queue.failures > 0, what="a failed cleanup batch")
        self.assertEqual(len(await self.rows()), 20)
        self.relay.up()
        await waitUntil(lambda: queue.depth == 0, timeout=40, interval=0.2,
                        what="cleanup queue drained")
        remaining = await self.rows()
        self.assertEqual(len(remaining), 5)
        self.assertGreater(queue.retries, 0)

    async def test_backendsKilled(self) -> None:
        """
        The pool's backends terminated by the server while connections close:
        the store reconnects and every closed connection's binding is gone.
        """
        await self.setUpSchema()
        service = await self.start()
        clients = []
        for i in range(10):
            client = await connectTCP(service.ports["tcp"])
            await client.request(registerRequest("tcp", "killed{}".format(i)))
            clients.append(client)
        await self.schema.admin.runQuery(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s", (self.schema.applicationName,))
        for client in clients:
            client.transport.loseConnection()
        await waitUntil(self.rowsGone, timeout=40, interval=0.2, what="all bindings removed")

    async def test_writeInFlightWhenConnectionDies(self) -> None:
        """
        A REGISTER whose INSERT is still running when its connection closes:
        the cleanup waits for the write, so the binding does not outlive its
        connection.
        """
        await self.setUpSchema()
        conn = await connect(reactor, self.schema.dsn)
        self.addCleanup(conn.close)
        await conn.runOperation(
            "CREATE FUNCTION slow_insert() RETURNS trigger AS $$ "
            "BEGIN PERFORM pg_sleep(1.0); RETURN NEW; END $$ LANGUAGE plpgsql")
        await conn.runOperation(
            "CREATE TRIGGER slow_insert BEFORE INSERT ON location "
            "FOR EACH ROW EXECUTE FUNCTION slow_insert()")
        service = await self.start()
        client = await connectTCP(service.ports["tcp"])
        client.transport.write(registerRequest("tcp", "racer", localPort=client.localPort))

        async def inserting() -> bool:
            rows = await self.schema.admin.runQuery(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND state = 'active' AND query LIKE %s",
                (self.schema.applicationName, "INSERT INTO location%"))
            return bool(rows[0][0])

        await waitUntil(inserting, interval=0.01, what="the INSERT running")
        client.transport.loseConnection()
        await waitUntil(lambda: service.registrar.stats["registered"] == 1,
                        what="the REGISTER written")
        await waitUntil(lambda: self.rowsGone("racer"), what="binding removed")
        self.assertEqual(await self.rows("racer"), [])

    async def test_startPurgeAndExpiry(self) -> None:
        """
        At start the node removes its own connection-bound rows (and keeps
        UDP rows and other nodes' rows); the expiry timer removes expired
        rows.
        """
        await self.setUpSchema()
        database = await startDatabase(self, self.schema.dsn)
        seed = PostgresLocationStore(database.pool)
        await seed.start()
        now = reactor.seconds()

        def binding(ruid: str, serverId: int, conid: int, expires: float) -> Binding:
            return Binding(ruid=ruid, username=ruid, domain="example.com",
                           contact="sip:{}@192.0.2.1".format(ruid), expires=expires,
                           serverId=serverId, connectionId=conid)

        await seed.save([
            binding("mine-tcp", SERVER_ID, 12, now + 600),
            binding("mine-udp", SERVER_ID, -1, now + 600),
            binding("other-tcp", SERVER_ID + 1, 12, now + 600),
            binding("expiring", SERVER_ID, -1, now + 1),
        ])
        await seed.close()
        await database.stopService()
        await self.start("--expiry-interval", "0.5")
        await waitUntil(lambda: self.rowsGone("mine-tcp"), what="start purge")
        await waitUntil(lambda: self.rowsGone("expiring"), what="expiry")
        self.assertEqual(await self.rows("mine-udp"), [(SERVER_ID, -1)])
        self.assertEqual(await self.rows("other-tcp"), [(SERVER_ID + 1, 12)])


