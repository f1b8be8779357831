# -*- test-case-name: tests.test_transport_websocket -*-
"""
SIP over WebSocket (RFC 7118) with autobahn.

The client must offer the C{sip} subprotocol; a handshake without it is
refused with HTTP C{400 Bad Request} (RFC 6455 reserves C{426 Upgrade
Required} for an unsupported protocol I{version}, and RFC 7118 names no
status for a missing subprotocol).  Each WebSocket message carries one SIP
message, as a text or binary frame.

Origin policy: a browser says which page opened the connection in the
C{Origin} header.  By default (C{allowedOrigins=None}) an origin is allowed
when its host is one of C{originDomains} (the server's domains) or the
local address the connection was accepted on; never because it matches
the C{Host} header, which whoever makes the request chooses.  Otherwise
the list of patterns decides (C{*} matches anything:
C{https://*.example.com}).  A refused origin gets HTTP C{403 Forbidden}
at the handshake.  A request without C{Origin} (not from a browser) is
allowed: non-browser clients can send any Origin they like, so the check
protects browsers' users only.

Opening handshake: it must complete within C{handshakeTimeout} seconds
of the accept (for WSS, the TLS handshake included), else the connection
closes as C{tcp:timeout}; a request whose headers exceed
C{maxHandshakeSize} bytes is answered HTTP C{431} and closed as soon as
that many bytes arrived without the end of the headers, before autobahn
parses any of it.

These settings, and those below, are the factory's
L{ConnectionSettings}.

Keepalive: autobahn pings every C{autoPingInterval} seconds; no pong within
C{autoPingTimeout} closes the connection as C{tcp:timeout} (and
C{websocket:closed}).

Every timer autobahn sets (opening and closing handshake timeouts,
automatic pings) runs on the reactor given to L{SIPWebSocketFactory}, not
on the global one, so tests with a fake clock see them all.

Memory: most connections sit idle for hours, so an idle connection keeps
only what a WebSocket needs once it is open.  The protocol options are
read from the factory instead of being copied onto every connection; the
opening handshake (request headers, response, key) is released when the
WebSocket opens; the send queue autobahn uses for chopped or synchronous
sends (which sipcore does not make), the UTF-8 validator and the unmasker
of incoming frames exist only while they are in use.

What this needs of autobahn beyond its public API is in
L{sipcore.transport._autobahn}.
"""

from __future__ import annotations

