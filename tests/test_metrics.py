"""
Tests for L{sipcore.metrics}.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from twisted.internet import reactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from zope.interface import implementer
from zope.interface.verify import verifyObject

from sipcore.events import TCP_CLOSED
from sipcore.interfaces import IMetricsSource
from sipcore.lag import LagProbe
from sipcore.metrics import (
    AuthenticationMetrics,
    ConnectionMetrics,
    CoreMetrics,
    HandlerMetrics,
    JobQueueMetrics,
    MetricsRegistry,
    RateLimitMetrics,
    RegistrarMetrics,
    Sample,
    StoreMetrics,
    collect,
    render,
)
from sipcore.tap import Options, buildService
from sipcore.testing import FakeFlow, UDPMemoryReactor, connectionEvent
from tests.serverhelpers import startServer


class CollectTests(SynchronousTestCase):
    """
    L{collect} reads the counters of every part of a running service.
    """

    def setUp(self) -> None:
        self.reactor = UDPMemoryReactor()
        options = Options()
        options.parseOptions([])
        self.service = buildService(options, self.reactor)
        self.successResultOf(self.service.startService())
        self.addCleanup(self.service.stopService)

    def sample(self, name: str, **labels: str) -> float:
        for sampleName, sampleLabels, value in collect(self.service):
            if sampleName == name and sampleLabels == labels:
                return value
        raise AssertionError("no sample {} {}".format(name, labels))

    def test_handlerAndQueueCounts(self) -> None:
        """
        A close event shows up in the handler's counters and the cleanup
        queue's processed count.
        """
        self.service.bus.fire(connectionEvent(TCP_CLOSED, conid=4))
        self.reactor.advance(1)
        self.assertEqual(self.sample("sipcore_handler_events_total",
                                     handler="location-cleanup", outcome="fired"), 1)
        self.assertEqual(self.sample("sipcore_jobqueue", queue="location-cleanup",
                                     counter="processed"), 1)
        self.assertEqual(self.sample("sipcore_store_available"), 1)
        self.assertEqual(self.sample("sipcore_connections_open"), 0)

    def test_rateLimitCounts(self) -> None:
        """
        The rate limiter's outcomes are served, the datagrams dropped on
        arrival among them.
        """
        limiter = self.service.core.limiter
        flow = FakeFlow("udp", remote=("192.0.2.1", 5070))
        for _ in range(250):
            limiter.admit(b"SIP/2.0 200 OK\r\n\r\n", flow)
        limiter.blocked["192.0.2.1"][1] += 5
        self.assertEqual(self.sample("sipcore_rate_limit_total", outcome="admitted"), 200)
        self.assertEqual(self.sample("sipcore_rate_limit_total", outcome="dropped"), 55)
        self.assertEqual(self.sample("sipcore_rate_limit_total", outcome="droppedEarly"), 5)

    def test_render(self) -> None:
        """
        The text format has one HELP and TYPE line per metric, counters
        end in C{_total}, and label values are escaped.
        """
        text = render([
            ("sipcore_x_total", {"a": 'q"uote'}, 2.0),
            ("sipcore_x_total", {"a": "b"}, 3.0),
            ("sipcore_y", {}, 0.5),
        ])
        self.assertEqual(text.splitlines(), [
            "# HELP sipcore_x_total sipcore_x_total",
            "# TYPE sipcore_x_total counter",
            'sipcore_x_total{a="q\\"uote"} 2',
            'sipcore_x_total{a="b"} 3',
            "# HELP sipcore_y sipcore_y",
            "# TYPE sipcore_y gauge",
            "sipcore_y 0.5",
        ])

    def test_badEndpoint(self) -> None:
        """
        An unusable C{--metrics-listen} is a usage error.
        """
        self.assertRaises(usage.UsageError, Options().parseOptions,
                          ["--metrics-listen", "nonsense:1"])


@implementer(IMetricsSource)
class FixedSource:
    """
    A source with fixed samples.
    """

    def __init__(self, *samples: Sample) -> None:
        self._samples = samples

    def samples(self) -> Iterator[Sample]:
        return iter(self._samples)


class RegistryTests(SynchronousTestCase):
    """
    L{MetricsRegistry} serves the samples of the sources registered with it.
    """

    def test_order(self) -> None:
        """
        The samples of each source come in the order the sources were
        registered, and are read anew at each collection.
        """
        registry = MetricsRegistry()
        registry.register(FixedSource(("b_total", {}, 1.0)))
        self.assertEqual(collect(registry), [("b_total", {}, 1.0)])
        registry.register(FixedSource(("a", {"x": "y"}, 2.0), ("a", {"x": "z"}, 3.0)))
        self.assertEqual(collect(registry), [
            ("b_total", {}, 1.0), ("a", {"x": "y"}, 2.0), ("a", {"x": "z"}, 3.0)])

    def test_sourcesProvideTheInterface(self) -> None:
        """
        The registry, every source of a server's parts and the server
        itself provide L{IMetricsSource}.
        """
        options = Options()
        options.parseOptions([])
        service = buildService(options, UDPMemoryReactor())
        nothing: Any = None
        sources = [
            MetricsRegistry(), ConnectionMetrics(service.table), CoreMetrics(service.core),
            RateLimitMetrics(nothing), RegistrarMetrics(service.registrar),
            AuthenticationMetrics(nothing), HandlerMetrics(service.bus),
            JobQueueMetrics(service.queues), StoreMetrics(lambda: True, dict),
            LagProbe(UDPMemoryReactor()), service,
        ]
        for source in sources:
            self.assertTrue(verifyObject(IMetricsSource, source))


class EndpointTests(TestCase):
    """
    C{--metrics-listen} serves the metrics over HTTP.
    """

    async def test_get(self) -> None:
        """
        C{GET /metrics} answers the Prometheus text with the live numbers.
        """
        service = await startServer(self, "--metrics-listen", "tcp:0:interface=127.0.0.1",
                                    transports=("tcp",))
        port = service.metricsService.listeningPort.getHost().port
        response = await Agent(reactor).request(
            b"GET", "http://127.0.0.1:{}/metrics".format(port).encode())
        body = (await readBody(response)).decode()
        self.assertEqual(response.code, 200)
        self.assertIn("sipcore_connections_open 0", body)
        self.assertIn('sipcore_jobqueue{counter="depth",queue="location-cleanup"} 0', body)
