# -*- test-case-name: tests.test_db -*-
"""
The PostgreSQL database: one owner for the connections and the SQL.

  - L{Database} (L{sipcore.db.service}): the database as a Twisted service;
    starting it connects its L{DatabasePool}, stopping it closes the pool.
  - L{DatabasePool} (L{sipcore.db.pool}): the resilient pool of
    C{txpostgres} connections, which every user of the database is given:
    the PostgreSQL location store, the subscriber credentials and the
    handlers (L{sipcore.interfaces.IHandlerContext.dbPool}).
  - The tables, one module each, with their statements and their schema:
    L{sipcore.db.location} (Kamailio's usrloc C{location}, version 9),
    L{sipcore.db.subscriber} (Kamailio's C{subscriber}, version 7),
    L{sipcore.db.audit} (the C{connection-audit} handler's
    C{connection_events}).

Every statement is fixed text with C{%s} parameters.  L{Database} and
L{DatabasePool} are imported on first use, so importing this package (or a
table module) does not import C{txpostgres} or C{psycopg2}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sipcore.db.pool import DatabasePool
    from sipcore.db.service import Database

__all__ = ["Database", "DatabasePool", "DatabaseUnavailable"]


class DatabaseUnavailable(Exception):
    """
    The database cannot answer now: no live connection (not started,
    closed, down, reconnecting), a connection lost mid-statement, no answer
    in time, or a statement cancelled by C{statement_timeout}.  The
    statement may be retried later; a write that failed this way may or
    may not have committed.  The message says why in one line and never
    holds statement parameters.
    """


def __getattr__(name: str) -> Any:
    """
    Import L{Database} and L{DatabasePool} (and with them C{txpostgres} and
    C{psycopg2}) only when they are asked for.
    """
    if name == "Database":
        from sipcore.db.service import Database

        return Database
    if name == "DatabasePool":
        from sipcore.db.pool import DatabasePool

        return DatabasePool
    raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))
