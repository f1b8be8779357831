"""
Tests for L{sipcore.db}: the L{DatabasePool} (unit tests on a L{Clock}, the
C{txpostgres} hooks it is built on, then against the real PostgreSQL
server, see L{tests.dbhelpers}) and the L{Database} service.  The pool's
behaviour through outages is tested through the location store in
L{tests.test_location_postgres}.
"""

from __future__ import annotations

import psycopg2
from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from txpostgres import reconnection, txpostgres
from zope.interface.verify import verifyObject

from sipcore.db import Database, DatabasePool, DatabaseUnavailable
from sipcore.db import pool as poolModule
from sipcore.interfaces import IDatabasePool
from tests.dbhelpers import createTestSchema, startDatabase

DSN = "host=127.0.0.1 port=1 dbname=x user=x"


class DatabasePoolTests(SynchronousTestCase):
    """
    L{DatabasePool} without a server.
    """

    def test_interface(self) -> None:
        """
        L{DatabasePool} provides L{IDatabasePool}.
        """
        self.assertTrue(verifyObject(IDatabasePool, DatabasePool(DSN, Clock())))

    def test_notStarted(self) -> None:
        """
        Before C{start} every call fails at once with L{DatabaseUnavailable}
        and the pool is not available.
        """
        pool = DatabasePool(DSN, Clock())
        self.assertFalse(pool.available)
        self.assertFalse(pool.running)
        for d in (pool.runQuery("SELECT 1"), pool.runOperation("SELECT 1"),
                  pool.runInteraction(lambda cursor: None)):
            f = self.failureResultOf(d, DatabaseUnavailable)
            self.assertIn("not started", str(f.value))

    def test_invalidSettings(self) -> None:
        """
        An invalid DSN (not echoed) or an out-of-range number is refused at
        construction.
        """
        e = self.assertRaises(ValueError, DatabasePool, "nonsense password=hunter2", Clock())
        self.assertNotIn("hunter2", str(e))
        for options in ({"minConnections": 0}, {"operationTimeout": 0},
                        {"connectTimeout": -1}, {"maxRetryDelay": 0},
                        {"statementTimeout": 0}, {"retryDelay": -1}):
            self.assertRaises(ValueError, DatabasePool, DSN, Clock(), **options)

    def test_retryDelays(self) -> None:
        """
        Reconnection attempts come at once, then after C{retryDelay}
        doubling up to C{maxRetryDelay}, each within 10% jitter.
        """
        pool = DatabasePool(DSN, Clock(), retryDelay=1.0, maxRetryDelay=5.0)
        delays = pool._retryDelays()
        first = [next(delays) for _ in range(6)]
        self.assertEqual(first[0], 0.0)
        for delay, expected in zip(first[1:], [1.0, 2.0, 4.0, 5.0, 5.0], strict=True):
            self.assertTrue(expected * 0.9 <= delay <= min(5.0, expected * 1.1), first)
        later = DatabasePool(DSN, Clock(), retryImmediately=False, retryDelay=1.0)
        self.assertGreater(next(later._retryDelays()), 0.0)


class TxpostgresHookTests(SynchronousTestCase):
    """
    The public parts of C{txpostgres} the pool is built on behave as the
    pool expects; these tests fail when a C{txpostgres} release changes
    them (setup.cfg bounds it below 2).
    """

    def test_deathStartsOurReconnection(self) -> None:
        """
        C{DeadConnectionDetector.checkForDeadConnection} with a failure the
        death checker accepts marks the connection dead and calls the
        C{startReconnecting} hook, which schedules the pool's first
        attempt; stopping the watch leaves no timer behind.
        """
        clock = Clock()
        pool = DatabasePool(DSN, clock, retryImmediately=False, retryDelay=1.0)
        watch = poolModule._Watch(pool, clock)
        watch.reconnectable = poolModule._Connection(clock, detector=watch)
        failure = Failure(psycopg2.OperationalError("server closed the connection"))
        self.assertIs(watch.checkForDeadConnection(failure), failure)
        self.assertTrue(watch.connectionIsDead)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        watch.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_statementTimeoutIsNotDeath(self) -> None:
        """
        A statement cancelled by C{statement_timeout} does not start a
        reconnection; a server turned read-only does.
        """
        self.assertFalse(poolModule._isConnectionDeath(
            Failure(psycopg2.extensions.QueryCanceledError("canceling statement"))))
        self.assertTrue(poolModule._isConnectionDeath(
            Failure(psycopg2.errors.ReadOnlySqlTransaction("read-only"))))

    def test_deadConnectionRefusesCalls(self) -> None:
        """
        A C{txpostgres.Connection} given a detector sends its calls through
        C{callChecking}: while the connection is known dead they fail at
        once with C{ConnectionDead}.
        """
        clock = Clock()
        watch = poolModule._Watch(DatabasePool(DSN, clock), clock)
        conn = poolModule._Connection(clock, detector=watch)
        watch.reconnectable = conn
        self.assertIsInstance(conn, txpostgres.Connection)
        watch.connectionIsDead = True
        self.failureResultOf(conn.runQuery("SELECT 1"), reconnection.ConnectionDead)
        watch.stop()


class DatabaseServiceTests(TestCase):
    """
    L{Database} against the real server.
    """

    def test_service(self) -> None:
        """
        L{Database} provides L{IService}, named C{database}.
        """
        database = Database(DSN, reactor)
        self.assertTrue(verifyObject(IService, database))
        self.assertEqual(database.name, "database")

    async def test_startStop(self) -> None:
        """
        Starting the service connects its pool (its start fires once the
        connections are open); stopping it closes them, and calls then fail
        with L{DatabaseUnavailable}.
        """
        schema = await createTestSchema(self, withLocation=False)
        database = await startDatabase(self, schema.dsn, minConnections=2)
        self.assertTrue(database.running)
        self.assertEqual(database.pool.liveConnections, 2)
        self.assertEqual(await database.pool.runQuery("SELECT %s", (1,)), [(1,)])
        rows = await schema.admin.runQuery(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (schema.applicationName,))
        self.assertEqual(rows, [(2,)])
        await database.stopService()
        self.assertFalse(database.pool.available)
        with self.assertRaises(DatabaseUnavailable):
            await database.pool.runQuery("SELECT 1")

    async def test_refusedStatement(self) -> None:
        """
        A statement the database refuses fails with the C{psycopg2} error
        (not L{DatabaseUnavailable}) and leaves the pool available;
        C{runInteraction} commits what succeeds.
        """
        schema = await createTestSchema(self, withLocation=False)
        database = await startDatabase(self, schema.dsn, minConnections=1)
        with self.assertRaises(psycopg2.ProgrammingError):
            await database.pool.runQuery("SELECT * FROM no_such_table")
        self.assertTrue(database.pool.available)

        async def create(cursor: txpostgres.Cursor) -> str:
            await cursor.execute("CREATE TABLE t (x integer)")
            await cursor.execute("INSERT INTO t VALUES (%s)", (7,))
            return "done"

        from twisted.internet import defer

        answer = await database.pool.runInteraction(
            lambda cursor: defer.Deferred.fromCoroutine(create(cursor)))
        self.assertEqual(answer, "done")
        self.assertEqual(await database.pool.runQuery("SELECT x FROM t"), [(7,)])
