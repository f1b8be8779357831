# -*- test-case-name: tests.test_core -*-
"""
The SIP core: where every framed message from a transport arrives.

It parses, answers what is malformed, answers C{OPTIONS} addressed to the
server itself, and hands requests to the handler registered for their method
(the registrar for C{REGISTER}) or to the default handler (the proxy).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from sipcore.interfaces import IFlow, IMessageSink, ITransactionUser
from sipcore.message import Request, Response, SIPParseError, parseMessage
from sipcore.message._syntax import replaceParam
from sipcore.message.via import Via
from sipcore.metrics import (
    CollectorRegistry,
    Metric,
    counterFamily,
    gaugeFamily,
    labelled,
    register,
)
from sipcore.sip.servertransaction import ServerTransaction, sendToSender
from sipcore.sip.transaction import DEFAULT_MAX_TRANSACTIONS, OVERLOADED, TransactionLayer

#: The option tags this server implements.  C{path} is in effect only when
#: trusted peers are configured (see L{supportedTags}).
SUPPORTED = ("path", "outbound")


def supportedTags(pathAccepted: bool) -> tuple[str, ...]:
    """
    The option tags advertised in C{Supported} and accepted in
    C{Require}/C{Proxy-Require}.

    @param pathAccepted: whether a C{Path} (RFC 3327) can be honoured,
        that is whether any trusted peer is configured: without one
        C{path} is neither advertised nor accepted.
    """
    return SUPPORTED if pathAccepted else tuple(tag for tag in SUPPORTED if tag != "path")


#: The methods the server itself answers or routes.
ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "MESSAGE", "INFO",
         "UPDATE", "PRACK", "SUBSCRIBE", "NOTIFY", "REFER")

#: The default C{Server} header of the responses the server makes itself
#: (C{--server-header}): the product name without its version, which would
#: tell a scanner which flaws to try.
SERVER = "sipcore"

#: What a malformed request must carry to be answered (RFC 3261 8.2.6).
_ANSWERABLE = ("Via", "From", "To", "Call-ID", "CSeq")

ResponseHandler = Callable[[Response, IFlow], None]

class StatelessTransaction:
    """
    A request answered without a server transaction (a malformed request,
    or one refused while the transaction table is full).

    @ivar request: the L{Request}.
    @ivar flow: the L{IFlow} it came on.
    """

    def __init__(self, request: Request, flow: IFlow) -> None:
        self.request = request
        self.flow = flow

    def respond(self, response: Response) -> bool:
        """
        Send C{response} back to the request's sender: over the connection
        for streams, to the Via's address for UDP (L{sendToSender}).
        """
        return sendToSender(self.flow, self.request, response.serialize())

    def terminate(self) -> None:
        """
        Nothing to end: no transaction holds the request.
        """


class ServerTransactionLike(Protocol):
    """
    What request handlers get: a request, its flow, a way to answer, and a
    way to end the transaction unanswered (a request dropped because
    nobody is left to answer).
    """

    request: Request
    flow: IFlow

    def respond(self, response: Response) -> bool: ...

    def terminate(self) -> None: ...


RequestHandler = Callable[[ServerTransactionLike], object]

#: A guard (L{SIPCore.addGuard}): returns C{True} (or a Deferred firing
#: with it) to let the request go on, C{False} once it has answered it.
RequestGuard = Callable[[ServerTransactionLike], "bool | defer.Deferred[bool]"]
AckHandler = Callable[[Request, IFlow], bool]


def stampVia(request: Request, flow: IFlow) -> None:
    """
    Record where a request really came from in its top Via (RFC 3261
    section 18.2.1, RFC 3581): C{received} when the sent-by host is not the
    source address or the sender asked for C{rport}, and the source port in
    C{rport} when it asked.
    """
    via = request.vias[0]
    host, port = flow.remote
    rport = via.rport
    if rport is None and (via.host or "").lower() == host.lower():
        return
    params = via.params
    if rport is not None:
        params = replaceParam(params, "rport", str(port))
    stamped = Via(via.transport, via.host, via.port, replaceParam(params, "received", host),
                  via.protocol, via.version)
    request.replaceTopVia(stamped)


def _nextGuard(go: bool, guard: RequestGuard,
               tx: ServerTransactionLike) -> bool | defer.Deferred[bool]:
    """
    Run C{guard} if the guards before it let the request on.
    """
    return go and guard(tx)


class Refused(Exception):
    """
    A request to answer with an error response.

    @ivar status: the response's status code.
    @ivar reason: its reason phrase.
    @ivar headers: C{(name, value)} pairs to add to the response.
    """

    def __init__(self, status: int, reason: str,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)


def respond(
    tx: ServerTransactionLike,
    status: int,
    reason: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    toTag: str | None = None,
    server: str = SERVER,
) -> Response:
    """
    Build a response to C{tx.request}, add C{headers} and the Server
    header, and send it through C{tx}.

    @param toTag: the To tag to add when To has none; by default a new one
        (none on C{100}).
    @param server: the C{Server} header value; empty: no C{Server} header.
    @return: the L{Response} sent.
    """
    response = Response.forRequest(tx.request, status, reason, toTag=toTag)
    for name, value in headers:
        response.headers.add(name, value)
    if server:
        response.headers.set("Server", server)
    tx.respond(response)
    return response


@implementer(IMessageSink, ITransactionUser)
class SIPCore:
    """
    Parses messages from every transport and dispatches them.

    @ivar domains: the lower-cased domains this server is responsible for.
    @ivar stats: a L{Counter} of C{received}, C{rejected} (answered 4xx/5xx
        for malformed input), C{dropped} (could not even be answered),
        C{responsesDropped} (responses with nobody to take them).
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        domains: Iterable[str] = (),
        maxSize: int = 65536,
        transactions: TransactionLayer | None = None,
        supported: Iterable[str] | None = None,
        maxContacts: int = 0,
        serverHeader: str = SERVER,
        limiter: Any = None,
        maxTransactions: int = DEFAULT_MAX_TRANSACTIONS,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        """
        @param clock: drives the transaction timers.
        @param domains: the domains this server is responsible for.
        @param maxSize: the largest message accepted, in bytes.
        @param transactions: the transaction layer; by default one on
            C{clock} with RFC 3261's timer values, this core as its user.
        @param supported: the option tags advertised and accepted
            (default: L{supportedTags} without C{path}).
        @param maxContacts: a REGISTER with more Contact values than this
            has them counted, not parsed (its handler, the registrar,
            refuses it by the count); C{0}: every one parsed.
        @param serverHeader: the C{Server} header of the responses the core
            makes; empty: none.
        @param limiter: the L{sipcore.sip.limits.RateLimiter} that admits
            each message before it is parsed, or C{None}: no rate limit.
        @param maxTransactions: the most transactions in flight in the
            default transaction layer (more get C{503}).
        @param metrics: the registry its figures and those of its
            transaction layer are served from, or C{None}.
        """
        self.domains = {d.lower() for d in domains}
        self.supported = tuple(supported) if supported is not None else supportedTags(False)
        self._supportedLower = frozenset(tag.lower() for tag in self.supported)
        self.maxSize = maxSize
        self.maxContacts = maxContacts
        self.serverHeader = serverHeader
        self.stats: Counter[str] = Counter()
        self._handlers: dict[str, RequestHandler] = {}
        self._default: RequestHandler | None = None
        self._responseHandler: ResponseHandler | None = None
        self._ackHandler: AckHandler | None = None
        if transactions is None:
            transactions = TransactionLayer(clock, self, maxTransactions=maxTransactions)
        self.transactions = transactions
        # Guards run before a request's handler (authentication);
        # the limiter may refuse a message before it is parsed (rate limit).
        self._guards: list[RequestGuard] = []
        self.limiter: Any = limiter
        register(metrics, _CoreCollector(self))

    # -- configuration -----------------------------------------------------

    def route(self, method: str, handler: RequestHandler) -> None:
        """
        Send requests of C{method} (upper case) to C{handler(transaction)};
        the transaction has C{request}, C{flow} and C{respond(response)}.
        """
        self._handlers[method.upper()] = handler

    def routeDefault(self, handler: RequestHandler) -> None:
        """
        Send requests no other handler takes to C{handler(transaction)}.
        """
        self._default = handler

    def routeAcks(self, handler: AckHandler) -> None:
        """
        Send every ACK no server transaction absorbs (the ACK for a 2xx,
        which goes end to end) to C{handler(request, flow)}.
        """
        self._ackHandler = handler

    def routeResponses(self, handler: ResponseHandler) -> None:
        """
        Send every response received to C{handler(response, flow)}.
        """
        self._responseHandler = handler

    def addGuard(self, guard: RequestGuard) -> None:
        """
        Run C{guard(transaction)} on every new request before its handler
        (after the core's own checks and answers, e.g. to C{OPTIONS} for
        the server itself).  Guards run in the order added; the first to
        answer C{False} stops the request: it has answered it.  A guard
        that raises or fails gets the request answered C{500}.
        """
        self._guards.append(guard)

    def isLocal(self, host: str | None, flow: IFlow | None = None) -> bool:
        """
        Whether C{host} names this server: one of its domains or the local
        address of C{flow}.
        """
        if not host:
            return False
        host = host.lower()
        if host in self.domains:
            return True
        return flow is not None and host == flow.local[0].lower()

    # -- IMessageSink ------------------------------------------------------

    def messageReceived(self, data: bytes, flow: IFlow) -> None:
        self.stats["received"] += 1
        if self.limiter is not None and not self.limiter.admit(data, flow):
            self.stats["rateLimited"] += 1
            return
        if not flow.reliable and self._absorbRetransmission(data):
            return
        try:
            message = parseMessage(data, maxSize=self.maxSize,
                                   maxContacts=self.maxContacts or None)
        except SIPParseError as e:
            self._answerError(e, flow)
            return
        try:
            if isinstance(message, Response):
                self._dispatchResponse(message, flow)
            else:
                self._dispatchRequest(message, flow, data)
        except Exception:
            self.stats["errors"] += 1
            self._log.failure("Unhandled error processing a message from {peer}",
                              peer=flow.remote)

    def messageRejected(self, data: bytes, reason: str, flow: IFlow) -> None:
        self.stats["received"] += 1
        status = 413 if "too large" in reason.lower() else 400
        partial = None
        try:
            parseMessage(data, maxSize=max(self.maxSize, len(data)))
        except SIPParseError as e:
            partial = e.partial
        except Exception:
            partial = None
        self._answerError(SIPParseError(reason, status=status, partial=partial), flow)

    # -- internals -----------------------------------------------------------

    def _absorbRetransmission(self, data: bytes) -> bool:
        """
        Answer a datagram that repeats, byte for byte, the request of a
        live server transaction from that transaction (its last response
        replayed, if its state says so), without parsing it.

        @return: whether C{data} was such a retransmission; C{False}: parse
            and dispatch it normally.
        """
        tx = self.transactions.findRetransmission(data)
        if tx is None:
            return False
        try:
            self.transactions.absorbRetransmission(tx)
        except Exception:
            self.stats["errors"] += 1
            self._log.failure("Unhandled error replaying a response")
        return True

    def _answerError(self, error: SIPParseError, flow: IFlow) -> None:
        """
        Answer a malformed request with C{error.status} and its reason when
        the parsed part holds what a response needs; drop it otherwise.
        """
        request = error.partial
        if isinstance(request, Request) and all(
            name in request.headers for name in _ANSWERABLE
        ):
            try:
                response = Response.forRequest(request, error.status, error.reason)
                if self.serverHeader:
                    response.headers.set("Server", self.serverHeader)
            except SIPParseError:
                pass
            else:
                self.stats["rejected"] += 1
                StatelessTransaction(request, flow).respond(response)
                return
        self.stats["dropped"] += 1

    def respond(
        self,
        tx: ServerTransactionLike,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        toTag: str | None = None,
    ) -> Response:
        """
        Build a response to C{tx.request} and send it through C{tx}; see
        L{respond}.
        """
        return respond(tx, status, reason, headers, toTag, self.serverHeader)

    # -- transaction user (server side) ----------------------------------

    def ackReceived(self, request: Request, flow: IFlow) -> bool:
        """
        An ACK that no server transaction absorbed: handed to the ACK
        handler (L{routeAcks}).

        @return: whether it belonged to a dialog (the handler forwarded it).
        """
        if self._ackHandler is not None:
            return self._ackHandler(request, flow)
        self.stats["acksDropped"] += 1
        return False

    def ackTimeout(self, tx: Any) -> None:
        """
        No ACK came for a final response to an INVITE (Timer H).
        """
        self.stats["ackTimeouts"] += 1

    def unanswered(self, tx: Any) -> None:
        """
        A request got no final response within 64*T1: its transaction
        ended without one (a handler that never answers).
        """
        self.stats["unanswered"] += 1

    def transportError(self, tx: Any) -> None:
        """
        A response could not be sent: the flow has gone.
        """
        self.stats["transportErrors"] += 1

    def _dispatchRequest(self, request: Request, flow: IFlow, data: bytes | None = None) -> None:
        stampVia(request, flow)
        found = self.transactions.requestReceived(request, flow)
        if found is None:
            return
        if found is OVERLOADED:
            self.stats["overloaded"] += 1
            self.respond(StatelessTransaction(request, flow), 503, "Service Unavailable",
                         headers=[("Retry-After", "5")])
            return
        tx, isNew = found
        if not isNew:
            return
        if data is not None and not flow.reliable:
            self.transactions.recordDatagram(tx, data)
        try:
            self._handleNew(tx, request, flow)
        finally:
            # After the handler: a transaction it answered at once needs
            # no timer for an answer that is late.
            tx.start()

    def _handleNew(self, tx: ServerTransaction, request: Request, flow: IFlow) -> None:
        """
        Answer a new request or hand it to its handler.
        """
        scheme = request.uri.scheme.lower()
        if scheme not in ("sip", "sips", "tel"):
            self.respond(tx, 416, "Unsupported URI Scheme")
            return
        unsupported = self._unsupported(request, "Proxy-Require")
        if request.method == "OPTIONS" and not request.uri.user and self.isLocal(
            request.uri.host, flow
        ):
            unsupported += self._unsupported(request, "Require")
            if unsupported:
                self._badExtension(tx, unsupported)
                return
            self._answerOptions(tx)
            return
        handler = self._handlers.get(request.method)
        if handler is not None:
            unsupported += self._unsupported(request, "Require")
        if unsupported:
            self._badExtension(tx, unsupported)
            return
        if handler is None:
            handler = self._default
        if handler is None:
            self.respond(tx, 501, "Not Implemented")
            return
        if self._guards:
            self._guarded(tx, handler)
            return
        handler(tx)

    def _guarded(self, tx: ServerTransactionLike, handler: RequestHandler) -> None:
        """
        Run the guards, then C{handler} if every guard let the request on.
        """
        d: defer.Deferred[bool] = defer.succeed(True)
        for guard in self._guards:
            d.addCallback(_nextGuard, guard, tx)  # type: ignore[call-overload]
        d.addCallback(self._guardsPassed, tx, handler)
        d.addErrback(self._guardFailed, tx)

    def _guardsPassed(self, go: bool, tx: ServerTransactionLike,
                      handler: RequestHandler) -> None:
        if go:
            handler(tx)

    def _guardFailed(self, failure: Any, tx: ServerTransactionLike) -> None:
        self.stats["errors"] += 1
        self._log.failure("a guard or handler failed on a {method} from {peer}",
                          failure, method=tx.request.method, peer=tx.flow.remote)
        try:
            self.respond(tx, 500, "Server Internal Error")
        except Exception:
            pass

    def _dispatchResponse(self, response: Response, flow: IFlow) -> None:
        if self.transactions.responseReceived(response, flow):
            return
        if self._responseHandler is None:
            self.stats["responsesDropped"] += 1
            return
        self._responseHandler(response, flow)

    def _unsupported(self, request: Request, header: str) -> list[str]:
        return [
            tag for tag in (v.strip() for v in request.headers.values(header))
            if tag and tag.lower() not in self._supportedLower
        ]

    def _badExtension(self, tx: ServerTransactionLike, tags: list[str]) -> None:
        self.respond(tx, 420, "Bad Extension", headers=[("Unsupported", ", ".join(tags))])

    def _answerOptions(self, tx: ServerTransactionLike) -> None:
        self.respond(
            tx,
            200,
            "OK",
            headers=[
                ("Allow", ", ".join(ALLOW)),
                ("Accept", "application/sdp, text/plain, message/sipfrag"),
                ("Accept-Language", "en"),
                ("Supported", ", ".join(self.supported)),
            ],
        )


class _CoreCollector:
    """
    The core's message outcomes and its transaction layer's counters.
    """

    def __init__(self, core: SIPCore) -> None:
        self._core = core

    def collect(self) -> list[Metric]:
        core = self._core
        return [
            counterFamily("sipcore_messages_total",
                          "SIP messages received and what became of the bad ones.",
                          ["outcome"], labelled(core.stats)),
            gaugeFamily("sipcore_transactions", "Transaction layer counters and gauges.",
                        ["counter"], labelled(core.transactions.stats())),
        ]
