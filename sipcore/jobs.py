# -*- test-case-name: tests.test_jobs -*-
"""
L{JobQueue}: bounded, batched, retried work that must not be lost.

A handler puts keyed work (for example the connection ids whose bindings
must be deleted) and returns at once.  The queue hands batches of it to a
runner (for example one parameterized C{DELETE ... = ANY(%s)} through
txpostgres).  When the runner fails, the work stays queued and the queue
retries with exponential backoff and jitter until the runner succeeds
again; it never spins and never blocks.  Everything is bounded and visible
in L{JobQueue.metrics}.

Time comes from the injected clock (C{IReactorTime}); the module never
imports the reactor.
"""

from __future__ import annotations

import random as _random
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from sipcore.metrics import LatencyHistogram, Metric, gaugeFamily, histogramFamily

__all__ = ["JobQueue", "JobQueueCollector"]

#: The type of a runner: takes a C{list} of items, returns a L{Deferred}.
Runner = Callable[[list[Any]], Any]


@dataclass
class _Entry:
    """
    One queued piece of work.

    @ivar item: the newest item put for the key.
    @ivar since: clock time at which the key was first put (its age).
    @ivar attempts: how many batches holding this item have failed.
    """

    item: Any
    since: float
    attempts: int = 0


class JobQueue:
    """
    A bounded queue of keyed items handed in batches to a runner, retried
    with backoff while the runner fails.

    Items are keyed: putting a key that is already waiting replaces its item
    but keeps its place and age.  Batches take the oldest items first, one
    batch in flight at a time.  A failed batch stays queued at the front
    and is retried after C{initialBackoff * 2 ** (failures - 1)} seconds
    (capped at C{maxBackoff}), reduced by a random fraction of at most
    C{jitter}.

    @ivar name: the queue's name, used in logs and metrics.
    @ivar batches: batches that succeeded.
    @ivar retries: batches run again after a failure.
    @ivar failures: batches that failed.
    @ivar dropped: items refused by L{put} (queue full or stopped).
    @ivar abandoned: items dropped after C{maxAttempts} failed attempts.
    @ivar processed: items handed to a batch that succeeded.
    @ivar lastError: the message of the last failed batch's error, or
        C{None} when no batch failed yet.
    @ivar latency: a L{LatencyHistogram} of the seconds from an item's
        first L{put} to the success of its batch.
    """

    _log = Logger()

    def __init__(
        self,
        name: str,
        runner: Runner,
        clock: IReactorTime,
        batchSize: int = 100,
        maxSize: int = 100000,
        batchDelay: float = 0.0,
        initialBackoff: float = 0.5,
        maxBackoff: float = 30.0,
        jitter: float = 0.25,
        maxAttempts: int | None = None,
        random: _random.Random | None = None,
        batchTimeout: float | None = None,
    ) -> None:
        """
        @param name: the queue's name, unique among queues.
        @param runner: callable taking a C{list} of items and returning a
            L{Deferred} (or a plain value for success); a failure or an
            exception keeps the items queued for retry.
        @param clock: the C{IReactorTime} used for every timer.
        @param batchSize: the most items handed to one runner call.
        @param maxSize: the most items held (waiting and in flight); past
            it L{put} refuses new keys.
        @param batchDelay: seconds to wait before running a batch once items
            are waiting (C{0}: the next reactor turn), letting a burst of
            puts share one batch.
        @param initialBackoff: seconds before the first retry.
        @param maxBackoff: the longest wait between retries.
        @param jitter: the largest fraction (C{0 <= jitter < 1}) by which a
            retry delay is randomly shortened.
        @param maxAttempts: failed attempts after which an item is
            abandoned; C{None} retries forever.
        @param random: a L{random.Random} for the jitter (tests inject a
            seeded one).
        @param batchTimeout: seconds after which a runner call that has not
            finished is cancelled and counted as a failure; C{None} waits
            for ever.
        @raise ValueError: for an option out of range.
        """
        if batchSize < 1:
            raise ValueError("batchSize must be at least 1, not {!r}".format(batchSize))
        if maxSize < 1:
            raise ValueError("maxSize must be at least 1, not {!r}".format(maxSize))
        if batchDelay < 0:
            raise ValueError("batchDelay must not be negative, not {!r}".format(batchDelay))
        if initialBackoff <= 0 or maxBackoff < initialBackoff:
            raise ValueError(
                "need 0 < initialBackoff <= maxBackoff, not {!r} and {!r}".format(
                    initialBackoff, maxBackoff
                )
            )
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1), not {!r}".format(jitter))
        if maxAttempts is not None and maxAttempts < 1:
            raise ValueError("maxAttempts must be None or at least 1, not {!r}".format(maxAttempts))
        if batchTimeout is not None and batchTimeout <= 0:
            raise ValueError("batchTimeout must be None or positive, not {!r}".format(batchTimeout))
        self.name = name
        self._runner = runner
        self._clock = clock
        self.batchSize = batchSize
        self.maxSize = maxSize
        self.batchDelay = batchDelay
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.jitter = jitter
        self.maxAttempts = maxAttempts
        self.batchTimeout = batchTimeout
        self._random = random if random is not None else _random.Random()

        self.batches = 0
        self.retries = 0
        self.failures = 0
        self.dropped = 0
        self.abandoned = 0
        self.processed = 0
        self.lastError: str | None = None
        self.latency = LatencyHistogram()

        self._waiting: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._inFlight: list[tuple[Hashable, _Entry]] = []
        self._batchDeferred: Deferred[Any] | None = None
        self._batchTimer: IDelayedCall | None = None
        self._timer: IDelayedCall | None = None
        self._timerIsRetry = False
        self._consecutiveFailures = 0
        self._failingSince: float | None = None
        self._full = False
        self._refusedWhileFull = 0
        self._started = False
        self._stopping = False
        self._stopped = False
        self._refusedAfterStop = False
        self._deadlineTimer: IDelayedCall | None = None
        self._stopWaiters: list[Deferred[int]] = []
        self._stopResult: int | None = None

    # ------------------------------------------------------------------
    # Metrics

    @property
    def depth(self) -> int:
        """
        Items held: waiting plus in flight.
        """
        return len(self._waiting) + len(self._inFlight)

    @property
    def oldestAge(self) -> float:
        """
        Seconds since the oldest held item was first put (C{0.0} when
        empty).
        """
        oldest = None
        if self._inFlight:
            oldest = min(entry.since for _, entry in self._inFlight)
        if self._waiting:
            first = next(iter(self._waiting.values())).since
            oldest = first if oldest is None else min(oldest, first)
        if oldest is None:
            return 0.0
        return max(0.0, self._clock.seconds() - oldest)

    @property
    def failing(self) -> bool:
        """
        C{True} while the last batch failed and no batch has succeeded since.
        """
        return self._failingSince is not None

    def metrics(self) -> dict[str, Any]:
        """
        A snapshot of the queue's counters and gauges.

        @return: a C{dict} with C{name}, C{depth}, C{oldestAge}, C{batches},
            C{retries}, C{failures}, C{dropped}, C{abandoned},
            C{processed}, C{failing}, C{full}, C{stopped} and
            C{lastError}.
        """
        return {
            "name": self.name,
            "depth": self.depth,
            "oldestAge": self.oldestAge,
            "batches": self.batches,
            "retries": self.retries,
            "failures": self.failures,
            "dropped": self.dropped,
            "abandoned": self.abandoned,
            "processed": self.processed,
            "failing": self.failing,
            "full": self._full,
            "stopped": self._stopping,
            "lastError": self.lastError,
        }

    # ------------------------------------------------------------------
    # Putting work

    def put(self, key: Hashable, item: Any = None) -> bool:
        """
        Queue C{item} under C{key}.  Returns at once.

        A key already waiting keeps its place and age; its item is replaced
        by the new one.  A new key is refused when the queue holds
        C{maxSize} items or L{stop} was called.

        @param key: a hashable key (for example a connection id).
        @param item: what the runner receives; defaults to C{key}.
        @return: C{True} if the item is queued, C{False} if it was refused
            (counted in C{dropped} and logged once per state change).
        """
        if item is None:
            item = key
        if self._stopping:
            self.dropped += 1
            if not self._refusedAfterStop:
                self._refusedAfterStop = True
                self._log.warn("job queue {queue} is stopped: refusing new items", queue=self.name)
            return False
        existing = self._waiting.get(key)
        if existing is not None:
            existing.item = item
            existing.attempts = 0
            return True
        if self.depth >= self.maxSize:
            self.dropped += 1
            self._refusedWhileFull += 1
            if not self._full:
                self._full = True
                self._log.error(
                    "job queue {queue} is full ({maxSize} items): refusing new items "
                    "until it drains",
                    queue=self.name,
                    maxSize=self.maxSize,
                )
            return False
        self._waiting[key] = _Entry(item, self._clock.seconds())
        self._schedule()
        return True

    # ------------------------------------------------------------------
    # Life cycle

    def start(self) -> None:
        """
        Start running batches (items put before are kept and run now).

        @raise RuntimeError: if the queue was stopped.
        """
        if self._stopping:
            raise RuntimeError("job queue {} was stopped and cannot start again".format(self.name))
        if self._started:
            return
        self._started = True
        self._schedule()

    def stop(self, deadline: float = 10.0) -> Deferred[int]:
        """
        Stop accepting items and drain: wait for the batch in flight and keep
        running batches (with the usual backoff after a failure) until the
        queue is empty or C{deadline} seconds have passed.  At the deadline
        the batch in flight, if any, is cancelled.

        @param deadline: the longest time to drain, in seconds.
        @return: a L{Deferred} firing with the C{int} number of items left
            undone (C{0} when drained); it never fails.  A warning names
            how many were left.  Calling it again returns the same result.
        """
        d: Deferred[int] = Deferred()
        if self._stopped:
            assert self._stopResult is not None
            return succeed(self._stopResult)
        self._stopWaiters.append(d)
        if self._stopping:
            return d
        self._stopping = True
        self._started = True
        if self._full:
            self._leaveFull()
        if self.depth == 0:
            self._finishStop()
            return d
        self._deadlineTimer = self._clock.callLater(deadline, self._deadlinePassed, deadline)
        self._schedule()
        return d

    def _deadlinePassed(self, deadline: float) -> None:
        """
        The stop deadline passed with work left: give up on it.
        """
        self._deadlineTimer = None
        self._log.warn(
            "job queue {queue} stopped after {deadline}s with {left} items left undone",
            queue=self.name,
            deadline=deadline,
            left=self.depth,
        )
        self._finishStop()

    def _finishStop(self) -> None:
        """
        Cancel every timer, fire the stop waiters with the number of items
        left, and cancel the batch in flight.
        """
        left = self.depth
        self._stopped = True
        self._stopResult = left
        if self._deadlineTimer is not None:
            if self._deadlineTimer.active():
                self._deadlineTimer.cancel()
            self._deadlineTimer = None
        self._cancelTimer()
        waiters, self._stopWaiters = self._stopWaiters, []
        for waiter in waiters:
            waiter.callback(left)
        if self._batchDeferred is not None:
            self._batchDeferred.cancel()

    # ------------------------------------------------------------------
    # Batches

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _schedule(self, delay: float | None = None, retry: bool = False) -> None:
        """
        Arrange for the next batch if one is due: items waiting, started,
        nothing in flight, no timer pending.

        @param delay: seconds to wait; C{None} means C{batchDelay}.
        @param retry: whether the batch is a retry after a failure.
        """
        if (
            self._stopped
            or not self._started
            or self._batchDeferred is not None
            or self._timer is not None
            or not self._waiting
        ):
            return
        if delay is None:
            delay = self.batchDelay
        self._timerIsRetry = retry
        self._timer = self._clock.callLater(delay, self._runBatch)

    def _runBatch(self) -> None:
        """
        Hand the oldest waiting items to the runner.
        """
        self._timer = None
        if self._timerIsRetry:
            self.retries += 1
            self._timerIsRetry = False
        if self._stopped or self._batchDeferred is not None or not self._waiting:
            return
        batch: list[tuple[Hashable, _Entry]] = []
        while self._waiting and len(batch) < self.batchSize:
            batch.append(self._waiting.popitem(last=False))
        self._inFlight = batch
        items = [entry.item for _, entry in batch]
        d = maybeDeferred(self._runner, items)
        # Set before the callbacks are added: a runner that finishes
        # synchronously runs them at once.
        self._batchDeferred = d
        if self.batchTimeout is not None:
            self._batchTimer = self._clock.callLater(self.batchTimeout, d.cancel)
        d.addCallbacks(self._batchSucceeded, self._batchFailed)
        d.addErrback(self._bug)

    def _endBatch(self) -> list[tuple[Hashable, _Entry]]:
        """
        Forget the batch in flight and its timeout.

        @return: the batch's keys and entries.
        """
        if self._batchTimer is not None:
            if self._batchTimer.active():
                self._batchTimer.cancel()
            self._batchTimer = None
        batch, self._inFlight = self._inFlight, []
        self._batchDeferred = None
        return batch

    def _batchSucceeded(self, result: object) -> None:
        batch = self._endBatch()
        self.batches += 1
        self.processed += len(batch)
        now = self._clock.seconds()
        for _, entry in batch:
            self.latency.observe(max(0.0, now - entry.since))
        if self._failingSince is not None:
            retried = sum(1 for _, entry in batch if entry.attempts > 0)
            self._log.info(
                "job queue {queue} recovered after {failures} failed batches in "
                "{outage:.1f}s; {retried} items retried successfully, {depth} waiting",
                queue=self.name,
                failures=self._consecutiveFailures,
                outage=self._clock.seconds() - self._failingSince,
                retried=retried,
                depth=self.depth,
            )
            self._failingSince = None
        self._consecutiveFailures = 0
        self._afterBatch()

    def _batchFailed(self, failure: Failure) -> None:
        batch = self._endBatch()
        self.failures += 1
        self.lastError = failure.getErrorMessage() or repr(failure.value)
        if self._stopped:
            # Cancelled at the stop deadline: keep the items (they were
            # reported as left) and do nothing else.
            self._restore(batch, countAttempt=False)
            return
        self._consecutiveFailures += 1
        if self._failingSince is None:
            self._failingSince = self._clock.seconds()
            self._log.error(
                "job queue {queue}: a batch of {count} items failed; keeping them "
                "and retrying with backoff: {error}",
                queue=self.name,
                count=len(batch),
                error=repr(failure.value),
            )
        self._restore(batch, countAttempt=True)
        self._afterBatch(self._backoff())

    def _restore(self, batch: list[tuple[Hashable, _Entry]], countAttempt: bool) -> None:
        """
        Put a failed batch back at the front of the queue, keeping its
        order and ages.  A key that was put again meanwhile keeps the newer
        item, at the old place and age.  Items that failed C{maxAttempts}
        times are abandoned.
        """
        abandoned = 0
        for key, entry in reversed(batch):
            newer = self._waiting.pop(key, None)
            if newer is not None:
                newer.since = min(newer.since, entry.since)
                entry = newer
            elif countAttempt:
                entry.attempts += 1
                if self.maxAttempts is not None and entry.attempts >= self.maxAttempts:
                    abandoned += 1
                    continue
            self._waiting[key] = entry
            self._waiting.move_to_end(key, last=False)
        if abandoned:
            self.abandoned += abandoned
            self._log.error(
                "job queue {queue} abandoned {count} items after {attempts} failed attempts",
                queue=self.name,
                count=abandoned,
                attempts=self.maxAttempts,
            )

    def _backoff(self) -> float:
        """
        The delay before the next retry.
        """
        exponent = min(self._consecutiveFailures - 1, 62)
        base = min(self.maxBackoff, self.initialBackoff * (2.0**exponent))
        return base * (1.0 - self.jitter * self._random.random())

    def _afterBatch(self, delay: float | None = None) -> None:
        """
        After a batch: leave the full state if there is room, finish a stop
        when empty, else schedule the next batch.
        """
        if self._full and self.depth < self.maxSize:
            self._leaveFull()
        if self._stopping and self.depth == 0:
            if not self._stopped:
                self._finishStop()
            return
        self._schedule(delay, retry=delay is not None)

    def _leaveFull(self) -> None:
        self._full = False
        self._log.info(
            "job queue {queue} has room again ({depth} items); {refused} items were "
            "refused while it was full",
            queue=self.name,
            depth=self.depth,
            refused=self._refusedWhileFull,
        )
        self._refusedWhileFull = 0

    def _bug(self, failure: Failure) -> None:
        self._log.failure("job queue {queue}: bug in batch handling", failure, queue=self.name)


class JobQueueCollector:
    """
    The figures of job queues: the counters and gauges of
    L{JobQueue.metrics} (as C{sipcore_jobqueue}), the depth, and the
    latency from put to done.
    """

    def __init__(self, queues: Iterable[JobQueue]) -> None:
        """
        @param queues: the queues, read at each collection (handlers make
            theirs when they are made).
        """
        self._queues = queues

    def collect(self) -> list[Metric]:
        queues = sorted(self._queues, key=lambda queue: queue.name)
        counters = [
            ([queue.name, key], float(value))
            for queue in queues
            for key, value in sorted(queue.metrics().items())
            if isinstance(value, (bool, int, float))
        ]
        return [
            gaugeFamily("sipcore_jobqueue", "Job queue counters and gauges.",
                        ["queue", "counter"], counters),
            gaugeFamily("sipcore_jobqueue_depth", "Items held by a job queue (waiting and in "
                        "flight).", ["queue"], [([queue.name], queue.depth) for queue in queues]),
            histogramFamily("sipcore_jobqueue_latency_seconds",
                            "Seconds from an item's first put to the success of its batch.",
                            ["queue"], [([queue.name], queue.latency) for queue in queues]),
        ]
