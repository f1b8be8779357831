"""
Tests for L{sipcore.metrics} and the collectors the server's parts
register.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from twisted.internet import reactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from sipcore.events import TCP_CLOSED, TCP_RESET
from sipcore.jobs import JobQueue, JobQueueCollector
from sipcore.metrics import LatencyHistogram, families
from sipcore.tap import Options, buildService
from sipcore.testing import FakeFlow, UDPMemoryReactor, connectionEvent
from tests.serverhelpers import startServer


def build(*args: str) -> Any:
    options = Options()
    options.parseOptions(list(args))
    return buildService(options, UDPMemoryReactor())


class CollectTests(SynchronousTestCase):
    """
    The registry of a running service holds the figures of every part.
    """

    def setUp(self) -> None:
        self.reactor = UDPMemoryReactor()
        options = Options()
        options.parseOptions([])
        self.service = buildService(options, self.reactor)
        self.successResultOf(self.service.startService())
        self.addCleanup(self.service.stopService)

    def sample(self, name: str, **labels: str) -> float:
        value = self.service.metrics.get_sample_value(name, labels)
        if value is None:
            raise AssertionError("no sample {} {}".format(name, labels))
        return float(value)

    def test_handlerAndQueueCounts(self) -> None:
        """
        A close event shows up in the handler's counters, the cleanup
        queue's processed count and its latency histogram.
        """
        self.service.bus.fire(connectionEvent(TCP_CLOSED, conid=4))
        self.reactor.advance(1)
        self.assertEqual(self.sample("sipcore_handler_events_total",
                                     handler="location-cleanup", outcome="fired"), 1)
        self.assertEqual(self.sample("sipcore_jobqueue", queue="location-cleanup",
                                     counter="processed"), 1)
        self.assertEqual(self.sample("sipcore_jobqueue_depth", queue="location-cleanup"), 0)
        self.assertEqual(self.sample("sipcore_jobqueue_latency_seconds_count",
                                     queue="location-cleanup"), 1)
        self.assertEqual(self.sample("sipcore_store_available"), 1)
        self.assertEqual(self.sample("sipcore_connections_open", transport="tcp"), 0)

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

    def test_connectionsByTransportAndClose(self) -> None:
        """
        Connections are counted by transport as they open, and by close
        event and transport as they close.
        """
        table = self.service.table
        tcp = FakeFlow("tcp", remote=("192.0.2.1", 5070))
        ws = FakeFlow("ws", remote=("192.0.2.2", 5070))
        table.add(tcp)
        table.add(ws)
        self.assertEqual(self.sample("sipcore_connections_open", transport="tcp"), 1)
        self.assertEqual(self.sample("sipcore_connections_open", transport="ws"), 1)
        table.remove(ws.conid, TCP_RESET, "reset by peer")
        self.assertEqual(self.sample("sipcore_connections_open", transport="ws"), 0)
        self.assertEqual(self.sample("sipcore_connections_opened_total", transport="ws"), 1)
        self.assertEqual(self.sample("sipcore_connections_closed_total",
                                     event=TCP_RESET, transport="ws"), 1)
        self.assertEqual(self.sample("sipcore_connections_closed_total",
                                     event=TCP_RESET, transport="tcp"), 0)

    def test_proxiedRequests(self) -> None:
        """
        A request the proxy routes is counted by method and the class of
        the final response the caller got.
        """
        flow = FakeFlow("udp", remote=("192.0.2.1", 5070))
        self.service.core.messageReceived(
            b"MESSAGE sip:nobody@localhost SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKm1\r\n"
            b"From: <sip:a@localhost>;tag=1\r\nTo: <sip:nobody@localhost>\r\n"
            b"Call-ID: m1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            flow)
        self.reactor.advance(0)
        self.assertEqual([r.status for r in flow.responses()], [404])
        self.assertEqual(self.sample("sipcore_proxy_requests_total",
                                     method="MESSAGE", outcome="4xx"), 1)

    def test_badEndpoint(self) -> None:
        """
        An unusable C{--metrics-listen} is a usage error.
        """
        self.assertRaises(usage.UsageError, Options().parseOptions,
                          ["--metrics-listen", "nonsense:1"])


class RegistryTests(SynchronousTestCase):
    """
    Each server has a registry of its own.
    """

    def test_perServer(self) -> None:
        """
        Two servers built in one process each serve their own figures, and
        none are put in C{prometheus_client}'s global registry.
        """
        first, second = build(), build()
        self.assertIsNot(first.metrics, second.metrics)
        first.table.add(FakeFlow("tcp", remote=("192.0.2.1", 5070)))
        self.assertEqual(first.metrics.get_sample_value(
            "sipcore_connections_opened_total", {"transport": "tcp"}), 1)
        self.assertEqual(second.metrics.get_sample_value(
            "sipcore_connections_opened_total", {"transport": "tcp"}), 0)
        self.assertEqual([name for name in families(REGISTRY) if name.startswith("sipcore")],
                         [])

    def test_documentedNames(self) -> None:
        """
        A server with authentication serves every metric the operations
        guide lists.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("alice@localhost:secret\n")
        names = set(families(build("--auth-file", path).metrics))
        with open(os.path.join(os.path.dirname(__file__), "..", "docs", "operations.rst")) as f:
            documented = {line.split("``")[1] for line in f
                          if line.startswith("``sipcore_") and "lag" not in line}
        self.assertTrue(documented)
        self.assertEqual(documented - names, set())
        self.assertEqual(names - documented, set())


