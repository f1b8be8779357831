# -*- test-case-name: tests.test_lag -*-
"""
A reactor lag probe: a repeating timer that measures how late it runs.

A timer due every C{interval} seconds that fires C{interval + x} seconds
after the previous one shows that the reactor was busy (stalled) for about
C{x} seconds.  The probe keeps the last lag, the largest since start, and
the largest of the last few seconds (per-second buckets), and serves them
as C{sipcore_reactor_lag_seconds} in the registry it is given.

It is off unless the environment has C{SIPCORE_LAG_PROBE=1} (the benchmarks
turn it on): it costs a timer call every C{interval}.
"""

from __future__ import annotations

import os
from collections import deque

from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime

from sipcore.metrics import CollectorRegistry, Metric, gaugeFamily, register

__all__ = ["ENV", "LagProbe", "fromEnvironment"]

#: The environment variable that turns the probe on.
ENV = "SIPCORE_LAG_PROBE"


class LagProbe(Service):
    """
    Measures the lag of a repeating timer while the service runs, and
    serves it as C{sipcore_reactor_lag_seconds}.

    @ivar last: the lag of the latest tick, in seconds.
    @ivar max: the largest lag since L{start}.
    @ivar ticks: how many ticks ran.
    """

    def __init__(self, clock: IReactorTime, interval: float = 0.01, buckets: int = 5,
                 metrics: CollectorRegistry | None = None) -> None:
        """
        @param clock: the reactor whose lag is measured.
        @param interval: seconds between ticks.
        @param buckets: how many one-second buckets L{recentMax} covers.
        @param metrics: the registry the lag is served from, or C{None}.
        """
        self.clock = clock
        self.interval = interval
        self.last = 0.0
        self.max = 0.0
        self.ticks = 0
        self._previous: float | None = None
        self._buckets: deque[tuple[int, float]] = deque(maxlen=buckets)
        self._call = task.LoopingCall(self._tick)
        self._call.clock = clock
        register(metrics, self)

    def start(self) -> None:
        """
        Start ticking (does nothing when already started).
        """
        if self._call.running:
            return
        self._previous = self.clock.seconds()
        self._call.start(self.interval, now=False)

    def stop(self) -> None:
        """
        Stop ticking.
        """
        if self._call.running:
            self._call.stop()

    def startService(self) -> None:
        Service.startService(self)
        self.start()

    def stopService(self) -> None:
        Service.stopService(self)
        self.stop()

    def collect(self) -> list[Metric]:
        """
        The lag as C{sipcore_reactor_lag_seconds}: last, max since start,
        max of the last seconds.
        """
        return [gaugeFamily(
            "sipcore_reactor_lag_seconds",
            "Lag of a 10 ms repeating timer (SIPCORE_LAG_PROBE=1): last, max since start, "
            "max of the last seconds.",
            ["stat"], [(["last"], self.last), (["max"], self.max),
                       (["recent_max"], self.recentMax())])]

    def _tick(self) -> None:
        now = self.clock.seconds()
        previous = self._previous if self._previous is not None else now
        self._previous = now
        lag = max(0.0, now - previous - self.interval)
        self.ticks += 1
        self.last = lag
        if lag > self.max:
            self.max = lag
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            if lag > self._buckets[-1][1]:
                self._buckets[-1] = (second, lag)
        else:
            self._buckets.append((second, lag))

    def recentMax(self) -> float:
        """
        The largest lag of the last few seconds (as many as the probe has
        buckets).
        """
        if not self._buckets:
            return 0.0
        horizon = int(self.clock.seconds()) - (self._buckets.maxlen or 1)
        return max((lag for second, lag in self._buckets if second > horizon), default=0.0)


def fromEnvironment(clock: IReactorTime, environ: dict[str, str] | None = None,
                    metrics: CollectorRegistry | None = None) -> LagProbe | None:
    """
    A probe on C{clock}, serving its figures from C{metrics}, when
    C{SIPCORE_LAG_PROBE=1}, else C{None}.
    """
    env = os.environ if environ is None else environ
    if env.get(ENV) != "1":
        return None
    return LagProbe(clock, metrics=metrics)
