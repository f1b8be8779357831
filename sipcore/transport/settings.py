# -*- test-case-name: tests.test_transport_settings -*-
"""
The settings of a stream listener's connections, TCP and TLS or WS and WSS,
as one frozen value: L{ConnectionSettings}.

L{sipcore.transport.listen.ListenerService} makes one for each listener and
passes it to the listener's factory (L{sipcore.transport.stream.SIPStreamFactory}
or L{sipcore.transport.websocket.SIPWebSocketFactory}); its connections read
it from there.  Each setting applies to both kinds of connection unless its
description names one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipcore.message.framing import DEFAULT_MAX_LINE_LENGTH, DEFAULT_MAX_SIZE

__all__ = [
    "DEFAULT_CLOSE_GRACE",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_HANDSHAKE_SIZE",
    "DEFAULT_MESSAGE_TIMEOUT",
    "DEFAULT_UNREGISTERED_IDLE_TIMEOUT",
    "ConnectionSettings",
]

#: Seconds without receiving a byte before a connection is aborted as
#: C{tcp:timeout}.  Clients keep connections alive with CRLF pings (RFC
#: 5626 suggests one every 95 to 120 seconds) or re-REGISTERs.
DEFAULT_IDLE_TIMEOUT = 3600.0

#: Seconds a connection that never had a binding saved for it may stay
#: silent (Kamailio's C{tcp_connection_lifetime} default); a registered
#: connection gets L{DEFAULT_IDLE_TIMEOUT} while its binding lasts.
DEFAULT_UNREGISTERED_IDLE_TIMEOUT = 120.0

#: Seconds from accepting a connection to its first complete SIP message
#: (TCP, TLS: the TLS handshake included) or to the end of its WebSocket
#: opening handshake (WS, WSS).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

#: Seconds a message may take to arrive once its first byte came (more
#: exactly: while part of a message is buffered, seconds without a complete
#: message).  The idle timeout restarts on every byte, so a client that
#: trickles bytes would hold its connection (and a buffer) forever without
#: this; it is cut off as C{tcp:timeout}.
DEFAULT_MESSAGE_TIMEOUT = 20.0

#: Seconds a connection we closed gracefully may take to go away before
#: it is aborted (a peer that stops reading would keep it forever).
DEFAULT_CLOSE_GRACE = 5.0

#: The largest WebSocket opening handshake request (request line and
#: headers) read, in bytes; browsers send well under 4 KiB.
DEFAULT_MAX_HANDSHAKE_SIZE = 16384


@dataclass(frozen=True)
class ConnectionSettings:
    """
    What a stream listener's connections obey.

    @ivar maxSize: the largest SIP message accepted, in bytes (over
        WebSocket: the largest message payload; a larger one closes the
        connection with C{1009}).
    @ivar idleTimeout: seconds without received data before a connection
        carrying a live binding is aborted (C{tcp:timeout}); C{0}: none.
    @ivar unregisteredIdleTimeout: the idle timeout of a connection without
        a live binding (see L{sipcore.transport.lifecycle}); C{0}: the same
        as C{idleTimeout}.
    @ivar handshakeTimeout: seconds from the accept to the first complete
        SIP message (TCP, TLS: the TLS handshake included) or to the end of
        the WebSocket opening handshake (WS, WSS) before the connection is
        aborted (C{tcp:timeout}); C{0}: no limit.
    @ivar messageTimeout: seconds part of a message may stay buffered
        without a message completing before the connection is aborted
        (C{tcp:timeout}); C{0}: no limit.
    @ivar closeGrace: TCP, TLS: seconds a graceful close may take before
        the connection is aborted.
    @ivar maxLineLength: TCP, TLS: the longest start or header line
        accepted, in bytes; a longer one is a framing error (answered
        C{400} where possible, then the connection is closed).
    @ivar closeHandshakeTimeout: WS, WSS: seconds the peer has to answer
        our close frame before the connection is dropped.
    @ivar autoPingInterval: WS, WSS: seconds between WebSocket pings
        (C{0}: no pings).
    @ivar autoPingTimeout: WS, WSS: seconds to wait for a pong before
        dropping the connection (C{tcp:timeout}).
    @ivar allowedOrigins: WS, WSS: the C{Origin} patterns allowed (C{*} is
        a wildcard; C{("*",)} allows every origin), or C{None} for the
        default policy (see L{sipcore.transport.websocket}).
    @ivar originDomains: WS, WSS: the hosts the default Origin policy
        allows besides the connection's local address (the server's
        domains; IPv6 addresses with or without brackets; case does not
        matter).
    @ivar maxHandshakeSize: WS, WSS: the largest opening handshake request,
        in bytes; a larger one is answered HTTP C{431} and closed (C{0}: no
        limit).
    """

    maxSize: int = DEFAULT_MAX_SIZE
    idleTimeout: float = DEFAULT_IDLE_TIMEOUT
    unregisteredIdleTimeout: float = DEFAULT_UNREGISTERED_IDLE_TIMEOUT
    handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    messageTimeout: float = DEFAULT_MESSAGE_TIMEOUT
    closeGrace: float = DEFAULT_CLOSE_GRACE
    maxLineLength: int = DEFAULT_MAX_LINE_LENGTH
    closeHandshakeTimeout: float = 1.0
    autoPingInterval: float = 0.0
    autoPingTimeout: float = 0.0
    allowedOrigins: tuple[str, ...] | None = None
    originDomains: frozenset[str] = field(default_factory=frozenset)
    maxHandshakeSize: int = DEFAULT_MAX_HANDSHAKE_SIZE

    def __post_init__(self) -> None:
        """
        @raise ValueError: for a message size that is not positive, or a
            negative timeout or limit.
        """
        if self.maxSize <= 0:
            raise ValueError("maxSize must be positive")
        limits = {
            "idleTimeout": self.idleTimeout,
            "unregisteredIdleTimeout": self.unregisteredIdleTimeout,
            "handshakeTimeout": self.handshakeTimeout,
            "messageTimeout": self.messageTimeout,
            "closeGrace": self.closeGrace,
            "maxLineLength": self.maxLineLength,
            "closeHandshakeTimeout": self.closeHandshakeTimeout,
            "autoPingInterval": self.autoPingInterval,
            "autoPingTimeout": self.autoPingTimeout,
            "maxHandshakeSize": self.maxHandshakeSize,
        }
        for name, value in limits.items():
            if value < 0:
                raise ValueError("{} must not be negative".format(name))
