"""
Tests for the benchmark's own helpers (bench/): what it reads from sipp,
how it judges a step, the table it writes, and the storm client's
messages.  The benchmarks themselves are not run here.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

from sipcore.message import Request, Response, parseMessage
from sipcore.testing import contactsOf

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
# The scripts import their shared helpers (bench/procstat.py) as a script's
# own directory is on its path.
if BENCH not in sys.path:
    sys.path.append(BENCH)


def _load(name: str) -> ModuleType:
    """
    Import C{bench/<name>.py} under a name of its own (bench/ is not a
    package).
    """
    spec = importlib.util.spec_from_file_location(
        "sipcore_bench_" + name, os.path.join(BENCH, name + ".py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


run = _load("run")
storm_client = _load("storm_client")
storm_pinger = _load("storm_pinger")
flood = _load("flood")
procstat = _load("procstat")
cluster_client = _load("cluster_client")


class CpuTicksTests(SynchronousTestCase):
    """
    The CPU time of a process, as both benchmarks read it.
    """

    def test_ownProcess(self) -> None:
        """
        For this process, C{cpuTicks} is the user and system time
        C{os.times} gives, in clock ticks (read a moment apart, so within
        one tick).
        """
        times = os.times()
        expected = (times.user + times.system) * procstat.CLK_TCK
        self.assertLessEqual(abs(procstat.cpuTicks(os.getpid()) - expected), 1.5)

    def test_gone(self) -> None:
        """
        A process that does not exist has used no CPU time.
        """
        self.assertEqual(procstat.cpuTicks(2 ** 31 - 1), 0)


class SippStatsTests(SynchronousTestCase):
    """
    Reading sipp's statistics file.
    """

    def test_lastLineByHeader(self) -> None:
        """
        The last line of the C{-trace_stat} file is read by column name.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("StartTime;CurrentTime;ElapsedTime(C);SuccessfulCall(C);FailedCall(C);"
                    "Retransmissions(C);\n")
            f.write("d\t0\t100.0;d\t0\t101.0;00:00:01;10;0;0;\n")
            f.write("d\t0\t100.0;d\t0\t108.25;00:00:08;4000;2;3;\n")
        row = run.readSippStats(path)
        self.assertEqual(row["SuccessfulCall(C)"], "4000")
        self.assertEqual(row["Retransmissions(C)"], "3")
        self.assertEqual(run.epochOf(row["CurrentTime"]) - run.epochOf(row["StartTime"]), 8.25)
        self.assertEqual(run.parseElapsed(row["ElapsedTime(C)"]), 8.0)
        self.assertEqual(run.parseElapsed("00:00:08:500000"), 8.5)

    def test_missingFile(self) -> None:
        """
        A missing statistics file reads as nothing (the step then fails).
        """
        self.assertEqual(run.readSippStats(self.mktemp()), {})
        self.assertEqual(run.parseElapsed("garbage"), 0.0)


class ReportTests(SynchronousTestCase):
    """
    Ratios and the markdown table.
    """

    def results(self) -> dict:
        rates = [
            {"server": "sipcore-memory", "transport": "udp", "maxRate": 3000, "cpu": 0.9},
            {"server": "kamailio-memory", "transport": "udp", "maxRate": 6000, "cpu": 0.5},
            {"server": "twisted-sip", "transport": "udp", "maxRate": 2000, "cpu": 0.9},
            {"server": "sipcore-postgres", "transport": "udp", "maxRate": 2000, "cpu": 0.9,
             "dbCpu": 0.2},
        ]
        results = {"quick": False, "rates": rates, "skipped": {"kamailio-db": "not here"},
                   "storm": [{"kind": "tcp-reset", "transport": "tcp", "registered": 10,
                              "build": "compiled (mypyc)",
                              "reactor": "sipcore.reactor.FairEPollReactor",
                              "storage": "memory", "secondsUntilDone": 0.5,
                              "answers": {"pings": 70, "lost": 1, "maxMs": 12.5,
                                          "p99Ms": 9.0, "medianMs": 0.8},
                              "maxLagSeconds": 0.01, "rssPerConnection": 3000},
                             {"kind": "ws-drop", "error": "sipcore did not start"}],
                   "machine": {"date": "2026-01-01T00:00:00+00:00", "cpu": "cpu", "cores": 2,
                               "memoryGiB": 24, "kernel": "6", "versions": {"sipp": "v3"}}}
        results["ratios"] = run.summarize(results)
        return results

    def test_ratios(self) -> None:
        """
        Ratios are sipcore's rate over the other's, judged against their
        targets; a comparison whose other side did not run has none.
        """
        ratios = self.results()["ratios"]
        self.assertEqual(ratios["sipcore-memory / kamailio-memory (udp)"],
                         {"ratio": 0.5, "target": 0.6, "met": False})
        self.assertEqual(ratios["sipcore-memory / twisted-sip (udp)"],
                         {"ratio": 1.5, "target": 1.0, "met": True})
        self.assertEqual(ratios["sipcore-postgres / kamailio-db (udp)"]["ratio"], None)

    def test_markdown(self) -> None:
        """
        The table names every server's rate, the ratios, the storm and what
        was skipped and why.
        """
        text = run.markdown(self.results())
        self.assertIn("| sipcore-memory | udp | 3000 | 3000 | 90% | - |", text)
        self.assertIn("| sipcore-memory / kamailio-memory (udp) | 0.5 | 0.6 | no |", text)
        self.assertIn("| tcp-reset | compiled (mypyc) | sipcore.reactor.FairEPollReactor | "
                      "memory | 10 | 12.5 | 9.0 | 0.8 | 70 (1) | 0.5 | 10.0 | 3000 |", text)
        self.assertIn("| ws-drop | - | - | - | - | sipcore did not start |", text)
        self.assertIn("- kamailio-db: not here", text)


