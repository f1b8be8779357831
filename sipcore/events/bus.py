# -*- test-case-name: tests.test_bus -*-
"""
L{EventBus}: delivers connection events to handler plugins without ever
making the transport wait.

Each handler is isolated from the others and from the transport: its
exceptions and failed L{Deferred}s are caught, logged with its name and the
event, and counted; its slow L{Deferred}s are cancelled after a timeout; its
concurrency is bounded and the events beyond the bound wait in a bounded
FIFO of its own.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable, Protocol, Sequence

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sipcore.events._types import Event, conidOf
from sipcore.interfaces import IEventBus, ITimer
from sipcore.timers import TimerQueues

__all__ = ["EventBus", "HandlerStats", "Subscriber"]


class Subscriber(Protocol):
    """
    What L{EventBus.subscribe} takes, as a
    L{sipcore.plugin.EnabledHandler} has it.

    @ivar name: unique among the subscribers.
    @ivar events: the names of the events delivered to it.
    @ivar priority: lower is delivered to first (then by C{name}).
    @ivar timeout: seconds an invocation may take, or C{None} for the
        bus's default.
    @ivar concurrency: invocations in flight at once, or C{None} for the
        bus's default.
    @ivar backlog: events that may wait beyond C{concurrency}, or C{None}
        for the bus's default.
    """

    @property
    def name(self) -> str: ...

    @property
    def events(self) -> Sequence[str]: ...

    @property
    def priority(self) -> int: ...

    @property
    def timeout(self) -> float | None: ...

    @property
    def concurrency(self) -> int | None: ...

    @property
    def backlog(self) -> int | None: ...

    def handle(self, event: Any) -> Any:
        """
        Handle one event: C{None}, a L{Deferred} or a coroutine.
        """


@dataclass
class HandlerStats:
    """
    Counters and gauges of one subscribed handler.

    @ivar fired: invocations of C{handle} started.
    @ivar succeeded: invocations that returned or whose L{Deferred} fired.
    @ivar failed: invocations that raised or whose L{Deferred} failed.
    @ivar timedOut: invocations cancelled after the handler's timeout.
    @ivar queued: events that had to wait in the backlog (cumulative).
    @ivar dropped: events dropped because the backlog was full.
    @ivar running: invocations in flight now.
    @ivar waiting: events in the backlog now.
    """

    fired: int = 0
    succeeded: int = 0
    failed: int = 0
    timedOut: int = 0
    queued: int = 0
    dropped: int = 0
    running: int = 0
    waiting: int = 0


class _Done:
    """
    Counts the invocations of one C{fire} still outstanding and fires a
    L{Deferred} when none is left.
    """

    __slots__ = ("deferred", "outstanding")

    def __init__(self, outstanding: int) -> None:
        self.outstanding = outstanding
        self.deferred: Deferred[None] = Deferred()

    def one(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0:
            self.deferred.callback(None)


class _Subscription:
    """
    One subscribed handler, its limits, backlog and counters.
    """

    def __init__(
        self, handler: Subscriber, name: str, timeout: float, concurrency: int, backlog: int
    ) -> None:
        self.handler = handler
        self.name = name
        self.events = tuple(handler.events)
        self.priority = handler.priority
        self.timeout = timeout
        self.concurrency = concurrency
        self.backlog = backlog
        self.waiting: deque[tuple[Event, Callable[[], None]]] = deque()
        self.stats = HandlerStats()
        self.overflowing = False
        self.droppedInOverflow = 0
        self.pumping = False
        self.active = True

    def sortKey(self) -> tuple[int, str]:
        return (self.priority, self.name)


@implementer(IEventBus)
class EventBus:
    """
    Delivers each event to the handlers subscribed to its name, in order of
    C{priority} (lower first) then C{name}.

    Each subscriber's C{timeout} (seconds), C{concurrency} (invocations in
    flight) and C{backlog} (events that may wait beyond the concurrency)
    apply to it; where one is C{None} the bus's default does.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        defaultTimeout: float = 30.0,
        defaultConcurrency: int = 100,
        defaultBacklog: int = 10000,
    ) -> None:
        """
        @param clock: the C{IReactorTime} for the timeouts.
        @param defaultTimeout: seconds after which a handler's L{Deferred} is
            cancelled, for handlers whose C{timeout} is C{None}.
        @param defaultConcurrency: invocations of one handler in flight at a
            time, for handlers whose C{concurrency} is C{None}.
        @param defaultBacklog: events that may wait for one handler, for
            handlers whose C{backlog} is C{None}.
        """
        self._clock = clock
        # one reactor call per timeout value, not one per invocation: a
        # storm of close events starts thousands of invocations at once
        self._timers = TimerQueues(clock)
        self.defaultTimeout = defaultTimeout
        self.defaultConcurrency = defaultConcurrency
        self.defaultBacklog = defaultBacklog
        self._byName: dict[str, _Subscription] = {}
        self._byEvent: dict[str, list[_Subscription]] = {}
        self._drainWaiters: list[Deferred[None]] = []
        self._pending = 0

    # ------------------------------------------------------------------
    # Subscriptions

    def subscribe(self, handler: Subscriber) -> None:
        """
        Deliver the events named in C{handler.events} to C{handler.handle}.

        @param handler: the L{Subscriber}.
        @raise ValueError: if a handler of the same name is subscribed, or
            its C{timeout}, C{concurrency} or C{backlog} is out of range.
        """
        name = handler.name
        if name in self._byName:
            raise ValueError("a handler named {!r} is already subscribed".format(name))
        if isinstance(handler.events, str):
            raise ValueError(
                "handler {!r}: events must be a tuple of names, not the string {!r}".format(
                    name, handler.events
                )
            )
        timeout = float(self.defaultTimeout if handler.timeout is None else handler.timeout)
        concurrency = int(self.defaultConcurrency if handler.concurrency is None
                          else handler.concurrency)
        backlog = int(self.defaultBacklog if handler.backlog is None else handler.backlog)
        if timeout <= 0:
            raise ValueError("handler {!r}: timeout must be positive".format(name))
        if concurrency < 1:
            raise ValueError("handler {!r}: concurrency must be at least 1".format(name))
        if backlog < 0:
            raise ValueError("handler {!r}: backlog must not be negative".format(name))
        sub = _Subscription(handler, name, timeout, concurrency, backlog)
        self._byName[name] = sub
        for event in sub.events:
            subs = self._byEvent.setdefault(event, [])
            subs.append(sub)
            subs.sort(key=_Subscription.sortKey)

    def unsubscribe(self, handler: Subscriber) -> None:
        """
        Stop delivering events to C{handler}.  Invocations in flight run to
        their end; events waiting in its backlog are discarded (counted as
        dropped).  Unknown handlers are ignored.
        """
        sub = self._byName.get(handler.name)
        if sub is None or sub.handler is not handler:
            return
        del self._byName[sub.name]
        sub.active = False
        for event in sub.events:
            subs = self._byEvent.get(event, [])
            if sub in subs:
                subs.remove(sub)
            if not subs:
                self._byEvent.pop(event, None)
        discarded = len(sub.waiting)
        if discarded:
            self._log.warn(
                "handler {handler} unsubscribed with {count} events waiting: discarded",
                handler=sub.name,
                count=discarded,
            )
        while sub.waiting:
            _, done = sub.waiting.popleft()
            sub.stats.dropped += 1
            sub.stats.waiting -= 1
            self._pending -= 1
            done()
        self._checkDrained()

    # ------------------------------------------------------------------
    # Metrics

    def stats(self, name: str) -> HandlerStats:
        """
        The live counters of the handler called C{name}.

        @raise KeyError: if no such handler is subscribed.
        """
        return self._byName[name].stats

    def metrics(self) -> dict[str, dict[str, int]]:
        """
        A snapshot of every subscribed handler's counters, by name.
        """
        return {name: asdict(sub.stats) for name, sub in self._byName.items()}

    @property
    def pending(self) -> int:
        """
        Invocations in flight plus events waiting, over every handler.
        """
        return self._pending

    # ------------------------------------------------------------------
    # Delivery

    def fire(self, event: Event) -> Deferred[None]:
        """
        Deliver C{event} to every handler subscribed to C{event.name}.

        Returns at once and never raises.

        @return: a L{Deferred} firing with C{None} when every invocation for
            this event is done, failed, timed out or dropped; it never
            fails.
        """
        try:
            subs = list(self._byEvent.get(event.name, ()))
            if not subs:
                return succeed(None)
            done = _Done(len(subs))
            for sub in subs:
                self._deliver(sub, event, done.one)
            return done.deferred
        except BaseException:
            self._log.failure("bus: bug delivering {event!r}", event=event)
            return succeed(None)

    def _deliver(self, sub: _Subscription, event: Event, done: Callable[[], None]) -> None:
        """
        Start an invocation, or queue the event, or drop it.
        """
        startNow = sub.stats.running < sub.concurrency and not sub.waiting
        if startNow or len(sub.waiting) < sub.backlog:
            if sub.overflowing:
                sub.overflowing = False
                self._log.info(
                    "handler {handler} accepts events again; {count} events were dropped",
                    handler=sub.name,
                    count=sub.droppedInOverflow,
                )
                sub.droppedInOverflow = 0
            self._pending += 1
            if startNow:
                self._start(sub, event, done)
                return
            sub.waiting.append((event, done))
            sub.stats.queued += 1
            sub.stats.waiting += 1
            return
        sub.stats.dropped += 1
        sub.droppedInOverflow += 1
        if not sub.overflowing:
            sub.overflowing = True
            self._log.error(
                "handler {handler} is overloaded ({running} running, {backlog} waiting): "
                "dropping events, first {event} for conid {conid}",
                handler=sub.name,
                running=sub.stats.running,
                backlog=sub.backlog,
                event=event.name,
                conid=conidOf(event),
            )
        done()

    def _start(self, sub: _Subscription, event: Event, done: Callable[[], None]) -> None:
        """
        Call the handler and track what it returns.
        """
        sub.stats.running += 1
        sub.stats.fired += 1
        finished = False
        timer: ITimer | None = None

        def finish() -> None:
            nonlocal finished
            finished = True
            if timer is not None and timer.active():
                timer.cancel()
            sub.stats.running -= 1
            self._pending -= 1
            try:
                done()
            finally:
                self._pump(sub)
                self._checkDrained()

        def succeeded(result: object) -> None:
            if finished:
                return
            sub.stats.succeeded += 1
            finish()

        def failed(failure: Failure) -> None:
            if finished:
                # Cancelled after the timeout, or failed after it: already
                # counted and reported.
                return
            sub.stats.failed += 1
            self._log.error(
                "handler {handler} failed on {event} for conid {conid}: {error}",
                handler=sub.name,
                event=event.name,
                conid=conidOf(event),
                error=failure.getErrorMessage(),
                log_failure=failure,
            )
            finish()

        def timedOut() -> None:
            nonlocal timer
            timer = None
            sub.stats.timedOut += 1
            self._log.error(
                "handler {handler} timed out after {timeout}s on {event} for conid {conid}; "
                "cancelled",
                handler=sub.name,
                timeout=sub.timeout,
                event=event.name,
                conid=conidOf(event),
            )
            finish()
            try:
                d.cancel()
            except Exception:
                self._log.failure("bus: handler {handler}'s canceller raised", handler=sub.name)

        d = maybeDeferred(sub.handler.handle, event)
        d.addCallbacks(succeeded, failed)
        d.addErrback(self._swallow, sub.name)
        if not finished:
            timer = self._timers.callLater(sub.timeout, timedOut)

    def _swallow(self, failure: Failure, name: str) -> None:
        if failure.check(CancelledError):
            return
        self._log.failure(
            "bus: bug handling the result of handler {handler}", failure, handler=name
        )

    def _pump(self, sub: _Subscription) -> None:
        """
        Start waiting events while the handler has room.  Iterative, so a
        long backlog of synchronous invocations does not recurse.
        """
        if sub.pumping:
            return
        sub.pumping = True
        try:
            while sub.waiting and sub.stats.running < sub.concurrency:
                event, done = sub.waiting.popleft()
                sub.stats.waiting -= 1
                self._start(sub, event, done)
        finally:
            sub.pumping = False

    # ------------------------------------------------------------------
    # Shutdown

    def drain(self) -> Deferred[None]:
        """
        Wait for every invocation in flight and every waiting event.

        @return: a L{Deferred} firing with C{None} when nothing is pending
            (at once if nothing is); it never fails.
        """
        if self.pending == 0:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drainWaiters.append(d)
        return d

    def _checkDrained(self) -> None:
        if self._drainWaiters and self.pending == 0:
            waiters, self._drainWaiters = self._drainWaiters, []
            for waiter in waiters:
                waiter.callback(None)
