# -*- test-case-name: tests.test_limits -*-
"""
Per-source request-rate limiting, and the log throttle every limit uses.

L{TokenBuckets} keeps one token bucket per source address in bounded
memory.  L{RateLimiter} is what L{sipcore.sip.core.SIPCore} consults for
every received message: within the bucket the message goes on; a source
that has emptied its bucket gets C{503 Service Unavailable} with
C{Retry-After} for up to C{overdraft} more requests; past that its requests
are dropped silently (answering a flood would double it).  Responses cost a
token too, and over the limit are always dropped (a response is never
answered).

A dropped message costs its source nothing, so while a source's bucket is
below the drop threshold the verdict for every message from it is known in
advance: L{RateLimiter.blocked} holds, per source address, the time until
which it is C{DROP}.  The UDP transport looks a datagram's source up there
before it does anything else with it (L{sipcore.transport.udp}), so a
flooding source costs one dictionary lookup and a comparison per datagram,
not a trip through the core and the limiter.

L{LogThrottle} makes a limit log once per source per interval, not once per
packet: the first hit of an interval is logged, with the number of hits
suppressed since the previous line.
"""

from __future__ import annotations

import enum
import math
from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sipcore.interfaces import IFlow
from sipcore.metrics import CollectorRegistry, Metric, counterFamily, register
from sipcore.throttle import LogThrottle, sourceKey

__all__ = [
    "DEFAULT_LOG_INTERVAL",
    "DEFAULT_MAX_SOURCES",
    "OUTCOMES",
    "LogThrottle",
    "RateLimiter",
    "TokenBuckets",
    "Verdict",
]

#: Seconds between two log lines about the same source and limit.
DEFAULT_LOG_INTERVAL = 60.0

#: Sources whose bucket state is kept; the least recently seen are
#: forgotten first (a forgotten source starts again with a full bucket).
DEFAULT_MAX_SOURCES = 10000

#: The counters of L{RateLimiter.stats}.
OUTCOMES = ("admitted", "refused", "dropped", "droppedEarly", "responsesDropped", "exempt",
            "penalized")


class Verdict(enum.Enum):
    """
    What to do with one request from a source.
    """

    #: Within the rate: process it.
    ADMIT = "admit"
    #: Over the rate: answer C{503} with C{Retry-After}.
    REFUSE = "refuse"
    #: Far over the rate: drop it without an answer.
    DROP = "drop"


class TokenBuckets:
    """
    One token bucket per key, in bounded memory.

    A bucket holds up to C{burst} tokens and refills at C{rate} tokens a
    second.  A request takes one token.  When the bucket holds less than one
    token the request is refused, and the bucket may go into debt down to
    C{-overdraft} tokens; a request that would go deeper is dropped (and
    costs nothing, so the debt is paid back at C{rate}).

    @ivar rate: tokens per second (requests per second sustained).
    @ivar burst: bucket size (requests accepted at once after a quiet time).
    @ivar overdraft: requests refused with an answer before the rest are
        dropped.
    """

    def __init__(
        self,
        clock: IReactorTime,
        rate: float,
        burst: float,
        overdraft: float,
        maxSources: int = DEFAULT_MAX_SOURCES,
    ) -> None:
        """
        @raise ValueError: if C{rate} or C{burst} is not positive, or
            C{overdraft} or C{maxSources} is negative.
        """
        if not rate > 0:
            raise ValueError("rate must be positive")
        if not burst >= 1:
            raise ValueError("burst must be at least 1")
        if overdraft < 0:
            raise ValueError("overdraft must not be negative")
        if maxSources < 1:
            raise ValueError("maxSources must be positive")
        self._clock = clock
        self.rate = float(rate)
        self.burst = float(burst)
        self.overdraft = float(overdraft)
        self.maxSources = maxSources
        # key -> [tokens, time of the last update]
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: Hashable) -> list[float]:
        now = self._clock.seconds()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = [self.burst, now]
            self._buckets[key] = bucket
            while len(self._buckets) > self.maxSources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket[1])
            bucket[0] = min(self.burst, bucket[0] + elapsed * self.rate)
            bucket[1] = now
        return bucket

    def take(self, key: Hashable) -> Verdict:
        """
        One request from C{key}.

        @return: the L{Verdict}.
        """
        bucket = self._bucket(key)
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return Verdict.ADMIT
        if bucket[0] - 1.0 >= -self.overdraft:
            bucket[0] -= 1.0
            return Verdict.REFUSE
        return Verdict.DROP

    def penalize(self, key: Hashable, cost: float) -> None:
        """
        Take C{cost} tokens from C{key}'s bucket (down to the overdraft
        floor), e.g. for a failed authentication.
        """
        bucket = self._bucket(key)
        bucket[0] = max(-self.overdraft - 1.0, bucket[0] - cost)

    def dropUntil(self, key: Hashable) -> float | None:
        """
        When the next request from C{key} stops being dropped.

        A dropped request takes no token, so until the bucket has refilled
        to the drop threshold every request from C{key} is dropped.

        @return: the time (of the clock) until which every request from
            C{key} gets L{Verdict.DROP}; C{None} if the next one would not.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        threshold = 1.0 - self.overdraft
        if bucket[0] >= threshold:
            return None
        return bucket[1] + (threshold - bucket[0]) / self.rate

    def retryAfter(self, key: Hashable) -> int:
        """
        @return: whole seconds (at least 1) until C{key}'s bucket holds a
            token again.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            return 1
        missing = 1.0 - bucket[0]
        return max(1, int(math.ceil(missing / self.rate)))


