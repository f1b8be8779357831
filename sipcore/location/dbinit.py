# -*- test-case-name: tests.test_location_postgres,tests.test_cli -*-
"""
Create the C{location} schema (Kamailio usrloc, table version 9) in a
PostgreSQL database, once.

L{initSchema} is what C{sipcore db init} runs.  It is idempotent: it creates
the tables when C{location} is missing, does nothing when C{location} is
there at version 9, and refuses when another version is there (sipcore does
not migrate Kamailio schemas; use Kamailio's upgrade scripts).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Protocol

from twisted.internet import defer

__all__ = [
    "LOCATION_TABLE_VERSION",
    "SchemaVersionMismatch",
    "initSchema",
    "locationTableVersion",
    "schemaSQL",
]

#: The version of Kamailio's C{location} table sipcore reads and writes.
LOCATION_TABLE_VERSION = 9

# Key of the transaction-scoped advisory lock that serializes concurrent
# runs of initSchema against one database ("sipc" "loc9" as ASCII).
_INIT_LOCK_KEY = 0x73697063_6C6F6339


class SchemaVersionMismatch(Exception):
    """
    The database holds a C{location} table at a version sipcore does not
    use (or one without a row in the C{version} table).

    @ivar found: the version found, or C{None} when the C{version} table has
        no row for C{location}.
    """

    def __init__(self, found: int | None) -> None:
        self.found = found
        if found is None:
            text = (
                "a location table exists but the version table has no row for it; "
                "sipcore needs Kamailio's location table at version {}"
            ).format(LOCATION_TABLE_VERSION)
        else:
            text = (
                "the location table is at version {}, sipcore needs version {}; "
                "upgrade it with Kamailio's tooling (sipcore does not migrate schemas)"
            ).format(found, LOCATION_TABLE_VERSION)
        super().__init__(text)


class _InteractionRunner(Protocol):
    """
    What L{initSchema} needs: a C{txpostgres} C{Connection} or
    C{ConnectionPool}.
    """

    def runInteraction(self, interaction: Any, *args: Any, **kwargs: Any) -> Any: ...


def schemaSQL() -> str:
    """
    @return: the text of the shipped C{schema.sql} (package data of
        C{sipcore.location}).
    """
    return resources.files("sipcore.location").joinpath("schema.sql").read_text("utf-8")


async def _tableVersion(cursor: Any) -> tuple[bool, int | None]:
    """
    @return: whether a C{location} table is visible on the search path, and
        its version from the C{version} table (C{None} when there is none).
    """
    await cursor.execute(
        "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
        ("location", "version"),
    )
    hasLocation, hasVersion = cursor.fetchone()
    version = None
    if hasVersion:
        await cursor.execute(
            "SELECT table_version FROM version WHERE table_name = %s", ("location",)
        )
        row = cursor.fetchone()
        if row is not None:
            version = int(row[0])
    return bool(hasLocation), version


async def _init(cursor: Any) -> bool:
    """
    The body of L{initSchema}'s transaction.
    """
    await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK_KEY,))
    hasLocation, version = await _tableVersion(cursor)
    if hasLocation:
        if version == LOCATION_TABLE_VERSION:
            return False
        raise SchemaVersionMismatch(version)
    # Static DDL shipped with the package; it carries no values.
    await cursor.execute(schemaSQL())
    return True


def initSchema(runner: _InteractionRunner) -> defer.Deferred[bool]:
    """
    Create Kamailio's C{location} schema (version 9) unless it is there.

    Runs in one transaction (C{runInteraction}) under an advisory lock, so
    two concurrent runs do not race: one creates, the other finds it.

    @param runner: a connected C{txpostgres.Connection} or a started
        C{txpostgres.ConnectionPool}.  Tables are created in the first schema
        of its C{search_path}.
    @return: L{Deferred} firing with C{True} if the tables were created,
        C{False} if C{location} was already there at version 9.  It fails
        with L{SchemaVersionMismatch} if C{location} is there at another
        version (nothing is changed), and with the C{psycopg2} error if the
        database cannot be reached or refuses the DDL.
    """

    def interaction(cursor: Any) -> defer.Deferred[bool]:
        return defer.Deferred.fromCoroutine(_init(cursor))

    return defer.maybeDeferred(runner.runInteraction, interaction)


def locationTableVersion(runner: _InteractionRunner) -> defer.Deferred[int | None]:
    """
    Read the C{location} table's version.

    @return: L{Deferred} firing with the version (an C{int}), or C{None} if
        there is no C{location} table or no C{version} row for it.
    """

    async def read(cursor: Any) -> int | None:
        hasLocation, version = await _tableVersion(cursor)
        return version if hasLocation else None

    def interaction(cursor: Any) -> defer.Deferred[int | None]:
        return defer.Deferred.fromCoroutine(read(cursor))

    return defer.maybeDeferred(runner.runInteraction, interaction)