from collections import deque
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import (
    WebSocketAdapterProtocol,
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.util import wildcards2patterns
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest, ConnectionResponse
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from sipcore.events import TCP_CLOSED, TCP_RESET, TCP_TIMEOUT
from sipcore.interfaces import IMessageSink
from sipcore.throttle import LogThrottle
from sipcore.transport._autobahn import (
    HANDSHAKE_STATE,
    FrameState,
    QuietConnectionLost,
    cancelCloseHandshakeTimer,
    closeState,
    readOptionsFromFactory,
    useReactorTimers,
)
from sipcore.transport.connections import (
    ConnectionTable,
    StreamFlow,
)
from sipcore.transport.lifecycle import ConnectAttempt, StreamLifecycle, StreamServerFactory
from sipcore.transport.settings import DEFAULT_MAX_HANDSHAKE_SIZE, ConnectionSettings
from sipcore.transport.stream import PONG, classifyLoss

__all__ = [
    "DEFAULT_MAX_HANDSHAKE_SIZE",
    "CLOSE_GOING_AWAY",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "SIP_SUBPROTOCOL",
    "SIPWebSocketClientFactory",
    "SIPWebSocketClientProtocol",
    "SIPWebSocketFactory",
    "SIPWebSocketProtocol",
]

#: The WebSocket subprotocol of RFC 7118.
SIP_SUBPROTOCOL = "sip"

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_MESSAGE_TOO_BIG = 1009

#: HTTP's status for a request whose headers are too large (RFC 6585).
_TOO_LARGE = 431
_TOO_LARGE_REASON = "Request Header Fields Too Large"

_OPEN = WebSocketProtocol.STATE_OPEN
_CONNECTING = WebSocketProtocol.STATE_CONNECTING
_CLOSED = WebSocketProtocol.STATE_CLOSED

class _SIPWebSocket(FrameState, StreamLifecycle, WebSocketAdapterProtocol,  # type: ignore[misc]
                    WebSocketProtocol):
    """
    What a WS or WSS connection carrying SIP does whichever side opened it:
    its flow in the connection table, its messages to the sink, its
    timers, and the close event its end fires.

    @ivar sipFlow: the L{StreamFlow} handed to the sink (C{None} until the
        TCP connection is made).
    """

    _log = Logger()
    factory: Any

    _sendQueue: deque[tuple[bytes, bool]] | None = None
    _utf8validator: Utf8Validator | None = None

    def __init__(self) -> None:
        super().__init__()
        self.sipFlow: StreamFlow | None = None
        self._lostReason: Failure = connectionDone
        self._reported = False
        self._wsOpen = False
        self._rejected = False

    # -- autobahn's per-connection state, made when it is used -------------

    @property
    def send_queue(self) -> Any:
        """
        autobahn's queue of chopped or synchronous sends (sipcore makes
        none): until L{sendData} makes the queue for such a send, C{()},
        which autobahn only asks for its length.  (C{Any}: autobahn
        declares a C{deque}, and C{()} stands in for one.)
        """
        return self._sendQueue if self._sendQueue is not None else ()

    @send_queue.setter
    def send_queue(self, queue: deque[tuple[bytes, bool]]) -> None:
        self._sendQueue = queue if queue else None

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """
        Send raw bytes (autobahn's C{sendData}), making the send queue first
        when autobahn will queue them.
        """
        if (sync or chopsize) and self._sendQueue is None:
            self._sendQueue = deque()
        super().sendData(data, sync, chopsize)

    @property
    def utf8validator(self) -> Utf8Validator:
        """
        autobahn's incremental UTF-8 validator for incoming text messages:
        released (by L{_releaseFrameState}) when no message is being
        received, made again when a text message begins.
        """
        if self._utf8validator is None:
            self._utf8validator = Utf8Validator()
        return self._utf8validator

    @utf8validator.setter
    def utf8validator(self, validator: Utf8Validator) -> None:
        self._utf8validator = validator

    # -- Twisted ----------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        self.sipFlow = self._join()

    def dataReceived(self, data: bytes) -> None:
        if self._refused or self._lost or self.state == _CLOSED:
            # autobahn would buffer what comes after a failed handshake
            # and ignore it.
            return
        self._resetIdle()
        super().dataReceived(data)
        self._checkPartial()
        self._releaseFrameState()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._lost:
            return
        self._lost = True
        self._lostReason = reason
        self._cancelTimers()
        try:
            super().connectionLost(reason)
        finally:
            cancelCloseHandshakeTimer(self)
            self._report()

    # -- autobahn ---------------------------------------------------------

    def _opened(self) -> None:
        """
        The WebSocket handshake completed: fire C{websocket:connected}.
        """
        if self._refused or self.sipFlow is None:
            return
        self._wsOpen = True
        if self.sipFlow.conid is not None:
            self.factory.table.websocketOpened(self.sipFlow.conid)

    def onMessageFrameBegin(self, length: int) -> None:
        total = self.message_data_total_length + length
        if not self.failedByMe and not self._rejected and total > self.factory.settings.maxSize:
            # autobahn fails the connection with 1009 right after this (its
            # maxMessagePayloadSize is our maxSize); let the sink count it.
            self._rejected = True
            self._setClose(TCP_CLOSED, "protocol error: Message Too Large")
            prefix = b"".join(self.message_data or [])
            try:
                self.factory.sink.messageRejected(prefix, "Message Too Large", self.sipFlow)
            except Exception:
                self._log.failure(
                    "sink raised on a rejected message from connection {conid}",
                    conid=self._conid(),
                )
        super().onMessageFrameBegin(length)

    def onAutoPingTimeout(self) -> None:
        self._setClose(
            TCP_TIMEOUT,
            "websocket ping timeout (no pong within {:g}s)".format(
                self.autoPingTimeout),  # type: ignore[attr-defined]
        )
        self._closedByServer = True
        super().onAutoPingTimeout()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self._cancelMessageTimer()
        if self._closing or self._lost:
            return
        if not payload.strip(b"\r\n"):
            # A CRLF keepalive, as JsSIP and SIP.js send over WebSocket.
            if payload == b"\r\n\r\n":
                self.flowSend(PONG)
            return
        try:
            self.factory.sink.messageReceived(payload, self.sipFlow)
        except Exception:
            self._log.failure(
                "sink raised on a message from connection {conid}",
                conid=self._conid(),
            )

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._report()

    # -- what the flow calls ----------------------------------------------

    def flowSend(self, data: bytes) -> bool:
        if self._lost or self.state != _OPEN:
            return False
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            isBinary = True
        else:
            isBinary = False
        try:
            self.sendMessage(data, isBinary=isBinary)
        except Exception as e:
            self._log.warn(
                "cannot send {size} bytes on connection {conid}: {error}",
                size=len(data),
                conid=self._conid(),
                error=str(e),
            )
            return False
        return True

    def flowClose(self) -> None:
        if self._lost or self._closing:
            return
        self._startClosing()
        if self.state == _OPEN:
            if self.factory.table.shuttingDown:
                # sendClose() only takes 1000 and 3000-4999; 1001 "going
                # away" is the code for a server going down (RFC 6455
                # section 7.4.1).
                self.sendCloseFrame(CLOSE_GOING_AWAY, b"server shutdown")
            else:
                self.sendClose(CLOSE_NORMAL)
        else:
            self.transport.loseConnection()

    # -- internals --------------------------------------------------------

    def _conid(self) -> int | None:
        return self.sipFlow.conid if self.sipFlow is not None else None

    def _closeFrame(self) -> tuple[int | None, str | None]:
        """
        The code and reason of the close frame that began the closing
        handshake (ours or the peer's), or C{(None, None)}.
        """
        state = closeState(self)
        if state.closedByMe and state.localCode is not None:
            return state.localCode, state.localReason
        if state.remoteCode is not None:
            return state.remoteCode, state.remoteReason
        return None, None

    def _classify(self) -> tuple[str, str]:
        if self._close is not None:
            return self._close
        state = closeState(self)
        if state.openHandshakeTimeout:
            return TCP_TIMEOUT, "websocket handshake timeout"
        if state.wasClean:
            if state.closedByMe:
                return TCP_CLOSED, "closed by server"
            return TCP_CLOSED, "closed by peer"
        if state.failedByMe:
            return TCP_CLOSED, "protocol error: {}".format(
                self._closeFrame()[1] or "websocket protocol violation")
        if state.closedByMe or self._closedByServer:
            if state.closeHandshakeTimeout:
                return TCP_CLOSED, "closed by server (no close frame in reply)"
            return TCP_CLOSED, "closed by server"
        kind, text = classifyLoss(self._lostReason, False)
        if self._wsOpen and kind == TCP_CLOSED:
            return TCP_RESET, "closed by peer without a close frame"
        return kind, text

    def _report(self) -> None:
        """
        Tell the table how the connection ended (once).
        """
        if self._reported or not self._lost:
            return
        self._reported = True
        if self._refused or self.sipFlow is None:
            return
        try:
            kind, text = self._classify()
            wsCode, wsReason = self._closeFrame()
            self.factory.table.remove(self.sipFlow.conid, kind, text, wsCode, wsReason)
        except Exception:
            self._log.failure(
                "reporting the close of connection {conid} failed",
                conid=self._conid(),
            )

    def _checkPartial(self) -> None:
        """
        While part of a WebSocket message is buffered, run the message
        timer (restarted by L{onMessage} when a message completes).
        """
        if self.state != _OPEN:
            return
        partial = bool(self.data) or self.inside_message
        self._partialMessage(partial, progress=False)

    def _releaseFrameState(self) -> None:
        """
        Between frames, drop the last frame's unmasker; between messages,
        the UTF-8 validator.  autobahn makes a new unmasker for each frame
        and resets the validator when a text message begins.
        """
        if self.state == _CONNECTING or self.current_frame is not None:
            return
        self.current_frame_masker = None
        if not self.inside_message:
            self._utf8validator = None


class SIPWebSocketProtocol(QuietConnectionLost, _SIPWebSocket,  # type: ignore[misc]
                           WebSocketServerProtocol):
    """
    One accepted WS or WSS connection carrying SIP.
    """

    factory: "SIPWebSocketFactory"

    def processHandshake(self) -> None:
        """
        Refuse an opening handshake larger than C{maxHandshakeSize}
        with HTTP C{431} before autobahn looks for its end again or parses
        it; otherwise let autobahn process it.

        autobahn calls this with the bytes received so far in C{self.data}
        each time more arrive while the handshake is not done.
        """
        limit = self.factory.settings.maxHandshakeSize
        data = self.data
        if limit and len(data) > limit and data.find(b"\r\n\r\n", 0, limit) < 0:
            self.data = b""
            self.factory.handshakesTooLarge += 1
            self.failHandshake(_TOO_LARGE_REASON, _TOO_LARGE)
            return
        super().processHandshake()

    def onConnect(self, request: ConnectionRequest) -> str:
        """
        Accept the handshake if the client offers the C{sip} subprotocol.

        @raise ConnectionDeny: C{403} for a refused Origin, C{400} without
            the subprotocol.
        """
        origin = request.origin or ""
        local = self.sipFlow.local[0] if self.sipFlow is not None else ""
        if origin and not self.factory.originAllowed(origin, local):
            self._setClose(TCP_CLOSED, "websocket handshake refused: origin not allowed")
            suppressed = self.factory.originThrottle.hit(origin)
            if suppressed is not None:
                self._log.warn(
                    "websocket origin {origin!r} refused ({suppressed} more refusals "
                    "since the last report)", origin=origin[:200], suppressed=suppressed)
            self.factory.originsRefused += 1
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "Origin not allowed")
        if SIP_SUBPROTOCOL in (request.protocols or []):
            return SIP_SUBPROTOCOL
        raise ConnectionDeny(
            ConnectionDeny.BAD_REQUEST, "WebSocket subprotocol 'sip' required"
        )

    def failHandshake(self, reason: str, code: int = 400,
                      responseHeaders: list[tuple[str, str]] | None = None) -> None:
        self._setClose(TCP_CLOSED, "websocket handshake refused: {}".format(reason))
        self._closedByServer = True
        super().failHandshake(reason, code, responseHeaders)

    def onOpen(self) -> None:
        """
        The handshake completed: release what autobahn kept of it, and fire
        C{websocket:connected}.
        """
        for name in HANDSHAKE_STATE:
            setattr(self, name, None)
        self._opened()


