"""
Tests for L{sipcore.lag}, the reactor lag probe, and for the collector
tuning it watches over.  The fair reactor's tests are in
L{tests.test_reactor}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipcore.lag import LagProbe, fromEnvironment


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
