# -*- test-case-name: tests.test_timers -*-
"""
Tests for L{sipcore.timers}.
"""

from __future__ import annotations

from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipcore.interfaces import ITimer, ITimerQueue
from sipcore.timers import COMPACT_AFTER, MAX_QUEUES, TimerQueues


class TimerQueuesTests(SynchronousTestCase):
    """
    L{TimerQueues.callLater} fires timers as the reactor would, with one
    reactor call per delay.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.queues = TimerQueues(self.clock)
        self.fired: list[object] = []

    def test_interfaces(self) -> None:
        """
        L{TimerQueues} provides L{ITimerQueue}; its timers, queued or run by
        the reactor, provide L{ITimer}, with the time they fire at.
        """
        self.assertTrue(verifyObject(ITimerQueue, self.queues))
        queued = self.queues.callLater(5, self.fired.append, "a")
        direct = self.queues.callLater(0, self.fired.append, "b")
        for timer, due in ((queued, 5.0), (direct, 0.0)):
            self.assertTrue(verifyObject(ITimer, timer))
            self.assertEqual((timer.getTime(), timer.active()), (due, True))
        direct.cancel()
        self.assertFalse(direct.active())
        self.assertRaises(AlreadyCancelled, direct.cancel)
        self.clock.advance(5)
        self.assertEqual(self.fired, ["a"])

    def test_firesInOrder(self) -> None:
        """
        Timers of one delay fire at their own time, in the order started,
        with their arguments; one reactor call serves them all.
        """
        self.queues.callLater(5, self.fired.append, "a")
        self.clock.advance(1)
        self.queues.callLater(5, self.fired.append, "b")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(3.9)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.1)
        self.assertEqual(self.fired, ["a"])
        self.clock.advance(0.9)
        self.assertEqual(self.fired, ["a"])
        self.clock.advance(0.1)
        self.assertEqual(self.fired, ["a", "b"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_delaysApart(self) -> None:
        """
        Timers of different delays interleave by their expiry time.
        """
        self.queues.callLater(3, self.fired.append, "long")
        self.queues.callLater(1, self.fired.append, "short")
        self.clock.advance(1)
        self.assertEqual(self.fired, ["short"])
        self.clock.advance(2)
        self.assertEqual(self.fired, ["short", "long"])

    def test_cancel(self) -> None:
        """
        A cancelled timer does not fire and is no longer active; once
        every timer is cancelled no reactor call is left.
        """
        first = self.queues.callLater(5, self.fired.append, "a")
        second = self.queues.callLater(5, self.fired.append, "b")
        second.cancel()
        self.assertFalse(second.active())
        self.assertTrue(first.active())
        self.clock.advance(5)
        self.assertEqual(self.fired, ["a"])
        self.assertFalse(first.active())
        third = self.queues.callLater(5, self.fired.append, "c")
        third.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.queues.pending(), 0)
        self.assertRaises(AlreadyCancelled, third.cancel)
        self.assertRaises(AlreadyCalled, first.cancel)

    def test_cancelledReleaseArguments(self) -> None:
        """
        A cancelled timer drops its function and arguments at once, even
        while its entry waits behind a live one.
        """
        self.queues.callLater(5, self.fired.append, "a")
        call = self.queues.callLater(5, self.fired.append, object())
        call.cancel()
        self.assertEqual(call.args, ())  # type: ignore[attr-defined]
        self.assertEqual(self.queues.pending(), 2)
        self.assertEqual(len(self.queues.getDelayedCalls()), 1)

    def test_failureDoesNotStopOthers(self) -> None:
        """
        A timer that raises is logged; the timers after it still fire.
        """
        def boom() -> None:
            raise RuntimeError("boom")

        self.queues.callLater(1, boom)
        self.queues.callLater(1, self.fired.append, "after")
        self.clock.advance(1)
        self.assertEqual(self.fired, ["after"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_startedFromATimer(self) -> None:
        """
        A timer started while the queue fires is queued behind and fires
        one delay later.
        """
        def again() -> None:
            self.fired.append(self.clock.seconds())
            if len(self.fired) < 3:
                self.queues.callLater(2, again)

        self.queues.callLater(2, again)
        self.clock.pump([1] * 7)
        self.assertEqual(self.fired, [2, 4, 6])

    def test_tooManyDelays(self) -> None:
        """
        Beyond L{MAX_QUEUES} distinct delays, and for a zero delay, timers
        go to the reactor directly; they fire all the same.
        """
        for i in range(MAX_QUEUES + 3):
            self.queues.callLater(1 + i / 1000, self.fired.append, i)
        self.queues.callLater(0, self.fired.append, "now")
        self.clock.advance(2)
        self.assertEqual(sorted(x for x in self.fired if x != "now"),
                         list(range(MAX_QUEUES + 3)))
        self.assertIn("now", self.fired)

    def test_keywordArguments(self) -> None:
        """
        A timer with keyword arguments goes to the reactor and fires with
        them.
        """
        got: list[object] = []
        self.queues.callLater(1, lambda **kw: got.append(kw), a=1)
        self.clock.advance(1)
        self.assertEqual(got, [{"a": 1}])

    def test_startedWhileExpiringKeepsOthersOnTime(self) -> None:
        """
        A timer started by a timer of the same delay as it fires does not
        hold back the timers already queued behind the one that fired.
        """
        def first() -> None:
            self.fired.append(("first", self.clock.seconds()))
            self.queues.callLater(5, lambda: self.fired.append(("third", self.clock.seconds())))

        self.queues.callLater(5, first)
        self.clock.advance(3)
        self.queues.callLater(5, lambda: self.fired.append(("second", self.clock.seconds())))
        self.clock.pump([1] * 10)
        self.assertEqual(self.fired, [("first", 5), ("second", 8), ("third", 10)])

    def test_clockStepsBack(self) -> None:
        """
        After the clock steps back, a new timer fires one delay after it
        was started (not after the timers started before the step), and
        those still fire at their own time.
        """
        self.clock.advance(1000)
        self.queues.callLater(30, self.fired.append, "before")
        self.clock.rightNow -= 600
        self.queues.callLater(30, self.fired.append, "after")
        self.clock.advance(30)
        self.assertEqual(self.fired, ["after"])
        self.clock.advance(600)
        self.assertEqual(self.fired, ["after", "before"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelledCompacted(self) -> None:
        """
        Cancelled timers waiting behind a live one are dropped once they
        are many and most of the queue.
        """
        live = self.queues.callLater(64, self.fired.append, "live")
        calls = [self.queues.callLater(64, self.fired.append, n) for n in range(2 * COMPACT_AFTER)]
        for call in calls:
            call.cancel()
        self.assertLess(self.queues.pending(), COMPACT_AFTER + 2)
        self.assertTrue(live.active())
        self.clock.advance(64)
        self.assertEqual(self.fired, ["live"])
        self.assertEqual(self.queues.pending(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
