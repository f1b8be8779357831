# -*- test-case-name: tests.test_location_postgres,tests.test_cli -*-
"""
Kamailio's usrloc C{location} table (version 9) on PostgreSQL: the
statements L{sipcore.location.postgres.PostgresLocationStore} sends, the
mapping between a L{Binding} and a row, and the schema.

Statements: fixed text, every value a C{%s} parameter.  L{COLUMNS} is the
column order of the statements and of L{bindingParams}.  Times
(C{expires}, C{last_modified}) are C{timestamp without time zone} holding
UTC: written with C{to_timestamp(%s) AT TIME ZONE 'UTC'} and read with
C{EXTRACT(EPOCH FROM col AT TIME ZONE 'UTC')}, so the session's
C{TimeZone} never matters.  Each C{DELETE} is wrapped in C{WITH gone AS
(... RETURNING 1) SELECT count(*) FROM gone}, so the one statement also
answers how many rows went.

Schema: L{initSchema} is what C{sipcore db init} runs.  It is idempotent:
it creates the tables (the DDL in C{location.sql}) when C{location} is
missing, and the cluster tables (L{sipcore.db.node}) when they are
missing; it leaves C{location} as it is when it is there at version 9, and refuses
when another version is there (sipcore does not migrate Kamailio schemas;
use Kamailio's upgrade scripts).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Protocol

from twisted.internet import defer

from sipcore.db.node import createNodeTables
from sipcore.location.binding import Binding

__all__ = [
    "COLUMNS",
    "INSERT_HEAD",
    "INSERT_TAIL",
    "LOCATION_TABLE_VERSION",
    "LOOKUP",
    "LOOKUP_MANY",
    "LOOKUP_NO_DOMAIN",
    "PURGE_SERVER",
    "REMOVE",
    "REMOVE_CONNECTIONS",
    "REMOVE_EXPIRED",
    "ROW",
    "SELECT",
    "SchemaVersionMismatch",
    "TIME_COLUMNS",
    "bindingParams",
    "initSchema",
    "insertStatement",
    "locationTableVersion",
    "rowToBinding",
    "schemaSQL",
]


# ---------------------------------------------------------------------------
# Statements.

#: The columns sipcore writes, in the order of the statements and of
#: L{bindingParams} (C{id} is the table's serial key).
COLUMNS = (
    "ruid",
    "username",
    "domain",
    "contact",
    "received",
    "path",
    "expires",
    "q",
    "callid",
    "cseq",
    "last_modified",
    "flags",
    "cflags",
    "user_agent",
    "socket",
    "methods",
    "instance",
    "reg_id",
    "server_id",
    "connection_id",
    "keepalive",
    "partition",
)

#: The columns stored as timestamps (given and read as POSIX seconds).
TIME_COLUMNS = frozenset({"expires", "last_modified"})


#: The columns as read back: times as POSIX seconds.
_READ_COLUMNS = (
    "ruid, username, domain, contact, received, path,"
    " EXTRACT(EPOCH FROM expires AT TIME ZONE 'UTC'), q, callid, cseq,"
    " EXTRACT(EPOCH FROM last_modified AT TIME ZONE 'UTC'), flags, cflags, user_agent,"
    " socket, methods, instance, reg_id, server_id, connection_id, keepalive, partition"
)
SELECT = "SELECT " + _READ_COLUMNS + " FROM location"

#: One row of values for L{INSERT_HEAD}, times given as POSIX seconds.
ROW = (
    "(%s, %s, %s, %s, %s, %s, (to_timestamp(%s) AT TIME ZONE 'UTC'), %s, %s, %s,"
    " (to_timestamp(%s) AT TIME ZONE 'UTC'), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)

INSERT_HEAD = (
    "INSERT INTO location (ruid, username, domain, contact, received, path, expires, q,"
    " callid, cseq, last_modified, flags, cflags, user_agent, socket, methods, instance,"
    " reg_id, server_id, connection_id, keepalive, partition) VALUES "
)
INSERT_TAIL = (
    " ON CONFLICT (ruid) DO UPDATE SET username = EXCLUDED.username,"
    " domain = EXCLUDED.domain, contact = EXCLUDED.contact, received = EXCLUDED.received,"
    " path = EXCLUDED.path, expires = EXCLUDED.expires, q = EXCLUDED.q,"
    " callid = EXCLUDED.callid, cseq = EXCLUDED.cseq,"
    " last_modified = EXCLUDED.last_modified, flags = EXCLUDED.flags,"
    " cflags = EXCLUDED.cflags, user_agent = EXCLUDED.user_agent, socket = EXCLUDED.socket,"
    " methods = EXCLUDED.methods, instance = EXCLUDED.instance, reg_id = EXCLUDED.reg_id,"
    " server_id = EXCLUDED.server_id, connection_id = EXCLUDED.connection_id,"
    " keepalive = EXCLUDED.keepalive, partition = EXCLUDED.partition"
)


def insertStatement(rows: int) -> str:
    """
    The C{INSERT ... ON CONFLICT (ruid) DO UPDATE} of C{rows} bindings:
    built from constants only, one L{ROW} of placeholders per binding.

    @raise ValueError: if C{rows} is less than 1.
    """
    if rows < 1:
        raise ValueError("need at least one row")
    return INSERT_HEAD + ", ".join([ROW] * rows) + INSERT_TAIL


_LOOKUP_ORDER = ' ORDER BY q DESC, last_modified DESC, ruid COLLATE "C"'
LOOKUP = (
    SELECT + " WHERE username = %s AND domain = %s"
    " AND expires > (to_timestamp(%s) AT TIME ZONE 'UTC')" + _LOOKUP_ORDER
)
LOOKUP_NO_DOMAIN = (
    SELECT + " WHERE username = %s AND (domain IS NULL OR domain = '')"
    " AND expires > (to_timestamp(%s) AT TIME ZONE 'UTC')" + _LOOKUP_ORDER
)
LOOKUP_MANY = (
    SELECT + " WHERE (username, domain) IN"
    " (SELECT * FROM unnest(%s::text[], %s::text[]))"
    " AND expires > (to_timestamp(%s) AT TIME ZONE 'UTC')" + _LOOKUP_ORDER
)

# The deletes answer with the number of rows removed.
#: Bindings for listing (C{sipcore ul dump}): unexpired, each filter
#: applied when its parameter is not C{NULL} (domain, user part, connection
#: id), in address-of-record order, a page at a time (LIMIT, OFFSET).
LIST = (
    SELECT + " WHERE expires > (to_timestamp(%s) AT TIME ZONE 'UTC')"
    " AND (%s::text IS NULL OR domain = %s::text)"
    " AND (%s::text IS NULL OR username = %s::text)"
    " AND (%s::integer IS NULL OR connection_id = %s::integer)"
    ' ORDER BY username COLLATE "C", domain COLLATE "C", ruid COLLATE "C"'
    " LIMIT %s OFFSET %s"
)
REMOVE = (
    "WITH gone AS (DELETE FROM location WHERE ruid = ANY(%s) RETURNING 1)"
    " SELECT count(*) FROM gone"
)
REMOVE_CONNECTIONS = (
    "WITH gone AS (DELETE FROM location WHERE server_id = %s AND connection_id = ANY(%s)"
    " RETURNING 1) SELECT count(*) FROM gone"
)
# The expiry answers with the rows it removed, read as SELECT reads them.
REMOVE_EXPIRED = (
    "DELETE FROM location WHERE expires <= (to_timestamp(%s) AT TIME ZONE 'UTC')"
    " RETURNING " + _READ_COLUMNS
)
PURGE_SERVER = (
    "WITH gone AS (DELETE FROM location WHERE server_id = %s AND connection_id > 0"
    " AND last_modified < (to_timestamp(%s) AT TIME ZONE 'UTC') RETURNING 1)"
    " SELECT count(*) FROM gone"
)


def bindingParams(binding: Binding) -> tuple[Any, ...]:
    """
    @return: the parameters of C{binding}'s L{ROW}, in L{COLUMNS} order
        (times as POSIX seconds, an empty domain as C{NULL}).
    """
    return (
        binding.ruid,
        binding.username,
        binding.domain or None,
        binding.contact,
        binding.received,
        binding.path,
        float(binding.expires),
        float(binding.q),
        binding.callid,
        binding.cseq,
        float(binding.lastModified),
        binding.flags,
        binding.cflags,
        binding.userAgent,
        binding.socket,
        binding.methods,
        binding.instance,
        binding.regId,
        binding.serverId,
        binding.connectionId,
        binding.keepalive,
        binding.partition,
    )


def rowToBinding(row: tuple[Any, ...]) -> Binding:
    """
    @param row: a row read with L{SELECT}.
    @return: its L{Binding}.
    """
    (
        ruid,
        username,
        domain,
        contact,
        received,
        path,
        expires,
        q,
        callid,
        cseq,
        lastModified,
        flags,
        cflags,
        userAgent,
        socket,
        methods,
        instance,
        regId,
        serverId,
        connectionId,
        keepalive,
        partition,
    ) = row
    return Binding(
        ruid=ruid,
        username=username,
        domain=domain or "",
        contact=contact,
        received=received,
        path=path,
        expires=float(expires),
        q=float(q),
        callid=callid,
        cseq=cseq,
        lastModified=float(lastModified),
        flags=flags,
        cflags=cflags,
        userAgent=userAgent,
        socket=socket,
        methods=methods,
        instance=instance,
        regId=regId,
        serverId=serverId,
        connectionId=connectionId,
        keepalive=keepalive,
        partition=partition,
    )


# ---------------------------------------------------------------------------
# Schema.

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
    @return: the text of the shipped C{location.sql} (package data of
        C{sipcore.db}).
    """
    return resources.files("sipcore.db").joinpath("location.sql").read_text("utf-8")


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
    if version == LOCATION_TABLE_VERSION or not hasLocation:
        await createNodeTables(cursor)
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
    The cluster tables (L{sipcore.db.node.initNodeSchema}) are created in
    the same transaction when missing.

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
