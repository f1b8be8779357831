# -*- test-case-name: tests.test_bus,tests.test_connections -*-
"""
The event type carried by the bus.
"""

from __future__ import annotations

from dataclasses import dataclass

TCP_CONNECTED = "tcp:connected"
TCP_CLOSED = "tcp:closed"
TCP_RESET = "tcp:reset"
TCP_TIMEOUT = "tcp:timeout"
WEBSOCKET_CONNECTED = "websocket:connected"
WEBSOCKET_CLOSED = "websocket:closed"

#: The events of which exactly one fires when a stream connection ends.
CLOSE_EVENTS = (TCP_CLOSED, TCP_RESET, TCP_TIMEOUT)

ALL_EVENTS = (
    TCP_CONNECTED,
    TCP_CLOSED,
    TCP_RESET,
    TCP_TIMEOUT,
    WEBSOCKET_CONNECTED,
    WEBSOCKET_CLOSED,
)


@dataclass(frozen=True)
class ConnectionEvent:
    """
    Something happened to one stream connection.  Read-only.

    @ivar name: the event name, one of L{ALL_EVENTS}.
    @ivar conid: the connection id (positive, never reused in the process).
    @ivar transport: C{'tcp'}, C{'tls'}, C{'ws'} or C{'wss'}.
    @ivar local: C{(host, port)} of the listening end.
    @ivar remote: C{(host, port)} of the peer.
    @ivar time: POSIX time of the event (from the injected clock).
    @ivar reason: for close events, why it closed (C{str}), else C{None}.
    @ivar duration: for close events, seconds the connection was open.
    @ivar wsCode: for C{websocket:closed}, the close code of the close frame
        (C{None} when there was no close frame).
    @ivar wsReason: for C{websocket:closed}, the close frame's reason text.
    @ivar serverId: the C{server_id} of the node that saw the event.
    """

    name: str
    conid: int
    transport: str
    local: tuple[str, int]
    remote: tuple[str, int]
    time: float
    reason: str | None = None
    duration: float | None = None
    wsCode: int | None = None
    wsReason: str | None = None
    serverId: int = 0
