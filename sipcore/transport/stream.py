# -*- test-case-name: tests.test_transport_stream -*-
"""
SIP over TCP and TLS: frame the byte stream into messages (RFC 3261
section 18.3), answer CRLF keepalives (RFC 5626 section 3.5.1), enforce the
handshake, idle and message timeouts, and report every close to the
L{ConnectionTable} exactly once.

TLS uses the same protocol: the listening endpoint wraps it in TLS and the
factory is built with C{transport='tls'}.  The limits and timeouts are
the factory's L{ConnectionSettings}.  The handshake timeout runs from
the moment the connection is accepted until its first complete SIP
message, so for TLS it covers the TLS handshake too: a client that sends
its ClientHello a byte a second is cut off like a silent one.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHandshakeListener, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sipcore.events import TCP_CLOSED, TCP_RESET
from sipcore.interfaces import IMessageSink
from sipcore.message.errors import SIPParseError
from sipcore.message.framing import PING, StreamFramer
from sipcore.transport.connections import (
    ConnectionTable,
    StreamFlow,
)
from sipcore.transport.lifecycle import StreamLifecycle, StreamServerFactory
from sipcore.transport.settings import ConnectionSettings

__all__ = [
    "SIPStreamFactory",
    "SIPStreamProtocol",
    "classifyLoss",
]

#: The answer to a CRLF CRLF ping (RFC 5626 section 3.5.1).
PONG = b"\r\n"


def _isTLSError(error: BaseException) -> bool:
    try:
        from OpenSSL import SSL
    except ImportError:  # pragma: no cover - twisted[tls] is required
        return False
    return isinstance(error, SSL.Error)


def classifyLoss(reason: Failure, closedByServer: bool) -> tuple[str, str]:
    """
    Map the reason a Twisted transport gives for a lost connection to a
    close event.

    @param reason: the L{Failure} passed to C{connectionLost}.
    @param closedByServer: C{True} if we started a graceful close.
    @return: C{(eventName, reasonText)}: C{tcp:closed} for a clean close
        (C{"closed by peer"} or C{"closed by server"}), C{tcp:reset} for
        anything else, with the error's text (C{"aborted by server"},
        C{"connection lost"}, C{"TLS error: ..."}).
    """
    error = reason.value
    if isinstance(error, ConnectionDone):
        return TCP_CLOSED, ("closed by server" if closedByServer else "closed by peer")
    if error is not None and _isTLSError(error):
        return TCP_RESET, "TLS error: {}".format(reason.getErrorMessage())
    if isinstance(error, ConnectionAborted):
        return TCP_RESET, "aborted by server"
    if isinstance(error, ConnectionLost):
        # Twisted's own text is a long sentence; keep the detail only.
        detail = " ".join(str(arg) for arg in error.args if arg)
        return TCP_RESET, "connection lost: {}".format(detail) if detail else "connection lost"
    return TCP_RESET, reason.getErrorMessage() or type(error).__name__


@implementer(IHandshakeListener)
class SIPStreamProtocol(StreamLifecycle, Protocol):
    """
    One TCP or TLS connection carrying SIP.

    @ivar flow: the L{StreamFlow} handed to the sink with every message
        (C{None} until the connection is made).
    @ivar factory: the L{SIPStreamFactory}.
    """

    _log = Logger()
    factory: "SIPStreamFactory"
    transport: ITCPTransport
    _tlsDone = False

    def __init__(self) -> None:
        self.flow: StreamFlow | None = None
        self._framer: StreamFramer | None = None

    # -- Twisted ----------------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        settings = factory.settings
        self._framer = StreamFramer(settings.maxSize, settings.maxLineLength)
        self.flow = self._join()
        if settings.handshakeTimeout and not self._refused:
            self._handshakeCall = factory.clock.callLater(
                settings.handshakeTimeout, self._handshakeExpired)

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake completed (L{IHandshakeListener}; plain TCP never
        calls it).
        """
        self._tlsDone = True

    def dataReceived(self, data: bytes) -> None:
        if self._closing or self._framer is None:
            return
        self._resetIdle()
        try:
            items = self._framer.feed(data)
        except SIPParseError as e:
            self._protocolError(e.reason)
            return
        sink = self.factory.sink
        for item in items:
            if self._closing:
                break
            if item is PING:
                self.transport.write(PONG)
                continue
            if self._handshakeCall is not None:
                self._cancelHandshakeTimer()
            try:
                sink.messageReceived(item, self.flow)
            except Exception:
                self._log.failure(
                    "sink raised on a message from connection {conid}",
                    conid=self.flow.conid if self.flow else None,
                )
        self._partialMessage(self._framer.pending > 0, bool(items))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._lost:
            return
        self._lost = True
        self._cancelTimers()
        if self._refused or self.flow is None:
            return
        if self._close is not None:
            kind, text = self._close
        else:
            kind, text = classifyLoss(reason, self._closedByServer)
        try:
            self.factory.table.remove(self.flow.conid, kind, text)
        except Exception:
            self._log.failure(
                "reporting the close of connection {conid} failed",
                conid=self.flow.conid,
            )

    # -- what the flow calls ----------------------------------------------

    def flowSend(self, data: bytes) -> bool:
        return self._flowSend(data)

    def flowClose(self) -> None:
        self._loseGracefully()

    # -- internals --------------------------------------------------------

    def _flowSend(self, data: bytes) -> bool:
        """
        Write one message to the transport (L{flowSend}; the protocol of an
        outgoing connection extends it).
        """
        if self._lost or self._closing or self.transport is None:
            return False
        self.transport.write(data)
        return True

    def _protocolError(self, reason: str) -> None:
        """
        The stream cannot be framed: let the sink answer what it can, then
        close.
        """
        assert self._framer is not None
        self._setClose(TCP_CLOSED, "protocol error: {}".format(reason))
        try:
            self.factory.sink.messageRejected(self._framer.buffered, reason, self.flow)
        except Exception:
            self._log.failure(
                "sink raised on a rejected message from connection {conid}",
                conid=self.flow.conid if self.flow else None,
            )
        self._loseGracefully()

    def _loseGracefully(self) -> None:
        if self._closing or self._lost:
            return
        self._startClosing()
        self.transport.loseConnection()
        grace = self.factory.settings.closeGrace
        if grace > 0 and not self._lost:
            self._abortCall = self.factory.clock.callLater(grace, self._graceExpired)

    def _handshakeExpired(self) -> None:
        self._handshakeCall = None
        timeout = self.factory.settings.handshakeTimeout
        if self.factory.transportName == "tls" and not self._tlsDone:
            what = "TLS handshake not completed"
        else:
            what = "no complete SIP message"
        self._timeOut("handshake timeout ({} within {:g}s)".format(what, timeout))

    def _cancelHandshakeTimer(self) -> None:
        call, self._handshakeCall = self._handshakeCall, None
        if call is not None and call.active():
            call.cancel()

    def _graceExpired(self) -> None:
        self._abortCall = None
        self._setClose(TCP_CLOSED, "closed by server (peer did not close in time)")
        self.transport.abortConnection()


class SIPStreamFactory(StreamServerFactory, ServerFactory):
    """
    Builds a L{SIPStreamProtocol} for each accepted TCP or TLS connection.

    @ivar transportName: C{'tcp'} or C{'tls'}.
    @ivar settings: the L{ConnectionSettings} of its connections.
    """

    protocol = SIPStreamProtocol  # type: ignore[assignment]
    acceptedTransports = ("tcp", "tls")

    def __init__(
        self,
        sink: IMessageSink,
        table: ConnectionTable,
        clock: IReactorTime,
        transport: str = "tcp",
        settings: ConnectionSettings = ConnectionSettings(),
    ) -> None:
        """
        @param sink: the L{sipcore.interfaces.IMessageSink}.
        @param table: the L{ConnectionTable} connections register in.
        @param clock: the L{IReactorTime} for the connections' timers.
        @param transport: C{'tcp'} or C{'tls'}: the name flows and events
            carry.
        @param settings: the connections' limits and timeouts (those for
            TCP and TLS).
        @raise ValueError: for an unknown C{transport}.
        """
        super().__init__(sink, table, clock, transport, settings)
