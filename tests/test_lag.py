"""
Tests for L{sipcore.lag}, the reactor lag probe, and for the bounded
reactor and collector tuning it watches over.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import error
from twisted.internet.task import Clock
from twisted.python import context, log
from twisted.trial.unittest import SynchronousTestCase

from sipcore.lag import LagProbe, fromEnvironment
from sipcore.testing import LogCapture


class LagProbeTests(SynchronousTestCase):
    """
    The probe measures how late its timer runs.
    """

    def test_onTime(self) -> None:
        """
        Ticks that run on time show no lag.
        """
        clock = Clock()
        probe = LagProbe(clock, interval=0.01)
        probe.start()
        clock.pump([0.01] * 5)
        self.assertEqual(probe.ticks, 5)
        self.assertAlmostEqual(probe.max, 0.0)

    def test_stallMeasured(self) -> None:
        """
        A tick that runs 0.2 s late shows 0.2 s of lag, in C{last}, C{max}
        and C{recentMax}; C{recentMax} forgets it after its buckets passed,
        C{max} does not.
        """
        clock = Clock()
        probe = LagProbe(clock, interval=0.01, buckets=2)
        probe.start()
        clock.advance(0.21)
        self.assertAlmostEqual(probe.last, 0.2)
        self.assertAlmostEqual(probe.max, 0.2)
        self.assertAlmostEqual(probe.recentMax(), 0.2)
        clock.pump([0.01] * 400)
        self.assertAlmostEqual(probe.recentMax(), 0.0)
        self.assertAlmostEqual(probe.max, 0.2)
        probe.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_environment(self) -> None:
        """
        The probe exists only with C{SIPCORE_LAG_PROBE=1}.
        """
        self.assertIsNone(fromEnvironment(Clock(), {}))
        self.assertIsInstance(fromEnvironment(Clock(), {"SIPCORE_LAG_PROBE": "1"}), LagProbe)


class BoundedReactorTests(SynchronousTestCase):
    """
    L{sipcore.reactor}: at most C{maxEvents} I/O events per reactor turn.
    """

    def test_pollCapped(self) -> None:
        """
        The capped poller asks the kernel for at most C{cap} events, and
        passes every other call through.
        """
        from sipcore.reactor import _CappedPoller

        asked = []

        class Poller:
            def poll(self, timeout: float, maxevents: int) -> list[int]:
                asked.append((timeout, maxevents))
                return []

            def fileno(self) -> int:
                return 42

        capped = _CappedPoller(Poller(), 64)
        capped.poll(1.0, 10000)
        capped.poll(1.0, 3)
        capped.poll(-1)
        self.assertEqual(asked, [(1.0, 64), (1.0, 3), (-1, 64)])
        self.assertEqual(capped.fileno(), 42)

    def test_reactorRuns(self) -> None:
        """
        L{BoundedEPollReactor} is a working epoll reactor: it runs a timer
        and stops.
        """
        from sipcore.reactor import BoundedEPollReactor

        reactor = BoundedEPollReactor(maxEvents=2)
        ran: list[bool] = []
        reactor.callLater(0, ran.append, True)
        reactor.callLater(0, reactor.stop)
        reactor.run(installSignalHandlers=False)
        self.assertEqual(ran, [True])
        self.assertRaises(ValueError, BoundedEPollReactor, 0)


class _Reader:
    """
    A selectable reading one end of a socket pair, recording what happens
    to it.
    """

    def __init__(self, sock: socket.socket, onRead: Any) -> None:
        self.sock = sock
        self.onRead = onRead
        self.read: list[bytes] = []
        self.systems: list[str] = []
        self.lost: list[Any] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "TestReader,7"

    def doRead(self) -> Any:
        self.read.append(self.sock.recv(100))
        self.systems.append(context.get(log.ILogContext)["system"])
        if not self.read[-1]:
            return error.ConnectionDone()
        return self.onRead()

    def connectionLost(self, reason: Any) -> None:
        self.lost.append(reason)


class BoundedDispatchTests(SynchronousTestCase):
    """
    L{BoundedEPollReactor} handles a plain read event without a logging
    context, with Twisted's outcomes.
    """

    def reader(self, onRead: Any) -> tuple[Any, _Reader, socket.socket]:
        from sipcore.reactor import BoundedEPollReactor

        reactor = BoundedEPollReactor()
        mine, theirs = socket.socketpair()
        self.addCleanup(mine.close)
        self.addCleanup(theirs.close)
        mine.setblocking(False)
        reader = _Reader(mine, onRead)
        reactor.addReader(reader)
        self.addCleanup(reactor.removeAll)
        return reactor, reader, theirs

    def test_read(self) -> None:
        """
        A readable selectable has its C{doRead} called once per event,
        outside any logging context, and stays registered.
        """
        reactor, reader, peer = self.reader(lambda: None)
        peer.send(b"one")
        reactor.doPoll(0)
        self.assertEqual(reader.read, [b"one"])
        self.assertEqual(reader.systems, ["-"])
        self.assertIn(reader, reactor.getReaders())
        reactor.doPoll(0)
        self.assertEqual(reader.read, [b"one"])
        self.assertEqual(reader.lost, [])

    def test_readReturnsReason(self) -> None:
        """
        A reason returned by C{doRead} disconnects the selectable: it is no
        longer read and its C{connectionLost} gets the reason.
        """
        reactor, reader, peer = self.reader(lambda: error.ConnectionLost())
        peer.send(b"x")
        reactor.doPoll(0)
        self.assertNotIn(reader, reactor.getReaders())
        self.assertEqual(len(reader.lost), 1)
        reader.lost[0].trap(error.ConnectionLost)

    def test_readRaises(self) -> None:
        """
        An exception raised by C{doRead} is logged under the selectable's
        log prefix and disconnects it with that exception.
        """
        logged = LogCapture(self)

        def broken() -> None:
            raise ZeroDivisionError("reader bug")

        reactor, reader, peer = self.reader(broken)
        peer.send(b"x")
        reactor.doPoll(0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertIn("TestReader,7", [e.get("log_system") for e in logged.events])
        self.assertNotIn(reader, reactor.getReaders())
        self.assertEqual(len(reader.lost), 1)
        reader.lost[0].trap(ZeroDivisionError)

    def test_hangUpTakesTwistedsPath(self) -> None:
        """
        A read event with a hang-up is not a plain read event: Twisted's
        own handling reads in the selectable's logging context, and the
        end of the stream disconnects it.
        """
        reactor, reader, peer = self.reader(lambda: None)
        peer.close()
        reactor.doPoll(0)
        self.assertEqual(reader.read, [b""])
        self.assertEqual(reader.systems, ["TestReader,7"])
        self.assertNotIn(reader, reactor.getReaders())
        self.assertEqual(len(reader.lost), 1)
        reader.lost[0].trap(error.ConnectionDone)


class TuningTests(SynchronousTestCase):
    """
    L{sipcore.tuning.tuneGarbageCollector}.
    """

    def test_thresholdsSet(self) -> None:
        """
        The collector's thresholds become the ones given; the frozen objects
        are released again afterwards so other tests see a normal heap.
        """
        import gc

        from sipcore.tuning import tuneGarbageCollector

        before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *before)
        self.addCleanup(gc.unfreeze)
        tuneGarbageCollector((5000, 7, 9))
        self.assertEqual(gc.get_threshold(), (5000, 7, 9))
        self.assertGreater(gc.get_freeze_count(), 0)


class EPollInternalsTests(SynchronousTestCase):
    """
    The internals of Twisted's epoll reactor that L{sipcore.reactor} uses
    are there, with the signatures it calls them with: this fails when
    Twisted changes them.
    """

    def test_methods(self) -> None:
        """
        C{doPoll(timeout)} is the reactor's iteration, C{_doReadOrWrite}
        takes C{(selectable, fd, event)} and C{_disconnectSelectable}
        C{(selectable, why, isRead)}.
        """
        import inspect

        from twisted.internet.epollreactor import EPollReactor

        def parameters(method: Any) -> list[str]:
            return list(inspect.signature(method).parameters)

        self.assertIs(EPollReactor.doIteration, EPollReactor.doPoll)
        self.assertEqual(parameters(EPollReactor.doPoll), ["self", "timeout"])
        self.assertEqual(parameters(EPollReactor._doReadOrWrite),
                         ["self", "selectable", "fd", "event"])
        self.assertEqual(parameters(EPollReactor._disconnectSelectable)[:4],
                         ["self", "selectable", "why", "isRead"])

    def test_attributes(self) -> None:
        """
        A new epoll reactor has its C{epoll} object in C{_poller} (whose
        C{poll} takes the timeout and the most events) and its selectables
        by file descriptor in C{_selectables}.
        """
        import select

        from twisted.internet.epollreactor import EPollReactor

        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        self.assertIsInstance(reactor._poller, select.epoll)
        self.assertEqual(reactor._poller.poll(0, 1), [])
        self.assertIsInstance(reactor._selectables, dict)
        for fd, selectable in reactor._selectables.items():
            self.assertEqual(selectable.fileno(), fd)
