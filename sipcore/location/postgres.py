# -*- test-case-name: tests.test_location_postgres -*-
"""
L{ILocationStore} on PostgreSQL, in Kamailio's usrloc C{location} table
(version 9), through C{txpostgres}.

Every method sends one parameterized statement on one pooled connection:

  - C{lookup}: C{SELECT ... FROM location WHERE username = %s AND domain =
    %s AND expires > ... ORDER BY q DESC, last_modified DESC, ruid}
  - C{lookupMany} (several addresses of record, for group commit):
    C{SELECT ... WHERE (username, domain) IN (SELECT * FROM
    unnest(%s::text[], %s::text[])) AND expires > ...}
  - C{save}: one multi-row C{INSERT ... ON CONFLICT (ruid) DO UPDATE}
    (atomic: the statement is its own transaction)
  - C{remove}: C{DELETE ... WHERE ruid = ANY(%s)}
  - C{removeConnections}: C{DELETE ... WHERE server_id = %s AND
    connection_id = ANY(%s)}
  - C{removeExpired}: C{DELETE ... WHERE expires <= ...}
  - C{purgeServer}: C{DELETE ... WHERE server_id = %s AND connection_id > 0
    AND last_modified < %s}

(each C{DELETE} is wrapped in C{WITH gone AS (... RETURNING 1) SELECT
count(*) FROM gone} so the one statement also answers how many rows went).

Times: C{expires} and C{last_modified} are C{timestamp without time zone}.
The store writes and reads them as UTC inside the statement
(C{to_timestamp(%s) AT TIME ZONE 'UTC'} and C{EXTRACT(EPOCH FROM col AT TIME
ZONE 'UTC')}), so the session's C{TimeZone} setting never matters.

Connections: each pooled connection has its own dead-connection detector (a
C{txpostgres.reconnection.DeadConnectionDetector}).  A connection that dies
(server restart, terminated backend, network error, or no answer within
C{operationTimeout}) is closed and reconnected in the background with
capped exponential backoff; meanwhile calls go to the live connections, and
when there is none they fail at once with L{StoreUnavailable}.  The store
logs one line when the database becomes unavailable and one when it is
available again.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator
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

from sipcore.interfaces import ILocationStore
from sipcore.location import StoreUnavailable
from sipcore.location.binding import Binding, checkBinding, splitAor

__all__ = ["PostgresLocationStore"]


# ---------------------------------------------------------------------------
# Statements: fixed text, every value a %s parameter.  _COLUMNS is the
# column order of the statements and of _bindingParams.

_COLUMNS = (
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
_TIME_COLUMNS = frozenset({"expires", "last_modified"})


#: The columns as read back: times as POSIX seconds.
_SELECT = (
    "SELECT ruid, username, domain, contact, received, path,"
    " EXTRACT(EPOCH FROM expires AT TIME ZONE 'UTC'), q, callid, cseq,"
    " EXTRACT(EPOCH FROM last_modified AT TIME ZONE 'UTC'), flags, cflags, user_agent,"
    " socket, methods, instance, reg_id, server_id, connection_id, keepalive, partition"
    " FROM location"
)

#: One row of values for L{_INSERT_HEAD}, times given as POSIX seconds.
_ROW = (
    "(%s, %s, %s, %s, %s, %s, (to_timestamp(%s) AT TIME ZONE 'UTC'), %s, %s, %s,"
    " (to_timestamp(%s) AT TIME ZONE 'UTC'), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)

_INSERT_HEAD = (
    "INSERT INTO location (ruid, username, domain, contact, received, path, expires, q,"
    " callid, cseq, last_modified, flags, cflags, user_agent, socket, methods, instance,"
    " reg_id, server_id, connection_id, keepalive, partition) VALUES "
)
_INSERT_TAIL = (
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

_LOOKUP_ORDER = ' ORDER BY q DESC, last_modified DESC, ruid COLLATE "C"'
_LOOKUP = (
    _SELECT + " WHERE username = %s AND domain = %s"
    " AND expires > (to_timestamp(%s) AT TIME ZONE 'UTC')" + _LOOKUP_ORDER
)
_LOOKUP_NO_DOMAIN = (
    _SELECT + " WHERE username = %s AND (domain IS NULL OR domain = '')"
    " AND expires > (to_timestamp(%s) AT TIME ZONE 'UTC')" + _LOOKUP_ORDER
)
_LOOKUP_MANY = (
    _SELECT + " WHERE (username, domain) IN"
    " (SELECT * FROM unnest(%s::text[], %s::text[]))"
    " AND expires > (to_timestamp(%s) AT TIME ZONE 'UTC')" + _LOOKUP_ORDER
)

# The deletes answer with the number of rows removed.
_REMOVE = (
    "WITH gone AS (DELETE FROM location WHERE ruid = ANY(%s) RETURNING 1)"
    " SELECT count(*) FROM gone"
)
_REMOVE_CONNECTIONS = (
    "WITH gone AS (DELETE FROM location WHERE server_id = %s AND connection_id = ANY(%s)"
    " RETURNING 1) SELECT count(*) FROM gone"
)
_REMOVE_EXPIRED = (
    "WITH gone AS (DELETE FROM location"
    " WHERE expires <= (to_timestamp(%s) AT TIME ZONE 'UTC') RETURNING 1)"
    " SELECT count(*) FROM gone"
)
_PURGE_SERVER = (
    "WITH gone AS (DELETE FROM location WHERE server_id = %s AND connection_id > 0"
    " AND last_modified < (to_timestamp(%s) AT TIME ZONE 'UTC') RETURNING 1)"
    " SELECT count(*) FROM gone"
)

_SET_STATEMENT_TIMEOUT = "SET statement_timeout = %s"


def _bindingParams(binding: Binding) -> tuple[Any, ...]:
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


def _rowToBinding(row: tuple[Any, ...]) -> Binding:
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
# Failures.


class _OperationTimedOut(Exception):
    """
    A statement got no answer within the store's C{operationTimeout}; the
    connection is treated as dead.
    """


def _isConnectionDeath(f: Failure) -> bool:
    """
    The death checker of our detectors: does C{f} mean the connection is
    unusable and must be reopened?

    A statement cancelled by C{statement_timeout} is not a dead connection;
    a server that turned read-only (a failed-over primary now a standby) is.
    """
    if f.check(psycopg2.extensions.QueryCanceledError, defer.CancelledError):
        return False
    return bool(
        f.check(
            psycopg2.InterfaceError,
            psycopg2.OperationalError,
            psycopg2.errors.ReadOnlySqlTransaction,
            txpostgres.RollbackFailed,
            error.ConnectionDone,
            error.ConnectionLost,
            _OperationTimedOut,
        )
    )


#: Failures that mean "the database cannot answer now": mapped to
#: L{StoreUnavailable}.
_UNAVAILABLE = (
    reconnection.ConnectionDead,
    psycopg2.InterfaceError,
    psycopg2.OperationalError,
    psycopg2.errors.ReadOnlySqlTransaction,
    txpostgres.RollbackFailed,
    error.ConnectionDone,
    error.ConnectionLost,
    defer.CancelledError,
    _OperationTimedOut,
)


def _describe(f: Failure) -> str:
    """
    One line saying why, for logs and L{StoreUnavailable} messages.  Never
    includes statement parameters (psycopg2 messages do not carry them).
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
# txpostgres plumbing.


