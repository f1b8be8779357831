# -*- test-case-name: tests.test_transport_outgoing -*-
"""
Outgoing stream connections: TCP, TLS, WS and WSS connections this node
opens to a next hop it has no connection to (L{OutgoingConnector}).

An outgoing connection is a SIP stream connection like an accepted one:
it gets a conid in the same L{ConnectionTable}, its messages go to the
same sink, and it fires the same C{tcp:connected} and exactly one close
event, with C{direction='outbound'} in each.  It is reused for later
requests to the same C{(transport, host, port)} (the hop connector finds
it in the table by its remote address), and closed after
C{idleTimeout} seconds without traffic in either direction.

Opening one is bounded by C{connectTimeout} (TCP connect and, for TLS,
the handshake; for WS and WSS until the WebSocket is open).  Every request for a hop whose connection is being opened
waits for that one attempt and gets its result: the flow, or
L{ConnectFailed}.

TLS and WSS verify the server certificate (the same client TLS options)
against the system's trust store or the configured CA file, for the
server name given (sent as SNI too), and present a client certificate
when one is configured.

A WS or WSS connection is an autobahn WebSocket client
(L{sipcore.transport.websocket.SIPWebSocketClientFactory}) offering the
C{sip} subprotocol, to C{ws://NAME:PORT/}; like an accepted one it fires
C{websocket:connected} once open and C{websocket:closed} with its close
event.  A connection whose
verification fails never carries a message: it fails with
L{ConnectFailed}.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from twisted.internet import endpoints, ssl
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ClientFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from sipcore.interfaces import IFlow
from sipcore.sip.routing import NextHop
from sipcore.transport.connections import ConnectionTable, StreamFlow
from sipcore.transport.lifecycle import StreamLifecycle
from sipcore.transport.settings import ConnectionSettings
from sipcore.transport.stream import SIPStreamProtocol, classifyLoss
from sipcore.transport.websocket import SIPWebSocketClientFactory

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_OUTGOING_IDLE_TIMEOUT",
    "ConnectFailed",
    "OutgoingConnector",
    "OutgoingSettings",
]

#: Seconds to open an outgoing connection (TCP connect and TLS handshake).
DEFAULT_CONNECT_TIMEOUT = 10.0

#: Seconds an outgoing connection may carry no traffic before it is closed.
DEFAULT_OUTGOING_IDLE_TIMEOUT = 120.0

_WEBSOCKETS = ("ws", "wss")
_STREAMS = ("tcp", "tls", *_WEBSOCKETS)


def _websocketURL(hop: NextHop, serverName: str) -> str:
    """
    The URL of the WebSocket handshake to C{hop}: its server name (sent
    as C{Host}) and port, path C{/}.
    """
    host = serverName
    if ":" in host:
        host = "[" + host + "]"
    return "{}://{}:{}/".format(hop.transport, host, hop.port)


class ConnectFailed(Exception):
    """
    No flow to a next hop could be opened.

    @ivar reason: why, as a short text for logs.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class OutgoingSettings:
    """
    How outgoing connections are opened and kept.

    @ivar connectTimeout: seconds to connect (TLS: and finish the
        handshake).
    @ivar idleTimeout: seconds without traffic before the connection is
        closed (C{tcp:timeout}); C{0}: never.
    @ivar tlsCAFile: a PEM file of the CA certificates server certificates
        are verified against, or C{None} for the system's trust store.
    @ivar tlsCertFile: a PEM file with the client certificate (and its
        key, unless C{tlsKeyFile} is given) presented to TLS servers, or
        C{None}.
    @ivar tlsKeyFile: a PEM file with the client certificate's key.
    @ivar maxSize: the largest SIP message accepted on the connection.
    """

    connectTimeout: float = DEFAULT_CONNECT_TIMEOUT
    idleTimeout: float = DEFAULT_OUTGOING_IDLE_TIMEOUT
    tlsCAFile: str | None = None
    tlsCertFile: str | None = None
    tlsKeyFile: str | None = None
    maxSize: int = 65536

    def __post_init__(self) -> None:
        """
        @raise ValueError: for a timeout that is not positive (connect) or
            negative (idle), or a key file without a certificate file.
        """
        if self.connectTimeout <= 0:
            raise ValueError("connectTimeout must be positive")
        if self.idleTimeout < 0:
            raise ValueError("idleTimeout must not be negative")
        if self.tlsKeyFile and not self.tlsCertFile:
            raise ValueError("a TLS client key needs a TLS client certificate")


