# -*- test-case-name: tests.test_routes_dispatcher -*-
"""
Dispatcher sets (after Kamailio's dispatcher module): the targets of one
route, the order they are tried in (round-robin, weighted or priority) and
their health, checked with C{OPTIONS} pings like C{ds_ping}: a target that
stops answering leaves the set, and returns when it answers again, each
change logged once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sipcore.message import URI
from sipcore.routes.table import PRIORITY, ROUND_ROBIN, WEIGHTED, Route

__all__ = ["DEFAULT_PING_INTERVAL", "DEFAULT_PING_TIMEOUT", "DispatcherSet", "HealthChecks"]

#: Seconds between two health pings of a target.
DEFAULT_PING_INTERVAL = 30.0

#: Seconds a target has to answer a ping.
DEFAULT_PING_TIMEOUT = 5.0


class DispatcherSet:
    """
    The targets of one route and which of them answer.

    @ivar route: the L{Route}.
    @ivar up: per target (same order as C{route.targets}), whether it is in
        the set (it answered its last ping, or was never pinged).
    """

    _log = Logger()

    def __init__(self, route: Route, choose: Callable[[Sequence[int]], int] | None = None) -> None:
        """
        @param choose: picks one index from a list of weights, as a
            weighted random choice (default: L{random.choices}); tests
            pass a deterministic one.
        """
        self.route = route
        self.up = [True] * len(route.targets)
        self._next = 0
        self._choose = choose or _weightedChoice

    def order(self) -> list[URI]:
        """
        The targets to try for one request, first choice first: the live
        ones by the route's algorithm (C{priority}: as listed;
        C{round-robin}: starting one further each request; C{weighted}: a
        random first choice by weight, then the rest as listed); when none
        is live, all of them as listed (a dead set is still tried rather
        than refused).
        """
        targets = self.route.targets
        live = [i for i in range(len(targets)) if self.up[i]]
        if not live:
            return list(targets)
        algorithm = self.route.algorithm
        if algorithm == ROUND_ROBIN:
            start = self._next % len(live)
            self._next = start + 1
            live = live[start:] + live[:start]
        elif algorithm == WEIGHTED:
            first = live[self._choose([self.route.weights[i] for i in live])]
            live = [first] + [i for i in live if i != first]
        else:
            assert algorithm == PRIORITY
        return [targets[i] for i in live]

    def answered(self, index: int, alive: bool) -> None:
        """
        Record the outcome of a ping of target C{index}; log a change.
        """
        if self.up[index] == alive:
            return
        self.up[index] = alive
        target = self.route.targets[index]
        if alive:
            self._log.info("route {route}: target {target} answers again; back in the set",
                           route=self.route.name, target=str(target))
        else:
            self._log.warn("route {route}: target {target} stopped answering OPTIONS; "
                           "out of the set", route=self.route.name, target=str(target))


def _weightedChoice(weights: Sequence[int]) -> int:
    return random.choices(range(len(weights)), weights=weights)[0]


class HealthChecks:
    """
    Pings every target of the sets with several targets every C{interval}
    seconds (a single target is always tried; its failure shows in the
    call).
    """

    def __init__(self, sets: Sequence[DispatcherSet], pinger: Any, clock: IReactorTime,
                 interval: float = DEFAULT_PING_INTERVAL,
                 timeout: float = DEFAULT_PING_TIMEOUT) -> None:
        """
        @param pinger: an L{sipcore.interfaces.IPinger}.
        @param interval: seconds between rounds (0: no pings).
        @param timeout: seconds a target has to answer (a later answer is
            ignored: the target counts as not answering).
        """
        self.sets = [s for s in sets if len(s.route.targets) > 1]
        self.pinger = pinger
        self.clock = clock
        self.interval = interval
        self.timeout = timeout
        self._loop: task.LoopingCall | None = None
        self._round: defer.Deferred[Any] | None = None

    def start(self) -> None:
        """
        Ping now, then every C{interval} seconds.
        """
        if not self.sets or not self.interval or self.pinger is None:
            return
        self._loop = task.LoopingCall(self.pingAll)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        """
        Stop pinging.
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def pingAll(self) -> defer.Deferred[Any]:
        """
        One round: ping every target; each answer updates its set.  A round
        still waiting for answers when the next is due is not doubled.

        @return: a L{Deferred} firing when every ping of the round answered.
        """
        if self._round is not None:
            return defer.succeed(None)
        pings = []
        for dispatcherSet in self.sets:
            for index, target in enumerate(dispatcherSet.route.targets):
                d = self.pinger.ping(target)
                d.addTimeout(self.timeout, self.clock)
                d.addErrback(lambda failure: False)
                d.addCallback(lambda alive, s=dispatcherSet, i=index: s.answered(i, bool(alive)))
                pings.append(d)
        self._round = defer.gatherResults(pings, consumeErrors=True)
        self._round.addBoth(self._roundDone)
        return self._round

    def _roundDone(self, result: Any) -> None:
        self._round = None
