"""
Tests for L{sipcore.location.postgres} and L{sipcore.db.location} (on a
L{sipcore.db.Database}) against a real PostgreSQL server (see
L{tests.dbhelpers}: skipped when the server is unreachable, unless
C{SIPCORE_REQUIRE_DB=1}).
"""

from __future__ import annotations

import calendar
import datetime
from collections.abc import Callable
from typing import Any

import psycopg2.extensions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task, threads
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import provider

from sipcore.db import Database, DatabaseUnavailable
from sipcore.db import location as statements
from sipcore.db.location import (
    LOCATION_TABLE_VERSION,
    SchemaVersionMismatch,
    initSchema,
    locationTableVersion,
)
from sipcore.location import (
    Binding,
    MemoryLocationStore,
    PostgresLocationStore,
    StoreUnavailable,
)
from tests.dbhelpers import connect, createTestSchema, startDatabase
from tests.test_location_contract import (
    HOSTILE_TEXTS,
    NOW,
    LocationStoreContractMixin,
    makeBinding,
)

#: Kamailio's location table (version 9) for PostgreSQL, as
#: information_schema describes it: (column, data_type, character length,
#: nullable, default).  The id default names the sequence and is checked
#: apart.
KAMAILIO_LOCATION_COLUMNS = [
    ("id", "integer", None, "NO", "nextval"),
    ("ruid", "character varying", 64, "NO", "''::character varying"),
    ("username", "character varying", 64, "NO", "''::character varying"),
    ("domain", "character varying", 64, "YES", "NULL::character varying"),
    ("contact", "character varying", 512, "NO", "''::character varying"),
    ("received", "character varying", 128, "YES", "NULL::character varying"),
    ("path", "character varying", 512, "YES", "NULL::character varying"),
    (
        "expires",
        "timestamp without time zone",
        None,
        "NO",
        "'2030-05-28 21:32:15'::timestamp without time zone",
    ),
    ("q", "real", None, "NO", "1.0"),
    ("callid", "character varying", 255, "NO", "'Default-Call-ID'::character varying"),
    ("cseq", "integer", None, "NO", "1"),
    (
        "last_modified",
        "timestamp without time zone",
        None,
        "NO",
        "'2000-01-01 00:00:01'::timestamp without time zone",
    ),
    ("flags", "integer", None, "NO", "0"),
    ("cflags", "integer", None, "NO", "0"),
    ("user_agent", "character varying", 255, "NO", "''::character varying"),
    ("socket", "character varying", 64, "YES", "NULL::character varying"),
    ("methods", "integer", None, "YES", None),
    ("instance", "character varying", 255, "YES", "NULL::character varying"),
    ("reg_id", "integer", None, "NO", "0"),
    ("server_id", "integer", None, "NO", "0"),
    ("connection_id", "integer", None, "NO", "0"),
    ("keepalive", "integer", None, "NO", "0"),
    ("partition", "integer", None, "NO", "0"),
]

KAMAILIO_LOCATION_INDEXES = {
    "location_pkey": "CREATE UNIQUE INDEX location_pkey ON location USING btree (id)",
    "location_ruid_idx": "CREATE UNIQUE INDEX location_ruid_idx ON location USING btree (ruid)",
    "location_account_contact_idx": (
        "CREATE INDEX location_account_contact_idx ON location "
        "USING btree (username, domain, contact)"
    ),
    "location_expires_idx": "CREATE INDEX location_expires_idx ON location USING btree (expires)",
    "location_connection_idx": (
        "CREATE INDEX location_connection_idx ON location USING btree (server_id, connection_id)"
    ),
}

KAMAILIO_LOCATION_ATTRS_COLUMNS = [
    ("id", "integer", None),
    ("ruid", "character varying", 64),
    ("username", "character varying", 64),
    ("domain", "character varying", 64),
    ("aname", "character varying", 64),
    ("atype", "integer", None),
    ("avalue", "character varying", 512),
    ("last_modified", "timestamp without time zone", None),
]

#: Bounds for the polling loops below.
POLL_INTERVAL = 0.05
POLL_LIMIT = 200  # 10 s


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


