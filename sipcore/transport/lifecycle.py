# -*- test-case-name: tests.test_transport_stream,tests.test_transport_websocket -*-
"""
What every stream connection does the same way, whether it carries SIP
directly (TCP, TLS) or in WebSocket frames (WS, WSS): joining the
connection table, the idle and message timers, and deciding which close
event its end fires.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall

from sipcore.events import TCP_TIMEOUT
from sipcore.transport.connections import ConnectionRefused, StreamFlow, addressOf


class StreamLifecycle:
    """
    A mixin for the SIP stream protocols.

    It expects C{self.factory} (with C{table}, C{clock}, C{transportName},
    C{idleTimeout} and C{messageTimeout}) and C{self.transport}.

    @ivar _close: the close event and reason decided before the connection
        was lost (the first decision wins), or C{None}.
    """

    factory: Any
    transport: Any

    _idleCall: IDelayedCall | None = None
    _messageCall: IDelayedCall | None = None
    _abortCall: IDelayedCall | None = None
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
        )
        try:
            factory.table.add(flow)
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
        Close the connection for a timeout: it fires C{tcp:timeout}.
        """
        self._setClose(TCP_TIMEOUT, text)
        self._closing = True
        self._closedByServer = True
        self._cancelTimers()
        self.transport.abortConnection()

    def _resetIdle(self) -> None:
        timeout = self.factory.idleTimeout
        if not timeout or self._closing:
            return
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.reset(timeout)
        else:
            self._idleCall = self.factory.clock.callLater(timeout, self._idleExpired)

    def _idleExpired(self) -> None:
        self._idleCall = None
        if self._closing or self._lost:
            return
        self._timeOut("idle timeout ({:g}s without data)".format(self.factory.idleTimeout))

    def _partialMessage(self, partial: bool, progress: bool) -> None:
        """
        Run the message timer while part of a message is buffered: a
        message must complete within C{factory.messageTimeout} seconds,
        however slowly its bytes trickle in.

        @param partial: part of a message is buffered now.
        @param progress: a message just completed (the timer restarts).
        """
        timeout = self.factory.messageTimeout
        if not timeout or self._closing or self._lost:
            return
        if progress or not partial:
            self._cancelMessageTimer()
        if partial and self._messageCall is None:
            self._messageCall = self.factory.clock.callLater(timeout, self._messageExpired)

    def _messageExpired(self) -> None:
        self._messageCall = None
        if self._closing or self._lost:
            return
        self._timeOut("message timeout (incomplete message for {:g}s)".format(
            self.factory.messageTimeout))

    def _cancelMessageTimer(self) -> None:
        call, self._messageCall = self._messageCall, None
        if call is not None and call.active():
            call.cancel()

    def _cancelTimers(self) -> None:
        for name in ("_idleCall", "_abortCall", "_messageCall"):
            call = getattr(self, name)
            setattr(self, name, None)
            if call is not None and call.active():
                call.cancel()
