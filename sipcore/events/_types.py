# -*- test-case-name: tests.test_bus,tests.test_connections,tests.test_registration_events -*-
"""
The event types carried by the bus: L{ConnectionEvent} for stream
connections, L{RegistrationEvent} for bindings of the location service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from sipcore.location.binding import Binding

TCP_CONNECTED = "tcp:connected"
TCP_CLOSED = "tcp:closed"
TCP_RESET = "tcp:reset"
TCP_TIMEOUT = "tcp:timeout"
WEBSOCKET_CONNECTED = "websocket:connected"
WEBSOCKET_CLOSED = "websocket:closed"

#: The events of which exactly one fires when a stream connection ends.
CLOSE_EVENTS = (TCP_CLOSED, TCP_RESET, TCP_TIMEOUT)

REGISTRATION_ADDED = "registration:added"
REGISTRATION_REFRESHED = "registration:refreshed"
REGISTRATION_REMOVED = "registration:removed"
REGISTRATION_EXPIRED = "registration:expired"

#: The events of stream connections (their value is a L{ConnectionEvent}).
CONNECTION_EVENTS = (
    TCP_CONNECTED,
    TCP_CLOSED,
    TCP_RESET,
    TCP_TIMEOUT,
    WEBSOCKET_CONNECTED,
    WEBSOCKET_CLOSED,
)

#: The events of bindings (their value is a L{RegistrationEvent}).
REGISTRATION_EVENTS = (
    REGISTRATION_ADDED,
    REGISTRATION_REFRESHED,
    REGISTRATION_REMOVED,
    REGISTRATION_EXPIRED,
)

ALL_EVENTS = CONNECTION_EVENTS + REGISTRATION_EVENTS


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
    @ivar direction: C{'inbound'} for a connection a peer opened to a
        listener, C{'outbound'} for one this node opened to a next hop.
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
    direction: str = "inbound"


@dataclass(frozen=True)
class RegistrationEvent:
    """
    A binding of the location service changed.  Read-only.

    @ivar name: the event name, one of L{REGISTRATION_EVENTS}.
    @ivar aor: the address of record (C{user@domain}).
    @ivar ruid: the binding's record id.
    @ivar contact: the binding's Contact URI.
    @ivar expires: POSIX time the binding expires (for C{removed} and
        C{expired}: when it would have expired).
    @ivar connectionId: the stream connection the binding is bound to,
        C{-1} for UDP.
    @ivar received: the source it was registered from
        (C{sip:HOST:PORT;transport=T}), or C{None}.
    @ivar userAgent: the User-Agent of the REGISTER that wrote it.
    @ivar time: POSIX time of the event (from the injected clock).
    @ivar serverId: the C{server_id} of the node that saw the change.
    """

    name: str
    aor: str
    ruid: str
    contact: str
    expires: float
    connectionId: int
    received: str | None
    userAgent: str
    time: float
    serverId: int = 0

    @classmethod
    def of(cls, name: str, binding: Binding, time: float, serverId: int) -> RegistrationEvent:
        """
        The event C{name} about C{binding}.
        """
        return cls(name=name, aor=binding.aor, ruid=binding.ruid, contact=binding.contact,
                   expires=binding.expires, connectionId=binding.connectionId,
                   received=binding.received, userAgent=binding.userAgent, time=time,
                   serverId=serverId)


#: What the bus carries.
Event = Union[ConnectionEvent, RegistrationEvent]


def conidOf(event: Event) -> int:
    """
    The connection an event is about: a L{ConnectionEvent}'s C{conid}, a
    L{RegistrationEvent}'s C{connectionId} (C{-1} for a binding not bound
    to a connection).
    """
    if isinstance(event, ConnectionEvent):
        return event.conid
    return event.connectionId