def captureLogs(testCase: TestCase) -> list[str]:
    """
    Collect the formatted text of the database pool's log events during the
    test.
    """
    texts: list[str] = []

    @provider(ILogObserver)
    def observer(event: LogEvent) -> None:
        if event.get("log_namespace", "").startswith("sipcore.db.pool"):
            texts.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    testCase.addCleanup(globalLogPublisher.removeObserver, observer)
    return texts


class PostgresStoreTestBase(TestCase):
    """
    A private schema with the location tables, a started database on it
    and a started store on the database.

    @cvar storeOptions: the options of the database under C{self.store}.
    """

    storeOptions: dict[str, Any] = {}

    # trial waits for the coroutine; unittest's stub says setUp returns None.
    async def setUp(self) -> None:  # type: ignore[override]
        self.schema = await createTestSchema(self)
        self.database = await startDatabase(self, self.schema.dsn, **self.storeOptions)
        self.store = await self.storeOn(self.database)

    async def storeOn(self, database: Database) -> PostgresLocationStore:
        """
        @return: a started store on C{database}, closed at cleanup.
        """
        store = PostgresLocationStore(database.pool)
        self.addCleanup(store.close)
        await store.start()
        return store

    async def makeStore(self, dsn: str | None = None, **options: Any) -> PostgresLocationStore:
        """
        @return: a started store on a database of its own (started with
            C{options}).
        """
        return await self.storeOn(await startDatabase(self, dsn or self.schema.dsn, **options))

    async def terminateBackends(self) -> int:
        """
        Terminate the server backends of the test schema's connections.

        @return: how many were terminated.
        """
        rows = await self.schema.admin.runQuery(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (self.schema.applicationName,),
        )
        return sum(1 for (terminated,) in rows if terminated)


class PostgresLocationStoreContractTests(LocationStoreContractMixin, PostgresStoreTestBase):
    """
    L{PostgresLocationStore} keeps the L{ILocationStore} contract.
    """


