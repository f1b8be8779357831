# -*- test-case-name: tests.test_transport_stream,tests.test_transport_websocket -*-
"""
What every stream connection does the same way, whether it carries SIP
directly (TCP, TLS) or in WebSocket frames (WS, WSS): joining the
connection table, the idle and message timers, and deciding which close
event its end fires.

The idle timeout depends on whether the connection carries a
registration.  A connection that never registered is closed after
C{unregisteredIdleTimeout} seconds (of the factory's settings) without
data; once the registrar saved a binding for it (L{StreamFlow.bound}) it
gets the long C{idleTimeout}, but only while that binding lasts: after the
binding's expiry it is an unregistered connection again, closed after the
short timeout counted from the later of its last byte and the expiry.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport

from sipcore.events import TCP_TIMEOUT
from sipcore.interfaces import IMessageSink
from sipcore.transport.connections import (
    ConnectionRefused,
    ConnectionTable,
    StreamFlow,
    addressOf,
)
from sipcore.transport.settings import ConnectionSettings


class StreamFactory(Protocol):
    """
    What a stream protocol reads from its factory
    (L{sipcore.transport.stream.SIPStreamFactory},
    L{sipcore.transport.websocket.SIPWebSocketFactory} and the factory of
    an outgoing connection).

    @ivar table: the L{ConnectionTable} its connections join.
    @ivar clock: the L{IReactorTime} of the connections' timers.
    @ivar transportName: C{'tcp'}, C{'tls'}, C{'ws'} or C{'wss'}.
    @ivar settings: the connections' limits and timeouts.
    """

    table: ConnectionTable
    clock: IReactorTime
    transportName: str
    settings: ConnectionSettings


class StreamServerFactory:
    """
    What the factories of accepted stream connections share (a mixin for
    L{sipcore.transport.stream.SIPStreamFactory} and
    L{sipcore.transport.websocket.SIPWebSocketFactory}): the
    L{StreamFactory} their protocols read, and the sink their messages go
    to.

    @cvar acceptedTransports: the transport names the factory serves.
    @ivar sink: the L{IMessageSink} of the connections' messages.
    @ivar table: the L{ConnectionTable} the connections join.
    @ivar clock: the L{IReactorTime} of the connections' timers.
    @ivar transportName: the name flows and events carry.
    @ivar settings: the connections' limits and timeouts.
    """

    acceptedTransports: tuple[str, ...] = ()
    # The listener logs one line when it listens; Twisted's own
    # start/stop lines would repeat it.
    noisy = False

    def __init__(
        self,
        sink: IMessageSink,
        table: ConnectionTable,
        clock: IReactorTime,
        transport: str,
        settings: ConnectionSettings,
    ) -> None:
        """
        @raise ValueError: for a C{transport} not in C{acceptedTransports}.
        """
        if transport not in self.acceptedTransports:
            raise ValueError("{} serves {}, not {!r}".format(
                type(self).__name__, " or ".join(map(repr, self.acceptedTransports)), transport))
        self.sink = sink
        self.table = table
        self.clock = clock
        self.transportName = transport
        self.settings = settings


class ConnectAttempt(Protocol):
    """
    What a connection this node opens tells of its progress (an attempt
    of L{sipcore.transport.outgoing.OutgoingConnector}).
    """

    def made(self, protocol: StreamLifecycle) -> None:
        """
        The TCP connection is made; C{protocol} carries it.
        """

    def ready(self, flow: StreamFlow) -> None:
        """
        The connection can carry SIP (TLS verified, WebSocket open).
        """

    def failed(self, text: str) -> None:
        """
        It failed or closed, for the reason C{text} (called again after
        L{ready} when it closes; later calls are ignored).
        """


class StreamLifecycle:
    """
    A mixin for the SIP stream protocols.

    It expects C{self.factory} (a L{StreamFactory}) and C{self.transport}
    (the connection's L{ITCPTransport}, TLS or not).  With the
    L{sipcore.transport.connections.FlowOwner} methods a protocol adds,
    it drives a L{StreamFlow}.

    @ivar _close: the close event and reason decided before the connection
        was lost (the first decision wins), or C{None}.
    @ivar direction: C{'inbound'}: the connection was accepted (a
        protocol for connections this node opens says C{'outbound'}).
    @ivar _registeredUntil: the latest expiry of a binding saved for this
        connection (seconds on C{factory.clock}), C{0.0} if none was.
    """

    factory: StreamFactory
    transport: ITCPTransport
    direction = "inbound"

    _idleCall: IDelayedCall | None = None
    _messageCall: IDelayedCall | None = None
    _abortCall: IDelayedCall | None = None
    _handshakeCall: IDelayedCall | None = None
    _idleReason = ""
    _idleTimeout = 0.0
    _registeredUntil = 0.0
    _close: tuple[str, str] | None = None
    _closing = False
    _closedByServer = False
    _refused = False
    _lost = False

    def _join(self) -> StreamFlow:
        """
        Make this connection's flow and add it to the connection table.

        When the table refuses the connection (shutting down, or a
        connection limit) it is aborted, C{_refused} is set and it fires no
        event; its flow has no connection id.

        @return: the flow.
        """
        factory = self.factory
        flow = StreamFlow(
            self,
            factory.transportName,
            addressOf(self.transport.getHost()),
            addressOf(self.transport.getPeer()),
            factory.table.observer,
        )
        try:
            factory.table.add(flow, self.direction)
        except ConnectionRefused:
            self._refused = True
            self._closing = True
            self.transport.abortConnection()
            return flow
        self._resetIdle()
        return flow

    def _setClose(self, kind: str, text: str) -> None:
        """
        Decide the close event now (the first decision wins).
        """
        if self._close is None:
            self._close = (kind, text)

    def _timeOut(self, text: str) -> None:
        """
        Close the connection for a timeout: it fires C{tcp:timeout}.  Does
        nothing for a connection already closing.
        """
        if self._closing or self._lost:
            return
        self._setClose(TCP_TIMEOUT, text)
        self._startClosing()
        self.transport.abortConnection()

    def _startClosing(self) -> None:
        """
        This side closes the connection: it reads no more, and no timer of
        it runs any more.
        """
        self._closing = True
        self._closedByServer = True
        self._cancelTimers()

    def connectTimedOut(self, text: str) -> None:
        """
        Opening this connection (one this node opened) took too long:
        abort, as C{tcp:timeout}.
        """
        self._timeOut(text)

    def _idleDelay(self) -> tuple[float, str]:
        """
        How long the connection may stay silent from now on, and why.

        @return: C{(seconds, note)}: C{seconds} is C{0} for no idle timeout;
            C{note} says which limit applies (C{""} for the long idle
            timeout).
        """
        factory = self.factory
        long = factory.settings.idleTimeout
        short = factory.settings.unregisteredIdleTimeout
        if not short or (long and short >= long):
            return long, ""
        until = self._registeredUntil
        if not until:
            return short, ", never registered"
        left = until - factory.clock.seconds()
        if left <= 0:
            return short, ", registration expired"
        if long and left + short >= long:
            return long, ""
        return left + short, ", registration expired"

    def _resetIdle(self) -> None:
        if self._closing:
            return
        timeout, self._idleReason = self._idleDelay()
        self._idleTimeout = timeout
        if not timeout:
            return
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.reset(timeout)
        else:
            self._idleCall = self.factory.clock.callLater(timeout, self._idleExpired)

    def _idleExpired(self) -> None:
        self._idleCall = None
        self._timeOut("idle timeout ({:g}s without data{})".format(
            round(self._idleTimeout, 1), self._idleReason))

    def flowSend(self, data: bytes) -> bool:
        """
        Send one complete message (L{StreamFlow.send}); each protocol
        frames it its own way.

        @return: C{True} if the connection was open to take it.
        """
        raise NotImplementedError

    def flowClose(self) -> None:
        """
        Close the connection gracefully (L{StreamFlow.close}); each protocol
        ends it its own way.
        """
        raise NotImplementedError

    def flowAbort(self) -> None:
        """
        Drop the connection at once (L{StreamFlow.abort}).
        """
        if self._lost:
            return
        self._startClosing()
        self.transport.abortConnection()

    def flowBound(self, until: float) -> None:
        """
        The registrar saved a binding for this connection, valid until
        C{until} (L{StreamFlow.bound}): the connection keeps the long idle
        timeout until then (counted from now).
        """
        if until <= self._registeredUntil or self._lost:
            return
        self._registeredUntil = until
        self._resetIdle()

    def _partialMessage(self, partial: bool, progress: bool) -> None:
        """
        Run the message timer while part of a message is buffered: a
        message must complete within C{settings.messageTimeout} seconds,
        however slowly its bytes trickle in.

        @param partial: part of a message is buffered now.
        @param progress: a message just completed (the timer restarts).
        """
        timeout = self.factory.settings.messageTimeout
        if not timeout or self._closing or self._lost:
            return
        if progress or not partial:
            self._cancelMessageTimer()
        if partial and self._messageCall is None:
            self._messageCall = self.factory.clock.callLater(timeout, self._messageExpired)

    def _messageExpired(self) -> None:
        self._messageCall = None
        self._timeOut("message timeout (incomplete message for {:g}s)".format(
            self.factory.settings.messageTimeout))

    def _cancelMessageTimer(self) -> None:
        call, self._messageCall = self._messageCall, None
        if call is not None and call.active():
            call.cancel()

    def _cancelTimers(self) -> None:
        calls = (self._idleCall, self._abortCall, self._messageCall, self._handshakeCall)
        self._idleCall = self._abortCall = self._messageCall = self._handshakeCall = None
        for call in calls:
            if call is not None and call.active():
                call.cancel()
