# -*- test-case-name: tests.test_metrics -*-
"""
Metrics: what the server is doing, as numbers, for operators and their
monitoring.

L{collect} reads every counter and gauge of a running
L{sipcore.service.SIPCoreService}; L{MetricsResource} serves them in the
Prometheus text exposition format (version 0.0.4) on
C{--metrics-listen}.  Nothing here logs: logs stay one line per state
change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

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


def collect(service: Any) -> list[Sample]:
    """
    Read the current metrics of C{service}.

    @return: the samples, grouped by metric name.
    """
    samples: list[Sample] = []
    table = service.table
    samples.append(("sipcore_connections_open", {}, float(len(table))))
    samples.append(("sipcore_connections_opened_total", {}, float(table.opened)))
    for event, count in sorted(table.closed.items()):
        samples.append(("sipcore_connections_closed_total", {"event": event}, float(count)))

    core = service.core
    for outcome, count in sorted(core.stats.items()):
        samples.append(("sipcore_messages_total", {"outcome": outcome}, float(count)))
    transactions = getattr(core, "transactions", None)
    if transactions is not None:
        for name, count in sorted(transactions.stats().items()):
            samples.append(("sipcore_transactions", {"counter": name}, float(count)))

    limiter = getattr(core, "limiter", None)
    if limiter is not None:
        from sipcore.sip.limits import OUTCOMES

        limited = limiter.counts()
        for outcome in OUTCOMES:
            samples.append(("sipcore_rate_limit_total", {"outcome": outcome},
                            float(limited[outcome])))

    registrar = getattr(service, "registrar", None)
    if registrar is not None:
        for outcome, count in sorted(registrar.stats.items()):
            samples.append(("sipcore_registrar_total", {"outcome": outcome}, float(count)))

    authenticator = getattr(service, "authenticator", None)
    if authenticator is not None:
        from sipcore.sip.auth import FAILURE_KINDS

        counts = authenticator.stats
        samples.append(("sipcore_auth_challenges_total", {}, float(counts["challenged"])))
        samples.append(("sipcore_auth_successes_total", {}, float(counts["authenticated"])))
        for kind in FAILURE_KINDS:
            samples.append(("sipcore_auth_failures_total", {"kind": kind}, float(counts[kind])))
        samples.append(("sipcore_auth_lockouts_total", {}, float(counts["lockouts"])))
        samples.append(("sipcore_auth_locked_out_total", {}, float(counts["lockedOut"])))
        samples.append(("sipcore_auth_unavailable_total", {}, float(counts["unavailable"])))

    for handler, stats in sorted(service.bus.metrics().items()):
        for outcome in ("fired", "succeeded", "failed", "timedOut", "queued", "dropped"):
            samples.append(("sipcore_handler_events_total",
                            {"handler": handler, "outcome": outcome},
                            float(stats.get(outcome, 0))))
        for state in ("running", "waiting"):
            samples.append(("sipcore_handler_inflight", {"handler": handler, "state": state},
                            float(stats.get(state, 0))))

    for queue in service.queues:
        for key, value in sorted(queue.metrics().items()):
            number = _number(value)
            if number is not None:
                samples.append(("sipcore_jobqueue", {"queue": queue.name, "counter": key},
                                number))

    store = service.store
    available = getattr(store, "available", True)
    samples.append(("sipcore_store_available", {}, 1.0 if available else 0.0))
    for kind, count in sorted(getattr(store, "statementCount", {}).items()):
        samples.append(("sipcore_store_statements_total", {"kind": kind}, float(count)))
    probe = getattr(service, "lagProbe", None)
    if probe is not None:
        samples.append(("sipcore_reactor_lag_seconds", {"stat": "last"}, probe.last))
        samples.append(("sipcore_reactor_lag_seconds", {"stat": "max"}, probe.max))
        samples.append(("sipcore_reactor_lag_seconds", {"stat": "recent_max"},
                        probe.recentMax()))
    return samples


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

    def __init__(self, service: Any) -> None:
        super().__init__()
        self._service = service

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        if request.path not in (b"/", b"/metrics"):
            request.setResponseCode(404)
            return b"not found: try /metrics\n"
        return render(collect(self._service)).encode("utf-8")
