# -*- test-case-name: tests.test_audit -*-
"""
Tests for L{sipcore.handlers.audit}, the C{connection-audit} handler: unit
tests with a fake pool and a L{Clock}, then against the real PostgreSQL
server (a private schema per test, see L{tests.dbhelpers}), including a
database outage in the middle of the traffic and a whole sipcore service
on loopback.
"""

from __future__ import annotations

from typing import Any

import psycopg2
from psycopg2 import sql
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from sipcore.db.audit import COLUMNS, insertStatement, tableDDL
from sipcore.events import (
    CONNECTION_EVENTS,
    TCP_CLOSED,
    TCP_CONNECTED,
    WEBSOCKET_CLOSED,
)
from sipcore.events.discovery import findHandlers
from sipcore.handlers.audit import ConnectionAudit
from sipcore.interfaces import IHandlerPlugin
from sipcore.plugin import HandlerContext, HandlerError, OptionError, parseOptions
from sipcore.tap import Options, buildService
from sipcore.testing import FakePool, MemoryLocationStore, UDPMemoryReactor, connectionEvent
from tests.dbhelpers import TestSchema, createTestSchema, startDatabase
from tests.serverhelpers import connectTCP, startServer, waitUntil
from twisted.plugins.sipcore_handlers import connectionAudit

SERVER_ID = 7


def makeContext(
    pool: Any, clock: Any, options: dict[str, str] | None = None
) -> HandlerContext:
    """
    A context for C{connection-audit}, its options parsed as sipcore
    parses C{--handler-option connection-audit:KEY=VALUE}.
    """
    return HandlerContext(
        serverId=SERVER_ID,
        reactor=clock,
        store=MemoryLocationStore(clock),
        dbPool=pool,
        options=parseOptions(connectionAudit, options or {}),
        handlerName="connection-audit",
    )


class StatementTests(SynchronousTestCase):
    """
    The statements are built from constants, every value a parameter.
    """

    def test_insertStatement(self) -> None:
        """
        The INSERT of N rows has N row groups of one placeholder per column,
        and ignores a row already written (a retried batch).
        """
        statement = insertStatement(3)
        self.assertTrue(statement.startswith("INSERT INTO connection_events ("))
        self.assertEqual(statement.count("%s"), 3 * len(COLUMNS))
        self.assertTrue(statement.endswith("ON CONFLICT (run_id, seq) DO NOTHING"))
        self.assertRaises(ValueError, insertStatement, 0)

    def test_columnsInOrder(self) -> None:
        """
        The INSERT names the columns in the order of L{COLUMNS}, which the
        parameters follow.
        """
        head = insertStatement(1).split(" VALUES ")[0]
        self.assertEqual(head, "INSERT INTO connection_events ({})".format(", ".join(COLUMNS)))

    def test_ddlHasNoParameters(self) -> None:
        """
        The DDL is parameter-free and idempotent (every object is created
        only if missing).
        """
        ddl = tableDDL()
        self.assertNotIn("%", ddl)
        self.assertIn("CREATE TABLE IF NOT EXISTS connection_events", ddl)
        self.assertEqual(ddl.count("CREATE INDEX IF NOT EXISTS"), 2)


class DescriptorTests(SynchronousTestCase):
    """
    The C{connection-audit} plugin is found, provides L{IHandlerPlugin} and
    is off by default.
    """

    def test_discovered(self) -> None:
        """
        C{getPlugins} finds the descriptor; it subscribes to every connection event and
        runs after location-cleanup.
        """
        found = findHandlers()
        audit = found["connection-audit"]
        self.assertTrue(verifyObject(IHandlerPlugin, audit))
        self.assertEqual(audit.events, CONNECTION_EVENTS)
        self.assertGreater(audit.priority, found["location-cleanup"].priority)

    def test_offByDefault(self) -> None:
        """
        Without C{--handler connection-audit} it is not enabled.
        """
        options = Options()
        options.parseOptions([])
        self.assertNotIn("connection-audit", options.handlerNames())


