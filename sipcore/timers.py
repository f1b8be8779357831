# -*- test-case-name: tests.test_timers -*-
"""
Transaction timers in queues of one delay each.

A SIP server runs a few timers per transaction, always with one of a
handful of fixed delays (T1 multiples, 64*T1, T4, ...).  Scheduling each
with the reactor's C{callLater} costs a L{DelayedCall} (and its bound
methods, argument tuple and keyword dict, all tracked by the garbage
collector) and a heap insertion per timer; with tens of thousands of
transactions alive (Timer J keeps each UDP transaction for 32 s) that is
most of what the collector has to walk.

Timers of one delay expire in the order they were started, so each delay
needs only a FIFO queue and one reactor call for its earliest timer.
L{TimerQueues} offers C{callLater} and C{seconds} like the reactor, and the
transaction layer gives it to its transactions in place of the reactor.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

__all__ = ["QueuedCall", "TimerQueues"]

#: The most distinct delays given queues; timers of any other delay go to
#: the reactor as they are.
MAX_QUEUES = 64


@implementer(IDelayedCall)
class QueuedCall:
    """
    One timer in a L{_DelayQueue}: C{cancel()} and C{active()} as for a
    L{DelayedCall}.  A cancelled timer drops its function and arguments at
    once; its empty entry leaves the queue when it reaches the front.
    """

    __slots__ = ("time", "func", "args", "_queue")

    def __init__(self, time: float, func: Callable[..., Any], args: tuple[Any, ...],
                 queue: _DelayQueue) -> None:
        self.time = time
        self.func: Callable[..., Any] | None = func
        self.args = args
        self._queue = queue

    def getTime(self) -> float:
        return self.time

    def active(self) -> bool:
        return self.func is not None

    def cancel(self) -> None:
        if self.func is None:
            raise ValueError("the timer has already fired or been cancelled")
        self.func = None
        self.args = ()
        self._queue.cancelled()

    def delay(self, secondsLater: float) -> None:
        raise NotImplementedError("queued timers keep their delay")

    def reset(self, secondsFromNow: float) -> None:
        raise NotImplementedError("queued timers keep their delay")


class _DelayQueue:
    """
    The timers of one delay, in order of expiry, with one reactor call for
    the front one.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, delay: float) -> None:
        self._clock = clock
        self._delay = delay
        self._entries: deque[QueuedCall] = deque()
        self._call: IDelayedCall | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[QueuedCall]:
        return list(self._entries)

    def schedule(self, func: Callable[..., Any], args: tuple[Any, ...]) -> QueuedCall:
        when = self._clock.seconds() + self._delay
        entries = self._entries
        if entries and when < entries[-1].time:
            # The clock went back: never expire before the timers already
            # queued, which keeps the queue in order.
            when = entries[-1].time
        entry = QueuedCall(when, func, args, self)
        entries.append(entry)
        if self._call is None:
            self._call = self._clock.callLater(self._delay, self._expire)
        return entry

    def cancelled(self) -> None:
        """
        A timer was cancelled: drop the cancelled ones at the front, and
        the reactor call when none is left.
        """
        entries = self._entries
        while entries and entries[0].func is None:
            entries.popleft()
        if not entries and self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _expire(self) -> None:
        self._call = None
        now = self._clock.seconds()
        entries = self._entries
        while entries and entries[0].time <= now:
            entry = entries.popleft()
            func = entry.func
            if func is None:
                continue
            args = entry.args
            entry.func = None
            entry.args = ()
            try:
                func(*args)
            except Exception:
                self._log.failure("a timer of {delay} s failed", delay=self._delay)
        while entries and entries[0].func is None:
            entries.popleft()
        if entries and self._call is None:
            self._call = self._clock.callLater(max(0.0, entries[0].time - now), self._expire)


@implementer(IReactorTime)
class TimerQueues:
    """
    C{callLater} and C{seconds} over a reactor, keeping the timers of each
    delay in one queue.

    @ivar clock: the reactor (or L{twisted.internet.task.Clock}).
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._queues: dict[float, _DelayQueue] = {}

    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(self, delay: float, callable: Callable[..., Any], *args: object,
                  **kwargs: object) -> IDelayedCall:
        """
        Call C{callable(*args, **kwargs)} after C{delay} seconds.

        @return: an L{IDelayedCall} whose C{cancel} and C{active} work;
            C{delay} and C{reset} are not supported on queued timers.
            Timers with keyword arguments, a delay of zero or less, or a
            delay beyond the first L{MAX_QUEUES} distinct ones go to the
            reactor as they are.
        """
        queue = self._queues.get(delay)
        if queue is None or kwargs:
            if kwargs or delay <= 0 or len(self._queues) >= MAX_QUEUES:
                return self.clock.callLater(delay, callable, *args, **kwargs)
            queue = self._queues[delay] = _DelayQueue(self.clock, delay)
        return queue.schedule(callable, args)

    def getDelayedCalls(self) -> list[IDelayedCall]:
        """
        The queued timers still active (not those handed to the reactor).
        """
        return [entry for queue in self._queues.values() for entry in queue.entries()
                if entry.active()]

    def pending(self) -> int:
        """
        Timers queued, cancelled ones not yet dropped included.
        """
        return sum(len(queue) for queue in self._queues.values())
