# -*- test-case-name: tests.test_bus -*-
"""
Tests for L{sipcore.events.bus.EventBus}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipcore.events import TCP_CLOSED, TCP_CONNECTED, ConnectionEvent
from sipcore.events.bus import EventBus, HandlerStats
from sipcore.interfaces import IEventBus
from sipcore.testing import LogCapture, connectionEvent


class HandlerBroke(Exception):
    """
    A handler failed on purpose.
    """


def makeEvent(name: str = TCP_CLOSED, conid: int = 1) -> ConnectionEvent:
    """
    A closed connection's event, its remote port told by C{conid}.
    """
    return connectionEvent(name, conid, remote=("127.0.0.1", 40000 + conid), time=1000.0,
                           reason="peer closed", duration=1.5)


class RecordingHandler:
    """
    A handler that records events and answers as told.

    @ivar mode: C{"sync"} (return C{None}), C{"raise"}, C{"fail"} (failed
        Deferred) or C{"manual"} (an unfired Deferred kept in C{pending}).
    """

    def __init__(
        self,
        name: str,
        events: tuple[str, ...] = (TCP_CLOSED,),
        priority: int = 100,
        mode: str = "sync",
        log: list[str] | None = None,
        timeout: float | None = None,
        concurrency: int | None = None,
        backlog: int | None = None,
    ) -> None:
        self.name = name
        self.description = "test handler " + name
        self.events = events
        self.priority = priority
        self.apiVersion = 1
        self.mode = mode
        self.received: list[ConnectionEvent] = []
        self.pending: list[Deferred[None]] = []
        self.cancelled = 0
        self.log = log
        self.timeout = timeout
        self.concurrency = concurrency
        self.backlog = backlog

    def start(self, context: object) -> None:
        pass

    def stop(self) -> None:
        pass

    def handle(self, event: ConnectionEvent) -> Deferred[None] | None:
        self.received.append(event)
        if self.log is not None:
            self.log.append(self.name)
        if self.mode == "raise":
            raise HandlerBroke(self.name)
        if self.mode == "fail":
            return fail(HandlerBroke(self.name))
        if self.mode == "manual":

            def cancel(d: Deferred[None]) -> None:
                self.cancelled += 1

            d: Deferred[None] = Deferred(cancel)
            self.pending.append(d)
            return d
        return None


class InterfaceTests(SynchronousTestCase):
    """
    L{EventBus} provides L{IEventBus}.
    """

    def test_verifyObject(self) -> None:
        """
        L{EventBus} instances provide L{IEventBus}.
        """
        self.assertTrue(verifyObject(IEventBus, EventBus(Clock())))


class DeliveryTests(SynchronousTestCase):
    """
    Delivery and ordering.
    """

    def test_deliversToSubscribersOfEvent(self) -> None:
        """
        An event reaches the handlers subscribed to its name and no other.
        """
        bus = EventBus(Clock())
        closed = RecordingHandler("closed", events=(TCP_CLOSED,))
        connected = RecordingHandler("connected", events=(TCP_CONNECTED,))
        bus.subscribe(closed)
        bus.subscribe(connected)
        event = makeEvent(TCP_CLOSED)
        self.assertIsNone(self.successResultOf(bus.fire(event)))
        self.assertEqual(closed.received, [event])
        self.assertEqual(connected.received, [])

    def test_noSubscribers(self) -> None:
        """
        Firing an event nobody handles returns a fired Deferred.
        """
        bus = EventBus(Clock())
        self.assertIsNone(self.successResultOf(bus.fire(makeEvent())))

    def test_orderByPriorityThenName(self) -> None:
        """
        Handlers of one event are called by priority (lower first), then by
        name, whatever the subscription order.
        """
        bus = EventBus(Clock())
        calls: list[str] = []
        for name, priority in [("zeta", 10), ("beta", 50), ("alpha", 50), ("first", 1)]:
            bus.subscribe(RecordingHandler(name, priority=priority, log=calls))
        bus.fire(makeEvent())
        self.assertEqual(calls, ["first", "zeta", "alpha", "beta"])

    def test_duplicateName(self) -> None:
        """
        Subscribing two handlers with the same name raises L{ValueError}.
        """
        bus = EventBus(Clock())
        bus.subscribe(RecordingHandler("a"))
        self.assertRaises(ValueError, bus.subscribe, RecordingHandler("a"))

    def test_invalidOptions(self) -> None:
        """
        A handler with a non-positive timeout or concurrency, a negative
        backlog, or a string for C{events} is refused.
        """
        bus = EventBus(Clock())
        invalid: list[dict[str, Any]] = [
            {"timeout": 0}, {"concurrency": 0}, {"backlog": -1}, {"events": TCP_CLOSED}]
        for options in invalid:
            self.assertRaises(ValueError, bus.subscribe, RecordingHandler("x", **options))

    def test_unsubscribe(self) -> None:
        """
        After unsubscribe the handler receives nothing.
        """
        bus = EventBus(Clock())
        handler = RecordingHandler("a")
        bus.subscribe(handler)
        bus.unsubscribe(handler)
        bus.fire(makeEvent())
        self.assertEqual(handler.received, [])
        self.assertRaises(KeyError, bus.stats, "a")

    def test_fireNeverRaises(self) -> None:
        """
        Firing something that is not an event does not raise; the bug is
        logged and the returned Deferred fires.
        """
        bus = EventBus(Clock())
        self.assertIsNone(self.successResultOf(bus.fire(object())))  # type: ignore[arg-type]
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)

    def test_nonePerHandlerOptionsUseDefaults(self) -> None:
        """
        A handler whose C{timeout} is C{None} gets the bus default.
        """
        clock = Clock()
        bus = EventBus(clock, defaultTimeout=7.0)
        handler = RecordingHandler("a", mode="manual", timeout=None)
        bus.subscribe(handler)
        bus.fire(makeEvent())
        (call,) = clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 7.0)
        handler.pending[0].callback(None)
        self.assertEqual(clock.getDelayedCalls(), [])


class IsolationTests(SynchronousTestCase):
    """
    One handler's trouble never reaches the transport or the others.
    """

    def test_raisingHandlerIsolated(self) -> None:
        """
        A handler that raises is logged with its name, the event and the
        conid, and counted; the others still get the event; fire's Deferred
        succeeds.
        """
        logs = LogCapture(self, "sipcore.events.bus")
        bus = EventBus(Clock())
        bad = RecordingHandler("bad", priority=1, mode="raise")
        good = RecordingHandler("good", priority=2)
        bus.subscribe(bad)
        bus.subscribe(good)
        d = bus.fire(makeEvent(conid=42))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(good.received), 1)
        self.assertEqual(bus.stats("bad").failed, 1)
        self.assertEqual(bus.stats("good").succeeded, 1)
        (error,) = logs.at(LogLevel.error)
        self.assertEqual(error["handler"], "bad")
        self.assertEqual(error["event"], TCP_CLOSED)
        self.assertEqual(error["conid"], 42)
        self.assertIsInstance(error["log_failure"].value, HandlerBroke)
        self.assertEqual(len(self.flushLoggedErrors(HandlerBroke)), 1)

    def test_failedDeferredIsolated(self) -> None:
        """
        A handler whose Deferred fails is counted and logged; the others are
        not affected.
        """
        bus = EventBus(Clock())
        bad = RecordingHandler("bad", priority=1, mode="fail")
        good = RecordingHandler("good", priority=2)
        bus.subscribe(bad)
        bus.subscribe(good)
        self.assertIsNone(self.successResultOf(bus.fire(makeEvent())))
        self.assertEqual(bus.stats("bad"), HandlerStats(fired=1, failed=1))
        self.assertEqual(bus.stats("good"), HandlerStats(fired=1, succeeded=1))
        self.assertEqual(len(self.flushLoggedErrors(HandlerBroke)), 1)

    def test_hangingHandlerDoesNotDelayOthers(self) -> None:
        """
        A handler that never finishes does not delay the next handler, nor
        later events to the other handlers.
        """
        bus = EventBus(Clock())
        slow = RecordingHandler("slow", priority=1, mode="manual")
        fast = RecordingHandler("fast", priority=2)
        bus.subscribe(slow)
        bus.subscribe(fast)
        d1 = bus.fire(makeEvent(conid=1))
        d2 = bus.fire(makeEvent(conid=2))
        self.assertEqual([e.conid for e in fast.received], [1, 2])
        self.assertEqual([e.conid for e in slow.received], [1, 2])
        self.assertNoResult(d1)
        self.assertNoResult(d2)
        self.assertEqual(bus.pending, 2)
        slow.pending[0].callback(None)
        self.assertIsNone(self.successResultOf(d1))
        self.assertNoResult(d2)

    def test_timeoutCancels(self) -> None:
        """
        A handler's Deferred is cancelled after its timeout; the timeout is
        counted and logged, and fire's Deferred then succeeds.
        """
        logs = LogCapture(self, "sipcore.events.bus")
        clock = Clock()
        bus = EventBus(clock, defaultTimeout=30.0)
        slow = RecordingHandler("slow", mode="manual", timeout=5.0)
        bus.subscribe(slow)
        d = bus.fire(makeEvent(conid=9))
        clock.advance(4.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(slow.cancelled, 1)
        self.assertEqual(bus.stats("slow").timedOut, 1)
        self.assertEqual(bus.stats("slow").failed, 0)
        self.assertEqual(bus.stats("slow").running, 0)
        (error,) = logs.at(LogLevel.error)
        self.assertEqual((error["handler"], error["conid"]), ("slow", 9))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_defaultTimeout(self) -> None:
        """
        A handler without a C{timeout} attribute gets the bus default.
        """
        clock = Clock()
        bus = EventBus(clock, defaultTimeout=30.0)
        slow = RecordingHandler("slow", mode="manual")
        bus.subscribe(slow)
        d = bus.fire(makeEvent())
        clock.advance(29)
        self.assertNoResult(d)
        clock.advance(1)
        self.successResultOf(d)
        self.assertEqual(bus.stats("slow").timedOut, 1)

    def test_noTimerLeak(self) -> None:
        """
        A Deferred that fires before its timeout cancels the timer.
        """
        clock = Clock()
        bus = EventBus(clock)
        handler = RecordingHandler("a", mode="manual")
        bus.subscribe(handler)
        bus.fire(makeEvent())
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        handler.pending[0].callback(None)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(bus.stats("a").succeeded, 1)

    def test_synchronousHandlerNoTimer(self) -> None:
        """
        A handler that returns at once leaves no timer behind.
        """
        clock = Clock()
        bus = EventBus(clock)
        bus.subscribe(RecordingHandler("a"))
        bus.fire(makeEvent())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_chainedDeferredTimesOut(self) -> None:
        """
        A handler returning a fired Deferred that waits on another one is
        still subject to its timeout.
        """
        clock = Clock()
        bus = EventBus(clock)
        inner: Deferred[None] = Deferred()

        class Chained(RecordingHandler):
            def handle(self, event: ConnectionEvent) -> Deferred[None]:
                return succeed(None).addCallback(lambda _: inner)

        bus.subscribe(Chained("c", timeout=3.0))
        d = bus.fire(makeEvent())
        self.assertNoResult(d)
        clock.advance(3)
        self.successResultOf(d)
        self.assertEqual(bus.stats("c").timedOut, 1)

    def test_coroutineHandler(self) -> None:
        """
        A handler written with C{async def} is awaited like a Deferred.
        """
        bus = EventBus(Clock())
        gate: Deferred[None] = Deferred()

        class Async(RecordingHandler):
            async def handle(self, event: ConnectionEvent) -> None:  # type: ignore[override]
                await gate

        bus.subscribe(Async("async"))
        d = bus.fire(makeEvent())
        self.assertNoResult(d)
        gate.callback(None)
        self.successResultOf(d)
        self.assertEqual(bus.stats("async").succeeded, 1)


class ConcurrencyTests(SynchronousTestCase):
    """
    Per-handler concurrency limit and backlog.
    """

    def test_concurrencyLimitQueuesFifo(self) -> None:
        """
        Beyond C{concurrency}, events wait in a FIFO and start as running
        invocations finish.
        """
        bus = EventBus(Clock())
        handler = RecordingHandler("a", mode="manual", concurrency=2)
        bus.subscribe(handler)
        ds = [bus.fire(makeEvent(conid=n)) for n in range(1, 6)]
        self.assertEqual([e.conid for e in handler.received], [1, 2])
        stats = bus.stats("a")
        self.assertEqual((stats.running, stats.waiting, stats.queued), (2, 3, 3))
        self.assertEqual(bus.pending, 5)
        handler.pending.pop(0).callback(None)
        self.assertEqual([e.conid for e in handler.received], [1, 2, 3])
        self.successResultOf(ds[0])
        self.assertNoResult(ds[2])
        while handler.pending:
            handler.pending.pop(0).callback(None)
        self.assertEqual([e.conid for e in handler.received], [1, 2, 3, 4, 5])
        for d in ds:
            self.successResultOf(d)
        self.assertEqual(bus.pending, 0)

    def test_backlogOverflowDropsAndLogsOnce(self) -> None:
        """
        Beyond the backlog, events are dropped and counted; the overload is
        logged once when it starts and once when there is room again.
        """
        logs = LogCapture(self, "sipcore.events.bus")
        bus = EventBus(Clock())
        handler = RecordingHandler("a", mode="manual", concurrency=1, backlog=2)
        other = RecordingHandler("other")
        bus.subscribe(handler)
        bus.subscribe(other)
        ds = [bus.fire(makeEvent(conid=n)) for n in range(1, 11)]
        stats = bus.stats("a")
        self.assertEqual((stats.running, stats.waiting, stats.dropped), (1, 2, 7))
        self.assertEqual(len(other.received), 10)
        errors = logs.at(LogLevel.error)
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["handler"], "a")
        # Dropped events do not hold up fire's Deferred.
        self.successResultOf(ds[9])
        self.assertNoResult(ds[0])
        handler.pending.pop(0).callback(None)
        bus.fire(makeEvent(conid=11))
        infos = [e for e in logs.at(LogLevel.info) if "accepts events again" in e["log_format"]]
        self.assertEqual(len(infos), 1)
        self.assertEqual(infos[0]["count"], 7)
        self.assertEqual(stats.queued, 3)

    def test_zeroBacklog(self) -> None:
        """
        With a backlog of 0, events beyond the concurrency are dropped.
        """
        bus = EventBus(Clock())
        handler = RecordingHandler("a", mode="manual", concurrency=1, backlog=0)
        bus.subscribe(handler)
        bus.fire(makeEvent(conid=1))
        bus.fire(makeEvent(conid=2))
        self.assertEqual(bus.stats("a").dropped, 1)
        self.assertEqual(len(handler.received), 1)
        handler.pending[0].callback(None)
        bus.fire(makeEvent(conid=3))
        self.assertEqual(len(handler.received), 2)

    def test_longBacklogOfSynchronousWorkDoesNotRecurse(self) -> None:
        """
        Releasing a long backlog whose invocations finish synchronously runs
        them all without hitting the recursion limit.
        """
        bus = EventBus(Clock())

        class FirstSlow(RecordingHandler):
            def handle(self, event: ConnectionEvent) -> Deferred[None] | None:
                self.received.append(event)
                if len(self.received) == 1:
                    d: Deferred[None] = Deferred()
                    self.pending.append(d)
                    return d
                return None

        handler = FirstSlow("a", concurrency=1, backlog=5000)
        bus.subscribe(handler)
        for n in range(1, 5002):
            bus.fire(makeEvent(conid=n))
        self.assertEqual(bus.stats("a").waiting, 5000)
        handler.pending[0].callback(None)
        self.assertEqual(len(handler.received), 5001)
        self.assertEqual(bus.stats("a").succeeded, 5001)
        self.assertEqual(bus.pending, 0)

    def test_timeoutFreesSlot(self) -> None:
        """
        A timed-out invocation frees its slot for the next waiting event.
        """
        clock = Clock()
        bus = EventBus(clock)
        handler = RecordingHandler("a", mode="manual", concurrency=1, timeout=2.0)
        bus.subscribe(handler)
        bus.fire(makeEvent(conid=1))
        bus.fire(makeEvent(conid=2))
        clock.advance(2)
        self.assertEqual([e.conid for e in handler.received], [1, 2])
        self.assertEqual(bus.stats("a").timedOut, 1)
        handler.pending[1].callback(None)
        self.assertEqual(clock.getDelayedCalls(), [])


class DrainTests(SynchronousTestCase):
    """
    L{EventBus.drain} and L{EventBus.pending}.
    """

    def test_drainIdle(self) -> None:
        """
        Draining an idle bus fires at once.
        """
        self.successResultOf(EventBus(Clock()).drain())

    def test_drainWaitsForInFlightAndQueued(self) -> None:
        """
        Drain fires once every invocation in flight and every waiting event
        is done.
        """
        bus = EventBus(Clock())
        handler = RecordingHandler("a", mode="manual", concurrency=1)
        bus.subscribe(handler)
        bus.fire(makeEvent(conid=1))
        bus.fire(makeEvent(conid=2))
        d = bus.drain()
        handler.pending.pop(0).callback(None)
        self.assertNoResult(d)
        self.assertEqual(bus.pending, 1)
        handler.pending.pop(0).callback(None)
        self.successResultOf(d)
        self.assertEqual(bus.pending, 0)

    def test_drainAfterTimeouts(self) -> None:
        """
        Drain fires when hanging handlers time out.
        """
        clock = Clock()
        bus = EventBus(clock)
        bus.subscribe(RecordingHandler("a", mode="manual", timeout=1.0))
        bus.fire(makeEvent())
        d = bus.drain()
        self.assertNoResult(d)
        clock.advance(1)
        self.successResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_unsubscribeDiscardsBacklog(self) -> None:
        """
        Unsubscribing discards the handler's waiting events (fire's
        Deferreds fire) and lets drain finish once the in-flight one ends.
        """
        bus = EventBus(Clock())
        handler = RecordingHandler("a", mode="manual", concurrency=1)
        bus.subscribe(handler)
        d1 = bus.fire(makeEvent(conid=1))
        d2 = bus.fire(makeEvent(conid=2))
        bus.unsubscribe(handler)
        self.successResultOf(d2)
        d = bus.drain()
        self.assertNoResult(d)
        handler.pending.pop(0).callback(None)
        self.successResultOf(d1)
        self.successResultOf(d)
        self.assertEqual(len(handler.received), 1)

    def test_metrics(self) -> None:
        """
        L{EventBus.metrics} reports every handler's counters by name.
        """
        bus = EventBus(Clock())
        bus.subscribe(RecordingHandler("a"))
        bus.fire(makeEvent())
        self.assertEqual(bus.metrics()["a"]["fired"], 1)
        self.assertEqual(bus.metrics()["a"]["succeeded"], 1)