readOptionsFromFactory(SIPWebSocketProtocol)


class SIPWebSocketFactory(StreamServerFactory, WebSocketServerFactory):
    """
    Builds a L{SIPWebSocketProtocol} for each accepted WS or WSS connection.

    @ivar transportName: C{'ws'} or C{'wss'}.
    @ivar settings: the L{ConnectionSettings} of its connections.
    """

    protocol = SIPWebSocketProtocol  # type: ignore[assignment]
    acceptedTransports = ("ws", "wss")

    def __init__(
        self,
        sink: IMessageSink,
        table: ConnectionTable,
        clock: IReactorTime,
        transport: str = "ws",
        settings: ConnectionSettings = ConnectionSettings(),
    ) -> None:
        """
        @param sink: the L{sipcore.interfaces.IMessageSink}.
        @param table: the L{ConnectionTable}.
        @param clock: the reactor; every timer (ours and autobahn's) uses it.
        @param transport: C{'ws'} or C{'wss'}.
        @param settings: the connections' limits and timeouts (those for
            WS and WSS); its C{handshakeTimeout} is the opening handshake's.
        @raise ValueError: for an unknown C{transport}.
        """
        StreamServerFactory.__init__(self, sink, table, clock, transport, settings)
        WebSocketServerFactory.__init__(
            self, protocols=[SIP_SUBPROTOCOL], server="sipcore", reactor=clock)
        useReactorTimers(self, clock)
        self.setProtocolOptions(
            webStatus=False,
            failByDrop=False,
            maxMessagePayloadSize=settings.maxSize,
            maxFramePayloadSize=settings.maxSize,
            openHandshakeTimeout=settings.handshakeTimeout,
            closeHandshakeTimeout=settings.closeHandshakeTimeout,
            autoPingInterval=settings.autoPingInterval,
            autoPingTimeout=settings.autoPingTimeout,
            allowNullOrigin=True,
        )
        self.handshakesTooLarge = 0
        self._originPatterns = (
            None if settings.allowedOrigins is None
            else wildcards2patterns([o.lower().rstrip("/") for o in settings.allowedOrigins]))
        self._originDomains = frozenset(d.lower().strip("[]") for d in settings.originDomains)
        self.originsRefused = 0

        self.originThrottle = LogThrottle(clock)

    def originAllowed(self, origin: str, local: str) -> bool:
        """
        Whether a handshake with C{Origin: origin} is allowed on a
        connection accepted on local address C{local}.

        @param origin: the C{Origin} header value (not empty).
        @param local: the address the connection was accepted on (the
            listener's own address), without port; never the C{Host}
            header, which the client chooses.
        """
        origin = origin.strip().lower().rstrip("/")
        if self._originPatterns is not None:
            return any(pattern.match(origin) for pattern in self._originPatterns)
        try:
            originHost = urlsplit(origin).hostname
        except ValueError:
            return False
        if not originHost:
            return False
        return originHost in self._originDomains or (
            bool(local) and originHost == local.strip().lower())


