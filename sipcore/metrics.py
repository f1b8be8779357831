# -*- test-case-name: tests.test_metrics -*-
"""
Metrics: what the server is doing, as numbers, for operators and their
monitoring, on C{prometheus_client}.

Each server has its own L{prometheus_client.CollectorRegistry} (never the
process-wide default, so several servers in one process and the tests do
not share figures).  Each part of the server that keeps figures is given
that registry when it is made and registers its own collector there (the
connection table, the core and its transactions, the rate limiter, the
registrar, the authenticator, the proxy, the event bus, the handlers' job
queues, the store, the lag probe).  The helpers below build the metric
families those collectors return.

L{MetricsService} serves the registry on C{--metrics-listen}, on the path
C{/metrics} only (any other path is C{404}), in the format the scraper
asks for (Prometheus text or OpenMetrics).  Nothing here logs: logs stay
one line per state change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.web.resource import NoResource, Resource
from twisted.web.server import Request, Site

__all__ = [
    "CollectorRegistry", "Collector", "MetricsResource", "MetricsService", "counterFamily",
    "gaugeFamily", "histogramFamily", "LatencyHistogram", "register",
]


def register(registry: CollectorRegistry | None, collector: Collector) -> None:
    """
    Register C{collector} with C{registry}, when there is one (a part made
    without a registry keeps its figures to itself).
    """
    if registry is not None:
        registry.register(collector)


def counterFamily(name: str, documentation: str, labels: Iterable[str] = (),
                  values: Iterable[tuple[Iterable[str], float]] = ()) -> CounterMetricFamily:
    """
    A counter family C{name} (ending in C{_total}) with one sample per
    C{(label values, value)} of C{values}.
    """
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for labelValues, value in values:
        family.add_metric(list(labelValues), float(value))
    return family


def gaugeFamily(name: str, documentation: str, labels: Iterable[str] = (),
                values: Iterable[tuple[Iterable[str], float]] = ()) -> GaugeMetricFamily:
    """
    A gauge family C{name} with one sample per C{(label values, value)} of
    C{values}.
    """
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for labelValues, value in values:
        family.add_metric(list(labelValues), float(value))
    return family


def labelled(counts: Mapping[str, float]) -> list[tuple[list[str], float]]:
    """
    The items of C{counts}, sorted, as one-label samples for
    L{counterFamily} and L{gaugeFamily}.
    """
    return [([key], value) for key, value in sorted(counts.items())]


#: Upper bounds (seconds) of the buckets of a L{LatencyHistogram}.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class LatencyHistogram:
    """
    A histogram of durations kept by the object that measures them, read by
    its collector (L{histogramFamily}).

    @ivar counts: how many observations fell in each bucket of L{bounds}
        (not cumulative), the last one past the largest bound.
    @ivar total: the sum of the observations.
    """

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """
        Count one duration.
        """
        index = 0
        for bound in self.bounds:
            if seconds <= bound:
                break
            index += 1
        self.counts[index] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """
        The buckets as Prometheus has them: cumulative counts by upper
        bound, the last one C{+Inf}.
        """
        buckets = []
        running = 0
        for bound, count in zip(self.bounds + (float("inf"),), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return buckets


def histogramFamily(name: str, documentation: str, labels: Iterable[str],
                    values: Iterable[tuple[Iterable[str], LatencyHistogram]]
                    ) -> HistogramMetricFamily:
    """
    A histogram family C{name} with one histogram per C{(label values,
    L{LatencyHistogram})} of C{values}.
    """
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for labelValues, histogram in values:
        family.add_metric(list(labelValues), histogram.cumulative(), histogram.total)
    return family


class MetricsResource(Resource):
    """
    C{GET /metrics}: a registry's metrics, rendered in the reactor thread
    in the format the scraper's C{Accept} header asks for.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        if request.postpath and request.postpath != [b""]:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found: try /metrics\n"
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        encoder, contentType = choose_encoder(accept)
        request.setHeader(b"content-type", contentType.encode("latin-1"))
        return encoder(self._registry)


def metricsSite(registry: CollectorRegistry) -> Site:
    """
    The web site serving C{registry} on C{/metrics}; every other path is
    C{404}.
    """
    root = Resource()
    root.putChild(b"", NoResource("not found: try /metrics"))
    root.putChild(b"metrics", MetricsResource(registry))
    site = Site(root)
    site.noisy = False
    return site


class MetricsService(StreamServerEndpointService):
    """
    Serves C{GET /metrics} on an endpoint while running (it binds in
    C{privilegedStartService}).

    @ivar listeningPort: the listening port once it listens, else C{None}.
    """

    listeningPort: Any = None

    def __init__(self, endpoint: IStreamServerEndpoint, registry: CollectorRegistry) -> None:
        """
        @param endpoint: where to listen.
        @param registry: what to serve (the server's registry).
        """
        StreamServerEndpointService.__init__(
            self, _RecordingEndpoint(endpoint, self), metricsSite(registry))
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


def families(registry: CollectorRegistry) -> dict[str, Metric]:
    """
    The metric families C{registry} serves now, by the name they are
    served under (a counter's with its C{_total}), for tests and tools.
    """
    return {family.name + ("_total" if family.type == "counter" else ""): family
            for family in registry.collect()}