class RoundsTests(SynchronousTestCase):
    """
    Several rounds of rate steps: each server's figure is its best round.
    """

    def test_bestOfRounds(self) -> None:
        """
        The best round's result is kept, with every round's rate in round
        order and C{None} where a round did not measure that server.
        """
        def rate(server: str, value: int, cpu: float) -> dict[str, object]:
            return {"server": server, "transport": "udp", "maxRate": value, "cpu": cpu}

        rounds = [[rate("a", 1000, 0.9), rate("b", 500, 0.5)],
                  [rate("b", 400, 0.4), rate("a", 1200, 0.95), rate("c", 7, 0.1)]]
        best = {r["server"]: r for r in run.bestOfRounds(rounds)}
        self.assertEqual(best["a"]["maxRate"], 1200)
        self.assertEqual(best["a"]["cpu"], 0.95)
        self.assertEqual(best["a"]["perRound"], [1000, 1200])
        self.assertEqual(best["b"]["maxRate"], 500)
        self.assertEqual(best["b"]["cpu"], 0.5)
        self.assertEqual(best["b"]["perRound"], [500, 400])
        self.assertEqual(best["c"]["perRound"], [None, 7])

    def test_markdownShowsRounds(self) -> None:
        """
        The table shows each round's rate next to the figure.
        """
        results = {"quick": False, "roundCount": 2, "storm": [], "skipped": {},
                   "rates": [{"server": "sipcore-memory", "transport": "udp", "maxRate": 1200,
                              "cpu": 0.95, "perRound": [1000, 1200]}],
                   "machine": {"date": "d", "cpu": "cpu", "cores": 2, "memoryGiB": 24,
                               "kernel": "6", "versions": {}}}
        results["ratios"] = run.summarize(results)
        text = run.markdown(results)
        self.assertIn("| sipcore-memory | udp | 1200 | 1000 / 1200 | 95% | - |", text)
        self.assertIn("2 round(s)", text)


class StormClientTests(SynchronousTestCase):
    """
    The storm client's REGISTER and WebSocket frames.
    """

    def test_registerParses(self) -> None:
        """
        The client's REGISTER is a valid SIP request for its own user, with
        a Via and Contact of the transport used.
        """
        message = parseMessage(storm_client.register("s1x2", "ws", ("127.0.0.1", 5000), 8080))
        assert isinstance(message, Request)
        self.assertEqual(message.method, "REGISTER")
        self.assertEqual(message.toAddr.uri.user, "s1x2")
        self.assertEqual(message.vias[0].transport, "WS")
        [contact] = contactsOf(message)
        self.assertEqual(contact.uri.param("transport"), "ws")

    def test_wsFrameMasked(self) -> None:
        """
        A frame is a masked text frame whose payload unmasks to the message
        (short and 16-bit lengths).
        """
        for payload in (b"x" * 10, b"y" * 400):
            frame = storm_client.wsFrame(payload)
            self.assertEqual(frame[0], 0x81)
            self.assertTrue(frame[1] & 0x80)
            offset = 2 if len(payload) < 126 else 4
            mask = frame[offset:offset + 4]
            body = frame[offset + 4:]
            self.assertEqual(bytes(b ^ mask[i % 4] for i, b in enumerate(body)), payload)