class SIPWebSocketClientProtocol(_SIPWebSocket, WebSocketClientProtocol):  # type: ignore[misc]
    """
    One WS or WSS connection this node opened, carrying SIP: it offers the
    C{sip} subprotocol and closes at once (as C{tcp:closed}) when the
    server does not accept it; it is ready once the WebSocket is open, and
    idle after no traffic either way.
    """

    direction = "outbound"
    factory: "SIPWebSocketClientFactory"

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.attempt.made(self)
        if self._refused:
            self.factory.attempt.failed("refused by the connection table")

    def onConnect(self, response: ConnectionResponse) -> None:
        """
        The server answered the handshake: it must have chosen C{sip}.
        """
        if response.protocol != SIP_SUBPROTOCOL:
            self._setClose(TCP_CLOSED, "websocket handshake: the server did not accept "
                           "the sip subprotocol")
            self._startClosing()
            self.transport.abortConnection()

    def onOpen(self) -> None:
        if self._closing or self._lost:
            return
        self._opened()
        if self.sipFlow is not None:
            self.factory.attempt.ready(self.sipFlow)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.factory.attempt.failed(self._classify()[1])

    def flowSend(self, data: bytes) -> bool:
        sent = super().flowSend(data)
        if sent:
            self._resetIdle()
        return sent


