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
L{TimerQueues} provides L{ITimerQueue} (C{callLater} and C{seconds}, as
the reactor has them), and the transaction layer gives it to its
transactions in place of the reactor.  Its timers provide L{ITimer}:
C{cancel}, C{active} and C{getTime}; a timer keeps its delay.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from sipcore.interfaces import ITimer, ITimerQueue

__all__ = ["QueuedCall", "TimerQueues"]

#: The most distinct delays given queues; timers of any other delay go to
#: the reactor as they are.
MAX_QUEUES = 64


#: Cancelled timers a queue may hold (waiting behind a live one) before it
#: drops them all at once, when they are also more than half of it.
COMPACT_AFTER = 1024


@implementer(ITimer)
class QueuedCall:
    """
    One timer in a L{_DelayQueue}.  A cancelled timer drops its function
    and arguments at once.
    """

    __slots__ = ("time", "func", "args", "cancelled", "_queue")

    def __init__(self, time: float, func: Callable[..., Any], args: tuple[Any, ...],
                 queue: _DelayQueue) -> None:
        self.time = time
        self.func: Callable[..., Any] | None = func
        self.args = args
        self.cancelled = False
        self._queue = queue

    def getTime(self) -> float:
        return self.time

    def active(self) -> bool:
        return self.func is not None

    def cancel(self) -> None:
        """
        @raise AlreadyCancelled: if it was cancelled already.
        @raise AlreadyCalled: if it has fired.
        """
        if self.cancelled:
            raise AlreadyCancelled()
        if self.func is None:
            raise AlreadyCalled()
        self.func = None
        self.args = ()
        self.cancelled = True
        self._queue.cancelled()


@implementer(ITimer)
class _ReactorCall:
    """
    A timer the reactor runs itself (a L{DelayedCall}), as an L{ITimer}.
    """

    __slots__ = ("_call",)

    def __init__(self, call: IDelayedCall) -> None:
        self._call = call

    def getTime(self) -> float:
        return self._call.getTime()

    def active(self) -> bool:
        return self._call.active()

    def cancel(self) -> None:
        """
        @raise AlreadyCancelled: if it was cancelled already.
        @raise AlreadyCalled: if it has fired.
        """
        self._call.cancel()


class _DelayQueue:
    """
    The timers of one delay, in order of expiry, with one reactor call for
    the earliest.

    Timers started later expire later, so the queue is a FIFO; only a clock
    stepping back breaks that order.  The timers are therefore kept in
    I{segments}, each in order: a timer that would expire before the last
    one queued starts a new segment, and expiry takes the earliest front of
    any segment.  There is one segment unless the clock stepped back.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, delay: float) -> None:
        self._clock = clock
        self._delay = delay
        self._segments: list[deque[QueuedCall]] = []
        self._size = 0
        self._cancelled = 0
        self._call: IDelayedCall | None = None
        self._expiring = False

    def __len__(self) -> int:
        return self._size

    def entries(self) -> list[QueuedCall]:
        return [entry for segment in self._segments for entry in segment]

    def schedule(self, func: Callable[..., Any], args: tuple[Any, ...]) -> QueuedCall:
        when = self._clock.seconds() + self._delay
        entry = QueuedCall(when, func, args, self)
        segments = self._segments
        self._size += 1
        if segments and segments[-1] and segments[-1][-1].time <= when:
            # In order: the earliest timer, and so the reactor call, stay.
            segments[-1].append(entry)
            if self._call is None and not self._expiring:
                self._arm()
        else:
            segments.append(deque([entry]))
            if not self._expiring:
                self._arm()
        return entry

    def cancelled(self) -> None:
        """
        A timer was cancelled: drop the cancelled timers at the fronts (or
        all of them, when they are many), and the reactor call when no
        timer is left.
        """
        self._cancelled += 1
        if self._cancelled > COMPACT_AFTER and 2 * self._cancelled > self._size:
            self._compact()
        else:
            self._dropCancelledFronts()
        # The reactor call may come early (the front was dropped): it finds
        # nothing due and re-arms.  It must go when no timer is left.
        if not self._size and not self._expiring:
            self._arm()

    def _dropCancelledFronts(self) -> None:
        emptied = False
        for segment in self._segments:
            while segment and segment[0].cancelled:
                segment.popleft()
                self._size -= 1
                self._cancelled -= 1
            emptied = emptied or not segment
        if emptied:
            self._segments = [segment for segment in self._segments if segment]

    def _compact(self) -> None:
        self._segments = [
            kept for kept in (
                deque(entry for entry in segment if not entry.cancelled)
                for segment in self._segments
            ) if kept
        ]
        self._size = sum(len(segment) for segment in self._segments)
        self._cancelled = 0

    def _earliest(self) -> deque[QueuedCall] | None:
        best: deque[QueuedCall] | None = None
        for segment in self._segments:
            if segment and (best is None or segment[0].time < best[0].time):
                best = segment
        return best

    def _arm(self) -> None:
        """
        Have the reactor call L{_expire} when the earliest timer is due (and
        no reactor call when there is no timer).
        """
        segment = self._earliest()
        call = self._call
        if segment is None:
            if call is not None:
                if call.active():
                    call.cancel()
                self._call = None
            return
        due = segment[0].time
        if call is not None and call.active():
            if call.getTime() <= due:
                return
            call.cancel()
        self._call = self._clock.callLater(max(0.0, due - self._clock.seconds()), self._expire)

    def _expire(self) -> None:
        self._call = None
        now = self._clock.seconds()
        self._expiring = True
        try:
            while True:
                segment = self._earliest()
                if segment is None or segment[0].time > now:
                    break
                entry = segment.popleft()
                self._size -= 1
                if entry.cancelled:
                    self._cancelled -= 1
                    continue
                func = entry.func
                args = entry.args
                entry.func = None
                entry.args = ()
                try:
                    func(*args)  # type: ignore[misc]
                except Exception:
                    self._log.failure("a timer of {delay} s failed", delay=self._delay)
        finally:
            self._expiring = False
        self._dropCancelledFronts()
        self._arm()


@implementer(ITimerQueue)
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
                  **kwargs: object) -> ITimer:
        """
        Call C{callable(*args, **kwargs)} after C{delay} seconds.

        @return: the L{ITimer}.  Timers with keyword arguments, a delay of
            zero or less, or a delay beyond the first L{MAX_QUEUES}
            distinct ones go to the reactor as they are.
        """
        queue = self._queues.get(delay)
        if queue is None or kwargs:
            if kwargs or delay <= 0 or len(self._queues) >= MAX_QUEUES:
                return _ReactorCall(self.clock.callLater(delay, callable, *args, **kwargs))
            queue = self._queues[delay] = _DelayQueue(self.clock, delay)
        return queue.schedule(callable, args)

    def getDelayedCalls(self) -> list[ITimer]:
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
