# -*- test-case-name: tests.test_bus,tests.test_connections -*-
"""
Connection and registration events and their names.

The names follow Kamailio's event routes, so an operator who wrote
C{event_route[tcp:closed]} finds the same name here.
"""

from sipcore.events._types import (
    ALL_EVENTS,
    CLOSE_EVENTS,
    CONNECTION_EVENTS,
    REGISTRATION_ADDED,
    REGISTRATION_EVENTS,
    REGISTRATION_EXPIRED,
    REGISTRATION_REFRESHED,
    REGISTRATION_REMOVED,
    TCP_CLOSED,
    TCP_CONNECTED,
    TCP_RESET,
    TCP_TIMEOUT,
    WEBSOCKET_CLOSED,
    WEBSOCKET_CONNECTED,
    ConnectionEvent,
    Event,
    RegistrationEvent,
    conidOf,
)

__all__ = [
    "ALL_EVENTS",
    "CLOSE_EVENTS",
    "CONNECTION_EVENTS",
    "REGISTRATION_ADDED",
    "REGISTRATION_EVENTS",
    "REGISTRATION_EXPIRED",
    "REGISTRATION_REFRESHED",
    "REGISTRATION_REMOVED",
    "TCP_CLOSED",
    "TCP_CONNECTED",
    "TCP_RESET",
    "TCP_TIMEOUT",
    "WEBSOCKET_CLOSED",
    "WEBSOCKET_CONNECTED",
    "ConnectionEvent",
    "Event",
    "RegistrationEvent",
    "conidOf",
]