class _Connection(txpostgres.Connection):
    """
    A txpostgres connection that reports its death while idle without a
    traceback.

    txpostgres keeps every idle connection registered as a reader (for
    NOTIFY).  When the server ends the session (restart, terminated backend)
    the socket becomes readable and psycopg2 raises from C{poll()}; the
    reactor would log that as an unhandled error.  Returning the error from
    C{doRead} instead makes the reactor disconnect us with it, which reaches
    the detector through C{connectionLost}.
    """

    def doRead(self) -> Any:
        try:
            return txpostgres.Connection.doRead(self)
        except psycopg2.Error as e:
            return e


class _Detector(reconnection.DeadConnectionDetector):
    """
    One connection's dead-connection detector.

    txpostgres' detector does the detection: calls go through its
    C{callChecking} (failing at once with C{ConnectionDead} while the
    connection is known dead) and a lost connection is reported to
    C{checkForDeadConnection}.  The reconnection loop is ours: it reports
    state changes to the store, reopens the connection with the store's
    settings (connect timeout, C{statement_timeout}), can be stopped, and
    leaves no timer behind when stopped.
    """

    def __init__(self, store: PostgresLocationStore, reactor: Any) -> None:
        reconnection.DeadConnectionDetector.__init__(
            self, deathChecker=_isConnectionDeath, reactor=reactor
        )
        self._store = store
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
        self._store._connectionLost(self.reconnectable, f)
        self._delays = self._store._retryDelays()
        self._scheduleAttempt()

    def _scheduleAttempt(self) -> None:
        if self._stopped:
            return
        self._pending = self.reactor.callLater(next(self._delays), self._attempt)

    def _attempt(self) -> None:
        self._pending = None
        if self._stopped:
            return
        d = self._store._open(self.reconnectable)
        d.addCallbacks(self._attemptSucceeded, self._attemptFailed)
        d.addErrback(lambda f: self._store._log.failure("reconnection bookkeeping failed", f))

    def _attemptSucceeded(self, ignored: object) -> None:
        if self._stopped:
            _closeQuietly(self.reconnectable)
            return
        self.connectionRecovered()
        self._store._connectionMade(self.reconnectable)

    def _attemptFailed(self, f: Failure) -> None:
        self._store._reconnectFailed(f)
        self._scheduleAttempt()

    def stop(self) -> None:
        """
        Stop reconnecting for good; cancel a scheduled attempt.
        """
        self._stopped = True
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None


