# -*- test-case-name: tests.test_connections -*-
"""
The transports: UDP, TCP and TLS streams, WebSocket (RFC 7118).

Stream connections live in the L{ConnectionTable}, which gives each one a
connection id and fires the connection events.  L{parseListen} reads a
C{--listen} value and L{ListenerService} listens on it.

This package imports autobahn only when a WebSocket listener is built
(L{sipcore.transport.websocket}).
"""

from sipcore.transport.connections import ConnectionTable, ShuttingDown, StreamFlow
from sipcore.transport.listen import (
    DEFAULT_LISTEN,
    TRANSPORTS,
    ListenerService,
    ListenSpec,
    parseListen,
)

__all__ = [
    "DEFAULT_LISTEN",
    "TRANSPORTS",
    "ConnectionTable",
    "ListenSpec",
    "ListenerService",
    "ShuttingDown",
    "StreamFlow",
    "parseListen",
]