class SIPWebSocketClientFactory(WebSocketClientFactory):
    """
    Makes the L{SIPWebSocketClientProtocol} of one attempt to open a WS or
    WSS connection (the caller wraps the endpoint in TLS for WSS).

    @ivar transportName: C{'ws'} or C{'wss'}.
    @ivar settings: the L{ConnectionSettings} of the connection.
    @ivar attempt: the L{ConnectAttempt} told when it is made, open or
        failed.
    """

    protocol = SIPWebSocketClientProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, url: str, sink: IMessageSink, table: ConnectionTable,
                 clock: IReactorTime, transport: str, settings: ConnectionSettings,
                 attempt: ConnectAttempt) -> None:
        """
        @param url: the C{ws://} or C{wss://} URL of the handshake (its
            host is sent as C{Host}).
        @param sink: the L{sipcore.interfaces.IMessageSink}.
        @param table: the L{ConnectionTable} the connection joins.
        @param clock: the reactor; every timer (ours and autobahn's) uses it.
        @param transport: C{'ws'} or C{'wss'}.
        @param settings: the connection's limits and timeouts (the opening
            handshake is bounded by the caller's connect timeout).
        @param attempt: what is told of the connection's progress.
        """
        super().__init__(url, protocols=[SIP_SUBPROTOCOL], useragent="sipcore", reactor=clock)
        useReactorTimers(self, clock)
        self.setProtocolOptions(
            failByDrop=False,
            maxMessagePayloadSize=settings.maxSize,
            maxFramePayloadSize=settings.maxSize,
            openHandshakeTimeout=0,
            closeHandshakeTimeout=settings.closeHandshakeTimeout,
            autoPingInterval=settings.autoPingInterval,
            autoPingTimeout=settings.autoPingTimeout,
        )
        self.sink = sink
        self.table = table
        self.clock = clock
        self.transportName = transport
        self.settings = settings
        self.attempt = attempt