class SchemaTests(PostgresStoreTestBase):
    """
    The schema L{initSchema} creates is Kamailio's, and L{initSchema} is
    idempotent.
    """

    async def test_locationColumns(self) -> None:
        """
        The C{location} table has Kamailio's columns, in order, with their
        types, sizes, nullability and defaults.
        """
        rows = await self.schema.admin.runQuery(
            "SELECT column_name, data_type, character_maximum_length, is_nullable,"
            " column_default FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (self.schema.name, "location"),
        )
        rows = [tuple(r) for r in rows]
        self.assertTrue(rows[0][4].startswith("nextval("))
        rows[0] = rows[0][:4] + ("nextval",)
        self.assertEqual(rows, KAMAILIO_LOCATION_COLUMNS)

    async def test_locationIndexes(self) -> None:
        """
        The C{location} table has Kamailio's indexes, with their names:
        the primary key, the unique C{ruid} index, the account/contact,
        expiry and C{(server_id, connection_id)} indexes.
        """
        rows = await self.schema.admin.runQuery(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
            (self.schema.name, "location"),
        )
        prefix = self.schema.name + "."
        found = {name: definition.replace(prefix, "") for name, definition in rows}
        self.assertEqual(found, KAMAILIO_LOCATION_INDEXES)

    async def test_locationAttrs(self) -> None:
        """
        Kamailio's C{location_attrs} table is created too, with its two
        indexes.
        """
        rows = await self.schema.admin.runQuery(
            "SELECT column_name, data_type, character_maximum_length"
            " FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
            " ORDER BY ordinal_position",
            (self.schema.name, "location_attrs"),
        )
        self.assertEqual([tuple(r) for r in rows], KAMAILIO_LOCATION_ATTRS_COLUMNS)
        rows = await self.schema.admin.runQuery(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
            (self.schema.name, "location_attrs"),
        )
        self.assertEqual(
            sorted(r[0] for r in rows),
            [
                "location_attrs_account_record_idx",
                "location_attrs_last_modified_idx",
                "location_attrs_pkey",
            ],
        )

    async def test_versionRows(self) -> None:
        """
        The C{version} table says C{location} is at version 9 (and
        C{location_attrs} at 1, C{version} at 1, as Kamailio writes).
        """
        rows = await self.schema.admin.runQuery(
            "SELECT table_name, table_version FROM {}.version ORDER BY table_name".format(
                self.schema.name
            )
        )
        self.assertEqual(
            [tuple(r) for r in rows], [("location", 9), ("location_attrs", 1), ("version", 1)]
        )
        self.assertEqual(LOCATION_TABLE_VERSION, 9)

    async def test_initSchemaIdempotent(self) -> None:
        """
        L{initSchema} on a database that has the schema changes nothing and
        answers C{False}.
        """
        conn = await connect(reactor, self.schema.dsn)
        try:
            self.assertFalse(await initSchema(conn))
            self.assertEqual(await locationTableVersion(conn), 9)
        finally:
            conn.close()

    async def test_initSchemaRefusesOtherVersion(self) -> None:
        """
        L{initSchema} fails with L{SchemaVersionMismatch} when C{location}
        is at another version, and changes nothing.
        """
        await self.schema.admin.runOperation(
            "UPDATE {}.version SET table_version = 8 WHERE table_name = %s".format(
                self.schema.name
            ),
            ("location",),
        )
        conn = await connect(reactor, self.schema.dsn)
        try:
            with self.assertRaises(SchemaVersionMismatch) as caught:
                await initSchema(conn)
            self.assertEqual(caught.exception.found, 8)
            self.assertIn("version 8", str(caught.exception))
            self.assertEqual(await locationTableVersion(conn), 8)
        finally:
            conn.close()

    async def test_initSchemaCreates(self) -> None:
        """
        L{initSchema} on an empty schema creates the tables and answers
        C{True}.
        """
        empty = await createTestSchema(self, withLocation=False)
        conn = await connect(reactor, empty.dsn)
        try:
            self.assertIsNone(await locationTableVersion(conn))
            self.assertTrue(await initSchema(conn))
            self.assertEqual(await locationTableVersion(conn), 9)
        finally:
            conn.close()


