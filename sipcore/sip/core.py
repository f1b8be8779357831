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

from twisted.logger import Logger
from zope.interface import implementer

from sipcore import __version__
from sipcore.interfaces import IFlow, IMessageSink
from sipcore.message import Request, Response, SIPParseError, parseMessage

#: The option tags this server understands in C{Require}/C{Proxy-Require}.
SUPPORTED = ("path", "outbound")

#: The methods the server itself answers or routes.
ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "MESSAGE", "INFO",
         "UPDATE", "PRACK", "SUBSCRIBE", "NOTIFY", "REFER")

SERVER = "sipcore/" + __version__

RequestHandler = Callable[[Request, IFlow], None]
ResponseHandler = Callable[[Response, IFlow], None]


def responseAddress(request: Request, flow: IFlow) -> tuple[str, int]:
    """
    Where a response to C{request} goes on an unreliable flow (RFC 3261
    section 18.2.2 with RFC 3581's C{rport}): the source address of the
    request, on the source port when the top Via asked for C{rport}, else on
    the Via's sent-by port.

    @return: C{(host, port)}.
    """
    host, sourcePort = flow.remote
    try:
        vias = request.vias
    except SIPParseError:
        return flow.remote
    if not vias:
        return flow.remote
    via = vias[0]
    if via.rport is not None:
        return host, sourcePort
    if via.maddr:
        return via.maddr, via.port or 5060
    return host, via.port or 5060


def sendResponse(response: Response, request: Request, flow: IFlow) -> bool:
    """
    Send C{response} to C{request} back over C{flow}: over the connection
    for streams, per L{responseAddress} for UDP.

    @return: C{True} if handed to a live transport.
    """
    data = response.serialize()
    if flow.reliable:
        return flow.send(data)
    return flow.sendTo(data, responseAddress(request, flow))


@implementer(IMessageSink)
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
        domains: Iterable[str] = (),
        maxSize: int = 65536,
    ) -> None:
        self.domains = {d.lower() for d in domains}
        self.maxSize = maxSize
        self.stats: Counter[str] = Counter()
        self._handlers: dict[str, RequestHandler] = {}
        self._default: RequestHandler | None = None
        self._responseHandler: ResponseHandler | None = None

    # -- configuration -----------------------------------------------------

    def route(self, method: str, handler: RequestHandler) -> None:
        """
        Send requests of C{method} (upper case) to C{handler(request, flow)}.
        """
        self._handlers[method.upper()] = handler

    def routeDefault(self, handler: RequestHandler) -> None:
        """
        Send requests no other handler takes to C{handler(request, flow)}.
        """
        self._default = handler

    def routeResponses(self, handler: ResponseHandler) -> None:
        """
        Send every response received to C{handler(response, flow)}.
        """
        self._responseHandler = handler

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
        try:
            message = parseMessage(data, maxSize=self.maxSize)
        except SIPParseError as e:
            self._answerError(e, flow)
            return
        try:
            if isinstance(message, Response):
                self._dispatchResponse(message, flow)
            else:
                self._dispatchRequest(message, flow)
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

    def _answerError(self, error: SIPParseError, flow: IFlow) -> None:
        """
        Answer a malformed request with C{error.status} and its reason when
        the parsed part holds what a response needs; drop it otherwise.
        """
        request = error.partial
        if isinstance(request, Request):
            try:
                response = Response.forRequest(request, error.status, error.reason)
                response.headers.set("Server", SERVER)
            except SIPParseError:
                pass
            else:
                self.stats["rejected"] += 1
                sendResponse(response, request, flow)
                return
        self.stats["dropped"] += 1

    def respond(
        self,
        request: Request,
        flow: IFlow,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        toTag: str | None = None,
    ) -> Response:
        """
        Build and send a response to C{request}.

        @return: the L{Response} sent.
        """
        response = Response.forRequest(request, status, reason, toTag=toTag)
        for name, value in headers:
            response.headers.add(name, value)
        response.headers.set("Server", SERVER)
        sendResponse(response, request, flow)
        return response

    def _dispatchRequest(self, request: Request, flow: IFlow) -> None:
        scheme = request.uri.scheme.lower()
        if scheme not in ("sip", "sips", "tel"):
            self.respond(request, flow, 416, "Unsupported URI Scheme")
            return
        unsupported = self._unsupported(request, "Proxy-Require")
        if request.method == "OPTIONS" and not request.uri.user and self.isLocal(
            request.uri.host, flow
        ):
            unsupported += self._unsupported(request, "Require")
            if unsupported:
                self._badExtension(request, flow, unsupported)
                return
            self._answerOptions(request, flow)
            return
        handler = self._handlers.get(request.method)
        if handler is not None:
            unsupported += self._unsupported(request, "Require")
        if unsupported:
            self._badExtension(request, flow, unsupported)
            return
        if handler is None:
            handler = self._default
        if handler is None:
            if request.method != "ACK":
                self.respond(request, flow, 501, "Not Implemented")
            return
        handler(request, flow)

    def _dispatchResponse(self, response: Response, flow: IFlow) -> None:
        if self._responseHandler is None:
            self.stats["responsesDropped"] += 1
            return
        self._responseHandler(response, flow)

    def _unsupported(self, request: Request, header: str) -> list[str]:
        return [
            tag for tag in (v.strip() for v in request.headers.values(header))
            if tag and tag.lower() not in SUPPORTED
        ]

    def _badExtension(self, request: Request, flow: IFlow, tags: list[str]) -> None:
        if request.method == "ACK":
            return
        self.respond(request, flow, 420, "Bad Extension",
                     headers=[("Unsupported", ", ".join(tags))])

    def _answerOptions(self, request: Request, flow: IFlow) -> None:
        self.respond(
            request,
            flow,
            200,
            "OK",
            headers=[
                ("Allow", ", ".join(ALLOW)),
                ("Accept", "application/sdp, text/plain, message/sipfrag"),
                ("Accept-Language", "en"),
                ("Supported", ", ".join(SUPPORTED)),
            ],
        )
