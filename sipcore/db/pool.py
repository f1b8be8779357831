# -*- test-case-name: tests.test_db,tests.test_location_postgres -*-
"""
L{DatabasePool}: PostgreSQL connections that survive the database going
away, built on C{txpostgres}' public API.

The pool keeps C{minConnections} C{txpostgres.Connection}s and offers the
calls of a C{txpostgres.ConnectionPool} (C{runQuery}, C{runOperation},
C{runInteraction}).  What C{txpostgres.ConnectionPool} lacks is done here:

  - Each connection has its own dead-connection detector (a
    C{txpostgres.reconnection.DeadConnectionDetector}, whose documented
    C{startReconnecting} hook runs our reconnection loop).  A connection
    that dies (server restart, terminated backend, network error, a server
    that turned read-only after a failover, or no answer within
    C{operationTimeout}) is closed and reconnected in the background with
    capped exponential backoff and jitter.
  - Calls go to live connections only (an idle one first, else the live
    one txpostgres queues the call on), at most C{minConnections} at a
    time; when no connection is alive they fail at once with
    L{DatabaseUnavailable}.
  - Every call is bounded by C{operationTimeout}; every connection sets
    PostgreSQL's C{statement_timeout} when it opens.
  - L{start} never fails: a database that is away at start is retried in
    the background (C{txpostgres.ConnectionPool.start} fails as a whole
    when one connection cannot open).

The pool logs one line when the database becomes unavailable and one when
it is available again; statement parameters are never logged.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import reconnection, txpostgres
from zope.interface import implementer

from sipcore.db import DatabaseUnavailable
from sipcore.interfaces import IDatabasePool

__all__ = ["DatabasePool"]

_SET_STATEMENT_TIMEOUT = "SET statement_timeout = %s"


# ---------------------------------------------------------------------------
# Failures.


class _OperationTimedOut(Exception):
    """
    A statement got no answer within the pool's C{operationTimeout}; the
    connection is treated as dead.
    """


#: Failures that mean the connection is unusable and must be reopened.
_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    psycopg2.InterfaceError,
    psycopg2.OperationalError,
    psycopg2.errors.ReadOnlySqlTransaction,
    txpostgres.RollbackFailed,
    error.ConnectionDone,
    error.ConnectionLost,
    _OperationTimedOut,
)


def _isConnectionDeath(f: Failure) -> bool:
    """
    The death checker of our detectors: does C{f} mean the connection is
    unusable and must be reopened?

    A statement cancelled by C{statement_timeout} is not a dead connection;
    a server that turned read-only (a failed-over primary now a standby) is.
    """
    if f.check(psycopg2.extensions.QueryCanceledError, defer.CancelledError):
        return False
    return bool(f.check(*_CONNECTION_LOST))


#: Failures that mean "the database cannot answer now": mapped to
#: L{DatabaseUnavailable}.
_UNAVAILABLE = _CONNECTION_LOST + (reconnection.ConnectionDead, defer.CancelledError)


def _describe(f: Failure) -> str:
    """
    One line saying why, for logs and L{DatabaseUnavailable} messages.
    Never includes statement parameters (psycopg2 messages do not carry
    them).
    """
    if f.check(reconnection.ConnectionDead):
        return "no live database connection (reconnecting)"
    if f.check(defer.CancelledError):
        return "the database cancelled the statement (statement_timeout)"
    text = str(f.value).strip().splitlines()
    if text:
        return text[0]
    return f.type.__name__ if f.type is not None else "unknown error"


def _closeQuietly(conn: txpostgres.Connection) -> None:
    """
    Close a txpostgres connection whatever its state (never connected,
    connecting, open, already closed).
    """
    if conn.pollable() is None:
        return
    try:
        conn.close()
    except Exception:
        # Closing a connection that already failed can itself fail; the
        # socket is gone either way.
        pass


# ---------------------------------------------------------------------------
# One connection.


class _Connection(txpostgres.Connection):
    """
    A txpostgres connection that reports its death while idle without a
    traceback.

    txpostgres keeps every idle connection registered as a reader (for
    NOTIFY).  When the server ends the session (restart, terminated backend)
    the socket becomes readable and psycopg2 raises from C{poll()}; the
    reactor would log that as an unhandled error.  Returning the error from
    C{doRead} instead (what L{twisted.internet.interfaces.IReadDescriptor}
    provides for) makes the reactor disconnect us with it, which reaches
    the detector through C{connectionLost}.
    """

    detector: _Watch

    def doRead(self) -> Any:
        try:
            return txpostgres.Connection.doRead(self)
        except psycopg2.Error as e:
            return e


class _Watch(reconnection.DeadConnectionDetector):
    """
    One connection's dead-connection detector.

    txpostgres' detector does the detection: calls go through its
    C{callChecking} (failing at once with C{ConnectionDead} while the
    connection is known dead) and a lost connection is reported to
    C{checkForDeadConnection}.  The reconnection loop is ours (its
    C{startReconnecting} hook): it reports state changes to the pool,
    reopens the connection with the pool's settings (connect timeout,
    C{statement_timeout}), can be stopped, and leaves no timer behind when
    stopped.
    """

    reconnectable: _Connection

    def __init__(self, pool: DatabasePool, reactor: Any) -> None:
        reconnection.DeadConnectionDetector.__init__(
            self, deathChecker=_isConnectionDeath, reactor=reactor
        )
        self._pool = pool
        self._delays: Iterator[float] = iter(())
        self._pending: IDelayedCall | None = None
        self._stopped = False

    def markDead(self, f: Failure) -> None:
        """
        Treat the connection as dead (whatever C{f} is) and start
        reconnecting, unless that is already under way.
        """
        if self.connectionIsDead or self._stopped:  # type: ignore[has-type]
            return
        self.connectionIsDead = True
        self.startReconnecting(f)

    def startReconnecting(self, f: Failure) -> None:
        if self._stopped:
            return
        self._pool._connectionLost(self.reconnectable, f)
        self._delays = self._pool._retryDelays()
        self._scheduleAttempt()

    def _scheduleAttempt(self) -> None:
        if self._stopped:
            return
        self._pending = self.reactor.callLater(next(self._delays), self._attempt)

    def _attempt(self) -> None:
        self._pending = None
        if self._stopped:
            return
        d = self._pool._open(self.reconnectable)
        d.addCallbacks(self._attemptSucceeded, self._attemptFailed)
        d.addErrback(lambda f: self._pool._log.failure("reconnection bookkeeping failed", f))

    def _attemptSucceeded(self, ignored: object) -> None:
        if self._stopped:
            _closeQuietly(self.reconnectable)
            return
        self.connectionRecovered()
        self._pool._connectionMade(self.reconnectable)

    def _attemptFailed(self, f: Failure) -> None:
        self._pool._reconnectFailed(f)
        self._scheduleAttempt()

    def stop(self) -> None:
        """
        Stop reconnecting for good; cancel a scheduled attempt.
        """
        self._stopped = True
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None


# ---------------------------------------------------------------------------
# The pool.


@implementer(IDatabasePool)
class DatabasePool:
    """
    A resilient pool of C{txpostgres} connections to one PostgreSQL
    database.

    Calls (L{runQuery}, L{runOperation}, L{runInteraction}) fail with
    L{DatabaseUnavailable} when the database cannot answer (before L{start},
    after L{close}, while no connection is alive, a connection lost during
    the call, no answer within C{operationTimeout}, a statement cancelled by
    C{statement_timeout}), and with the C{psycopg2} error when the database
    refuses the statement.  A L{start} after L{close} opens new
    connections.
    """

    _log = Logger()

    def __init__(
        self,
        dsn: str,
        reactor: Any,
        minConnections: int = 2,
        statementTimeout: float | None = 10.0,
        operationTimeout: float = 30.0,
        connectTimeout: float = 10.0,
        retryDelay: float = 0.5,
        maxRetryDelay: float = 10.0,
        retryImmediately: bool = True,
    ) -> None:
        """
        @param dsn: a libpq connection string (C{"host=... dbname=..."} or a
            C{postgresql://} URI).  When it names no C{application_name},
            C{sipcore} is used.
        @param reactor: the reactor (C{IReactorTime} and C{IReactorFDSet}).
        @param minConnections: how many connections the pool keeps open.
        @param statementTimeout: PostgreSQL C{statement_timeout} set on each
            connection, in seconds, or C{None} to leave the server's.
        @param operationTimeout: seconds a call may wait for its answer;
            past that the call fails with L{DatabaseUnavailable} and its
            connection is closed and reopened (this is what catches a server
            that went away without closing the socket).
        @param connectTimeout: seconds a connection attempt may take.
        @param retryDelay: seconds before the second reconnection attempt;
            doubled (with jitter) after each failure up to C{maxRetryDelay}.
        @param retryImmediately: make the first reconnection attempt at once
            rather than after C{retryDelay}.
        @raise ValueError: if C{dsn} is not a valid libpq connection string
            or a number is out of range.
        """
        try:
            parsed = psycopg2.extensions.parse_dsn(dsn)
        except psycopg2.ProgrammingError:
            # The libpq message would echo part of the DSN (maybe a password).
            raise ValueError("the database DSN is not a valid libpq connection string") from None
        if minConnections < 1:
            raise ValueError("minConnections must be at least 1")
        for name, value in (
            ("operationTimeout", operationTimeout),
            ("connectTimeout", connectTimeout),
            ("maxRetryDelay", maxRetryDelay),
        ):
            if not value > 0:
                raise ValueError("{} must be positive".format(name))
        if statementTimeout is not None and not statementTimeout > 0:
            raise ValueError("statementTimeout must be positive or None")
        if not retryDelay >= 0:
            raise ValueError("retryDelay must not be negative")
        self._dsn = dsn
        self._connectKwargs: dict[str, str] = {}
        if "application_name" not in parsed:
            self._connectKwargs["application_name"] = "sipcore"
        self._reactor = reactor
        self._size = minConnections
        self._statementTimeout = statementTimeout
        self._operationTimeout = operationTimeout
        self._connectTimeout = connectTimeout
        self._retryDelay = retryDelay
        self._maxRetryDelay = maxRetryDelay
        self._retryImmediately = retryImmediately
        self._random = random.Random()
        self._semaphore = defer.DeferredSemaphore(minConnections)
        self._connections: tuple[_Connection, ...] = ()
        self._idle: list[_Connection] = []
        self._alive: set[_Connection] = set()
        self._running = False
        self._starting = False
        self._startWaiters: list[defer.Deferred[None]] = []
        self._state: bool | None = None
        self._lastError = "not connected yet"

    @property
    def running(self) -> bool:
        """
        C{True} between L{start} and L{close}.
        """
        return self._running

    @property
    def available(self) -> bool:
        """
        C{True} while at least one connection is open and believed alive.
        """
        return bool(self._alive)

    @property
    def liveConnections(self) -> int:
        """
        How many connections are open and believed alive.
        """
        return len(self._alive)

    # -- starting and closing ----------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """
        Open the connections.

        @return: L{Deferred} firing with C{None} once every connection has
            made its first attempt, whatever the outcome (L{whenStarted}):
            when the database is away, the pool logs C{database unavailable}
            and keeps trying in the background (see L{available}).
        """
        if self._running:
            return self.whenStarted()
        self._running = self._starting = True
        connections = tuple(self._newConnection() for _ in range(self._size))
        self._connections = connections
        self._idle = list(connections)
        attempts = [self._startConnection(conn) for conn in connections]
        waiting = self.whenStarted()

        def started(ignored: object) -> None:
            if self._connections is not connections or not self._starting:
                return
            if not self._alive:
                self._setAvailable(False)
            self._startFinished()

        defer.DeferredList(attempts, consumeErrors=True).addCallback(started)
        return waiting

    def whenStarted(self) -> defer.Deferred[None]:
        """
        @return: L{Deferred} firing with C{None} when every connection has
            made its first attempt since L{start} (at once when that is done
            or the pool is not starting).
        """
        if not self._starting:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._startWaiters.append(d)
        return d

    def close(self) -> defer.Deferred[None]:
        """
        Stop reconnecting and close every connection.  Calls still running
        fail with L{DatabaseUnavailable}.

        @return: L{Deferred} firing with C{None}.
        """
        if not self._running:
            return defer.succeed(None)
        self._running = False
        connections = self._connections
        for conn in connections:
            conn.detector.stop()
        self._alive.clear()
        for conn in connections:
            _closeQuietly(conn)
        self._state = None
        self._startFinished()
        return defer.succeed(None)

    def _startFinished(self) -> None:
        self._starting = False
        waiters, self._startWaiters = self._startWaiters, []
        for d in waiters:
            d.callback(None)

    # -- calls ---------------------------------------------------------------

    def runQuery(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        """
        Run a statement on a live connection (C{txpostgres.Connection.runQuery}).

        @return: L{Deferred} firing with the rows; see L{DatabasePool} for
            how it fails.
        """
        return self._run(lambda conn: conn.runQuery(*args, **kwargs))

    def runOperation(self, *args: Any, **kwargs: Any) -> defer.Deferred[None]:
        """
        Run a statement on a live connection and drop its result
        (C{txpostgres.Connection.runOperation}).

        @return: L{Deferred} firing with C{None}; see L{DatabasePool} for
            how it fails.
        """
        return self._run(lambda conn: conn.runOperation(*args, **kwargs))

    def runInteraction(
        self, interaction: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> defer.Deferred[Any]:
        """
        Run C{interaction(cursor, *args, **kwargs)} in one transaction on a
        live connection (C{txpostgres.Connection.runInteraction}): committed
        when it succeeds, rolled back when it fails.

        @return: L{Deferred} firing with what C{interaction} returned; see
            L{DatabasePool} for how it fails.
        """
        return self._run(lambda conn: conn.runInteraction(interaction, *args, **kwargs))

    def _run(self, call: Callable[[_Connection], defer.Deferred[Any]]) -> defer.Deferred[Any]:
        if not self._running:
            return defer.fail(DatabaseUnavailable(
                "database unavailable: the database pool is not started"))
        if not self._alive:
            return defer.fail(DatabaseUnavailable("database unavailable: " + self._lastError))
        return self._semaphore.run(self._dispatch, call)

    def _dispatch(self, call: Callable[[_Connection], defer.Deferred[Any]]) -> defer.Deferred[Any]:
        conn, taken = self._checkout()
        if conn is None:
            return defer.fail(DatabaseUnavailable("database unavailable: " + self._lastError))
        d = self._guard(defer.maybeDeferred(call, conn), conn)
        if taken:
            d.addBoth(self._putBack, conn)
        return d.addErrback(self._translate)

    def _checkout(self) -> tuple[_Connection | None, bool]:
        """
        Pick a connection: an idle live one if there is one, else a busy
        live one (txpostgres serializes work on a connection), else none.

        @return: the connection (or C{None}) and whether it was taken out of
            the idle list.
        """
        for conn in self._idle:
            if conn in self._alive:
                self._idle.remove(conn)
                return conn, True
        for conn in self._connections:
            if conn in self._alive:
                return conn, False
        return None, False

    def _putBack(self, result: Any, conn: _Connection) -> Any:
        if conn in self._connections:
            self._idle.append(conn)
        return result

    def _translate(self, f: Failure) -> Failure:
        if f.check(*_UNAVAILABLE):
            return Failure(DatabaseUnavailable("database unavailable: " + _describe(f)))
        return f

    def _guard(self, d: defer.Deferred[Any], conn: _Connection) -> defer.Deferred[Any]:
        """
        Bound C{d}, running on C{conn}, by C{operationTimeout}: past it,
        C{conn} is declared dead and closed, which fails C{d} at once.
        """
        timedOut = []

        def expire() -> None:
            timedOut.append(True)
            conn.detector.markDead(
                Failure(
                    _OperationTimedOut(
                        "no answer from the database within {} s".format(self._operationTimeout)
                    )
                )
            )
            _closeQuietly(conn)

        timer = self._reactor.callLater(self._operationTimeout, expire)

        def finished(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            if timedOut and isinstance(result, Failure):
                return Failure(
                    DatabaseUnavailable(
                        "database unavailable: no answer within {} s".format(
                            self._operationTimeout)
                    )
                )
            return result

        return d.addBoth(finished)

    # -- connection management ---------------------------------------------

    def _newConnection(self) -> _Connection:
        watch = _Watch(self, self._reactor)
        conn = _Connection(self._reactor, detector=watch)
        watch.reconnectable = conn
        return conn

    def _retryDelays(self) -> Iterator[float]:
        """
        Delays between reconnection attempts: C{0} first (unless
        C{retryImmediately} is false), then C{retryDelay} doubling up to
        C{maxRetryDelay}, each with +/-10% jitter.
        """
        if self._retryImmediately:
            yield 0.0
        delay = self._retryDelay
        while True:
            yield max(0.0, min(self._maxRetryDelay, delay * self._random.uniform(0.9, 1.1)))
            delay = min(self._maxRetryDelay, max(delay, 0.05) * 2)

    def _open(self, conn: _Connection) -> defer.Deferred[None]:
        """
        (Re)open C{conn}: connect, bounded by C{connectTimeout}, then set
        C{statement_timeout}.
        """
        _closeQuietly(conn)
        d = conn.connect(self._dsn, **self._connectKwargs)
        timer = self._reactor.callLater(self._connectTimeout, _closeQuietly, conn)

        def stopTimer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(stopTimer)
        if self._statementTimeout is not None:
            milliseconds = max(1, int(self._statementTimeout * 1000))
            d.addCallback(lambda _: self._setup(conn, milliseconds))
        return d.addCallback(lambda _: None)

    def _setup(self, conn: _Connection, milliseconds: int) -> defer.Deferred[Any]:
        # A raw cursor: the detector's callChecking refuses work while the
        # connection is marked dead, which it is during a reconnection.
        cursor = conn.cursor()
        return cursor.execute(_SET_STATEMENT_TIMEOUT, (milliseconds,))

    def _startConnection(self, conn: _Connection) -> defer.Deferred[None]:
        def opened(ignored: object) -> None:
            self._connectionMade(conn)

        def failed(f: Failure) -> None:
            conn.detector.markDead(f)

        return self._open(conn).addCallbacks(opened, failed)

    def _connectionMade(self, conn: _Connection) -> None:
        if not self._running or conn not in self._connections:
            return
        self._alive.add(conn)
        self._setAvailable(True)

    def _connectionLost(self, conn: _Connection, f: Failure) -> None:
        self._alive.discard(conn)
        self._lastError = _describe(f)
        if not self._alive and not self._starting and self._running:
            self._setAvailable(False)

    def _reconnectFailed(self, f: Failure) -> None:
        self._lastError = _describe(f)
        self._log.debug("database reconnection attempt failed: {reason}", reason=self._lastError)

    def _setAvailable(self, available: bool) -> None:
        """
        Record the database's state; log once per change.
        """
        if available == self._state:
            return
        previous, self._state = self._state, available
        if available:
            if previous is False:
                self._log.info("database available again")
            else:
                self._log.info("database available")
        else:
            self._log.warn(
                "database unavailable: {reason}; retrying in the background",
                reason=self._lastError,
            )
