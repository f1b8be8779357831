# -*- test-case-name: tests.test_location_postgres -*-
"""
Shared helpers for tests that use a real PostgreSQL server.

  - L{dsn}: the server to use, from C{SIPCORE_TEST_DSN} (default
    L{DEFAULT_DSN}).
  - L{databaseRequired}: whether an unreachable server fails the tests
    (C{SIPCORE_REQUIRE_DB=1}, as CI sets) instead of skipping them.
  - L{createTestSchema}: a private PostgreSQL schema per test, created in
    C{setUp}, with its own C{search_path} and C{application_name} in the DSN,
    optionally holding the location tables, and dropped at cleanup.
  - L{startDatabase}: a started L{sipcore.db.Database}, stopped at cleanup.

Integration tests using these are C{twisted.trial.unittest.TestCase}s (real
reactor) and return Deferreds (or are C{async def}).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase
from txpostgres import txpostgres

from sipcore.db.location import initSchema

__all__ = [
    "DEFAULT_DSN",
    "TestSchema",
    "connect",
    "createTestSchema",
    "databaseRequired",
    "describeDsn",
    "dsn",
    "startDatabase",
]

#: The server used when C{SIPCORE_TEST_DSN} is not set.
DEFAULT_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"

#: Seconds to wait for a connection before calling the server unreachable.
CONNECT_TIMEOUT = 5.0


def dsn() -> str:
    """
    @return: the libpq DSN of the test server: C{SIPCORE_TEST_DSN}, or
        L{DEFAULT_DSN}.
    """
    return os.environ.get("SIPCORE_TEST_DSN") or DEFAULT_DSN


def databaseRequired() -> bool:
    """
    @return: C{True} if C{SIPCORE_REQUIRE_DB=1}: an unreachable server then
        fails the tests instead of skipping them.
    """
    return os.environ.get("SIPCORE_REQUIRE_DB") == "1"


def describeDsn(value: str) -> str:
    """
    @return: C{value} without its password, for messages.
    """
    try:
        parts = psycopg2.extensions.parse_dsn(value)
    except psycopg2.ProgrammingError:
        return "<invalid DSN>"
    parts.pop("password", None)
    return " ".join("{}={}".format(k, v) for k, v in sorted(parts.items()))


async def connect(reactor: Any, connectionString: str) -> txpostgres.Connection:
    """
    Open a txpostgres connection, giving up after L{CONNECT_TIMEOUT}.

    @raise psycopg2.Error: or L{twisted.internet.error.ConnectionDone} when
        the attempt fails or times out.
    """
    conn = txpostgres.Connection(reactor)
    connecting = conn.connect(connectionString)
    timer = reactor.callLater(CONNECT_TIMEOUT, conn.close)
    try:
        await connecting
    finally:
        if timer.active():
            timer.cancel()
    return conn


@dataclass(frozen=True)
class TestSchema:
    """
    A private schema of the test server.

    @ivar name: the schema's name (C{sipcore_test_<hex>}).
    @ivar applicationName: the C{application_name} in L{dsn}, so a test can
        find (and terminate) exactly the backends that use it.
    @ivar dsn: a DSN whose C{search_path} is this schema only.
    @ivar admin: a connection (with the base DSN) for the test's own checks
        and for cleanup.
    """

    name: str
    applicationName: str
    dsn: str
    admin: txpostgres.Connection


async def createTestSchema(testCase: TestCase, withLocation: bool = True) -> TestSchema:
    """
    Create a private schema for C{testCase}, and drop it at cleanup.

    Skips C{testCase} (with the reason) when the server cannot be reached,
    unless L{databaseRequired}, in which case the test fails.

    @param withLocation: create the location tables (L{initSchema}) in it.
    @return: the L{TestSchema}.
    """
    from twisted.internet import reactor

    base = dsn()
    try:
        admin = await connect(reactor, base)
    except Exception as e:
        reason = "PostgreSQL not reachable at {} ({}); set SIPCORE_TEST_DSN".format(
            describeDsn(base),
            str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__,
        )
        if databaseRequired():
            testCase.fail(reason + " (SIPCORE_REQUIRE_DB=1)")
        raise SkipTest(reason) from None

    token = secrets.token_hex(6)
    name = "sipcore_test_" + token
    applicationName = "sipcore-test-" + token
    await admin.runOperation(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))

    async def drop() -> None:
        try:
            await admin.runOperation(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
        finally:
            admin.close()

    testCase.addCleanup(lambda: defer.Deferred.fromCoroutine(drop()))
    schemaDsn = psycopg2.extensions.make_dsn(
        base,
        options="-c search_path={}".format(name),
        application_name=applicationName,
    )
    if withLocation:
        conn = await connect(reactor, schemaDsn)
        try:
            await initSchema(conn)
        finally:
            conn.close()
    return TestSchema(name=name, applicationName=applicationName, dsn=schemaDsn, admin=admin)


async def startDatabase(testCase: TestCase, connectionString: str, **options: Any) -> Any:
    """
    Start a L{sipcore.db.Database} on the real reactor, and stop it at
    cleanup.

    @param options: the L{sipcore.db.DatabasePool} options.
    @return: the L{sipcore.db.Database}, its connections' first attempts
        made.
    """
    from twisted.internet import reactor

    from sipcore.db import Database

    database = Database(connectionString, reactor, **options)
    testCase.addCleanup(lambda: database.stopService() if database.running else None)
    await database.startService()
    return database
