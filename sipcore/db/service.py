# -*- test-case-name: tests.test_db -*-
"""
L{Database}: the PostgreSQL database as a Twisted service, the owner of the
L{DatabasePool} that the store, the credentials and the handlers are given.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer

from sipcore.db.pool import DatabasePool

__all__ = ["Database"]


class Database(Service):
    """
    The database of one sipcore process.

    Starting the service opens the pool's connections (a database that is
    away is retried in the background: starting never fails); stopping it
    closes them.  Whatever uses the pool is stopped before: the database is
    the first service to start and the last to stop.

    @ivar pool: the L{DatabasePool}, built at construction (its calls fail
        with L{sipcore.db.DatabaseUnavailable} until the service starts).
    """

    name = "database"

    def __init__(self, dsn: str, reactor: Any, **poolOptions: Any) -> None:
        """
        @param dsn: the libpq connection string or URI.
        @param reactor: the reactor (C{IReactorTime} and C{IReactorFDSet}).
        @param poolOptions: the other L{DatabasePool} parameters
            (C{minConnections}, C{statementTimeout}, C{operationTimeout},
            C{connectTimeout}, C{retryDelay}, C{maxRetryDelay},
            C{retryImmediately}).
        @raise ValueError: if C{dsn} or an option is invalid (the message
            never echoes the DSN).
        """
        self.pool = DatabasePool(dsn, reactor, **poolOptions)

    def startService(self) -> defer.Deferred[None]:  # type: ignore[override]
        """
        Open the pool's connections.

        @return: L{Deferred} firing with C{None} once every connection has
            made its first attempt, whatever the outcome (see
            C{pool.available}); it never fails.  A parent that starts its
            children in order (L{sipcore.service.OrderedServices}) starts
            the store once it has fired.
        """
        Service.startService(self)
        return self.pool.start()

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        """
        Close the pool's connections (calls still running fail with
        L{sipcore.db.DatabaseUnavailable}).

        @return: L{Deferred} firing with C{None}.
        """
        Service.stopService(self)
        return self.pool.close()
