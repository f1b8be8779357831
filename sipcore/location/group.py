# -*- test-case-name: tests.test_group_commit -*-
"""
Group commit: many REGISTERs' location writes in one statement.

L{GroupCommitStore} wraps another L{ILocationStore} (the PostgreSQL store, or a
worker's L{sipcore.location.shared.SharedLocationStore}).
C{save} calls that arrive within a short window (C{window} seconds, or until
C{maxBatch} bindings are waiting) are written together with one call of the
wrapped store's C{save}: one multi-row C{INSERT ... ON CONFLICT (ruid) DO
UPDATE}, which PostgreSQL runs as one transaction.  Each caller's
L{Deferred} fires only once that statement has committed, so a C{200 OK}
that waits on it is never sent for a binding that could still be lost.
When the statement fails, every caller in the batch gets the same failure
(L{sipcore.location.StoreUnavailable} when the database is away) and none of
its bindings was written.

C{lookup} calls are batched the same way with the wrapped store's
C{lookupMany} (one C{SELECT ... WHERE (username, domain) IN (SELECT * FROM
unnest(...))} per window).

A binding holds only values the table can store (L{sipcore.location.Binding}
refuses others when it is made), so no binding spoils the batch of the others.

Ordering: writes run one at a time, in the order they were called (a batch
takes the place of its first C{save}).  C{remove}, C{removeConnections},
C{removeExpired} and C{purgeServer} close the batch that is filling (it is
sent at once instead of at the end of its window) and run after it, so a
removal never overtakes a save that was called before it.  A C{lookup} of
an address of record with a save queued or in flight waits for that save,
so a REGISTER sees the bindings the previous one for the same address wrote.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Union

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sipcore.interfaces import ILocationStore
from sipcore.location.binding import Binding

if TYPE_CHECKING:
    from sipcore.location.memory import MemoryLocationStore
    from sipcore.location.postgres import PostgresLocationStore
    from sipcore.location.shared import SharedLocationStore

    #: The stores a group commit wraps.
    WrappedStore = Union[MemoryLocationStore, PostgresLocationStore, SharedLocationStore]

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_WINDOW", "GroupCommitStore"]

#: Seconds a batch stays open for more REGISTERs.
DEFAULT_WINDOW = 0.002

#: Most bindings written by one statement (and most addresses of record
#: read by one lookup statement).
DEFAULT_MAX_BATCH = 500


class _SaveBatch:
    """
    C{save} calls waiting to be written together.

    @ivar bindings: every binding, in call order.
    @ivar waiters: one L{Deferred} per C{save} call.
    @ivar aors: the addresses of record written.
    @ivar ready: the window has passed (or the batch is full or closed):
        it is sent as soon as the writes before it are done.
    @ivar done: fires (with C{None}, never failing) once the batch's
        statement has finished, whatever its outcome.
    """

    def __init__(self) -> None:
        self.bindings: list[Binding] = []
        self.waiters: list[defer.Deferred[None]] = []
        self.aors: set[str] = set()
        self.ready = False
        self.timer: IDelayedCall | None = None
        self.done: defer.Deferred[None] = defer.Deferred()


class _Write:
    """
    A write that is not batched, waiting for its turn.
    """

    def __init__(self, run: Callable[[], defer.Deferred[Any]]) -> None:
        self.run = run
        self.result: defer.Deferred[Any] = defer.Deferred()
        self.ready = True


class _LookupBatch:
    """
    C{lookup} calls waiting to be read together.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, float, defer.Deferred[list[Binding]]]] = []
        self.timer: IDelayedCall | None = None