class HandlerUnitTests(SynchronousTestCase):
    """
    L{ConnectionAudit} with a fake pool and a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = FakePool()

    def makeAudit(self, **options: str) -> ConnectionAudit:
        audit = ConnectionAudit(makeContext(self.pool, self.clock, options))
        audit.queue.start()
        return audit

    def test_noDatabase(self) -> None:
        """
        Without a database the handler refuses to start, saying it needs
        C{--db}.
        """
        e = self.assertRaises(
            HandlerError, ConnectionAudit, makeContext(None, self.clock)
        )
        self.assertIn("'connection-audit' needs a PostgreSQL database", str(e))
        self.assertIn("--db", str(e))

    def test_badOption(self) -> None:
        """
        An unknown or invalid option is refused, naming it.
        """
        e = self.assertRaises(OptionError, makeContext, self.pool, self.clock, {"batch": "1"})
        self.assertIn("unknown option 'batch'", str(e))
        e = self.assertRaises(
            OptionError, makeContext, self.pool, self.clock, {"batch-size": "0"}
        )
        self.assertEqual(
            str(e), "handler 'connection-audit': Parameter type enforcement failed: "
            "must be at least 1, not 0"
        )

    def test_startCreatesTable(self) -> None:
        """
        C{start} runs the DDL without parameters and fires when it is done.
        """
        audit = self.makeAudit()
        d = audit.start()
        assert d is not None
        [(statement, params, answer)] = self.pool.calls
        self.assertEqual((statement, params), (tableDDL(), None))
        self.assertNoResult(d)
        answer.callback(None)
        self.successResultOf(d)
        self.assertTrue(audit.tableReady)

    def test_createTableNo(self) -> None:
        """
        With C{create-table=no} nothing runs at start.
        """
        audit = self.makeAudit(**{"create-table": "no"})
        self.assertIsNone(audit.start())
        self.assertEqual(self.pool.calls, [])

    def test_startSurvivesDatabaseAway(self) -> None:
        """
        A database that is away at start does not stop the start (a warning
        is logged); the table is created before the first write.
        """
        audit = self.makeAudit(**{"batch-delay": "0"})
        d = audit.start()
        assert d is not None
        self.pool.calls[0][2].errback(psycopg2.OperationalError("server closed the connection"))
        self.successResultOf(d)
        self.assertFalse(audit.tableReady)
        audit.handle(connectionEvent(TCP_CLOSED, conid=1))
        self.clock.advance(0)
        self.assertEqual(self.pool.calls[1][0], tableDDL())
        self.pool.calls[1][2].callback(None)
        self.assertTrue(self.pool.calls[2][0].startswith("INSERT"))
        self.pool.calls[2][2].callback(None)
        self.assertEqual(audit.written, 1)

    def test_sqlErrorAtStartRefused(self) -> None:
        """
        An SQL error creating the table (here: no privilege) fails the start
        with a message naming the handler and the table.
        """
        audit = self.makeAudit()
        d = audit.start()
        assert d is not None
        self.pool.calls[0][2].errback(
            psycopg2.errors.InsufficientPrivilege("permission denied for schema public")
        )
        failure = self.failureResultOf(d, HandlerError)
        self.assertEqual(
            str(failure.value),
            "handler 'connection-audit': cannot create the connection_events table: "
            "permission denied for schema public",
        )

    def test_eventsNeverCollapse(self) -> None:
        """
        Every event is its own row, even two with the same name and conid,
        and one batch writes them with one INSERT whose parameters are the
        events' fields.
        """
        audit = self.makeAudit(**{"create-table": "no", "batch-delay": "0.5"})
        events = [
            connectionEvent(TCP_CONNECTED, conid=4, serverId=SERVER_ID, time=100.0),
            connectionEvent(
                WEBSOCKET_CLOSED,
                conid=4,
                transport="ws",
                serverId=SERVER_ID,
                time=101.5,
                reason="peer closed",
                duration=1.5,
                wsCode=1000,
                wsReason="bye",
            ),
            connectionEvent(WEBSOCKET_CLOSED, conid=4, transport="ws", time=101.5),
        ]
        for event in events:
            audit.handle(event)
        self.assertEqual(audit.queue.depth, 3)
        self.clock.advance(0.5)
        [(statement, params, answer)] = self.pool.calls
        self.assertEqual(statement, insertStatement(3))
        rows = [params[i : i + len(COLUMNS)] for i in range(0, len(params), len(COLUMNS))]
        self.assertEqual([row[1] for row in rows], [1, 2, 3])
        self.assertEqual({row[0] for row in rows}, {audit.runId})
        self.assertEqual(
            rows[1][2:],
            [101.5, SERVER_ID, WEBSOCKET_CLOSED, 4, "ws", "127.0.0.1", 5060,
             "127.0.0.1", 40000, "peer closed", 1.5, 1000, "bye"],
        )
        answer.callback(None)
        self.assertEqual(audit.written, 3)

    def test_failedBatchRetried(self) -> None:
        """
        A batch that fails stays queued and is written again after the
        backoff, with the same rows; nothing is lost.
        """
        audit = self.makeAudit(**{"create-table": "no", "batch-delay": "0"})
        audit.handle(connectionEvent(TCP_CLOSED, conid=9))
        self.clock.advance(0)
        first = self.pool.calls[0]
        first[2].errback(psycopg2.OperationalError("terminating connection"))
        self.assertEqual(audit.queue.depth, 1)
        self.assertEqual(len(self.pool.calls), 1)
        self.clock.advance(audit.queue.maxBackoff)
        second = self.pool.calls[1]
        self.assertEqual(second[:2], first[:2])
        second[2].callback(None)
        self.assertEqual((audit.written, audit.queue.depth), (1, 0))
        self.assertEqual((audit.queue.failures, audit.queue.retries), (1, 1))


class ServiceRefusalTests(SynchronousTestCase):
    """
    Enabled without a database, the handler stops sipcore's start.
    """

    def test_refusedWithoutDatabase(self) -> None:
        """
        C{--handler connection-audit} without C{--db}: building the service
        fails with the handler's message, before anything listens.
        """
        options = Options()
        options.parseOptions(["--listen", "tcp:0", "--handler", "connection-audit"])
        clock = UDPMemoryReactor()
        e = self.assertRaises(HandlerError, buildService, options, clock)
        self.assertIn("needs a PostgreSQL database", str(e))
        self.assertEqual(clock.tcpServers, [])


async def auditRows(schema: TestSchema) -> list[tuple[Any, ...]]:
    """
    The rows of the schema's C{connection_events}, in C{seq} order.
    """
    query = sql.SQL(
        "SELECT seq, EXTRACT(EPOCH FROM event_time)::float8, server_id, event, connection_id,"
        " transport, local_host, local_port, remote_host, remote_port, reason, duration,"
        " ws_code, ws_reason, run_id::text FROM {}.connection_events ORDER BY seq"
    ).format(sql.Identifier(schema.name))
    return [tuple(row) for row in await schema.admin.runQuery(query)]


class PostgresAuditTests(TestCase):
    """
    L{ConnectionAudit} against the real server, through a database's pool.
    """

    # trial waits for the coroutine; unittest's stub says setUp returns None.
    async def setUp(self) -> None:  # type: ignore[override]
        self.schema = await createTestSchema(self, withLocation=False)
        self.database = await startDatabase(
            self, self.schema.dsn, minConnections=1, retryImmediately=False, retryDelay=0.2
        )
        self.pool = self.database.pool

    async def makeAudit(self, **options: str) -> ConnectionAudit:
        options.setdefault("batch-delay", "0.01")
        context = makeContext(self.pool, reactor, options)
        audit = ConnectionAudit(context)
        await defer.maybeDeferred(audit.start)
        audit.queue.start()
        self.addCleanup(audit.queue.stop, 2.0)
        return audit

    async def terminateBackends(self) -> int:
        rows = await self.schema.admin.runQuery(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (self.schema.applicationName,),
        )
        return sum(1 for (terminated,) in rows if terminated)

    async def test_createsTableIdempotently(self) -> None:
        """
        Starting creates the table with its primary key and indexes; a
        second start (another node, a restart) changes nothing.
        """
        await self.makeAudit()
        await self.makeAudit()
        rows = await self.schema.admin.runQuery(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s ORDER BY indexname",
            (self.schema.name,),
        )
        self.assertEqual(
            [name for (name,) in rows],
            [
                "connection_events_connection_idx",
                "connection_events_pkey",
                "connection_events_time_idx",
            ],
        )

    async def test_writesEveryField(self) -> None:
        """
        Each event becomes one row holding every field of the event.
        """
        audit = await self.makeAudit()
        audit.handle(
            connectionEvent(
                TCP_CONNECTED, conid=3, serverId=SERVER_ID, time=1700000000.25,
                remote=("::1", 50000), local=("::1", 5060),
            )
        )
        audit.handle(
            connectionEvent(
                WEBSOCKET_CLOSED, conid=3, transport="wss", serverId=SERVER_ID,
                time=1700000010.5, reason="close frame", duration=10.25, wsCode=1001,
                wsReason="going away",
            )
        )
        await waitUntil(lambda: audit.written == 2, what="two rows written")
        rows = await auditRows(self.schema)
        self.assertEqual(
            [row[:-1] for row in rows],
            [
                (1, 1700000000.25, SERVER_ID, TCP_CONNECTED, 3, "tcp", "::1", 5060, "::1",
                 50000, None, None, None, None),
                (2, 1700000010.5, SERVER_ID, WEBSOCKET_CLOSED, 3, "wss", "127.0.0.1", 5060,
                 "127.0.0.1", 40000, "close frame", 10.25, 1001, "going away"),
            ],
        )
        self.assertEqual({row[-1] for row in rows}, {audit.runId})

    async def test_clashingRelationRefused(self) -> None:
        """
        A view already called C{connection_events} makes the DDL fail: the
        start fails with a message naming the handler and the table.
        """
        await self.schema.admin.runOperation(
            sql.SQL("CREATE VIEW {}.connection_events AS SELECT 1 AS x").format(
                sql.Identifier(self.schema.name)
            )
        )
        context = makeContext(self.pool, reactor)
        audit = ConnectionAudit(context)
        with self.assertRaises(HandlerError) as caught:
            started = audit.start()
            assert started is not None
            await started
        self.assertIn(
            "handler 'connection-audit': cannot create the connection_events table:",
            str(caught.exception),
        )

    async def test_outageInTheMiddle(self) -> None:
        """
        Events before, during and after the database's backends are
        terminated are all written exactly once: the batches that failed
        during the outage are retried until the pool has reconnected.
        """
        audit = await self.makeAudit()
        for conid in (1, 2):
            audit.handle(connectionEvent(TCP_CLOSED, conid=conid, serverId=SERVER_ID))
        await waitUntil(lambda: audit.written == 2, what="rows before the outage")

        self.assertEqual(await self.terminateBackends(), 1)
        await waitUntil(lambda: not self.pool.available, what="the pool to notice")
        for conid in (3, 4, 5):
            audit.handle(connectionEvent(TCP_CLOSED, conid=conid, serverId=SERVER_ID))
        await waitUntil(lambda: audit.queue.failures >= 1, what="a failed batch")
        self.assertEqual(audit.written, 2)

        await waitUntil(lambda: audit.written == 5, what="rows after the outage")
        audit.handle(connectionEvent(TCP_CLOSED, conid=6, serverId=SERVER_ID))
        await waitUntil(lambda: audit.written == 6, what="rows after recovery")
        rows = await auditRows(self.schema)
        self.assertEqual([(row[0], row[4]) for row in rows], [(n, n) for n in range(1, 7)])
        self.assertGreaterEqual(audit.queue.retries, 1)
        self.assertEqual(audit.queue.metrics()["depth"], 0)
        self.flushLoggedErrors()


class ServiceAuditTests(TestCase):
    """
    A whole sipcore service with C{--db} and C{--handler connection-audit}
    on loopback.
    """

    async def test_tcpConnectionAudited(self) -> None:
        """
        A real TCP connection that opens and closes leaves a
        C{tcp:connected} and a C{tcp:closed} row with its conid, addresses,
        reason and duration.
        """
        schema = await createTestSchema(self)
        service = await startServer(
            self,
            "--db", schema.dsn,
            "--server-id", str(SERVER_ID),
            "--handler", "connection-audit",
            "--handler-option", "connection-audit:batch-delay=0",
            transports=("tcp",),
        )
        client = await connectTCP(service.ports["tcp"])
        localPort = client.localPort
        client.transport.loseConnection()
        await client.waiters.lost

        async def twoRows() -> bool:
            try:
                return len(await auditRows(schema)) == 2
            except psycopg2.ProgrammingError:
                return False

        await waitUntil(twoRows, what="two audit rows")
        rows = await auditRows(schema)
        self.assertEqual([row[3] for row in rows], [TCP_CONNECTED, TCP_CLOSED])
        for row in rows:
            self.assertEqual(row[2], SERVER_ID)
            self.assertEqual(row[5], "tcp")
            self.assertEqual((row[6], row[7]), ("127.0.0.1", service.ports["tcp"]))
            self.assertEqual((row[8], row[9]), ("127.0.0.1", localPort))
        self.assertEqual(rows[0][4], rows[1][4])
        self.assertIsNotNone(rows[1][10])
        self.assertGreaterEqual(rows[1][11], 0.0)
