# -*- test-case-name: tests.test_transport_autobahn -*-
"""
The internals of autobahn that L{sipcore.transport.websocket} relies on,
in one place.

autobahn has no public API for these, and each matters for a server that
holds thousands of idle WebSocket connections and sees them close at once:

  - L{useReactorTimers}: autobahn starts its protocol timers (opening and
    closing handshake timeouts, automatic pings) through the factory's
    C{_batched_timer}, which runs on txaio's global loop (not the
    C{reactor=} given to the factory) and rounds delays to buckets of
    0.2 s.  Replacing it puts every timer on the factory's reactor, so
    tests with a fake clock see them all.
  - L{readOptionsFromFactory}: autobahn copies each option named in
    C{CONFIG_ATTRS} from the factory onto every connection that does not
    have it already; with a class attribute reading the factory's value in
    place, nothing is copied (some 40 attributes less per connection).
  - L{QuietConnectionLost}: autobahn's server C{_connectionLost} formats
    its debug line's arguments (a traceback of the reason) even when debug
    logging is off, once per connection; this does the same teardown
    without it.
  - L{HANDSHAKE_STATE}: what autobahn keeps of the opening handshake, which
    L{sipcore.transport.websocket} releases once the WebSocket is open.
  - L{closeState}: how the connection ended, from the attributes autobahn's
    C{_connectionMade} initialises and its closing code sets
    (C{closedByMe}, C{failedByMe}, C{wasClean}, the handshake timeouts,
    the close frames' codes and reasons).
  - L{FrameState}: autobahn's C{inside_message} and C{current_frame},
    which it sets only once the opening handshake completes, with the
    values they have before it.

C{tests.test_transport_autobahn} checks that each name is still there with
the meaning used here, and C{setup.cfg} bounds autobahn's version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = [
    "CloseState",
    "FrameState",
    "HANDSHAKE_STATE",
    "QuietConnectionLost",
    "readOptionsFromFactory",
    "useReactorTimers",
]

#: What autobahn keeps of the opening handshake (and its transport
#: details, for WAMP, which it completes just before C{onOpen}), needed
#: only until the WebSocket is open.
HANDSHAKE_STATE = (
    "http_request_data",
    "http_status_line",
    "http_headers",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "http_response_data",
    "websocket_origin",
    "websocket_protocols",
    "websocket_extensions",
    "_wskey",
    "_transport_details",
)


@dataclass(frozen=True)
class CloseState:
    """
    How a WebSocket connection ended, as autobahn recorded it.

    @ivar closedByMe: the server sent the first close frame.
    @ivar failedByMe: the server failed the connection (a protocol
        violation by the peer).
    @ivar wasClean: the closing handshake completed.
    @ivar openHandshakeTimeout: the opening handshake timed out.
    @ivar closeHandshakeTimeout: the peer did not answer the server's
        close frame in time.
    @ivar localCode: the code of the close frame the server sent, or
        C{None}.
    @ivar localReason: its reason, or C{None}.
    @ivar remoteCode: the code of the close frame the peer sent, or
        C{None}.
    @ivar remoteReason: its reason, or C{None}.
    """

    closedByMe: bool
    failedByMe: bool
    wasClean: bool
    openHandshakeTimeout: bool
    closeHandshakeTimeout: bool
    localCode: int | None
    localReason: str | None
    remoteCode: int | None
    remoteReason: str | None


def closeState(protocol: WebSocketProtocol) -> CloseState:
    """
    Read how C{protocol}'s connection ended.

    @param protocol: an autobahn protocol whose connection was made
        (autobahn's C{connectionMade} ran).
    """
    reason = protocol.localCloseReason
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return CloseState(
        closedByMe=bool(protocol.closedByMe),
        failedByMe=bool(protocol.failedByMe),
        wasClean=bool(protocol.wasClean),
        openHandshakeTimeout=bool(protocol.wasOpenHandshakeTimeout),
        closeHandshakeTimeout=bool(protocol.wasCloseHandshakeTimeout),
        localCode=protocol.localCloseCode,
        localReason=reason,
        remoteCode=protocol.remoteCloseCode,
        remoteReason=protocol.remoteCloseReason,
    )


def cancelCloseHandshakeTimer(protocol: WebSocketProtocol) -> None:
    """
    Cancel autobahn's closing handshake timer of C{protocol}, which it
    leaves behind when the peer drops the connection before answering the
    server's close frame.
    """
    call, protocol.closeHandshakeTimeoutCall = protocol.closeHandshakeTimeoutCall, None
    if call is not None:
        call.cancel()


class FrameState:
    """
    A mixin for a subclass of autobahn's protocol: autobahn's frame
    parsing state, readable before the opening handshake completes (when
    autobahn sets it).

    @ivar inside_message: a message has begun and not ended.
    @ivar current_frame: the header of the frame being received, or
        C{None} between frames.
    """

    inside_message: bool = False
    current_frame: Any = None


class _ReactorCall:
    """
    A delayed call whose C{cancel} may be called after it ran (autobahn
    does not always clear its references).
    """

    __slots__ = ("_call",)

    def __init__(self, call: IDelayedCall) -> None:
        self._call = call

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()


class _ReactorTimer:
    """
    Stands in for autobahn's batched timer: C{call_later} on a reactor.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock

    def call_later(self, delay: float, func: Callable[..., Any], *args: Any,
                   **kwargs: Any) -> _ReactorCall:
        return _ReactorCall(self._clock.callLater(delay, func, *args, **kwargs))


def useReactorTimers(factory: Any, clock: IReactorTime) -> None:
    """
    Run the protocol timers of C{factory}'s connections (server or client)
    on C{clock}.
    """
    factory._batched_timer = _ReactorTimer(clock)


class _FactoryOption:
    """
    A protocol option read from the factory.

    With this class attribute in place the connection has the option, so
    autobahn copies nothing and the connection reads the factory's value (an
    instance may still set its own).  A change to the factory's options
    therefore applies to the open connections too.
    """

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        return getattr(instance.factory, self._name)


def readOptionsFromFactory(protocolClass: type) -> None:
    """
    Make the connections of C{protocolClass} (a subclass of autobahn's
    protocol) read autobahn's protocol options from their factory instead
    of each holding a copy.
    """
    for name in protocolClass.CONFIG_ATTRS:  # type: ignore[attr-defined]
        setattr(protocolClass, name, _FactoryOption(name))


class QuietConnectionLost:
    """
    A mixin for a subclass of autobahn's C{WebSocketServerProtocol}: its
    teardown when the connection is lost, without the debug line.
    """

    factory: Any

    def _connectionLost(self, reason: Any) -> None:
        WebSocketProtocol._connectionLost(self, reason)  # type: ignore[arg-type]
        self.factory.countConnections -= 1
