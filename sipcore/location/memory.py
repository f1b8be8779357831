# -*- test-case-name: tests.test_location_memory -*-
"""
An in-memory L{ILocationStore}: the default store, and the reference the
PostgreSQL store is compared against in the tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from sipcore.interfaces import IBindingListing, ILocationStore
from sipcore.location.binding import Binding
from sipcore.location.query import BindingQuery, sortKey

__all__ = ["MemoryLocationStore", "lookupOrder"]


def lookupOrder(binding: Binding) -> tuple[float, float, str]:
    """
    The sort key of L{ILocationStore.lookup} results: highest C{q} first,
    then the most recently modified, then by C{ruid} (code point order).
    Both stores use this order, so their answers can be compared.
    """
    return (-binding.q, -binding.lastModified, binding.ruid)


@implementer(ILocationStore, IBindingListing)
class MemoryLocationStore:
    """
    Bindings in dictionaries: by address of record, then by C{ruid}, plus an
    index by C{(serverId, connectionId)} for connection cleanup.

    Every method returns an already-fired L{Deferred}.  It stores what
    the PostgreSQL store stores: a L{Binding} holds only values the
    C{location} table can store exactly.

    @ivar clock: the L{IReactorTime} given at construction.  The store itself
        needs no timers (callers pass C{now}); it is kept so the memory and
        database stores are built alike.
    @ivar statementCount: a L{Counter} of the operations that reached the
        store's data, by method name (C{"save"}, C{"remove"},
        C{"removeConnections"}, ...), counted as the PostgreSQL store counts
        its statements: calls with nothing to do are not counted.
    """

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self.clock = clock
        self.statementCount: Counter[str] = Counter()
        self._byAor: dict[str, dict[str, Binding]] = {}
        self._aorOfRuid: dict[str, str] = {}
        self._byConnection: dict[tuple[int, int], set[str]] = {}

    @property
    def available(self) -> bool:
        """
        Always C{True}: the bindings are in memory.
        """
        return True

    def __len__(self) -> int:
        """
        @return: the number of bindings held, expired or not.
        """
        return len(self._aorOfRuid)

    def start(self) -> defer.Deferred[None]:
        """
        Nothing to open.

        @return: an already-fired L{Deferred} (C{None}).
        """
        return defer.succeed(None)

    def close(self) -> defer.Deferred[None]:
        """
        Nothing to close; the bindings are kept.

        @return: an already-fired L{Deferred} (C{None}).
        """
        return defer.succeed(None)

    def lookup(self, aor: str, now: float) -> defer.Deferred[list[Binding]]:
        """
        See L{ILocationStore.lookup}.
        """
        self.statementCount["lookup"] += 1
        found = [b for b in self._byAor.get(aor, {}).values() if not b.isExpired(now)]
        found.sort(key=lookupOrder)
        return defer.succeed(found)

    def lookupMany(self, aors: Iterable[str], now: float) -> defer.Deferred[dict[str, list[Binding]]]:
        """
        See L{ILocationStore.lookupMany}.

        @return: a L{Deferred} firing with a C{dict} from each address of
            record that has bindings to its list, in L{lookupOrder}.
        """
        self.statementCount["lookupMany"] += 1
        found: dict[str, list[Binding]] = {}
        for aor in set(aors):
            bindings = [b for b in self._byAor.get(aor, {}).values() if not b.isExpired(now)]
            if bindings:
                bindings.sort(key=lookupOrder)
                found[aor] = bindings
        return defer.succeed(found)

    def save(self, bindings: Iterable[Binding]) -> defer.Deferred[None]:
        """
        See L{ILocationStore.save}.
        """
        batch = list(bindings)
        if not batch:
            return defer.succeed(None)
        self.statementCount["save"] += 1
        for binding in batch:
            self._discard(binding.ruid)
            self._byAor.setdefault(binding.aor, {})[binding.ruid] = binding
            self._aorOfRuid[binding.ruid] = binding.aor
            key = (binding.serverId, binding.connectionId)
            self._byConnection.setdefault(key, set()).add(binding.ruid)
        return defer.succeed(None)

    def remove(self, ruids: Iterable[str]) -> defer.Deferred[int]:
        """
        See L{ILocationStore.remove}.
        """
        wanted = set(ruids)
        if not wanted:
            return defer.succeed(0)
        self.statementCount["remove"] += 1
        return defer.succeed(sum(1 for ruid in wanted if self._discard(ruid)))

    def removeConnections(self, serverId: int, conids: Iterable[int]) -> defer.Deferred[int]:
        """
        See L{ILocationStore.removeConnections}.
        """
        wanted = set(conids)
        if not wanted:
            return defer.succeed(0)
        self.statementCount["removeConnections"] += 1
        ruids: set[str] = set()
        for conid in wanted:
            ruids.update(self._byConnection.get((serverId, conid), ()))
        return defer.succeed(self._discardAll(ruids))

    def removeExpired(self, now: float) -> defer.Deferred[list[Binding]]:
        """
        See L{ILocationStore.removeExpired}.
        """
        self.statementCount["removeExpired"] += 1
        expired = sorted(
            (binding
             for perAor in self._byAor.values()
             for binding in perAor.values()
             if binding.isExpired(now)),
            key=lambda binding: binding.ruid,
        )
        self._discardAll([binding.ruid for binding in expired])
        return defer.succeed(expired)

    def purgeServer(self, serverId: int, before: float) -> defer.Deferred[int]:
        """
        See L{ILocationStore.purgeServer}: bindings of C{serverId} with a
        C{connectionId} greater than zero last written before C{before} go;
        UDP bindings (C{-1}), rows with the column default (C{0}) and
        bindings written since C{before} stay.
        """
        self.statementCount["purgeServer"] += 1
        ruids: set[str] = set()
        for (server, conid), members in self._byConnection.items():
            if server == serverId and conid > 0:
                ruids.update(
                    ruid for ruid in members
                    if self._byAor[self._aorOfRuid[ruid]][ruid].lastModified < before)
        return defer.succeed(self._discardAll(ruids))

    def listBindings(self, now: float, query: BindingQuery) -> defer.Deferred[list[Binding]]:
        """
        See L{sipcore.interfaces.IBindingListing.listBindings}.
        """
        found = sorted(
            (b for perAor in self._byAor.values() for b in perAor.values()
             if not b.isExpired(now) and query.matches(b)),
            key=sortKey,
        )
        return defer.succeed(found[query.offset:query.offset + query.limit])

    def allBindings(self) -> list[Binding]:
        """
        Every binding held, expired or not, in C{ruid} order.  For tests and
        diagnostics.
        """
        return sorted(
            (b for perAor in self._byAor.values() for b in perAor.values()),
            key=lambda b: b.ruid,
        )

    def _discardAll(self, ruids: Sequence[str] | set[str]) -> int:
        """
        Remove the bindings C{ruids}.

        @return: how many were present.
        """
        return sum(1 for ruid in list(ruids) if self._discard(ruid))

    def _discard(self, ruid: str) -> bool:
        """
        Remove one binding and its index entries.

        @return: C{True} if it was present.
        """
        aor = self._aorOfRuid.pop(ruid, None)
        if aor is None:
            return False
        perAor = self._byAor[aor]
        binding = perAor.pop(ruid)
        if not perAor:
            del self._byAor[aor]
        key = (binding.serverId, binding.connectionId)
        members = self._byConnection[key]
        members.discard(ruid)
        if not members:
            del self._byConnection[key]
        return True
