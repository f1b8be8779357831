# -*- test-case-name: tests.test_metrics -*-
"""
Metrics: what the server is doing, as numbers, for operators and their
monitoring.

Each part of the server that keeps figures is an
L{sipcore.interfaces.IMetricsSource} (the sources below read one part
each; L{sipcore.lag.LagProbe} is one itself), registered with the server's
L{MetricsRegistry} by the composition root as it builds that part.
L{MetricsResource} serves the registry's samples in the Prometheus text
exposition format (version 0.0.4) on C{--metrics-listen}.  Nothing here
logs: logs stay one line per state change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from sipcore.interfaces import IMetricsSource

if TYPE_CHECKING:
    from sipcore.events.bus import EventBus
    from sipcore.jobs import JobQueue
    from sipcore.sip.auth import DigestAuthenticator
    from sipcore.sip.core import SIPCore
    from sipcore.sip.limits import RateLimiter
    from sipcore.sip.registrar import Registrar
    from sipcore.transport.connections import ConnectionTable

#: One sample: metric name, labels, value.
Sample = tuple[str, dict[str, str], float]

_HELP = {
    "sipcore_connections_open": "Stream connections open now.",
    "sipcore_connections_opened_total": "Stream connections accepted.",
    "sipcore_connections_closed_total": "Stream connections closed, by close event.",
    "sipcore_messages_total": "SIP messages received and what became of the bad ones.",
    "sipcore_transactions": "Transaction layer counters and gauges.",
    "sipcore_registrar_total": "REGISTER outcomes.",
    "sipcore_handler_events_total": "Event handler invocations, by handler and outcome.",
    "sipcore_handler_inflight": "Event handler invocations running or waiting now.",
    "sipcore_jobqueue": "Job queue counters and gauges.",
    "sipcore_store_available": "1 when the location store can reach its database.",
    "sipcore_store_statements_total": "Statements sent to the location store, by kind.",
    "sipcore_rate_limit_total": "Messages the per-source rate limit decided on, by outcome "
    "(droppedEarly: dropped on arrival, a part of dropped).",
    "sipcore_auth_challenges_total": "Digest challenges sent (401 and 407).",
    "sipcore_auth_successes_total": "Requests authenticated.",
    "sipcore_auth_failures_total": "Failed authentications, by kind.",
    "sipcore_auth_lockouts_total": "Accounts locked out after too many failed authentications.",
    "sipcore_auth_locked_out_total": "Attempts refused with 403 because their account was "
    "locked out.",
    "sipcore_auth_unavailable_total": "Authentications answered 503: credentials unreadable.",
    "sipcore_reactor_lag_seconds": "Lag of a 10 ms repeating timer (SIPCORE_LAG_PROBE=1): "
    "last, max since start, max of the last seconds.",
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


@implementer(IMetricsSource)
class MetricsRegistry:
    """
    The metrics sources of one server, in the order they were registered:
    what C{GET /metrics} serves.
    """

    def __init__(self) -> None:
        self._sources: list[IMetricsSource] = []

    def register(self, source: IMetricsSource) -> None:
        """
        Serve the samples of C{source} after those registered before it.
        """
        self._sources.append(source)

    def samples(self) -> Iterator[Sample]:
        for source in self._sources:
            yield from source.samples()


@implementer(IMetricsSource)
class ConnectionMetrics:
    """
    The connection table's figures: open connections, accepted ones, closes
    by close event.
    """

    def __init__(self, table: ConnectionTable) -> None:
        self._table = table

    def samples(self) -> Iterator[Sample]:
        table = self._table
        yield ("sipcore_connections_open", {}, float(len(table)))
        yield ("sipcore_connections_opened_total", {}, float(table.opened))
        for event, count in sorted(table.closed.items()):
            yield ("sipcore_connections_closed_total", {"event": event}, float(count))


@implementer(IMetricsSource)
class CoreMetrics:
    """
    The core's message outcomes and its transaction layer's counters.
    """

    def __init__(self, core: SIPCore) -> None:
        self._core = core

    def samples(self) -> Iterator[Sample]:
        for outcome, count in sorted(self._core.stats.items()):
            yield ("sipcore_messages_total", {"outcome": outcome}, float(count))
        for name, count in sorted(self._core.transactions.stats().items()):
            yield ("sipcore_transactions", {"counter": name}, float(count))


@implementer(IMetricsSource)
class RateLimitMetrics:
    """
    The per-source rate limiter's outcomes.
    """

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    def samples(self) -> Iterator[Sample]:
        from sipcore.sip.limits import OUTCOMES

        limited = self._limiter.counts()
        for outcome in OUTCOMES:
            yield ("sipcore_rate_limit_total", {"outcome": outcome}, float(limited[outcome]))


@implementer(IMetricsSource)
class RegistrarMetrics:
    """
    REGISTER outcomes.
    """

    def __init__(self, registrar: Registrar) -> None:
        self._registrar = registrar

    def samples(self) -> Iterator[Sample]:
        for outcome, count in sorted(self._registrar.stats.items()):
            yield ("sipcore_registrar_total", {"outcome": outcome}, float(count))


@implementer(IMetricsSource)
class AuthenticationMetrics:
    """
    Digest authentication's challenges, successes, failures and lockouts.
    """

    def __init__(self, authenticator: DigestAuthenticator) -> None:
        self._authenticator = authenticator

    def samples(self) -> Iterator[Sample]:
        from sipcore.sip.auth import FAILURE_KINDS

        counts = self._authenticator.stats
        yield ("sipcore_auth_challenges_total", {}, float(counts["challenged"]))
        yield ("sipcore_auth_successes_total", {}, float(counts["authenticated"]))
        for kind in FAILURE_KINDS:
            yield ("sipcore_auth_failures_total", {"kind": kind}, float(counts[kind]))
        yield ("sipcore_auth_lockouts_total", {}, float(counts["lockouts"]))
        yield ("sipcore_auth_locked_out_total", {}, float(counts["lockedOut"]))
        yield ("sipcore_auth_unavailable_total", {}, float(counts["unavailable"]))


@implementer(IMetricsSource)
class HandlerMetrics:
    """
    The event bus's per-handler invocation counts and in-flight gauges.
    """

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    def samples(self) -> Iterator[Sample]:
        for handler, stats in sorted(self._bus.metrics().items()):
            for outcome in ("fired", "succeeded", "failed", "timedOut", "queued", "dropped"):
                yield ("sipcore_handler_events_total", {"handler": handler, "outcome": outcome},
                       float(stats.get(outcome, 0)))
            for state in ("running", "waiting"):
                yield ("sipcore_handler_inflight", {"handler": handler, "state": state},
                       float(stats.get(state, 0)))


@implementer(IMetricsSource)
class JobQueueMetrics:
    """
    The counters and gauges of the job queues the handlers made.

    @ivar queues: the queues, read at each sample (handlers make theirs when
        they are made, so the collection grows while the server is built).
    """

    def __init__(self, queues: Iterable[JobQueue]) -> None:
        self.queues = queues

    def samples(self) -> Iterator[Sample]:
        for queue in self.queues:
            for key, value in sorted(queue.metrics().items()):
                number = _number(value)
                if number is not None:
                    yield ("sipcore_jobqueue", {"queue": queue.name, "counter": key}, number)


@implementer(IMetricsSource)
class StoreMetrics:
    """
    Whether the location store reaches its database, and the statements
    sent to it.
    """

    def __init__(self, available: Callable[[], bool],
                 statements: Callable[[], Mapping[str, int]]) -> None:
        """
        @param available: returns C{True} while the store can reach its
            database (a memory store always can).
        @param statements: returns the statements sent so far, by kind.
        """
        self._available = available
        self._statements = statements

    def samples(self) -> Iterator[Sample]:
        yield ("sipcore_store_available", {}, 1.0 if self._available() else 0.0)
        for kind, count in sorted(self._statements().items()):
            yield ("sipcore_store_statements_total", {"kind": kind}, float(count))


def collect(source: IMetricsSource) -> list[Sample]:
    """
    Read the current metrics of C{source} (a running
    L{sipcore.service.SIPCoreService}, its L{MetricsRegistry}, or any
    other source).

    @return: the samples, grouped by metric name.
    """
    return list(source.samples())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def render(samples: Iterable[Sample]) -> str:
    """
    The Prometheus text exposition of C{samples}.
    """
    lines: list[str] = []
    seen: set[str] = set()
    for name, labels, value in samples:
        if name not in seen:
            seen.add(name)
            lines.append("# HELP {} {}".format(name, _HELP.get(name, name)))
            kind = "counter" if name.endswith("_total") else "gauge"
            lines.append("# TYPE {} {}".format(name, kind))
        if labels:
            body = ",".join('{}="{}"'.format(k, _escape(v)) for k, v in sorted(labels.items()))
            lines.append("{}{{{}}} {}".format(name, body, _format(value)))
        else:
            lines.append("{} {}".format(name, _format(value)))
    return "\n".join(lines) + "\n"


class MetricsResource(Resource):
    """
    C{GET /metrics}: the server's metrics in the Prometheus text format.
    """

    isLeaf = True

    def __init__(self, source: IMetricsSource) -> None:
        """
        @param source: what to serve (the server's L{MetricsRegistry}).
        """
        super().__init__()
        self._source = source

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        if request.path not in (b"/", b"/metrics"):
            request.setResponseCode(404)
            return b"not found: try /metrics\n"
        return render(collect(self._source)).encode("utf-8")


class MetricsService(StreamServerEndpointService):
    """
    Serves C{GET /metrics} on an endpoint while running (a
    L{StreamServerEndpointService} of a L{MetricsResource}; it binds in
    C{privilegedStartService}).

    @ivar listeningPort: the listening port once it listens, else C{None}.
    """

    listeningPort: Any = None

    def __init__(self, endpoint: IStreamServerEndpoint, source: IMetricsSource) -> None:
        """
        @param endpoint: where to listen.
        @param source: what to serve (the server's L{MetricsRegistry}).
        """
        site = Site(MetricsResource(source))
        site.noisy = False
        StreamServerEndpointService.__init__(self, _RecordingEndpoint(endpoint, self), site)
        self.setName("metrics")


class _RecordingEndpoint:
    """
    An endpoint that records the port it listens on in its
    L{MetricsService}.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, service: MetricsService) -> None:
        self._endpoint = endpoint
        self._service = service

    def listen(self, factory: Any) -> Deferred[Any]:
        def listening(port: Any) -> Any:
            self._service.listeningPort = port
            return port

        return self._endpoint.listen(factory).addCallback(listening)