class RateLimiter:
    """
    Applies L{TokenBuckets} keyed by source address to received messages.

    @ivar stats: a L{Counter} of C{admitted}, C{refused} (answered 503),
        C{dropped} (dropped silently), C{droppedEarly} (those among them a
        transport dropped by L{blocked} before they reached the limiter;
        counted when their source's entry is replaced or removed),
        C{responsesDropped} (the responses among them, early drops not
        included: an early drop is not parsed), C{exempt} (from an exempt
        address) and C{penalized} (tokens taken for failed
        authentications).
    @ivar blocked: for each source address (as its transport gives it,
        e.g. C{flow.remote[0]}) whose messages are dropped for now, a list
        C{[until, drops]}: the time until which every message from it is
        dropped, and the messages a transport dropped on this entry.  A
        transport that sees C{until} still ahead drops the message and adds
        one to C{drops}, without calling L{admit}.  At most C{maxSources}
        entries.
    @ivar clock: the L{IReactorTime} the buckets and L{blocked} are timed
        by.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        rate: float = 50.0,
        burst: float = 200.0,
        overdraft: float = 50.0,
        exempt: Iterable[str] = (),
        maxSources: int = DEFAULT_MAX_SOURCES,
        logInterval: float = DEFAULT_LOG_INTERVAL,
        serverHeader: str | None = None,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        """
        @param clock: the L{IReactorTime}.
        @param rate: requests per second a source may send, sustained.
        @param burst: requests a source may send at once.
        @param overdraft: requests over the rate answered C{503} before the
            rest are dropped.
        @param exempt: source addresses never limited (peer proxies, load
            balancers, monitoring).
        @param maxSources: sources remembered at most.
        @param logInterval: seconds between log lines about one source.
        @param serverHeader: the C{Server} header of its C{503}s (default
            L{sipcore.sip.core.SERVER}); empty: none.
        @param metrics: the registry its outcomes are served from, or
            C{None}.
        """
        self.clock = clock
        self.serverHeader = serverHeader
        self.buckets = TokenBuckets(clock, rate, burst, overdraft, maxSources)
        self.exempt = frozenset(address.lower() for address in exempt)
        self.throttle = LogThrottle(clock, logInterval, maxSources)
        self.stats: Counter[str] = Counter()
        register(metrics, _RateLimitCollector(self))
        self.blocked: dict[str, list[float]] = {}
        self._maxBlocked = maxSources

    def admit(self, data: bytes, flow: IFlow) -> bool:
        """
        Decide whether a received message may be processed; answer or drop
        it if not.

        Responses (data starting with C{SIP/}) cost a token of their
        source's bucket like requests (a flood of forged responses is a
        flood too), but they are never answered: over the limit they are
        dropped and counted (C{dropped} and C{responsesDropped}).

        @param data: the message as received.
        @param flow: the L{IFlow} it came on.
        @return: C{True} to process the message; C{False} if it was
            answered with C{503} or dropped.
        """
        source = flow.remote[0]
        address = source.lower()
        if address in self.exempt:
            self.stats["exempt"] += 1
            return True
        host = sourceKey(address)
        verdict = self.buckets.take(host)
        early = self._unblock(source)
        if early:
            self.throttle.addSuppressed(host, early)
        until = self.buckets.dropUntil(host)
        if until is not None:
            self._block(source, until)
        if verdict is Verdict.ADMIT:
            self.stats["admitted"] += 1
            return True
        if data[:4].upper() == b"SIP/":
            self.stats["dropped"] += 1
            self.stats["responsesDropped"] += 1
        elif verdict is Verdict.REFUSE:
            self.stats["refused"] += 1
            self._answer(data, flow, self.buckets.retryAfter(host))
        else:
            self.stats["dropped"] += 1
        suppressed = self.throttle.hit(host)
        if suppressed is not None:
            self._log.warn(
                "rate limit: source {host} exceeds {rate:g} requests/s "
                "({suppressed} messages refused or dropped since the last report)",
                host=host,
                rate=self.buckets.rate,
                suppressed=suppressed,
            )
        return False

    def counts(self) -> Counter[str]:
        """
        L{stats} with the early drops not counted there yet (those of the
        current L{blocked} entries) added to C{dropped} and
        C{droppedEarly}.
        """
        counts = Counter(self.stats)
        pending = int(sum(entry[1] for entry in self.blocked.values()))
        counts["dropped"] += pending
        counts["droppedEarly"] += pending
        return counts

    def _unblock(self, source: str) -> int:
        """
        Remove the L{blocked} entry of C{source}, counting its early drops.

        @return: the messages dropped early on that entry.
        """
        entry = self.blocked.pop(source, None)
        if entry is None:
            return 0
        drops = int(entry[1])
        if drops:
            self.stats["dropped"] += drops
            self.stats["droppedEarly"] += drops
        return drops

    def _block(self, source: str, until: float) -> None:
        """
        Enter C{source} in L{blocked} until C{until}, keeping the table
        bounded: when it is full, the entries that ended are removed (their
        drops counted), and if none had, all of them.
        """
        blocked = self.blocked
        if len(blocked) >= self._maxBlocked:
            now = self.clock.seconds()
            ended = [key for key, entry in blocked.items() if entry[0] <= now]
            for key in ended if ended else list(blocked):
                self._unblock(key)
        blocked[source] = [until, 0.0]

    def penalize(self, flow: IFlow, cost: float) -> None:
        """
        Charge the source of C{flow} C{cost} extra requests (a failed
        authentication costs more than a request, which slows password
        guessing down).
        """
        address = flow.remote[0].lower()
        if address in self.exempt:
            return
        host = sourceKey(address)
        self.stats["penalized"] += 1
        self.buckets.penalize(host, cost)

    def _answer(self, data: bytes, flow: IFlow, retryAfter: int) -> None:
        """
        Answer C{503} with C{Retry-After} if the message is a request that
        can be answered (not an ACK, parsable up to its headers).
        """
        from sipcore.message import Request, Response, SIPParseError, parseMessage
        from sipcore.sip.core import SERVER, StatelessTransaction, stampVia

        server = SERVER if self.serverHeader is None else self.serverHeader

        try:
            request: Any = parseMessage(data, maxSize=max(len(data), 1))
        except SIPParseError:
            return
        if not isinstance(request, Request) or request.method == "ACK":
            return
        try:
            stampVia(request, flow)
            response = Response.forRequest(request, 503, "Service Unavailable")
            response.headers.set("Retry-After", str(retryAfter))
            if server:
                response.headers.set("Server", server)
            StatelessTransaction(request, flow).respond(response)
        except (SIPParseError, ValueError, IndexError):
            return


class _RateLimitCollector:
    """
    The per-source rate limiter's outcomes.
    """

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    def collect(self) -> list[Metric]:
        counts = self._limiter.counts()
        return [counterFamily(
            "sipcore_rate_limit_total",
            "Messages the per-source rate limit decided on, by outcome (droppedEarly: dropped "
            "on arrival, a part of dropped).",
            ["outcome"], [([outcome], counts[outcome]) for outcome in OUTCOMES])]