class PostgresLocationStoreTests(PostgresStoreTestBase):
    """
    PostgreSQL-specific behaviour: time conversion, Kamailio's rows,
    parameterized statements, connection handling.
    """

    async def test_timesAreUTC(self) -> None:
        """
        C{expires} and C{last_modified} hold the UTC wall time of the POSIX
        times, whatever the session's C{TimeZone}; a store whose sessions use
        another time zone reads the same times back.
        """
        binding = makeBinding(expires=NOW + 0.5, lastModified=NOW)
        await self.store.save([binding])
        rows = await self.schema.admin.runQuery(
            "SELECT expires, last_modified FROM {}.location".format(self.schema.name)
        )
        expected = datetime.datetime(2023, 11, 14, 22, 13, 20)
        self.assertEqual(calendar.timegm(expected.timetuple()), NOW)
        self.assertEqual(rows, [(expected + datetime.timedelta(seconds=0.5), expected)])

        tokyo = psycopg2.extensions.make_dsn(
            self.schema.dsn,
            options="-c search_path={} -c TimeZone=Asia/Tokyo".format(self.schema.name),
        )
        other = await self.makeStore(tokyo)
        self.assertEqual(await other.lookup("alice@example.com", NOW), [binding])
        self.assertEqual(await other.removeExpired(NOW + 0.5), [binding])

    async def test_readsKamailioRows(self) -> None:
        """
        A row written with Kamailio's column defaults (as Kamailio or its
        tools may leave it: no domain, C{connection_id} 0) is read back with
        those values.
        """
        await self.schema.admin.runOperation(
            "INSERT INTO {}.location (ruid, username, contact, expires)"
            " VALUES (%s, %s, %s, %s)".format(self.schema.name),
            ("ulcx-1", "carol", "sip:carol@192.0.2.5", datetime.datetime(2030, 1, 1)),
        )
        found = await self.store.lookup("carol", NOW)
        self.assertEqual(
            found,
            [
                Binding(
                    ruid="ulcx-1",
                    username="carol",
                    domain="",
                    contact="sip:carol@192.0.2.5",
                    expires=float(calendar.timegm((2030, 1, 1, 0, 0, 0))),
                    lastModified=float(calendar.timegm((2000, 1, 1, 0, 0, 1))),
                    connectionId=0,
                )
            ],
        )

    async def test_emptyDomainStoredAsNull(self) -> None:
        """
        An empty domain is stored as C{NULL}, as Kamailio stores bindings
        without a domain.
        """
        await self.store.save([makeBinding(domain="")])
        rows = await self.schema.admin.runQuery(
            "SELECT domain FROM {}.location".format(self.schema.name)
        )
        self.assertEqual(rows, [(None,)])

    async def test_valuesNeverInStatementText(self) -> None:
        """
        Values reach the server only as parameters: hostile text in a
        binding never appears in the text of a statement.
        """
        sent: list[str] = []
        pool = self.database.pool
        for name in ("runQuery", "runOperation"):
            original = getattr(pool, name)

            def spy(statement: str, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
                sent.append(statement)
                return _original(statement, *args, **kwargs)

            setattr(pool, name, spy)
        text = HOSTILE_TEXTS[0]
        binding = makeBinding(contact="sip:" + text, ruid=text[:20])
        await self.store.save([binding])
        self.assertEqual(await self.store.lookup("alice@example.com", NOW), [binding])
        self.assertEqual(await self.store.remove([binding.ruid]), 1)
        self.assertEqual(len(sent), 3)
        for statement in sent:
            self.assertNotIn(text, statement)
            self.assertNotIn("DROP", statement)

    async def test_saveIsOneStatement(self) -> None:
        """
        Saving many bindings sends one statement.
        """
        bindings = [makeBinding(ruid="r{}".format(i)) for i in range(100)]
        await self.store.save(bindings)
        self.assertEqual(self.store.statementCount["save"], 1)
        self.assertEqual(len(await self.store.lookup("alice@example.com", NOW)), 100)

    async def test_notStartedOrClosed(self) -> None:
        """
        Before C{start} and after C{close}, calls fail at once with
        L{StoreUnavailable}.
        """
        fresh = PostgresLocationStore(self.database.pool)
        with self.assertRaises(StoreUnavailable):
            await fresh.lookup("alice@example.com", NOW)
        await self.store.close()
        self.assertFalse(self.store.available)
        with self.assertRaises(StoreUnavailable):
            await self.store.save([makeBinding()])

    async def test_databaseStoppedDuringCall(self) -> None:
        """
        Stopping the database while a call is running fails that call with
        L{StoreUnavailable} rather than leaving it pending.
        """
        d = self.store.lookup("alice@example.com", NOW)
        await self.database.stopService()
        with self.assertRaises(StoreUnavailable):
            await d

    async def test_poolForHandlers(self) -> None:
        """
        A database's pool exists before the database starts (calls on it
        fail with L{DatabaseUnavailable} until then) and, once started,
        runs statements such as L{initSchema}.
        """
        fresh = Database(self.schema.dsn, reactor)
        self.addCleanup(lambda: fresh.stopService() if fresh.running else None)
        with self.assertRaises(DatabaseUnavailable):
            await fresh.pool.runQuery("SELECT 1")
        await fresh.startService()
        self.assertEqual(await fresh.pool.runQuery("SELECT 1"), [(1,)])
        self.assertFalse(await initSchema(fresh.pool))

    async def test_restart(self) -> None:
        """
        A database stopped and started again opens new connections, and a
        store closed and started again on it works.
        """
        await self.store.close()
        await self.database.stopService()
        self.assertFalse(self.database.pool.available)
        await self.database.startService()
        await self.store.start()
        await self.store.save([makeBinding()])
        self.assertEqual(len(await self.store.lookup("alice@example.com", NOW)), 1)

    async def test_availableAfterStart(self) -> None:
        """
        After C{start} against a reachable server the store is available.
        """
        self.assertTrue(self.store.available)

    def test_invalidDsn(self) -> None:
        """
        An invalid DSN is refused at construction, without echoing it.
        """
        e = self.assertRaises(
            ValueError, Database, "host=x password=secret nonsense", reactor
        )
        self.assertNotIn("secret", str(e))


class UnreachableDatabaseTests(TestCase):
    """
    A database that cannot be reached starts anyway, and the store on it
    fails calls with L{StoreUnavailable}.
    """

    async def test_startWithServerDown(self) -> None:
        """
        With nothing listening at the DSN, the database's start fires, the
        store reports itself unavailable, the pool logs that once, and every
        call fails at once with L{StoreUnavailable}; stopping the database
        stops the retrying.
        """
        logs = captureLogs(self)
        database = Database(
            "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2",
            reactor,
            retryDelay=0.05,
            maxRetryDelay=0.1,
        )
        self.addCleanup(lambda: database.stopService() if database.running else None)
        await database.startService()
        store = PostgresLocationStore(database.pool)
        self.addCleanup(store.close)
        await store.start()
        self.assertFalse(store.available)
        calls: list[Callable[[], defer.Deferred[Any]]] = [
            lambda: store.lookup("alice@example.com", NOW),
            lambda: store.save([makeBinding()]),
            lambda: store.remove(["r"]),
            lambda: store.removeConnections(1, [1]),
            lambda: store.removeExpired(NOW),
            lambda: store.purgeServer(1, NOW),
        ]
        for call in calls:
            with self.assertRaises(StoreUnavailable):
                await call()
        # Let a few background attempts fail: still one log line.
        await sleep(0.3)
        self.assertFalse(store.available)
        unavailable = [t for t in logs if t.startswith("database unavailable")]
        self.assertEqual(len(unavailable), 1, logs)
        self.assertEqual(sum(store.statementCount.values()), 0)


class ReconnectionTests(PostgresStoreTestBase):
    """
    Lost connections are detected and reopened.
    """

    storeOptions = {"minConnections": 1, "retryImmediately": False, "retryDelay": 0.5}

    # trial waits for the coroutine; unittest's stub says setUp returns None.
    async def setUp(self) -> None:  # type: ignore[override]
        self.logs = captureLogs(self)
        await PostgresStoreTestBase.setUp(self)

    async def waitFor(self, condition: Any) -> None:
        for _ in range(POLL_LIMIT):
            if condition():
                return
            await sleep(POLL_INTERVAL)
        self.fail("condition not met within {} s".format(POLL_LIMIT * POLL_INTERVAL))

    async def test_backendTerminated(self) -> None:
        """
        When the server terminates the store's backend, the store notices
        (unavailable, logged once), calls during the outage fail at once
        with L{StoreUnavailable}, and the store reconnects by itself (logged
        once) and answers again.
        """
        binding = makeBinding()
        await self.store.save([binding])
        self.assertEqual(await self.terminateBackends(), 1)
        await self.waitFor(lambda: not self.store.available)
        with self.assertRaises(StoreUnavailable):
            await self.store.lookup("alice@example.com", NOW)
        await self.waitFor(lambda: self.store.available)
        self.assertEqual(await self.store.lookup("alice@example.com", NOW), [binding])
        self.assertEqual(
            [t.split(":")[0] for t in self.logs if t.startswith("database")],
            ["database available", "database unavailable", "database available again"],
        )

    async def test_callsDuringOutageNeverHang(self) -> None:
        """
        With a pool of two connections terminated together, every call made
        until the store recovers either answers or fails with
        L{StoreUnavailable}, and calls eventually answer.
        """
        database = await startDatabase(self, self.schema.dsn, minConnections=2)
        store = await self.storeOn(database)
        await store.save([makeBinding()])
        await self.terminateBackends()
        outcomes = []
        for _ in range(POLL_LIMIT):
            try:
                found = await store.lookup("alice@example.com", NOW)
            except StoreUnavailable:
                outcomes.append("unavailable")
            else:
                outcomes.append("ok")
                self.assertEqual(len(found), 1)
                if database.pool.liveConnections == 2:
                    break
            await sleep(POLL_INTERVAL)
        self.assertEqual(outcomes[-1], "ok", outcomes)
        self.assertEqual(database.pool.liveConnections, 2)

    async def test_noAnswerInTime(self) -> None:
        """
        A call that gets no answer within C{operationTimeout} (here: blocked
        by a lock) fails with L{StoreUnavailable}; its connection is
        reopened and later calls answer.
        """
        store = await self.makeStore(
            minConnections=1, statementTimeout=None, operationTimeout=0.5, retryDelay=0.1
        )
        await store.save([makeBinding()])
        release: defer.Deferred[None] = defer.Deferred()
        locked: defer.Deferred[None] = defer.Deferred()

        def holdLock(cursor: Any) -> defer.Deferred[None]:
            d = cursor.execute(
                "LOCK TABLE {}.location IN ACCESS EXCLUSIVE MODE".format(self.schema.name)
            )
            d.addCallback(lambda _: locked.callback(None))
            return d.addCallback(lambda _: release)

        holding = self.schema.admin.runInteraction(holdLock)
        try:
            await locked
            with self.assertRaises(StoreUnavailable) as caught:
                await store.lookup("alice@example.com", NOW)
            self.assertIn("no answer within 0.5 s", str(caught.exception))
        finally:
            release.callback(None)
            await holding
        await self.waitFor(lambda: store.available)
        self.assertEqual(len(await store.lookup("alice@example.com", NOW)), 1)

    async def test_statementTimeoutKeepsConnection(self) -> None:
        """
        A statement cancelled by C{statement_timeout} fails with
        L{StoreUnavailable} but does not count as a lost connection.
        """
        store = await self.makeStore(minConnections=1, statementTimeout=0.2)
        release: defer.Deferred[None] = defer.Deferred()
        locked: defer.Deferred[None] = defer.Deferred()

        def holdLock(cursor: Any) -> defer.Deferred[None]:
            d = cursor.execute(
                "LOCK TABLE {}.location IN ACCESS EXCLUSIVE MODE".format(self.schema.name)
            )
            d.addCallback(lambda _: locked.callback(None))
            return d.addCallback(lambda _: release)

        holding = self.schema.admin.runInteraction(holdLock)
        try:
            await locked
            with self.assertRaises(StoreUnavailable) as caught:
                await store.lookup("alice@example.com", NOW)
            self.assertIn("statement_timeout", str(caught.exception))
            self.assertTrue(store.available)
        finally:
            release.callback(None)
            await holding
        self.assertEqual(await store.lookup("alice@example.com", NOW), [])
        self.assertNotIn("database unavailable", " ".join(self.logs))


# ---------------------------------------------------------------------------
# The PostgreSQL store against the memory store, over random operations.

_RUIDS = ["r1", "r2", "r3", "r4", "r5"]
_AORS = [("alice", "example.com"), ("bob", "example.com"), ("alice", "")]
_BASE = 1_000_000.0

_bindings = st.builds(
    lambda ruid, aor, expires, q, modified, server, conid, cseq: Binding(
        ruid=ruid,
        username=aor[0],
        domain=aor[1],
        contact="sip:{}@192.0.2.{}".format(aor[0], cseq),
        expires=_BASE + expires,
        q=q,
        lastModified=_BASE + modified,
        serverId=server,
        connectionId=conid,
        cseq=cseq,
    ),
    st.sampled_from(_RUIDS),
    st.sampled_from(_AORS),
    st.integers(0, 10),
    st.sampled_from([0.0, 0.5, 1.0]),
    st.integers(0, 3),
    st.sampled_from([1, 2]),
    st.sampled_from([-1, 0, 1, 2, 3]),
    st.integers(1, 50),
)
_times = st.integers(0, 10).map(lambda t: _BASE + t)
_operations = st.one_of(
    st.tuples(st.just("save"), st.lists(_bindings, min_size=1, max_size=4)),
    st.tuples(st.just("remove"), st.lists(st.sampled_from(_RUIDS + ["zz"]), max_size=3)),
    st.tuples(
        st.just("removeConnections"),
        st.sampled_from([1, 2]),
        st.lists(st.sampled_from([-1, 0, 1, 2, 3]), max_size=3),
    ),
    st.tuples(st.just("removeExpired"), _times),
    st.tuples(st.just("purgeServer"), st.sampled_from([1, 2]),
              st.integers(0, 4).map(lambda t: _BASE + t)),
    st.tuples(st.just("lookup"), st.sampled_from(_AORS), _times),
)


class MatchesMemoryStoreTests(PostgresStoreTestBase):
    """
    The PostgreSQL store answers like the memory store.
    """

    def test_randomOperations(self) -> defer.Deferred[None]:
        """
        Over random sequences of saves (including re-saves of a C{ruid}),
        removals by C{ruid}, by connection and by expiry, server purges and
        lookups, the PostgreSQL store gives the same answers as the memory
        store, and ends up holding the same bindings.

        Hypothesis runs in a worker thread and drives both stores on the
        reactor thread with C{blockingCallFromThread}, so it can shrink a
        failing sequence while the stores' I/O stays on the reactor.
        """
        return threads.deferToThread(self._compare)

    def _compare(self) -> None:
        def call(f: Any, *args: Any) -> Any:
            return threads.blockingCallFromThread(IReactorFromThreads(reactor), f, *args)

        def settled(d: defer.Deferred[Any]) -> Any:
            results: list[Any] = []
            d.addBoth(results.append)
            if isinstance(results[0], Failure):
                results[0].raiseException()
            return results[0]

        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(st.lists(_operations, min_size=1, max_size=12))
        def check(operations: list[tuple[Any, ...]]) -> None:
            call(self.store.removeExpired, _BASE + 10**6)
            memory = MemoryLocationStore()
            for operation in operations:
                name, args = operation[0], list(operation[1:])
                if name == "lookup":
                    (username, domain), now = args
                    args = ["{}@{}".format(username, domain) if domain else username, now]
                expected = settled(getattr(memory, name)(*args))
                actual = call(getattr(self.store, name), *args)
                assert actual == expected, (operation, actual, expected)
            for username, domain in _AORS:
                aor = "{}@{}".format(username, domain) if domain else username
                expected = settled(memory.lookup(aor, 0))
                assert call(self.store.lookup, aor, 0) == expected, aor

        check()


class StatementTextTests(SynchronousTestCase):
    """
    The location table's fixed statement texts (L{sipcore.db.location}) name
    the columns in the order their parameters follow.
    """

    def test_insert(self) -> None:
        """
        The INSERT lists every column in order, one placeholder each (times
        converted from POSIX seconds), and updates every column but ruid.
        """
        self.assertEqual(
            statements.INSERT_HEAD,
            "INSERT INTO location ({}) VALUES ".format(", ".join(statements.COLUMNS)))
        placeholders = [
            "(to_timestamp(%s) AT TIME ZONE 'UTC')" if column in statements.TIME_COLUMNS
            else "%s" for column in statements.COLUMNS]
        self.assertEqual(statements.ROW, "(" + ", ".join(placeholders) + ")")
        self.assertEqual(
            statements.INSERT_TAIL,
            " ON CONFLICT (ruid) DO UPDATE SET " + ", ".join(
                "{0} = EXCLUDED.{0}".format(c) for c in statements.COLUMNS if c != "ruid"))

    def test_select(self) -> None:
        """
        The lookups read every column in order, times as POSIX seconds.
        """
        expected = ", ".join(
            "EXTRACT(EPOCH FROM {} AT TIME ZONE 'UTC')".format(column)
            if column in statements.TIME_COLUMNS else column for column in statements.COLUMNS)
        self.assertEqual(statements.SELECT, "SELECT " + expected + " FROM location")
        for statement in (statements.LOOKUP, statements.LOOKUP_NO_DOMAIN, statements.LOOKUP_MANY):
            self.assertTrue(statement.startswith(statements.SELECT + " WHERE "), statement)
