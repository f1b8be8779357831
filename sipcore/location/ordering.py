# -*- test-case-name: tests.test_ordering -*-
"""
Per-connection ordering of location writes.

A cleanup for connection N must run after any registration work for N that
was already in flight, or a binding written after its connection died would
be left behind.  The registrar tracks each REGISTER's work here, from the
moment it starts (including any lookup before the write); the cleanup waits
for L{PendingWrites.settled} before deleting.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from twisted.internet import defer

T = TypeVar("T")


class PendingWrites:
    """
    Location work in flight, by connection id.
    """

    def __init__(self) -> None:
        self._inFlight: dict[int, set[defer.Deferred[Any]]] = {}

    def __len__(self) -> int:
        return sum(len(ds) for ds in self._inFlight.values())

    def track(self, conid: int | None, work: defer.Deferred[T]) -> defer.Deferred[T]:
        """
        Record C{work} as in flight for C{conid} until it fires.

        @param conid: the connection id, or C{None} (not tracked).
        @param work: the L{Deferred} of the work; its result passes through
            unchanged.
        @return: C{work}.
        """
        if conid is None or work.called:
            return work
        watcher: defer.Deferred[Any] = defer.Deferred()
        self._inFlight.setdefault(conid, set()).add(watcher)

        def done(result: Any) -> Any:
            pending = self._inFlight.get(conid)
            if pending is not None:
                pending.discard(watcher)
                if not pending:
                    del self._inFlight[conid]
            watcher.callback(None)
            return result

        work.addBoth(done)
        return work

    def settled(self, conids: Iterable[int]) -> defer.Deferred[None]:
        """
        Wait for the work in flight now for any of C{conids}.

        @return: a L{Deferred} that fires with C{None} once each piece of
            work in flight at the time of the call has finished, whatever
            its outcome; it never fails.
        """
        waiting = [
            watcher
            for conid in set(conids)
            for watcher in self._inFlight.get(conid, ())
        ]
        if not waiting:
            return defer.succeed(None)
        chained = [_follow(w) for w in waiting]
        return defer.gatherResults(chained).addCallback(lambda _: None)


def _follow(watcher: defer.Deferred[Any]) -> defer.Deferred[None]:
    follower: defer.Deferred[None] = defer.Deferred()
    watcher.addCallback(lambda _: follower.callback(None))
    return follower
