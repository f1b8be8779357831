# -*- test-case-name: tests.test_auth,tests.test_cli -*-
"""
Kamailio's C{auth_db} C{subscriber} table (version 7) on PostgreSQL: the
one statement L{sipcore.sip.auth.PostgresCredentials} sends, and the schema
(the DDL in C{subscriber.sql}, which C{sipcore db init --subscriber} runs).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from twisted.internet import defer

__all__ = ["LOOKUP", "SUBSCRIBER_TABLE_VERSION", "initSubscriberSchema", "subscriberSchemaSQL"]

#: The version of Kamailio's C{subscriber} table sipcore reads.
SUBSCRIBER_TABLE_VERSION = 7

#: One subscriber's secrets: parameters C{(username, domain)}.
LOOKUP = "SELECT password, ha1, ha1b FROM subscriber WHERE username = %s AND domain = %s"


def subscriberSchemaSQL() -> str:
    """
    @return: the text of the shipped C{subscriber.sql} (Kamailio's
        C{subscriber} table, version 7, for PostgreSQL).
    """
    return resources.files("sipcore.db").joinpath("subscriber.sql").read_text("utf-8")


def initSubscriberSchema(runner: Any) -> defer.Deferred[bool]:
    """
    Create the C{subscriber} table (and Kamailio's C{version} table) if
    missing.  Idempotent.

    @param runner: a connected C{txpostgres.Connection} or a started
        L{sipcore.db.DatabasePool}: anything with C{runInteraction}.
    @return: a L{Deferred} firing with C{True} if the C{subscriber} table
        was created, C{False} if it was there already (in the first schema
        of the C{search_path} that has one), or failing with the
        C{psycopg2} error (or L{sipcore.db.DatabaseUnavailable}).
    """

    async def create(cursor: Any) -> bool:
        await cursor.execute("SELECT to_regclass('subscriber') IS NULL")
        (missing,) = cursor.fetchone()
        # Static DDL shipped with the package; it carries no values.
        await cursor.execute(subscriberSchemaSQL())
        return bool(missing)

    def interaction(cursor: Any) -> defer.Deferred[bool]:
        return defer.Deferred.fromCoroutine(create(cursor))

    return defer.maybeDeferred(runner.runInteraction, interaction)