class _Pool(txpostgres.ConnectionPool):
    """
    A C{txpostgres.ConnectionPool} whose connections each carry their own
    L{_Detector}, that sends work to live connections only, and that bounds
    every call with the store's C{operationTimeout}.

    The pool is not started with C{ConnectionPool.start} (which fails as a
    whole when one connection cannot connect); the store opens each
    connection itself.
    """

    def __init__(self, store: PostgresLocationStore, reactor: Any, size: int) -> None:
        self.reactor = reactor
        self.min = size
        self._store = store
        txpostgres.ConnectionPool.__init__(self, None)
        self.allConnections: tuple[_Connection, ...] = tuple(self.connections)

    def connectionFactory(self, reactor: Any, cooperator: Any) -> _Connection:  # type: ignore[override]
        detector = _Detector(self._store, reactor)
        conn = _Connection(reactor, cooperator, detector=detector)
        detector.reconnectable = conn
        return conn

    def _checkout(self) -> tuple[_Connection | None, bool]:
        """
        Pick a connection: an idle live one if there is one, else a busy
        live one (txpostgres serializes work on a connection), else none.

        @return: the connection (or C{None}) and whether it was taken out of
            the idle set.
        """
        alive = self._store._alive
        for conn in self.connections:
            if conn in alive:
                self.connections.remove(conn)
                return conn, True
        for conn in self.allConnections:
            if conn in alive:
                return conn, False
        return None, False

    def _runOn(self, name: str, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        conn, taken = self._checkout()
        if conn is None:
            return defer.fail(reconnection.ConnectionDead())
        d = self._store._guard(getattr(conn, name)(*args, **kwargs), conn)
        if taken:
            d.addBoth(self._putBackAndPassthrough, conn)
        return d

    def _runQuery(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        return self._runOn("runQuery", *args, **kwargs)

    def _runOperation(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        return self._runOn("runOperation", *args, **kwargs)

    def _runInteraction(self, interaction: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        return self._runOn("runInteraction", interaction, *args, **kwargs)


# ---------------------------------------------------------------------------
# The store.


@implementer(ILocationStore)
class PostgresLocationStore:
    """
    Bindings in Kamailio's C{location} table on PostgreSQL.

    @ivar statementCount: a L{Counter} of the statements sent, by method
        (C{"lookup"}, C{"save"}, C{"remove"}, C{"removeConnections"},
        C{"removeExpired"}, C{"purgeServer"}).  Calls with nothing to do
        (no bindings, no ruids, no conids) send nothing and count nothing.
    @ivar pool: the C{txpostgres.ConnectionPool} (built at construction,
        connected by L{start}).  Handlers that own tables of their own may
        run statements on it (L{sipcore.interfaces.IHandlerContext.dbPool});
        its calls go to live connections, are bounded by C{operationTimeout},
        and fail with C{txpostgres.reconnection.ConnectionDead} while no
        connection is alive (or before L{start}).  A L{start} after L{close}
        builds a new pool.
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
            past that the call fails with L{StoreUnavailable} and its
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
        self.statementCount: Counter[str] = Counter()
        self.pool = _Pool(self, reactor, minConnections)
        self._running = False
        self._poolUsed = False
        self._alive: set[_Connection] = set()
        self._state: bool | None = None
        self._starting = False
        self._lastError = "not connected yet"

    @property
    def available(self) -> bool:
        """
        C{True} while at least one pooled connection is open and believed
        alive.
        """
        return bool(self._alive)

    # -- ILocationStore ----------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """
        Open the pool's connections.

        @return: L{Deferred} firing with C{None} once every connection has
            made its first attempt, whatever the outcome: when the database
            is away, the store logs C{database unavailable} and keeps trying
            in the background (see L{available}).
        """
        if self._running:
            return defer.succeed(None)
        if self._poolUsed:
            # Closed before: its connections are stopped for good.
            self.pool = _Pool(self, self._reactor, self._size)
        pool = self.pool
        self._running = self._poolUsed = True
        self._starting = True
        attempts = [self._startConnection(conn) for conn in pool.allConnections]

        def started(ignored: object) -> None:
            self._starting = False
            if self._running and self.pool is pool and not self._alive:
                self._setAvailable(False)

        return defer.DeferredList(attempts, consumeErrors=True).addCallback(started)

    def close(self) -> defer.Deferred[None]:
        """
        Stop reconnecting and close every connection.  Calls still running
        fail with L{StoreUnavailable}.

        @return: L{Deferred} firing with C{None}.
        """
        if not self._running:
            return defer.succeed(None)
        self._running = False
        pool = self.pool
        for conn in pool.allConnections:
            conn.detector.stop()
        self._alive.clear()
        for conn in pool.allConnections:
            _closeQuietly(conn)
        self._state = None
        self._starting = False
        return defer.succeed(None)

    def lookup(self, aor: str, now: float) -> defer.Deferred[list[Binding]]:
        """
        See L{ILocationStore.lookup}.  Fails with L{StoreUnavailable} when
        the database cannot answer.
        """
        if "\x00" in aor:
            # No binding can hold a NUL, and PostgreSQL refuses it in text.
            return defer.succeed([])
        try:
            when = _posixTime(now)
        except TypeError:
            return defer.fail(Failure())
        username, domain = splitAor(aor)
        params: tuple[Any, ...]
        if domain:
            statement, params = _LOOKUP, (username, domain, when)
        else:
            statement, params = _LOOKUP_NO_DOMAIN, (username, when)
        d = self._run("lookup", "runQuery", statement, params)
        return d.addCallback(lambda rows: [_rowToBinding(row) for row in rows])

    def lookupMany(self, aors: Iterable[str], now: float) -> defer.Deferred[dict[str, list[Binding]]]:
        """
        The unexpired bindings of several addresses of record with one
        statement: C{SELECT ... WHERE (username, domain) IN (SELECT * FROM
        unnest(%s::text[], %s::text[])) AND expires > ...}.  Addresses of
        record without a domain (rare: the registrar always has one) are
        read with one L{lookup} each.

        @return: a L{Deferred} firing with a C{dict} from each address of
            record that has bindings to its list, in L{lookup}'s order.
            Fails with L{StoreUnavailable} when the database cannot answer.
        """
        try:
            when = _posixTime(now)
        except TypeError:
            return defer.fail(Failure())
        pairs: dict[tuple[str, str], str] = {}
        bare: list[str] = []
        for aor in set(aors):
            if not isinstance(aor, str) or "\x00" in aor:
                continue
            username, domain = splitAor(aor)
            if domain:
                pairs[(username, domain)] = aor
            else:
                bare.append(aor)
        found: dict[str, list[Binding]] = {}
        work: list[defer.Deferred[Any]] = []
        if pairs:
            users = [u for u, _ in pairs]
            domains = [d for _, d in pairs]

            def grouped(rows: list[tuple[Any, ...]]) -> None:
                for row in rows:
                    aor = pairs.get((row[1], row[2]))
                    if aor is not None:
                        found.setdefault(aor, []).append(_rowToBinding(row))

            work.append(
                self._run("lookupMany", "runQuery", _LOOKUP_MANY, (users, domains, when))
                .addCallback(grouped))
        for aor in bare:

            def single(bindings: list[Binding], aor: str = aor) -> None:
                if bindings:
                    found[aor] = bindings

            work.append(self.lookup(aor, when).addCallback(single))
        if not work:
            return defer.succeed(found)
        d = defer.gatherResults(work, consumeErrors=True)
        d.addErrback(lambda f: f.value.subFailure)  # type: ignore[call-overload]
        return d.addCallback(lambda _: found)

    def save(self, bindings: Iterable[Binding]) -> defer.Deferred[None]:
        """
        See L{ILocationStore.save}: one multi-row C{INSERT ... ON CONFLICT
        (ruid) DO UPDATE}.  When C{bindings} repeats a C{ruid}, the last one
        wins.  Fails with L{sipcore.location.InvalidBinding} (sending
        nothing) if a binding cannot be stored exactly, and with
        L{StoreUnavailable} when the database cannot answer.
        """
        byRuid: dict[str, Binding] = {}
        try:
            for binding in bindings:
                checkBinding(binding)
                byRuid.pop(binding.ruid, None)
                byRuid[binding.ruid] = binding
        except ValueError:
            return defer.fail(Failure())
        if not byRuid:
            return defer.succeed(None)
        statement = _INSERT_HEAD + ", ".join([_ROW] * len(byRuid)) + _INSERT_TAIL
        params: list[Any] = []
        for binding in byRuid.values():
            params.extend(_bindingParams(binding))
        return self._run("save", "runOperation", statement, params)

    def remove(self, ruids: Iterable[str]) -> defer.Deferred[int]:
        """
        See L{ILocationStore.remove}.
        """
        wanted = sorted({r for r in ruids if isinstance(r, str) and "\x00" not in r})
        if not wanted:
            return defer.succeed(0)
        return self._count("remove", _REMOVE, (wanted,))

    def removeConnections(self, serverId: int, conids: Iterable[int]) -> defer.Deferred[int]:
        """
        See L{ILocationStore.removeConnections}: one C{DELETE FROM location
        WHERE server_id = %s AND connection_id = ANY(%s)} for all of
        C{conids}.
        """
        try:
            wanted = sorted({_integer(c, "conid") for c in conids})
            server = _integer(serverId, "serverId")
        except TypeError:
            return defer.fail(Failure())
        if not wanted:
            return defer.succeed(0)
        return self._count("removeConnections", _REMOVE_CONNECTIONS, (server, wanted))

    def removeExpired(self, now: float) -> defer.Deferred[int]:
        """
        See L{ILocationStore.removeExpired}.
        """
        try:
            when = _posixTime(now)
        except TypeError:
            return defer.fail(Failure())
        return self._count("removeExpired", _REMOVE_EXPIRED, (when,))

    def purgeServer(self, serverId: int, before: float) -> defer.Deferred[int]:
        """
        See L{ILocationStore.purgeServer}: rows of C{serverId} with
        C{connection_id > 0} (Kamailio writes C{-1} for UDP bindings; C{0}
        is the column default), as Kamailio's C{db_clean_tcp} does at start,
        last modified before C{before}.
        """
        try:
            server = _integer(serverId, "serverId")
            when = _posixTime(before)
        except TypeError:
            return defer.fail(Failure())
        return self._count("purgeServer", _PURGE_SERVER, (server, when))

    # -- running statements ------------------------------------------------

    def _run(self, kind: str, method: str, statement: str, params: Any) -> defer.Deferred[Any]:
        pool = self.pool
        if not self._running:
            return defer.fail(StoreUnavailable("the location store is not started"))
        if not self._alive:
            return defer.fail(StoreUnavailable("database unavailable: " + self._lastError))
        self.statementCount[kind] += 1
        d = getattr(pool, method)(statement, params)
        return d.addErrback(self._translate)

    def _count(self, kind: str, statement: str, params: Any) -> defer.Deferred[int]:
        d = self._run(kind, "runQuery", statement, params)
        return d.addCallback(lambda rows: int(rows[0][0]))

    def _translate(self, f: Failure) -> Failure:
        if f.check(StoreUnavailable):
            return f
        if f.check(*_UNAVAILABLE):
            return Failure(StoreUnavailable("database unavailable: " + _describe(f)))
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
                    StoreUnavailable(
                        "database unavailable: no answer within {} s".format(self._operationTimeout)
                    )
                )
            return result

        return d.addBoth(finished)

    # -- connection management ---------------------------------------------

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
        if not self._running or conn not in self.pool.allConnections:
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


def _posixTime(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("now must be a POSIX time, not {}".format(type(value).__name__))
    return float(value)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("{} must be an integer, not {}".format(name, type(value).__name__))
    return value