class JobQueueCollectorTests(SynchronousTestCase):
    """
    L{JobQueueCollector} serves each queue's depth and latency.
    """

    def test_depthAndLatency(self) -> None:
        """
        The depth counts what is held; the latency histogram counts each
        item from its first put to its batch's success.
        """
        from twisted.internet.defer import Deferred
        from twisted.internet.task import Clock

        clock = Clock()
        pending: list[Deferred[None]] = []

        def runner(items: list[Any]) -> Deferred[None]:
            d: Deferred[None] = Deferred()
            pending.append(d)
            return d

        queue = JobQueue("q", runner, clock, batchDelay=0.0)
        queue.start()
        registry = CollectorRegistry()
        registry.register(JobQueueCollector([queue]))
        queue.put(1)
        queue.put(2)
        self.assertEqual(registry.get_sample_value("sipcore_jobqueue_depth", {"queue": "q"}), 2)
        clock.advance(0)
        clock.advance(0.3)
        pending[0].callback(None)
        self.assertEqual(registry.get_sample_value("sipcore_jobqueue_depth", {"queue": "q"}), 0)
        self.assertEqual(registry.get_sample_value(
            "sipcore_jobqueue_latency_seconds_bucket", {"queue": "q", "le": "0.25"}), 0)
        self.assertEqual(registry.get_sample_value(
            "sipcore_jobqueue_latency_seconds_bucket", {"queue": "q", "le": "0.5"}), 2)
        self.assertAlmostEqual(registry.get_sample_value(
            "sipcore_jobqueue_latency_seconds_sum", {"queue": "q"}) or 0, 0.6)


class LatencyHistogramTests(SynchronousTestCase):
    """
    L{LatencyHistogram} buckets durations by upper bound.
    """

    def test_buckets(self) -> None:
        """
        A duration falls in the first bucket whose bound is at least it;
        one past every bound in C{+Inf}; the buckets are cumulative.
        """
        histogram = LatencyHistogram((1.0, 2.0))
        for seconds in (0.5, 1.0, 1.5, 9.0):
            histogram.observe(seconds)
        self.assertEqual(histogram.cumulative(), [("1.0", 2.0), ("2.0", 3.0), ("+Inf", 4.0)])
        self.assertEqual(histogram.total, 12.0)


class EndpointTests(TestCase):
    """
    C{--metrics-listen} serves the metrics over HTTP on C{/metrics} only.
    """

    async def get(self, port: int, path: str, accept: bytes | None = None) -> tuple[Any, str]:
        headers = Headers({b"accept": [accept]}) if accept else None
        response = await Agent(reactor).request(
            b"GET", "http://127.0.0.1:{}{}".format(port, path).encode(), headers)
        return response, (await readBody(response)).decode()

    async def test_get(self) -> None:
        """
        C{GET /metrics} answers the Prometheus text with the live numbers
        (what the registry renders); every other path is C{404}.
        """
        service = await startServer(self, "--metrics-listen", "tcp:0:interface=127.0.0.1",
                                    transports=("tcp",))
        port = service.metricsService.listeningPort.getHost().port
        response, body = await self.get(port, "/metrics")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                         [b"text/plain; version=0.0.4; charset=utf-8"])
        self.assertIn('sipcore_connections_open{transport="tcp"} 0.0\n', body)
        self.assertIn('sipcore_jobqueue_depth{queue="location-cleanup"} 0.0\n', body)
        self.assertEqual(body.count("# TYPE sipcore_connections_open gauge\n"), 1)
        self.assertEqual(body, generate_latest(service.metrics).decode())
        for path in ("/", "/health", "/metrics/x", "/favicon.ico"):
            response, body = await self.get(port, path)
            self.assertEqual(response.code, 404, path)
            self.assertNotIn("sipcore_", body)

    async def test_openMetrics(self) -> None:
        """
        A scraper asking for OpenMetrics gets it.
        """
        service = await startServer(self, "--metrics-listen", "tcp:0:interface=127.0.0.1",
                                    transports=("tcp",))
        port = service.metricsService.listeningPort.getHost().port
        response, body = await self.get(
            port, "/metrics", b"application/openmetrics-text; version=1.0.0")
        self.assertEqual(response.code, 200)
        self.assertTrue(body.endswith("# EOF\n"))
        self.assertIn("sipcore_connections_opened_total", body)