class StormFiguresTests(SynchronousTestCase):
    """
    The storm's pinger messages and the answer-time figures made from its
    samples.
    """

    def test_pingerOptions(self) -> None:
        """
        The pinger's OPTIONS is a valid SIP request whose answer (which
        copies its Call-ID) names its number.
        """
        data = storm_pinger.options(5060, 4000, 41)
        request = parseMessage(data)
        assert isinstance(request, Request)
        self.assertEqual(request.method, "OPTIONS")
        self.assertEqual(storm_pinger.callNumber(data), 42)
        self.assertIsNone(storm_pinger.callNumber(b"SIP/2.0 200 OK\r\nCall-ID: other\r\n"))

    def test_refreshRegister(self) -> None:
        """
        A refresh is the same registration with the next CSeq.
        """
        first = parseMessage(storm_client.register("s1x2", "tcp", ("127.0.0.1", 5000), 5060))
        refresh = parseMessage(storm_client.register("s1x2", "tcp", ("127.0.0.1", 5000), 5060,
                                                     cseq=2))
        assert isinstance(first, Request) and isinstance(refresh, Request)
        self.assertEqual(refresh.callId, first.callId)
        self.assertEqual(refresh.cseq, (2, "REGISTER"))

    def test_answerFigures(self) -> None:
        """
        Only the pings sent in the window count; an unanswered one is lost,
        not a time; the 99th percentile of 100 times is the 99th smallest.
        """
        samples: list[list[float | None]] = [[100.0 + i / 100, (i + 1) / 1000]
                                             for i in range(100)]
        samples += [[101.5, None], [99.0, 5.0], [103.0, 5.0]]
        figures = run.answerFigures(samples, 100.0, 102.0)
        self.assertEqual(figures, {"pings": 101, "lost": 1, "maxMs": 100.0, "p99Ms": 99.0,
                                   "medianMs": 50.0})
        self.assertEqual(run.answerFigures([], 0.0, 1.0),
                         {"pings": 0, "lost": 0, "maxMs": None, "p99Ms": None,
                          "medianMs": None})


class CloseWorkTests(SynchronousTestCase):
    """
    When the in-memory storm counts the server's close work as done.
    """

    def test_closeWorkIn(self) -> None:
        """
        A connection open, a queued item or a handler call in flight is
        work left; counters that only share a name's start are not.
        """
        idle = {'sipcore_connections_open{transport="tcp"}': 0.0,
                'sipcore_connections_opened_total{transport="tcp"}': 10000.0,
                'sipcore_jobqueue_depth{queue="location-cleanup"}': 0.0,
                'sipcore_handler_inflight{handler="location-cleanup",state="running"}': 0.0}
        self.assertFalse(run.closeWorkIn(idle))
        for key in ('sipcore_connections_open{transport="tcp"}',
                    'sipcore_jobqueue_depth{queue="location-cleanup"}',
                    'sipcore_handler_inflight{handler="location-cleanup",state="running"}'):
            self.assertTrue(run.closeWorkIn(dict(idle, **{key: 1.0})), key)


class FloodTests(SynchronousTestCase):
    """
    The flood-fairness benchmark's messages, its summary and its table.
    """

    def result(self) -> dict[str, object]:
        return {"seconds": 10.0, "maxPackets": 100, "sources": 8, "reactor": "default",
                "flood": {"sent": 1500000, "errors": 0, "seconds": 10.0, "rate": 150000},
                "probe": {"probes": 85, "answered": 83, "maxAnswerSeconds": 0.07,
                          "medianAnswerSeconds": 0.001},
                "serverCpu": 0.8, "kernelDrops": 4000, "answeredFraction": 0.976}

    def test_optionsParses(self) -> None:
        """
        Flood and probe requests are OPTIONS from the address they are sent
        from, told apart by their Call-ID.
        """
        data = flood.options("127.0.0.20", 4000, 5060, "probe7")
        request = parseMessage(data)
        self.assertIsInstance(request, Request)
        self.assertEqual(request.method, "OPTIONS")  # type: ignore[union-attr]
        self.assertEqual(flood.callIdOf(data), "probe7")
        self.assertIn(b"127.0.0.20:4000", data)

    def test_summaryAndTable(self) -> None:
        """
        The summary line and the report's table show the flood's rate and
        the prober's answered fraction.
        """
        self.assertIn("prober answered 83/85 (0.976)", flood.summary(self.result()))
        results = {"quick": False, "roundCount": 1, "storm": [], "skipped": {}, "rates": [],
                   "flood": self.result(),
                   "machine": {"date": "d", "cpu": "cpu", "cores": 2, "memoryGiB": 24,
                               "kernel": "6", "versions": {}}}
        results["ratios"] = run.summarize(results)
        text = run.markdown(results)
        self.assertIn("| 150000 | 8 | 4000 | 80% | 83/85 (98%) | 0.07 | 0.001 |", text)