@implementer(ILocationStore)
class GroupCommitStore:
    """
    An L{ILocationStore} that writes concurrent C{save} calls with one
    statement (and reads concurrent C{lookup} calls with one call of the
    wrapped store's C{lookupMany}).

    @ivar store: the wrapped store.
    @ivar stats: a L{Counter}: C{batches} and C{batchedSaves} (save batches
        sent and the C{save} calls they held), C{batchedBindings},
        C{failedBatches}, C{lookupBatches} and C{batchedLookups}.
    """

    _log = Logger()

    def __init__(
        self,
        store: WrappedStore,
        clock: IReactorTime,
        window: float = DEFAULT_WINDOW,
        maxBatch: int = DEFAULT_MAX_BATCH,
        batchLookups: bool = True,
    ) -> None:
        """
        @param store: the wrapped L{ILocationStore}.
        @param clock: runs the batch windows.
        @param window: seconds a batch waits for more calls after its first
            (C{0}: only the calls made in the same reactor turn).
        @param maxBatch: bindings (for saves) or addresses of record (for
            lookups) that make a batch full: it is sent at once.
        @param batchLookups: batch C{lookup} calls too (into calls of the
            wrapped store's C{lookupMany}).
        @raise ValueError: if C{window} is negative or C{maxBatch} below 1.
        """
        if not window >= 0:
            raise ValueError("window must not be negative")
        if maxBatch < 1:
            raise ValueError("maxBatch must be at least 1")
        self.store = store
        self.clock = clock
        self.window = float(window)
        self.maxBatch = int(maxBatch)
        self.batchLookups = batchLookups
        self.stats: Counter[str] = Counter()
        self._queue: deque[_SaveBatch | _Write] = deque()
        self._running: _SaveBatch | _Write | None = None
        self._filling: _SaveBatch | None = None
        self._pendingAors: Counter[str] = Counter()
        self._lookups: _LookupBatch | None = None

    # -- what the wrapped store shows ----------------------------------------

    @property
    def statementCount(self) -> Counter[str]:
        """
        The wrapped store's statement counts.
        """
        return self.store.statementCount

    @property
    def available(self) -> bool:
        """
        Whether the wrapped store can answer.
        """
        return bool(self.store.available)

    @property
    def pending(self) -> int:
        """
        Writes queued or running: save batches and other writes.
        """
        return len(self._queue) + (self._running is not None)

    # -- ILocationStore --------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """
        Start the wrapped store.
        """
        return self.store.start()

    def close(self) -> defer.Deferred[None]:
        """
        Send what is waiting, wait for every write to finish, then close the
        wrapped store.
        """
        return defer.Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        self._flushLookups()
        await self._barrier()
        await self.store.close()

    def lookup(self, aor: str, now: float) -> defer.Deferred[list[Binding]]:
        """
        See L{ILocationStore.lookup}.  Waits for the saves of C{aor} that are
        queued or in flight, then reads with the next lookup batch.
        """
        if not self._pendingAors.get(aor):
            return self._lookupNow(aor, now)
        return self._barrier().addCallback(lambda _: self._lookupNow(aor, now))

    def lookupMany(self, aors: Iterable[str], now: float) -> defer.Deferred[dict[str, list[Binding]]]:
        """
        See L{ILocationStore.lookupMany}.  Waits for the saves of any of
        C{aors} that are queued or in flight, then reads.
        """
        wanted = list(aors)
        if not any(self._pendingAors.get(aor) for aor in wanted):
            return self.store.lookupMany(wanted, now)
        return self._barrier().addCallback(lambda _: self.store.lookupMany(wanted, now))

    def save(self, bindings: Iterable[Binding]) -> defer.Deferred[None]:
        """
        See L{ILocationStore.save}.  The bindings join the batch that is
        filling.  Fires once the batch's statement has committed; fails
        with the batch's failure.
        """
        batch = list(bindings)
        if not batch:
            return defer.succeed(None)
        filling = self._filling
        if filling is None:
            filling = self._filling = _SaveBatch()
            self._queue.append(filling)
            filling.timer = self.clock.callLater(self.window, self._windowPassed, filling)
        waiter: defer.Deferred[None] = defer.Deferred()
        filling.waiters.append(waiter)
        filling.bindings.extend(batch)
        for binding in batch:
            aor = binding.aor
            if aor not in filling.aors:
                filling.aors.add(aor)
                self._pendingAors[aor] += 1
        if len(filling.bindings) >= self.maxBatch:
            self._closeFilling()
        return waiter

    def remove(self, ruids: Iterable[str]) -> defer.Deferred[int]:
        """
        See L{ILocationStore.remove}; runs after the saves called before it.
        """
        wanted = list(ruids)
        return self._write(lambda: self.store.remove(wanted))

    def removeConnections(self, serverId: int, conids: Iterable[int]) -> defer.Deferred[int]:
        """
        See L{ILocationStore.removeConnections}; runs after the saves called
        before it.
        """
        wanted = list(conids)
        return self._write(lambda: self.store.removeConnections(serverId, wanted))

    def removeExpired(self, now: float) -> defer.Deferred[list[Binding]]:
        """
        See L{ILocationStore.removeExpired}; runs after the saves called
        before it.
        """
        return self._write(lambda: self.store.removeExpired(now))

    def purgeServer(self, serverId: int, before: float) -> defer.Deferred[int]:
        """
        See L{ILocationStore.purgeServer}; runs after the saves called
        before it.
        """
        return self._write(lambda: self.store.purgeServer(serverId, before))

    # -- writes ------------------------------------------------------------------

    def _write(self, run: Callable[[], defer.Deferred[Any]]) -> defer.Deferred[Any]:
        if self._filling is not None:
            self._closeFilling()
        write = _Write(run)
        self._queue.append(write)
        self._pump()
        return write.result

    def _windowPassed(self, batch: _SaveBatch) -> None:
        batch.timer = None
        if batch is self._filling:
            self._closeFilling()

    def _closeFilling(self) -> None:
        """
        Stop the filling batch from taking more calls and send it as soon
        as the writes before it are done.
        """
        batch = self._filling
        if batch is None:
            return
        self._filling = None
        batch.ready = True
        if batch.timer is not None and batch.timer.active():
            batch.timer.cancel()
        batch.timer = None
        self._pump()

    def _pump(self) -> None:
        """
        Start the next write if none is running and it is ready.
        """
        if self._running is not None or not self._queue:
            return
        head = self._queue[0]
        if not head.ready:
            return
        self._queue.popleft()
        self._running = head
        if isinstance(head, _SaveBatch):
            d = self._sendBatch(head)
        else:
            d = self._runWrite(head)
        d.addBoth(self._finished)

    def _finished(self, ignored: object) -> None:
        self._running = None
        self._pump()

    def _runWrite(self, write: _Write) -> defer.Deferred[None]:
        d = defer.maybeDeferred(write.run)

        def done(result: Any) -> None:
            write.result.callback(result)

        def failed(f: Failure) -> None:
            write.result.errback(f)

        return d.addCallbacks(done, failed)

    def _sendBatch(self, batch: _SaveBatch) -> defer.Deferred[None]:
        self.stats["batches"] += 1
        self.stats["batchedSaves"] += len(batch.waiters)
        self.stats["batchedBindings"] += len(batch.bindings)
        d = defer.maybeDeferred(self.store.save, batch.bindings)

        def settle() -> None:
            for aor in batch.aors:
                left = self._pendingAors[aor] - 1
                if left > 0:
                    self._pendingAors[aor] = left
                else:
                    del self._pendingAors[aor]
            batch.done.callback(None)

        def committed(ignored: object) -> None:
            settle()
            for waiter in batch.waiters:
                waiter.callback(None)

        def failed(f: Failure) -> None:
            self.stats["failedBatches"] += 1
            settle()
            for waiter in batch.waiters:
                waiter.errback(f)

        return d.addCallbacks(committed, failed)

    def _barrier(self) -> defer.Deferred[None]:
        """
        Wait for every write queued or running now; the batch that is
        filling is sent at once.

        @return: a L{Deferred} firing with C{None}; it never fails.
        """
        if self._filling is not None:
            self._closeFilling()
        if self._running is None and not self._queue:
            return defer.succeed(None)
        return self._write(lambda: defer.succeed(None)).addCallback(lambda _: None)

    # -- lookups -----------------------------------------------------------------

    def _lookupNow(self, aor: str, now: float) -> defer.Deferred[list[Binding]]:
        if not self.batchLookups:
            return self.store.lookup(aor, now)
        if isinstance(now, bool) or not isinstance(now, (int, float)):
            return self.store.lookup(aor, now)
        batch = self._lookups
        if batch is None:
            batch = self._lookups = _LookupBatch()
            batch.timer = self.clock.callLater(self.window, self._flushLookups)
        d: defer.Deferred[list[Binding]] = defer.Deferred()
        batch.requests.append((aor, now, d))
        if len(batch.requests) >= self.maxBatch:
            self._flushLookups()
        return d

    def _flushLookups(self) -> None:
        batch = self._lookups
        if batch is None:
            return
        self._lookups = None
        if batch.timer is not None and batch.timer.active():
            batch.timer.cancel()
        requests = batch.requests
        self.stats["lookupBatches"] += 1
        self.stats["batchedLookups"] += len(requests)
        aors = sorted({aor for aor, _, _ in requests})
        earliest = min(now for _, now, _ in requests)
        d = defer.maybeDeferred(self.store.lookupMany, aors, earliest)

        def answered(found: dict[str, list[Binding]]) -> None:
            for aor, now, waiter in requests:
                waiter.callback([b for b in found.get(aor, ()) if not b.isExpired(now)])

        def failed(f: Failure) -> None:
            for _, _, waiter in requests:
                waiter.errback(f)

        d.addCallbacks(answered, failed)
