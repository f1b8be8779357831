# -*- test-case-name: tests.test_jobs -*-
"""
Tests for L{sipcore.jobs.JobQueue}.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from sipcore.jobs import JobQueue
from sipcore.testing import LogCapture


class DatabaseAway(Exception):
    """
    The runner's database is unreachable.
    """


class RecordingRunner:
    """
    A runner that records its calls and answers with Deferreds the test
    fires, or with a fixed result.

    @ivar calls: the item lists it was called with.
    @ivar pending: the Deferreds it returned that have not fired.
    @ivar mode: C{"manual"} (return an unfired Deferred), C{"succeed"} or
        C{"fail"}.
    """

    def __init__(self, mode: str = "manual") -> None:
        self.calls: list[list[Any]] = []
        self.pending: list[Deferred[None]] = []
        self.mode = mode

    def __call__(self, items: list[Any]) -> Deferred[None]:
        self.calls.append(list(items))
        if self.mode == "succeed":
            return succeed(None)
        if self.mode == "fail":
            return fail(DatabaseAway("database away"))
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d

    def succeedNext(self) -> None:
        self.pending.pop(0).callback(None)

    def failNext(self) -> None:
        self.pending.pop(0).errback(DatabaseAway("database away"))


def makeQueue(
    case: SynchronousTestCase, runner: Any = None, **kwargs: Any
) -> tuple[JobQueue, Clock, RecordingRunner]:
    clock = Clock()
    runner = runner if runner is not None else RecordingRunner()
    kwargs.setdefault("random", random.Random(1))
    queue = JobQueue("test", runner, clock, **kwargs)
    return queue, clock, runner


class PutTests(SynchronousTestCase):
    """
    Putting items: collapse, default item, bound.
    """

    def test_itemDefaultsToKey(self) -> None:
        """
        C{put(key)} queues the key itself as the item.
        """
        queue, clock, runner = makeQueue(self)
        queue.start()
        self.assertTrue(queue.put(7))
        clock.advance(0)
        self.assertEqual(runner.calls, [[7]])

    def test_duplicateKeysCollapse(self) -> None:
        """
        Putting a waiting key again replaces its item but keeps its place
        and age.
        """
        queue, clock, runner = makeQueue(self)
        queue.put("a", "a1")
        clock.advance(5)
        queue.put("b", "b1")
        queue.put("a", "a2")
        self.assertEqual(queue.depth, 2)
        self.assertEqual(queue.oldestAge, 5.0)
        queue.start()
        clock.advance(0)
        self.assertEqual(runner.calls, [["a2", "b1"]])

    def test_oldestFirstInBatches(self) -> None:
        """
        Batches take at most C{batchSize} items, oldest first.
        """
        queue, clock, runner = makeQueue(self, batchSize=2)
        for key in range(5):
            queue.put(key)
        queue.start()
        clock.advance(0)
        self.assertEqual(runner.calls, [[0, 1]])
        runner.succeedNext()
        clock.advance(0)
        runner.succeedNext()
        clock.advance(0)
        self.assertEqual(runner.calls, [[0, 1], [2, 3], [4]])

    def test_boundRefusesAndCounts(self) -> None:
        """
        Past C{maxSize} a new key is refused and counted; a waiting key can
        still be replaced.
        """
        queue, clock, runner = makeQueue(self, maxSize=2)
        self.assertTrue(queue.put(1))
        self.assertTrue(queue.put(2))
        self.assertFalse(queue.put(3))
        self.assertFalse(queue.put(4))
        self.assertTrue(queue.put(1, "newer"))
        self.assertEqual(queue.dropped, 2)
        self.assertEqual(queue.depth, 2)

    def test_fullLoggedOncePerStateChange(self) -> None:
        """
        Becoming full logs one error however many items are refused, and
        having room again logs one info line with the number refused.
        """
        logs = LogCapture(self, "sipcore.jobs")
        queue, clock, runner = makeQueue(self, maxSize=2)
        queue.start()
        queue.put(1)
        queue.put(2)
        for key in range(3, 13):
            queue.put(key)
        errors = logs.at(LogLevel.error)
        self.assertEqual(len(errors), 1)
        self.assertIn("full", errors[0]["log_format"])
        clock.advance(0)
        runner.succeedNext()
        infos = [e for e in logs.at(LogLevel.info) if "room again" in e["log_format"]]
        self.assertEqual(len(infos), 1)
        self.assertEqual(infos[0]["refused"], 10)
        self.assertTrue(queue.put(99))
        self.assertEqual(len(logs.at(LogLevel.error)), 1)

    def test_inFlightCountsTowardBound(self) -> None:
        """
        Items in flight count toward C{maxSize}.
        """
        queue, clock, runner = makeQueue(self, maxSize=2)
        queue.start()
        queue.put(1)
        queue.put(2)
        clock.advance(0)
        self.assertEqual(len(runner.pending), 1)
        self.assertFalse(queue.put(3))
        self.assertEqual(queue.depth, 2)

    def test_invalidOptions(self) -> None:
        """
        Options out of range raise L{ValueError}.
        """
        clock = Clock()
        invalid: list[dict[str, Any]] = [
            {"batchSize": 0},
            {"maxSize": 0},
            {"batchDelay": -1},
            {"initialBackoff": 0},
            {"initialBackoff": 5, "maxBackoff": 1},
            {"jitter": 1.0},
            {"jitter": -0.1},
            {"maxAttempts": 0},
            {"batchTimeout": 0},
        ]
        for kwargs in invalid:
            self.assertRaises(ValueError, JobQueue, "q", RecordingRunner(), clock, **kwargs)


class BatchTests(SynchronousTestCase):
    """
    Running batches.
    """

    def test_nothingBeforeStart(self) -> None:
        """
        Items put before L{JobQueue.start} wait; start runs them on the next
        reactor turn.
        """
        queue, clock, runner = makeQueue(self)
        queue.put(1)
        clock.advance(100)
        self.assertEqual(runner.calls, [])
        queue.start()
        self.assertEqual(runner.calls, [])
        clock.advance(0)
        self.assertEqual(runner.calls, [[1]])

    def test_batchDelayGathersBurst(self) -> None:
        """
        With C{batchDelay}, items put during the delay share one batch.
        """
        queue, clock, runner = makeQueue(self, batchDelay=1.0)
        queue.start()
        queue.put(1)
        clock.advance(0.5)
        queue.put(2)
        self.assertEqual(runner.calls, [])
        clock.advance(0.5)
        self.assertEqual(runner.calls, [[1, 2]])

    def test_oneBatchInFlight(self) -> None:
        """
        While a batch is in flight no other batch starts.
        """
        queue, clock, runner = makeQueue(self, batchSize=1)
        queue.start()
        queue.put(1)
        queue.put(2)
        clock.advance(0)
        clock.advance(100)
        self.assertEqual(runner.calls, [[1]])
        runner.succeedNext()
        clock.advance(0)
        self.assertEqual(runner.calls, [[1], [2]])

    def test_successCounts(self) -> None:
        """
        A successful batch removes its items and counts C{batches} and
        C{processed}.
        """
        queue, clock, runner = makeQueue(self, runner=RecordingRunner("succeed"))
        queue.start()
        queue.put(1)
        queue.put(2)
        clock.advance(0)
        self.assertEqual(queue.depth, 0)
        self.assertEqual(queue.batches, 1)
        self.assertEqual(queue.processed, 2)
        self.assertEqual(queue.failures, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_runnerReturningPlainValue(self) -> None:
        """
        A runner that returns a non-Deferred succeeds.
        """
        calls: list[list[int]] = []
        queue, clock, _ = makeQueue(self, runner=calls.append)
        queue.start()
        queue.put(1)
        clock.advance(0)
        self.assertEqual(calls, [[1]])
        self.assertEqual(queue.processed, 1)

    def test_runnerRaisingIsFailure(self) -> None:
        """
        A runner that raises is a failed batch: the items stay queued.
        """

        def runner(items: list[Any]) -> None:
            raise DatabaseAway("boom")

        queue, clock, _ = makeQueue(self, runner=runner)
        queue.start()
        queue.put(1)
        clock.advance(0)
        self.assertEqual(queue.failures, 1)
        self.assertEqual(queue.depth, 1)
        self.flushLoggedErrors(DatabaseAway)

    def test_metrics(self) -> None:
        """
        L{JobQueue.metrics} reports every counter and gauge.
        """
        queue, clock, runner = makeQueue(self)
        queue.start()
        queue.put(1)
        clock.advance(3)
        m = queue.metrics()
        self.assertEqual(m["name"], "test")
        self.assertEqual(m["depth"], 1)
        self.assertEqual(m["oldestAge"], 3.0)
        for key in ("batches", "retries", "failures", "dropped", "abandoned", "processed"):
            self.assertEqual(m[key], 0, key)
        self.assertFalse(m["failing"])
        self.assertIsNone(m["lastError"])


class FailureTests(SynchronousTestCase):
    """
    Failed batches: retry, backoff, jitter, recovery, abandon.
    """

    def test_failedItemsStayAtFrontWithAge(self) -> None:
        """
        A failed batch's items go back to the front, keeping their age.
        """
        queue, clock, runner = makeQueue(self, batchSize=2, jitter=0.0)
        queue.start()
        queue.put(1)
        queue.put(2)
        clock.advance(0)
        clock.advance(1)
        queue.put(3)
        runner.failNext()
        self.assertEqual(queue.depth, 3)
        self.assertEqual(queue.oldestAge, 1.0)
        clock.advance(0.5)
        self.assertEqual(runner.calls[-1], [1, 2])
        self.assertEqual(queue.retries, 1)
        self.assertEqual(queue.metrics()["lastError"], "database away")
        self.flushLoggedErrors(DatabaseAway)

    def test_newerItemWinsAfterFailure(self) -> None:
        """
        An item put for a key while that key's batch was in flight wins when
        the batch fails, at the old place.
        """
        queue, clock, runner = makeQueue(self, batchSize=2, jitter=0.0)
        queue.start()
        queue.put("a", "a1")
        queue.put("b", "b1")
        clock.advance(0)
        queue.put("c", "c1")
        queue.put("a", "a2")
        runner.failNext()
        self.assertEqual(queue.depth, 3)
        clock.advance(0.5)
        self.assertEqual(runner.calls[-1], ["a2", "b1"])
        self.flushLoggedErrors(DatabaseAway)

    def test_newerItemSurvivesSuccess(self) -> None:
        """
        An item put for a key while that key's batch was in flight is new
        work: the batch's success does not remove it.
        """
        queue, clock, runner = makeQueue(self)
        queue.start()
        queue.put("a", "a1")
        clock.advance(0)
        queue.put("a", "a2")
        runner.succeedNext()
        clock.advance(0)
        self.assertEqual(runner.calls, [["a1"], ["a2"]])

    def test_backoffGrowsAndCaps(self) -> None:
        """
        Without jitter, retry delays double from C{initialBackoff} up to
        C{maxBackoff}.
        """
        queue, clock, runner = makeQueue(
            self, runner=RecordingRunner("fail"), initialBackoff=0.5, maxBackoff=4.0, jitter=0.0
        )
        queue.start()
        queue.put(1)
        clock.advance(0)
        delays = []
        for _ in range(7):
            (call,) = clock.getDelayedCalls()
            delay = call.getTime() - clock.seconds()
            delays.append(delay)
            clock.advance(delay)
        self.assertEqual(delays, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0])
        self.assertEqual(queue.failures, 8)
        self.assertEqual(queue.retries, 7)
        self.flushLoggedErrors(DatabaseAway)

    def test_jitterRange(self) -> None:
        """
        With jitter, each delay lies in C{[base * (1 - jitter), base]}, and
        they are not all equal.
        """
        queue, clock, runner = makeQueue(
            self,
            runner=RecordingRunner("fail"),
            initialBackoff=1.0,
            maxBackoff=8.0,
            jitter=0.25,
            random=random.Random(42),
        )
        queue.start()
        queue.put(1)
        clock.advance(0)
        delays = []
        bases = [1.0, 2.0, 4.0] + [8.0] * 20
        for base in bases:
            (call,) = clock.getDelayedCalls()
            delay = call.getTime() - clock.seconds()
            self.assertTrue(base * 0.75 <= delay <= base, (base, delay))
            delays.append(delay)
            clock.advance(delay)
        self.assertGreater(len(set(delays[3:])), 1)
        self.flushLoggedErrors(DatabaseAway)

    def test_noSpinning(self) -> None:
        """
        While the runner fails, it is called a bounded number of times over
        simulated time: about once per backoff period, never in a loop.
        """
        runner = RecordingRunner("fail")
        queue, clock, _ = makeQueue(
            self, runner=runner, initialBackoff=0.5, maxBackoff=30.0, jitter=0.25
        )
        queue.start()
        for key in range(10):
            queue.put(key)
        for _ in range(600):
            clock.advance(1.0)
        # 0.5 .. 30 s backoff: at most 8 calls for the first 64 s, then at
        # most one per 22.5 s for the remaining time.
        self.assertLessEqual(len(runner.calls), 8 + 600 // 22)
        self.assertGreaterEqual(len(runner.calls), 600 // 30)
        self.assertEqual(queue.depth, 10)
        self.flushLoggedErrors(DatabaseAway)

    def test_failureLoggedOnceAndRecoveryLogged(self) -> None:
        """
        The first failure logs one error naming the error (without a
        traceback: a database away is no bug); later failures
        log nothing; the first success logs one info line with the number of
        items retried; the backoff resets.
        """
        logs = LogCapture(self, "sipcore.jobs")
        queue, clock, runner = makeQueue(self, jitter=0.0, initialBackoff=1.0)
        queue.start()
        queue.put(1)
        queue.put(2)
        clock.advance(0)
        runner.failNext()
        clock.advance(1)
        runner.failNext()
        clock.advance(2)
        runner.failNext()
        errors = logs.at(LogLevel.error)
        self.assertEqual(len(errors), 1)
        self.assertNotIn("log_failure", errors[0])
        self.assertIn("DatabaseAway", errors[0]["error"])
        self.assertTrue(queue.failing)
        clock.advance(4)
        queue.put(3)
        runner.succeedNext()
        infos = [e for e in logs.at(LogLevel.info) if "recovered" in e["log_format"]]
        self.assertEqual(len(infos), 1)
        self.assertEqual(infos[0]["retried"], 2)
        self.assertEqual(infos[0]["failures"], 3)
        self.assertFalse(queue.failing)
        self.assertEqual(queue.failures, 3)
        self.assertEqual(queue.retries, 3)
        self.assertEqual(queue.processed, 2)
        # Next batch after success uses batchDelay, not backoff.
        clock.advance(0)
        self.assertEqual(runner.calls[-1], [3])
        runner.failNext()
        (call,) = clock.getDelayedCalls()
        self.assertEqual(call.getTime() - clock.seconds(), 1.0)
        self.assertEqual(len(logs.at(LogLevel.error)), 2)
        self.assertEqual(self.flushLoggedErrors(DatabaseAway), [])

    def test_putDuringBackoffDoesNotRunEarly(self) -> None:
        """
        Putting items while waiting out a backoff does not start a batch
        early.
        """
        queue, clock, runner = makeQueue(self, jitter=0.0, initialBackoff=5.0)
        queue.start()
        queue.put(1)
        clock.advance(0)
        runner.failNext()
        queue.put(2)
        clock.advance(4.9)
        self.assertEqual(len(runner.calls), 1)
        clock.advance(0.1)
        self.assertEqual(runner.calls[-1], [1, 2])
        self.flushLoggedErrors(DatabaseAway)

    def test_maxAttemptsAbandons(self) -> None:
        """
        With C{maxAttempts}, items that failed that many times are dropped,
        counted as C{abandoned} and logged; the others keep going.
        """
        logs = LogCapture(self, "sipcore.jobs")
        queue, clock, runner = makeQueue(self, jitter=0.0, maxAttempts=2, batchSize=1)
        queue.start()
        queue.put(1)
        queue.put(2)
        clock.advance(0)
        runner.failNext()
        clock.advance(0.5)
        self.assertEqual(runner.calls, [[1], [1]])
        runner.failNext()
        self.assertEqual(queue.abandoned, 1)
        self.assertEqual(queue.depth, 1)
        abandon = [e for e in logs.at(LogLevel.error) if "abandoned" in e["log_format"]]
        self.assertEqual(len(abandon), 1)
        self.assertEqual(abandon[0]["count"], 1)
        clock.advance(1.0)
        self.assertEqual(runner.calls[-1], [2])
        runner.succeedNext()
        self.assertEqual(queue.depth, 0)
        self.flushLoggedErrors(DatabaseAway)

    def test_batchTimeoutCancels(self) -> None:
        """
        With C{batchTimeout}, a runner call that hangs is cancelled and
        counts as a failure; its items are retried.
        """
        queue, clock, runner = makeQueue(self, batchTimeout=10.0, jitter=0.0)
        queue.start()
        queue.put(1)
        clock.advance(0)
        clock.advance(10)
        self.assertEqual(queue.failures, 1)
        self.assertEqual(queue.depth, 1)
        clock.advance(0.5)
        self.assertEqual(len(runner.calls), 2)
        cancelled = runner.pending.pop(0)
        self.assertTrue(cancelled.called)
        runner.succeedNext()
        self.assertEqual(queue.depth, 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.flushLoggedErrors(CancelledError)


class StopTests(SynchronousTestCase):
    """
    Stopping and draining.
    """

    def test_stopEmpty(self) -> None:
        """
        Stopping an empty queue fires with 0 at once and leaves no timer.
        """
        queue, clock, runner = makeQueue(self)
        queue.start()
        self.assertEqual(self.successResultOf(queue.stop()), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopDrains(self) -> None:
        """
        Stop waits for the batch in flight and runs the remaining batches,
        then fires with 0.
        """
        queue, clock, runner = makeQueue(self, batchSize=1)
        queue.start()
        queue.put(1)
        queue.put(2)
        clock.advance(0)
        d = queue.stop(deadline=10)
        self.assertNoResult(d)
        runner.succeedNext()
        clock.advance(0)
        self.assertNoResult(d)
        runner.succeedNext()
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(runner.calls, [[1], [2]])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopRetriesWithinDeadline(self) -> None:
        """
        During stop, a failed batch is retried after its backoff, within
        the deadline.
        """
        queue, clock, runner = makeQueue(self, jitter=0.0, initialBackoff=1.0)
        queue.start()
        queue.put(1)
        clock.advance(0)
        d = queue.stop(deadline=10)
        runner.failNext()
        clock.advance(1)
        runner.succeedNext()
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.flushLoggedErrors(DatabaseAway)

    def test_stopDeadline(self) -> None:
        """
        When the deadline passes, stop fires with the number of items left,
        logs a warning naming it, cancels the batch in flight and leaves no
        timer.
        """
        logs = LogCapture(self, "sipcore.jobs")
        queue, clock, runner = makeQueue(self, batchSize=2)
        queue.start()
        for key in range(3):
            queue.put(key)
        clock.advance(0)
        d = queue.stop(deadline=5)
        clock.advance(4.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), 3)
        warnings = [e for e in logs.at(LogLevel.warn) if "left" in e["log_format"]]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["left"], 3)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(runner.pending[0].called, True)
        self.assertEqual(logs.at(LogLevel.error), [])

    def test_stopDeadlineWhileFailing(self) -> None:
        """
        A queue whose runner keeps failing stops at the deadline with its
        items left and no timer.
        """
        queue, clock, runner = makeQueue(self, runner=RecordingRunner("fail"))
        queue.start()
        queue.put(1)
        queue.put(2)
        clock.advance(0)
        d = queue.stop(deadline=10)
        for _ in range(20):
            clock.advance(1)
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(clock.getDelayedCalls(), [])
        calls = len(runner.calls)
        clock.advance(100)
        self.assertEqual(len(runner.calls), calls)
        self.flushLoggedErrors(DatabaseAway)

    def test_putAfterStopRefused(self) -> None:
        """
        After stop, put refuses items and counts them, logging once.
        """
        logs = LogCapture(self, "sipcore.jobs")
        queue, clock, runner = makeQueue(self)
        queue.start()
        self.successResultOf(queue.stop())
        self.assertFalse(queue.put(1))
        self.assertFalse(queue.put(2))
        self.assertEqual(queue.dropped, 2)
        self.assertEqual(queue.depth, 0)
        self.assertEqual(
            len([e for e in logs.at(LogLevel.warn) if "stopped" in e["log_format"]]), 1
        )
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopTwice(self) -> None:
        """
        Calling stop again gives the same result.
        """
        queue, clock, runner = makeQueue(self)
        queue.start()
        queue.put(1)
        clock.advance(0)
        d1 = queue.stop()
        d2 = queue.stop()
        runner.succeedNext()
        self.assertEqual(self.successResultOf(d1), 0)
        self.assertEqual(self.successResultOf(d2), 0)
        self.assertEqual(self.successResultOf(queue.stop()), 0)

    def test_stopWithoutStartDrains(self) -> None:
        """
        Stopping a queue that was never started still runs its items.
        """
        queue, clock, runner = makeQueue(self, runner=RecordingRunner("succeed"))
        queue.put(1)
        d = queue.stop()
        clock.advance(0)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_startAfterStop(self) -> None:
        """
        A stopped queue cannot start again.
        """
        queue, clock, runner = makeQueue(self)
        self.successResultOf(queue.stop())
        self.assertRaises(RuntimeError, queue.start)