class ClusterClientTests(SynchronousTestCase):
    """
    The cluster benchmark's client: its messages, its framing, and the
    answer that tells the sender whether the request crossed members.
    """

    def test_messageParses(self) -> None:
        """
        The sender's MESSAGE is a valid SIP request to the user named, with
        its body.
        """
        message = parseMessage(cluster_client.message("u7", 3, ("127.0.0.1", 5000)))
        assert isinstance(message, Request)
        self.assertEqual(message.method, "MESSAGE")
        self.assertEqual(message.uri.user, "u7")
        self.assertEqual(message.body, b"hello")

    def test_registerParses(self) -> None:
        """
        The answerer's REGISTER binds its user to the connection's own
        address over TCP.
        """
        message = parseMessage(cluster_client.register("u1", ("127.0.0.2", 4000)))
        assert isinstance(message, Request)
        [contact] = contactsOf(message)
        self.assertEqual((contact.uri.host, contact.uri.port), ("127.0.0.2", 4000))
        self.assertEqual(contact.uri.param("transport"), "tcp")

    def test_answerCountsVias(self) -> None:
        """
        The 200 for a MESSAGE copies its Via entries in order (also those
        of one header line), tags its To, and counts the entries in
        C{X-Bench-Vias}.
        """
        request = cluster_client.message("u7", 3, ("127.0.0.1", 5000)).replace(
            b"Via: ", b"Via: SIP/2.0/TCP 127.0.0.2:5;branch=z9hG4bKb, "
                      b"SIP/2.0/TCP 127.0.0.1:6;branch=z9hG4bKc\r\nVia: ", 1)
        head = request.split(b"\r\n\r\n", 1)[0]
        response = parseMessage(cluster_client.okFor(head))
        assert isinstance(response, Response)
        self.assertEqual(response.status, 200)
        self.assertEqual([via.branch for via in response.vias][:2],
                         ["z9hG4bKb", "z9hG4bKc"])
        self.assertEqual(len(response.vias), 3)
        self.assertEqual(response.headers.first("x-bench-vias"), "3")
        self.assertEqual(response.toAddr.param("tag"), "a")

    def test_framing(self) -> None:
        """
        Messages are split by their Content-Length, also two in one chunk
        and one over two chunks.
        """
        heads: list[bytes] = []
        framer = cluster_client.Framer(lambda conn, head: heads.append(head))
        one = cluster_client.message("u1", 1, ("127.0.0.1", 5000))
        two = cluster_client.message("u2", 2, ("127.0.0.1", 5000))
        framer.data_received(one + two[:-3])
        self.assertEqual(len(heads), 1)
        framer.data_received(two[-3:])
        self.assertEqual([cluster_client.header(h, b"call-id:") for h in heads],
                         [b"m1-%d" % os.getpid(), b"m2-%d" % os.getpid()])
        self.assertEqual(framer.buffer, b"")

    def test_onlyLoopback(self) -> None:
        """
        Servers are taken only on 127.0.0.x.
        """
        self.assertEqual(cluster_client.parseServer("127.0.0.2:5060"), ("127.0.0.2", 5060))
        self.assertRaises(argparse.ArgumentTypeError, cluster_client.parseServer,
                          "10.0.0.1:5060")

    def test_percentile(self) -> None:
        """
        The nearest-rank percentile; none of nothing.
        """
        values = [float(n) for n in range(1, 101)]
        self.assertEqual(cluster_client.percentile(values, 0.99), 100.0)
        self.assertEqual(cluster_client.percentile(values, 0.5), 51.0)
        self.assertIsNone(cluster_client.percentile([], 0.99))

    def test_markdownCluster(self) -> None:
        """
        The cluster table shows each setup's MESSAGE rate, the share that
        crossed, and the answer times on the same and on another member
        (C{-} where none crossed), and why a setup did not run.
        """
        results = {"quick": False, "storm": [], "skipped": {}, "rates": [],
                   "cluster": [
                       {"server": "sipcore-postgres-2n", "members": 2, "maxRate": 2000,
                        "crossedShare": 0.5, "cpu": 0.8,
                        "latency": {"same": {"medianMs": 1.5, "p99Ms": 9.0},
                                    "crossed": {"medianMs": 2.5, "p99Ms": 12.0}}},
                       {"server": "sipcore-memory", "members": 1, "maxRate": 3000,
                        "crossedShare": 0.0, "cpu": 0.9,
                        "latency": {"same": {"medianMs": 1.0, "p99Ms": 5.0},
                                    "crossed": {"medianMs": None, "p99Ms": None}}},
                       {"server": "kamailio-memory", "error": "skipped: not here"}],
                   "machine": {"date": "d", "cpu": "cpu", "cores": 2, "memoryGiB": 24,
                               "kernel": "6", "versions": {}}}
        results["ratios"] = run.summarize(results)
        text = run.markdown(results)
        self.assertIn("| sipcore-postgres-2n | 2 | 2000 | 50% | 80% | 1.5 / 9.0 | 2.5 / 12.0 |",
                      text)
        self.assertIn("| sipcore-memory | 1 | 3000 | 0% | 90% | 1.0 / 5.0 | - / - |", text)
        self.assertIn("| kamailio-memory | | skipped: not here |", text)
