# -*- test-case-name: tests.test_routes_hook -*-
"""
The routing hook's values and the chain of routers the proxy consults.

A router (L{sipcore.interfaces.IRouter}) is asked about an initial
request that is not for a registered local user and whose caller may use
routes (an authenticated local user or a trusted peer).  It answers with
L{RouteTargets}, a L{RouteAnswer} or C{None}.  L{RoutingChain} asks the
routers in their configured order, bounds each answer by a timeout and
turns a failure into C{500}, so the proxy's transaction never hangs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from sipcore.message import URI, Request

__all__ = [
    "DEFAULT_ROUTING_TIMEOUT",
    "PEER",
    "USER",
    "Caller",
    "RouteAnswer",
    "RouteTarget",
    "RouteTargets",
    "RoutingChain",
    "RoutingRequest",
]

#: Seconds a router may take to answer before the caller gets C{500}.
DEFAULT_ROUTING_TIMEOUT = 5.0

#: L{Caller.kind} of a caller authenticated as a local user.
USER = "user"

#: L{Caller.kind} of a request from a trusted peer (C{--trusted-peer}).
PEER = "peer"


@dataclass(frozen=True)
class Caller:
    """
    Who sent a request, as far as routing is concerned.

    @ivar kind: L{USER} or L{PEER}.
    @ivar source: the IP address the request came from.
    @ivar user: for L{USER}, the authenticated C{user@domain}; C{None} for
        a peer.
    """

    kind: str
    source: str
    user: str | None = None


@dataclass(frozen=True)
class RoutingRequest:
    """
    What a router is asked.  Routers must not change C{request}.

    @ivar request: the initial request as received (Max-Forwards not yet
        decremented, own Route entries not yet removed).
    @ivar uri: its Request-URI.
    @ivar caller: who sent it.
    @ivar local: whether the Request-URI names one of this server's domains
        (a local user without a registration, such as a number dialled as
        C{sip:+4930123@our.domain}).
    """

    request: Request
    uri: URI
    caller: Caller
    local: bool

    @property
    def user(self) -> str:
        """
        The Request-URI's user part (C{""} when it has none).
        """
        return self.uri.user or ""


@dataclass(frozen=True)
class RouteTarget:
    """
    One place a routed request goes.

    @ivar uri: the new Request-URI, or C{None} to keep the request's.
    @ivar nextHop: the SIP URI of the server to send it to (an outbound
        proxy, a PBX, a trunk), or C{None} to send it where the (new)
        Request-URI points.
    """

    uri: URI | None = None
    nextHop: URI | None = None

    def __post_init__(self) -> None:
        """
        @raise ValueError: when neither C{uri} nor C{nextHop} is given.
        """
        if self.uri is None and self.nextHop is None:
            raise ValueError("a route target needs a Request-URI or a next hop")


@dataclass(frozen=True)
class RouteTargets:
    """
    Forward the request to C{targets}.

    @ivar targets: the targets, not empty.
    @ivar serial: C{True}: try them one after another, the next when the
        previous answered C{408} or a C{5xx} or could not be reached
        (failover); C{False}: fork to all of them at once.
    """

    targets: tuple[RouteTarget, ...]
    serial: bool = True

    def __post_init__(self) -> None:
        """
        @raise ValueError: for an empty C{targets}.
        """
        if not self.targets:
            raise ValueError("RouteTargets needs at least one target")


@dataclass(frozen=True)
class RouteAnswer:
    """
    Answer the caller with C{status} and C{reason} (a final response,
    300 to 699).
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        """
        @raise ValueError: for a status that is not a final response.
        """
        if not 300 <= self.status <= 699:
            raise ValueError("a route answer's status must be 300 to 699, not {}".format(
                self.status))


Decision = RouteTargets | RouteAnswer | None

_INTERNAL_ERROR = RouteAnswer(500, "Server Internal Error")


class RoutingChain:
    """
    The configured routers, asked in order.

    @ivar routers: C{(name, router)} pairs in the order they are asked.
    @ivar stats: C{consulted}, C{routed}, C{answered}, C{passed} (no
        router took the request), C{failed}, C{timedOut}.
    """

    _log = Logger()

    def __init__(self, routers: Sequence[tuple[str, Any]], clock: IReactorTime,
                 timeout: float = DEFAULT_ROUTING_TIMEOUT) -> None:
        """
        @param routers: C{(name, router)} pairs, each router an
            L{sipcore.interfaces.IRouter}.
        @param clock: for the timeout.
        @param timeout: seconds each router may take.
        """
        self.routers = tuple(routers)
        self.clock = clock
        self.timeout = timeout
        self.stats = {"consulted": 0, "routed": 0, "answered": 0, "passed": 0,
                      "failed": 0, "timedOut": 0}

    def __bool__(self) -> bool:
        return bool(self.routers)

    def route(self, request: RoutingRequest) -> defer.Deferred[Decision]:
        """
        Ask the routers in order until one takes the request.

        @return: a L{Deferred} firing with the first router's
            L{RouteTargets} or L{RouteAnswer}, C{None} when none took it,
            or a C{500} L{RouteAnswer} when a router failed, answered
            something else or took longer than the timeout (logged once per
            request, naming the router).  It never fails.
        """
        self.stats["consulted"] += 1
        return defer.Deferred.fromCoroutine(self._route(request))

    async def _route(self, request: RoutingRequest) -> Decision:
        for name, router in self.routers:
            d = defer.maybeDeferred(router.route, request)
            d.addTimeout(self.timeout, self.clock)
            try:
                decision = await d
            except defer.TimeoutError:
                self.stats["timedOut"] += 1
                self._log.error(
                    "router {router} gave no answer within {timeout}s for {method} {uri}; "
                    "answering 500", router=name, timeout=self.timeout,
                    method=request.request.method, uri=str(request.uri))
                return _INTERNAL_ERROR
            except Exception:
                self.stats["failed"] += 1
                failure = Failure()
                self._log.error(
                    "router {router} failed for {method} {uri}: {error}; answering 500",
                    router=name, method=request.request.method, uri=str(request.uri),
                    error="{}: {}".format(failure.type.__name__ if failure.type else "?",
                                          failure.getErrorMessage()))
                return _INTERNAL_ERROR
            if decision is None:
                continue
            if isinstance(decision, RouteTargets):
                self.stats["routed"] += 1
                return decision
            if isinstance(decision, RouteAnswer):
                self.stats["answered"] += 1
                return decision
            self.stats["failed"] += 1
            self._log.error(
                "router {router} answered {decision!r} for {method} {uri}, not RouteTargets, "
                "RouteAnswer or None; answering 500", router=name, decision=decision,
                method=request.request.method, uri=str(request.uri))
            return _INTERNAL_ERROR
        self.stats["passed"] += 1
        return None
