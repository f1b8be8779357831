# -*- test-case-name: tests.test_location_postgres -*-
"""
L{ILocationStore} on PostgreSQL, in Kamailio's usrloc C{location} table
(version 9), through the database's L{sipcore.db.DatabasePool}.

Every method sends one parameterized statement (L{sipcore.db.location})
through the pool:

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

The store does not own the pool: the L{sipcore.db.Database} service opens
it before the store starts and closes it after the store is closed.  A
pool call that fails with L{sipcore.db.DatabaseUnavailable} (no live
connection, a connection lost, no answer in time) fails the store's call
with L{StoreUnavailable}, with the same message.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from sipcore.db import DatabaseUnavailable
from sipcore.db.location import (
    LIST,
    LOOKUP,
    LOOKUP_MANY,
    LOOKUP_NO_DOMAIN,
    PURGE_SERVER,
    REMOVE,
    REMOVE_CONNECTIONS,
    REMOVE_EXPIRED,
    bindingParams,
    insertStatement,
    rowToBinding,
)
from sipcore.interfaces import IBindingListing, IDatabasePool, ILocationStore
from sipcore.location import StoreUnavailable
from sipcore.location.binding import Binding, splitAor
from sipcore.location.query import BindingQuery

__all__ = ["PostgresLocationStore"]


@implementer(ILocationStore, IBindingListing)
class PostgresLocationStore:
    """
    Bindings in Kamailio's C{location} table on PostgreSQL.

    @ivar statementCount: a L{Counter} of the statements sent, by method
        (C{"lookup"}, C{"lookupMany"}, C{"save"}, C{"remove"},
        C{"removeConnections"}, C{"removeExpired"}, C{"purgeServer"}).
        Calls with nothing to do (no bindings, no ruids, no conids) send
        nothing and count nothing.
    """

    def __init__(self, pool: IDatabasePool) -> None:
        """
        @param pool: the database's L{IDatabasePool} (a
            L{sipcore.db.DatabasePool}), started and closed by its owner.
        """
        self._pool = pool
        self.statementCount: Counter[str] = Counter()
        self._running = False

    @property
    def available(self) -> bool:
        """
        C{True} while the store is started and its database has a live
        connection.
        """
        return self._running and bool(self._pool.available)

    # -- ILocationStore ----------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """
        Accept calls from now on (the pool is the database's: opening it is
        not the store's business).

        @return: L{Deferred} firing with C{None}.
        """
        self._running = True
        return defer.succeed(None)

    def close(self) -> defer.Deferred[None]:
        """
        Refuse calls from now on (with L{StoreUnavailable}); the pool stays
        open for its owner to close.

        @return: L{Deferred} firing with C{None}.
        """
        self._running = False
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
            statement, params = LOOKUP, (username, domain, when)
        else:
            statement, params = LOOKUP_NO_DOMAIN, (username, when)
        d = self._run("lookup", statement, params)
        return d.addCallback(lambda rows: [rowToBinding(row) for row in rows])

    def listBindings(self, now: float, query: BindingQuery) -> defer.Deferred[list[Binding]]:
        """
        See L{sipcore.interfaces.IBindingListing.listBindings}: one
        parameterized C{SELECT}.  Fails with L{StoreUnavailable} when the
        database cannot answer.
        """
        try:
            when = _posixTime(now)
        except TypeError:
            return defer.fail(Failure())
        params = (when, query.domain, query.domain, query.username, query.username,
                  query.conid, query.conid, query.limit, query.offset)
        d = self._run("list", LIST, params)
        return d.addCallback(lambda rows: [rowToBinding(row) for row in rows])

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
                        found.setdefault(aor, []).append(rowToBinding(row))

            work.append(
                self._run("lookupMany", LOOKUP_MANY, (users, domains, when))
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
        wins.  Fails with L{StoreUnavailable} when the database cannot
        answer.
        """
        byRuid: dict[str, Binding] = {}
        for binding in bindings:
            byRuid.pop(binding.ruid, None)
            byRuid[binding.ruid] = binding
        if not byRuid:
            return defer.succeed(None)
        statement = insertStatement(len(byRuid))
        params: list[Any] = []
        for binding in byRuid.values():
            params.extend(bindingParams(binding))
        return self._write("save", statement, params)

    def remove(self, ruids: Iterable[str]) -> defer.Deferred[int]:
        """
        See L{ILocationStore.remove}.
        """
        wanted = sorted({r for r in ruids if isinstance(r, str) and "\x00" not in r})
        if not wanted:
            return defer.succeed(0)
        return self._count("remove", REMOVE, (wanted,))

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
        return self._count("removeConnections", REMOVE_CONNECTIONS, (server, wanted))

    def removeExpired(self, now: float) -> defer.Deferred[list[Binding]]:
        """
        See L{ILocationStore.removeExpired}.
        """
        try:
            when = _posixTime(now)
        except TypeError:
            return defer.fail(Failure())
        d = self._run("removeExpired", REMOVE_EXPIRED, (when,))
        return d.addCallback(
            lambda rows: sorted((rowToBinding(row) for row in rows), key=lambda b: b.ruid))

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
        return self._count("purgeServer", PURGE_SERVER, (server, when))

    # -- running statements ------------------------------------------------

    def _run(self, kind: str, statement: str, params: Any) -> defer.Deferred[Any]:
        if not self._running:
            return defer.fail(StoreUnavailable("the location store is not started"))
        self._counted(kind)
        return self._pool.runQuery(statement, params).addErrback(_translate)

    def _write(self, kind: str, statement: str, params: Any) -> defer.Deferred[None]:
        if not self._running:
            return defer.fail(StoreUnavailable("the location store is not started"))
        self._counted(kind)
        return self._pool.runOperation(statement, params).addErrback(_translate)

    def _counted(self, kind: str) -> None:
        # Without a live connection the pool fails the call at once: nothing
        # is sent, nothing is counted.
        if self._pool.available:
            self.statementCount[kind] += 1

    def _count(self, kind: str, statement: str, params: Any) -> defer.Deferred[int]:
        d = self._run(kind, statement, params)
        return d.addCallback(lambda rows: int(rows[0][0]))


def _translate(f: Failure) -> Failure:
    """
    The database's L{DatabaseUnavailable} as the store's
    L{StoreUnavailable}, with the same message.
    """
    if f.check(DatabaseUnavailable):
        return Failure(StoreUnavailable(str(f.value)))
    return f


def _posixTime(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("now must be a POSIX time, not {}".format(type(value).__name__))
    return float(value)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("{} must be an integer, not {}".format(name, type(value).__name__))
    return value