def _readPEM(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError("cannot read the {} {}: {}".format(what, path, e.strerror)) from None


def loadTrustRoot(path: str | None) -> Any:
    """
    The trust root server certificates are verified against.

    @param path: a PEM file of one or more CA certificates, or C{None}.
    @return: an L{ssl.IOpenSSLTrustRoot}: the certificates of C{path}, or
        the platform's trust store.
    @raise ValueError: when the file cannot be read or holds no
        certificate.
    """
    if path is None:
        return ssl.platformTrust()
    data = _readPEM(path, "TLS CA file")
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + part for part in data.split(marker)[1:]]
    if not blocks:
        raise ValueError("the TLS CA file {} holds no PEM certificate".format(path))
    try:
        certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as e:
        raise ValueError("the TLS CA file {} is not valid PEM: {}".format(path, e)) from None
    return ssl.trustRootFromCertificates(certificates)


def loadClientCertificate(certFile: str | None, keyFile: str | None) -> Any:
    """
    The client certificate presented to TLS servers, or C{None}.

    @raise ValueError: when a file cannot be read or parsed.
    """
    if certFile is None:
        return None
    data = _readPEM(certFile, "TLS client certificate")
    if keyFile is not None:
        data = data + b"\n" + _readPEM(keyFile, "TLS client key")
    try:
        return ssl.PrivateCertificate.loadPEM(data)
    except Exception as e:
        raise ValueError("the TLS client certificate {} (with its key) is not valid PEM: {}"
                         .format(certFile, e)) from None


class _OutgoingStreamProtocol(SIPStreamProtocol):
    """
    A SIP stream connection this node opened: ready once connected (TLS:
    once the handshake verified the server), idle after no traffic either
    way.
    """

    direction = "outbound"
    factory: _Attempt  # type: ignore[assignment]

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.made(self)
        if self._refused:
            self.factory.failed("refused by the connection table")
        elif self.factory.transportName == "tcp" and self.flow is not None:
            self.factory.ready(self.flow)

    def handshakeCompleted(self) -> None:
        super().handshakeCompleted()
        if self.flow is not None:
            self.factory.ready(self.flow)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self._close is not None:
            text = self._close[1]
        else:
            text = classifyLoss(reason, self._closedByServer)[1]
        self.factory.failed(text)

    def _flowSend(self, data: bytes) -> bool:
        sent = super()._flowSend(data)
        if sent:
            self._resetIdle()
        return sent


class _Attempt(ClientFactory):
    """
    One attempt to open a connection: the waiters for its result, and (TCP,
    TLS) the factory its protocol reads its settings from; a WS or WSS
    connection's factory is a L{SIPWebSocketClientFactory} telling it.
    """

    protocol = _OutgoingStreamProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, connector: OutgoingConnector, key: tuple[str, str, int],
                 serverName: str) -> None:
        self.connector = connector
        self.key = key
        self.serverName = serverName
        self.sink = connector.sink
        self.table = connector.table
        self.clock = connector.clock
        self.transportName = key[0]
        self.settings = connector.connectionSettings
        self.waiters: list[Deferred[IFlow]] = []
        self.connecting: Deferred[Any] | None = None
        self.protocolMade: StreamLifecycle | None = None
        self.timer: IDelayedCall | None = None
        self.finished = False

    def buildProtocol(self, addr: Any) -> Any:
        protocol = _OutgoingStreamProtocol()
        protocol.factory = self
        return protocol

    def made(self, protocol: StreamLifecycle) -> None:
        self.protocolMade = protocol

    def wait(self) -> Deferred[IFlow]:
        d: Deferred[IFlow] = Deferred()
        self.waiters.append(d)
        return d

    def ready(self, flow: StreamFlow) -> None:
        if self.finished:
            return
        self._finish()
        self.connector.stats["opened"] += 1
        self.connector._log.info(
            "outgoing {transport} connection {conid} to {host}:{port} open",
            transport=self.key[0], conid=flow.conid, host=self.key[1], port=self.key[2])
        for d in self._takeWaiters():
            d.callback(flow)

    def failed(self, text: str) -> None:
        if self.finished:
            return
        self._finish()
        self.connector.stats["failed"] += 1
        transport, host, port = self.key
        self.connector._log.warn(
            "outgoing {transport} connection to {host}:{port} ({name}) failed: {why}",
            transport=transport, host=host, port=port, name=self.serverName, why=text)
        error = ConnectFailed("{} connection to {}:{} failed: {}".format(
            transport, host, port, text))
        for d in self._takeWaiters():
            d.errback(error)

    def timedOut(self) -> None:
        self.timer = None
        if self.finished:
            return
        text = "connect timeout ({:g}s)".format(self.connector.settings.connectTimeout)
        self.failed(text)
        protocol = self.protocolMade
        if protocol is not None:
            protocol.connectTimedOut(text)
        if self.connecting is not None and not self.connecting.called:
            self.connecting.cancel()

    def connectFailed(self, failure: Failure) -> None:
        self.failed(failure.getErrorMessage())

    def _finish(self) -> None:
        self.finished = True
        self.connector._forget(self)
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _takeWaiters(self) -> list[Deferred[IFlow]]:
        waiters, self.waiters = self.waiters, []
        return waiters


