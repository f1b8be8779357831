# -*- test-case-name: tests.test_bus,tests.test_connections -*-
"""
Connection events and their names.

The names follow Kamailio's event routes, so an operator who wrote
C{event_route[tcp:closed]} finds the same name here.
"""

from sipcore.events._types import (
    ALL_EVENTS,
    CLOSE_EVENTS,
    TCP_CLOSED,
    TCP_CONNECTED,
    TCP_RESET,
    TCP_TIMEOUT,
    WEBSOCKET_CLOSED,
    WEBSOCKET_CONNECTED,
    ConnectionEvent,
)

__all__ = [
    "ALL_EVENTS",
    "CLOSE_EVENTS",
    "TCP_CLOSED",
    "TCP_CONNECTED",
    "TCP_RESET",
    "TCP_TIMEOUT",
    "WEBSOCKET_CLOSED",
    "WEBSOCKET_CONNECTED",
    "ConnectionEvent",
]