class OutgoingConnector:
    """
    Opens TCP, TLS, WS and WSS connections to next hops, one attempt at a time per
    C{(transport, host, port)}.

    @ivar settings: the L{OutgoingSettings}.
    @ivar opening: the attempts in progress, by C{(transport, host,
        port)}.
    @ivar stats: C{opened} and C{failed} attempts.
    """

    _log = Logger()

    def __init__(self, table: ConnectionTable, sink: Any, reactor: Any,
                 settings: OutgoingSettings = OutgoingSettings()) -> None:
        """
        @param table: the connection table the connections join.
        @param sink: the L{sipcore.interfaces.IMessageSink} their messages
            go to.
        @param reactor: an L{IReactorTCP} and L{IReactorTime} provider.
        @param settings: how connections are opened.
        @raise ValueError: when a TLS file cannot be read or parsed.
        """
        self.table = table
        self.sink = sink
        self.clock = reactor
        self.reactor = reactor
        self.settings = settings
        self.connectionSettings = ConnectionSettings(
            maxSize=settings.maxSize,
            idleTimeout=settings.idleTimeout,
            unregisteredIdleTimeout=0.0,
            handshakeTimeout=0.0,
        )
        self._trustRoot = loadTrustRoot(settings.tlsCAFile)
        self._clientCertificate = loadClientCertificate(settings.tlsCertFile,
                                                        settings.tlsKeyFile)
        self.opening: dict[tuple[str, str, int], _Attempt] = {}
        self.stats = {"opened": 0, "failed": 0}

    def connect(self, hop: NextHop, serverName: str | None = None) -> Deferred[IFlow]:
        """
        Open a connection to C{hop}, or join the attempt already opening
        one.

        @param hop: a C{tcp}, C{tls}, C{ws} or C{wss} next hop (its host an
            IP address).
        @param serverName: the name a TLS server's certificate must carry
            (and the SNI sent); the hop's address when C{None}.
        @return: a L{Deferred} firing with the connection's L{IFlow} once
            it is open (TLS: verified; WS: the WebSocket open), or failing
            with L{ConnectFailed} (refused, unreachable, timed out, TLS
            verification failed, WebSocket handshake refused, refused by the
            connection table).
        """
        if hop.transport not in _STREAMS:
            return fail(ConnectFailed("cannot open a {} connection".format(hop.transport)))
        key = (hop.transport, hop.host.lower(), hop.port)
        attempt = self.opening.get(key)
        if attempt is not None:
            return attempt.wait()
        if self.table.shuttingDown:
            return fail(ConnectFailed("server is shutting down"))
        name = serverName or hop.host
        attempt = _Attempt(self, key, name)
        self.opening[key] = attempt
        d = attempt.wait()
        endpoint = self._endpoint(hop, name)
        attempt.timer = self.clock.callLater(self.settings.connectTimeout, attempt.timedOut)
        factory: Any = attempt
        if hop.transport in _WEBSOCKETS:
            factory = SIPWebSocketClientFactory(
                _websocketURL(hop, name), self.sink, self.table, self.clock, hop.transport,
                self.connectionSettings, attempt)
        attempt.connecting = endpoint.connect(factory)
        attempt.connecting.addErrback(attempt.connectFailed)
        return d

    def _endpoint(self, hop: NextHop, serverName: str) -> Any:
        timeout = max(1, int(self.settings.connectTimeout + 0.999))
        if ipaddress.ip_address(hop.host).version == 6:
            endpoint: Any = endpoints.TCP6ClientEndpoint(self.reactor, hop.host, hop.port,
                                                         timeout=timeout)
        else:
            endpoint = endpoints.TCP4ClientEndpoint(self.reactor, hop.host, hop.port,
                                                    timeout=timeout)
        if hop.transport in ("tls", "wss"):
            options = ssl.optionsForClientTLS(serverName, trustRoot=self._trustRoot,
                                              clientCertificate=self._clientCertificate)
            endpoint = endpoints.wrapClientTLS(options, endpoint)
        return endpoint

    def _forget(self, attempt: _Attempt) -> None:
        if self.opening.get(attempt.key) is attempt:
            del self.opening[attempt.key]
