# -*- test-case-name: tests.test_transport_listen -*-
"""
The C{--listen} option and the services that listen.

A listen spec is C{TRANSPORT:PORT[:key=value...]}, for example
C{udp:5060}, C{tcp:5060:interface=127.0.0.1},
C{tls:5061:privateKey=key.pem:certKey=cert.pem} or
C{ws:8080:interface=\\:\\:1}.  Stream transports map to a Twisted server
endpoint description (C{tcp:...} or C{ssl:...}); UDP has no endpoint
string and is opened with C{IReactorUDP.listenUDP}.

Every transport also takes C{maxSize=BYTES}: the largest message that
listener accepts (default: the server-wide C{--max-message-size}), e.g.
C{udp:5060:maxSize=8192} or C{ws:8080:maxSize=16384}.  It is sipcore's,
not part of the endpoint description.

Every transport also takes C{fd=N}: listen on file descriptor C{N}, a
socket this process inherited already bound (and, for a stream transport,
listening), with L{IReactorSocket.adoptDatagramPort} or an
L{AdoptedStreamServerEndpoint}; a TLS or WSS listener then wraps each
connection in TLS with its own certificate and key
(L{AdoptedTLSServerEndpoint}).  The port and interface then only name it
in messages.  C{python -m sipcore.workers} starts its workers that way.
Like C{maxSize}, it is not part of the endpoint description.

Stream listeners listen with a backlog of L{DEFAULT_BACKLOG} pending
connections (the server-wide C{--listen-backlog}) unless the spec says
C{backlog=N}; the kernel caps it (Linux: C{net.core.somaxconn}).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    SSL4ServerEndpoint,
    serverFromString,
)
from twisted.internet.interfaces import IListeningPort, IPushProducer, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from sipcore.message.framing import DEFAULT_MAX_SIZE
from sipcore.transport.connections import ConnectionTable, addressOf
from sipcore.transport.settings import DEFAULT_IDLE_TIMEOUT, ConnectionSettings
from sipcore.transport.tls import ReloadableTLS

__all__ = [
    "DEFAULT_BACKLOG",
    "AdoptedTLSServerEndpoint",
    "DEFAULT_LISTEN",
    "TRANSPORTS",
    "DatagramServerService",
    "ListenSpec",
    "ListenerService",
    "UDPServerEndpoint",
    "parseListen",
    "streamEndpoint",
    "tlsOf",
]

#: What sipcore listens on when no C{--listen} is given.
DEFAULT_LISTEN = ("udp:5060", "tcp:5060", "ws:8080")

#: Connections the kernel may hold for a stream listener before it
#: accepts them (Twisted's default is 50, which a burst of reconnecting
#: clients overflows).
DEFAULT_BACKLOG = 1024

#: The transports a listen spec may name.
TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")

_STREAM_KEYS = ("interface", "backlog", "maxSize")
_TLS_KEYS = _STREAM_KEYS + ("privateKey", "certKey", "extraCertChain", "dhParameters", "fd")
#: Keys sipcore reads itself and keeps out of the endpoint description.
_OWN_KEYS = ("maxSize", "fd")
_KEYS = {
    "udp": ("interface", "maxSize", "fd"),
    "tcp": _STREAM_KEYS + ("fd",),
    "ws": _STREAM_KEYS + ("fd",),
    "tls": _TLS_KEYS,
    "wss": _TLS_KEYS,
}
_FILE_KEYS = ("privateKey", "certKey", "extraCertChain", "dhParameters")

#: The options of a UDP listener's protocol; a stream listener's options
#: are the fields of L{ConnectionSettings}.  L{ListenerService} passes a
#: listener only its own, so one set of options can serve every listener.
_UDP_OPTIONS = frozenset({"receiveBuffer", "limiter", "observer"})
_SETTINGS = frozenset(f.name for f in fields(ConnectionSettings)) - {"maxSize", "idleTimeout"}


@dataclass(frozen=True)
class ListenSpec:
    """
    One parsed C{--listen} value.

    @ivar transport: one of L{TRANSPORTS}.
    @ivar description: the Twisted server endpoint description for stream
        transports (C{tcp:...} or C{ssl:...}); for UDP an equivalent text
        (C{udp:PORT[:interface=...]}) used only in messages.
    @ivar port: the port asked for (C{0}: any free port).
    @ivar interface: the address to bind, C{""} for all IPv4 addresses.
    @ivar options: the C{key=value} options as given (unescaped).
    """

    transport: str
    description: str
    port: int
    interface: str = ""
    options: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def secure(self) -> bool:
        """
        C{True} for TLS and WSS.
        """
        return self.transport in ("tls", "wss")

    @property
    def fileno(self) -> int | None:
        """
        The inherited socket to listen on (C{fd=N}), or C{None}.
        """
        fd = self.options.get("fd")
        return None if fd is None else int(fd)

    @property
    def family(self) -> int:
        """
        The address family of C{interface}: C{AF_INET6} for an IPv6
        address, else C{AF_INET}.
        """
        return socket.AF_INET6 if ":" in self.interface else socket.AF_INET


def _split(text: str) -> list[str]:
    """
    Split on colons not escaped with a backslash, removing the escapes.
    """
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            current.append(next(chars, "\\"))
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def parseListen(text: str) -> ListenSpec:
    """
    Parse a C{--listen} value.

    An IPv6 C{interface} may be escaped as endpoint strings want
    (C{interface=\\:\\:1}), written plainly (C{interface=::1}, as the last
    option) or in brackets (C{interface=[::1]}).

    @param text: C{TRANSPORT:PORT[:key=value...]}.
    @return: the L{ListenSpec}.
    @raise ValueError: for an unknown transport, a missing or bad port, an
        unknown or repeated option, or a TLS spec without a private key (or
        naming a key or certificate file that does not exist).
    """
    parts = _split(text.strip())
    transport = parts[0].lower()
    if transport not in TRANSPORTS:
        raise ValueError(
            "bad listen spec {!r}: unknown transport {!r} (expected one of {})".format(
                text, parts[0], ", ".join(TRANSPORTS)
            )
        )
    if len(parts) < 2 or not parts[1]:
        raise ValueError("bad listen spec {!r}: missing port (e.g. {}:5060)".format(text, transport))
    portText = parts[1]
    if not portText.isdigit() or int(portText) > 65535:
        raise ValueError(
            "bad listen spec {!r}: port must be a number from 0 to 65535, not {!r}".format(
                text, portText
            )
        )
    port = int(portText)

    # Rejoin an unescaped IPv6 address: "interface=::1" splits into
    # "interface=", "", "1".
    pairs: list[str] = []
    for part in parts[2:]:
        if "=" not in part and pairs:
            pairs[-1] += ":" + part
        else:
            pairs.append(part)

    options: dict[str, str] = {}
    allowed = _KEYS[transport]
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError("bad listen spec {!r}: expected key=value, not {!r}".format(text, pair))
        if key not in allowed:
            raise ValueError(
                "bad listen spec {!r}: unknown option {!r} for {} (allowed: {})".format(
                    text, key, transport, ", ".join(allowed)
                )
            )
        if key in options:
            raise ValueError("bad listen spec {!r}: option {!r} given twice".format(text, key))
        options[key] = value

    interface = options.get("interface", "")
    if interface.startswith("[") and interface.endswith("]"):
        interface = interface[1:-1]
        options["interface"] = interface
    if "backlog" in options and not options["backlog"].isdigit():
        raise ValueError("bad listen spec {!r}: backlog must be a number".format(text))
    if "maxSize" in options and not (
        options["maxSize"].isdigit() and int(options["maxSize"]) > 0
    ):
        raise ValueError("bad listen spec {!r}: maxSize must be a positive number".format(text))
    if "fd" in options and not options["fd"].isdigit():
        raise ValueError("bad listen spec {!r}: fd must be a file descriptor number".format(text))

    if transport in ("tls", "wss"):
        if not options.get("privateKey"):
            raise ValueError(
                "bad listen spec {!r}: {} needs privateKey=FILE (and certKey=FILE "
                "unless the key file holds the certificate too)".format(text, transport)
            )
        for key in _FILE_KEYS:
            path = options.get(key)
            if path is not None and not os.path.isfile(path):
                raise ValueError(
                    "bad listen spec {!r}: {} file {!r} not found".format(text, key, path)
                )

    if transport == "udp":
        description = "udp:{}".format(port)
    else:
        description = "{}:{}".format("ssl" if transport in ("tls", "wss") else "tcp", port)
    for key, value in options.items():
        if key not in _OWN_KEYS:
            description += ":{}={}".format(key, _escape(value))
    return ListenSpec(transport, description, port, interface, options)


def tlsOf(spec: ListenSpec) -> ReloadableTLS | None:
    """
    The certificate and key of a TLS or WSS spec, read now.

    @return: a L{ReloadableTLS}, or C{None} for another transport.
    @raise ValueError: a file cannot be read, or the key is not the
        certificate's.
    """
    if not spec.secure:
        return None
    return ReloadableTLS(spec.options["privateKey"], spec.options.get("certKey"),
                         spec.options.get("extraCertChain"), spec.options.get("dhParameters"))


def streamEndpoint(reactor: Any, spec: ListenSpec, backlog: int = DEFAULT_BACKLOG,
                   tls: ReloadableTLS | None = None) -> IStreamServerEndpoint:
    """
    The server endpoint of a stream listen spec.

    @param reactor: the reactor the endpoint listens with.
    @param spec: a TCP, TLS, WS or WSS L{ListenSpec}.
    @param backlog: the listen backlog, unless the spec names one.
    @param tls: for a TLS or WSS spec, the context factory of its
        certificate and key (what a reload changes).
    @return: for a spec with C{fd=N}, an L{AdoptedStreamServerEndpoint}
        (which closes the descriptor once it listens on a copy), or with
        C{tls} an L{AdoptedTLSServerEndpoint}; else an L{SSL4ServerEndpoint}
        with C{tls}, or the endpoint of the spec's description.
    """
    fileno = spec.fileno
    if fileno is not None:
        if tls is not None:
            return AdoptedTLSServerEndpoint(reactor, fileno, spec.family, tls)
        return AdoptedStreamServerEndpoint(reactor, fileno, spec.family)
    if tls is not None:
        return SSL4ServerEndpoint(reactor, spec.port, tls,
                                  backlog=int(spec.options.get("backlog", backlog)),
                                  interface=spec.interface)
    description = spec.description
    if "backlog" not in spec.options:
        description += ":backlog={}".format(backlog)
    endpoint: IStreamServerEndpoint = serverFromString(reactor, description)
    return endpoint


@implementer(IStreamServerEndpoint)
class AdoptedTLSServerEndpoint:
    """
    A TLS server endpoint on an inherited listening socket: it adopts the
    socket as L{AdoptedStreamServerEndpoint} does and wraps each connection
    in TLS with a L{TLSMemoryBIOFactory}, as C{IReactorSSL.listenSSL} does
    on a port it binds.  Each new connection asks C{tls} for its context.
    """

    def __init__(self, reactor: Any, fileno: int, family: int, tls: ReloadableTLS) -> None:
        """
        @param reactor: provides C{IReactorSocket} and C{IReactorTime}.
        @param fileno: the descriptor of a bound, listening stream socket;
            closed once the reactor listens on a copy.
        @param family: its address family.
        @param tls: the certificate and key of the listener.
        """
        self._reactor = reactor
        self._adopted = AdoptedStreamServerEndpoint(reactor, fileno, family)
        self._tls = tls

    def listen(self, protocolFactory: Any) -> Deferred[IListeningPort]:
        """
        @return: a L{Deferred} firing with the listening port.
        """
        return self._adopted.listen(
            TLSMemoryBIOFactory(self._tls, False, protocolFactory, clock=self._reactor))


class UDPServerEndpoint:
    """
    Where a UDP listener listens: the datagram counterpart of a stream
    server endpoint.  C{listen} binds the spec's port and interface with
    C{IReactorUDP.listenUDP}, or adopts the inherited socket of a spec with
    C{fd=N} with C{IReactorSocket.adoptDatagramPort}.
    """

    def __init__(self, reactor: Any, spec: ListenSpec, maxPacketSize: int) -> None:
        """
        @param reactor: provides C{IReactorUDP} (and C{IReactorSocket} for a
            spec with C{fd=N}).
        @param spec: a UDP L{ListenSpec}.
        @param maxPacketSize: the largest datagram read whole.
        """
        self._reactor = reactor
        self._spec = spec
        self._maxPacketSize = maxPacketSize

    def listen(self, protocol: Any) -> Deferred[Any]:
        """
        @return: a L{Deferred} firing with the listening port, or failing
            with the reason (e.g. L{twisted.internet.error.CannotListenError}).
        """
        spec = self._spec
        if spec.fileno is not None:
            return maybeDeferred(self._reactor.adoptDatagramPort, spec.fileno, spec.family,
                                 protocol, maxPacketSize=self._maxPacketSize)
        return maybeDeferred(self._reactor.listenUDP, spec.port, protocol,
                             interface=spec.interface, maxPacketSize=self._maxPacketSize)


class DatagramServerService(Service):
    """
    Listens for datagrams on a L{UDPServerEndpoint} while running: what
    L{StreamServerEndpointService} is for stream endpoints, and like it
    binding in C{privilegedStartService}.
    """

    def __init__(self, endpoint: Any, protocol: Any) -> None:
        """
        @param endpoint: has C{listen(protocol)} returning a L{Deferred}
            that fires with the listening port (or with C{None} when there
            is nothing to stop).
        @param protocol: the C{DatagramProtocol}.
        """
        self.endpoint = endpoint
        self.protocol = protocol
        self._waitingForPort: Deferred[Any] | None = None

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        self._waitingForPort = self.endpoint.listen(self.protocol)

    def startService(self) -> None:
        Service.startService(self)
        if self._waitingForPort is None:
            self.privilegedStartService()

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        """
        @return: a L{Deferred} firing with C{None} once the port is closed.
        """
        Service.stopService(self)
        waiting, self._waitingForPort = self._waitingForPort, None
        if waiting is None:
            return succeed(None)
        waiting.cancel()
        return waiting.addCallback(
            lambda port: None if port is None else port.stopListening())


class _ReportingEndpoint:
    """
    An endpoint that tells its L{ListenerService} how listening went.  A
    failure is reported and then handled: the endpoint service gets no port
    (its C{stopService} then has nothing to stop) and does not log it
    again.
    """

    def __init__(self, endpoint: Any, listening: Callable[[Any], None],
                 cannotListen: Callable[[Failure], None]) -> None:
        self._endpoint = endpoint
        self._listening = listening
        self._cannotListen = cannotListen

    def listen(self, factory: Any) -> Deferred[Any]:
        def listened(port: Any) -> Any:
            self._listening(port)
            return port

        def failed(failure: Failure) -> None:
            self._cannotListen(failure)

        d: Deferred[Any] = maybeDeferred(self._endpoint.listen, factory)
        d.addCallbacks(listened, failed)
        return d


class ListenerService(Service):
    """
    Listens on one L{ListenSpec} while running, through a
    L{StreamServerEndpointService} (TCP, TLS, WS, WSS) or a
    L{DatagramServerService} (UDP) made each time it starts listening.

    @ivar listeningPort: the L{twisted.internet.interfaces.IListeningPort}
        while listening, else C{None}.
    @ivar port: the port actually bound (useful with port C{0}), or C{None}
        when not listening.
    @ivar factory: the protocol factory (stream transports) or the
        L{SIPDatagramProtocol} (UDP).
    """

    _log = Logger()
    _held = False

    def __init__(
        self,
        spec: ListenSpec,
        reactor: Any,
        sink: Any,
        table: ConnectionTable,
        maxSize: int = DEFAULT_MAX_SIZE,
        idleTimeout: float = DEFAULT_IDLE_TIMEOUT,
        backlog: int = DEFAULT_BACKLOG,
        **options: Any,
    ) -> None:
        """
        @param spec: what to listen on.
        @param reactor: provides C{IReactorTCP}, C{IReactorUDP},
            C{IReactorSSL}, C{IReactorTime} and, for a spec with C{fd=N},
            C{IReactorSocket}.
        @param sink: the L{sipcore.interfaces.IMessageSink}.
        @param table: the L{ConnectionTable} (unused for UDP).
        @param maxSize: the largest message accepted, in bytes.
        @param idleTimeout: the stream idle timeout in seconds (C{0}: none).
        @param backlog: the listen backlog of a stream listener whose spec
            names none.
        @param options: factory options; each listener uses those of its
            transport and ignores the others: C{receiveBuffer},
            C{limiter} and C{observer} (UDP), the other fields of L{ConnectionSettings}
            (TCP, TLS, WS, WSS: the listener's C{settings}).
        @raise ValueError: for a bad setting, or a TLS certificate or key that
            cannot be read or does not match.
        """
        unknown = set(options) - _UDP_OPTIONS - _SETTINGS
        if unknown:
            raise TypeError("unknown listener options: {}".format(", ".join(sorted(unknown))))
        self.spec = spec
        self.name = "{} {}".format(spec.transport, spec.description)
        self._reactor = reactor
        self._sink = sink
        self._table = table
        self._maxSize = int(spec.options.get("maxSize", maxSize))
        if backlog <= 0:
            raise ValueError("backlog must be positive")
        self._backlog = backlog
        self._udpOptions = {key: value for key, value in options.items() if key in _UDP_OPTIONS}
        streamOptions = {key: value for key, value in options.items() if key in _SETTINGS}
        if streamOptions.get("allowedOrigins") is not None:
            streamOptions["allowedOrigins"] = tuple(streamOptions["allowedOrigins"])
        if "originDomains" in streamOptions:
            streamOptions["originDomains"] = frozenset(streamOptions["originDomains"])
        #: What the connections of a stream listener obey.
        self.settings = ConnectionSettings(
            maxSize=self._maxSize, idleTimeout=idleTimeout, **streamOptions)
        self.factory: Any = None
        self.listeningPort: Any = None
        self.port: int | None = None
        self._server: IService | None = None
        #: The certificate and key of a TLS or WSS listener (reloadable).
        self.tls = tlsOf(spec)
        self._waiters: list[Deferred[Any]] = []
        self._failure: Failure | None = None

    def _buildFactory(self) -> Any:
        spec = self.spec
        if spec.transport == "udp":
            from sipcore.transport.udp import SIPDatagramProtocol

            return SIPDatagramProtocol(self._sink, self._maxSize, **self._udpOptions)
        if spec.transport in ("tcp", "tls"):
            from sipcore.transport.stream import SIPStreamFactory

            return SIPStreamFactory(
                self._sink, self._table, self._reactor, spec.transport, self.settings)
        from sipcore.transport.websocket import SIPWebSocketFactory

        return SIPWebSocketFactory(
            self._sink, self._table, self._reactor, spec.transport, self.settings)

    def _listen(self) -> Deferred[Any]:
        """
        Listen unless already listening or starting to.

        @return: a new L{Deferred} firing with the listening port.
        """
        if self.listeningPort is not None:
            return succeed(self.listeningPort)
        waiter: Deferred[Any] = Deferred()
        self._waiters.append(waiter)
        if self._server is not None:
            return waiter
        self._failure = None
        try:
            self.factory = self._buildFactory()
            endpoint = _ReportingEndpoint(self._endpoint(), self._listening, self._cannotListen)
            server: IService
            if self.spec.transport == "udp":
                server = DatagramServerService(endpoint, self.factory)
            else:
                server = StreamServerEndpointService(endpoint, self.factory)
        except Exception:
            self._cannotListen(Failure())
            return waiter
        self._server = server
        server.privilegedStartService()
        return waiter

    def _endpoint(self) -> Any:
        if self.spec.transport == "udp":
            return UDPServerEndpoint(self._reactor, self.spec, maxPacketSize=self._maxSize + 1)
        return streamEndpoint(self._reactor, self.spec, self._backlog, self.tls)

    def _listening(self, listeningPort: Any) -> None:
        self.listeningPort = listeningPort
        if not self.running and IPushProducer.providedBy(listeningPort):
            # Bound by privilegedStartService: accept nothing until
            # startService (the kernel queues what arrives meanwhile).
            listeningPort.pauseProducing()
            self._held = True
        host, port = addressOf(listeningPort.getHost())
        self.port = port
        self._log.info(
            "listening on {transport} {host}:{port}",
            transport=self.spec.transport,
            host=host,
            port=port,
        )
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(listeningPort)

    def _cannotListen(self, failure: Failure) -> None:
        self._server = None
        self._failure = failure
        self._log.error(
            "cannot listen on {spec}: {error}",
            spec=self.spec.description,
            error=failure.getErrorMessage(),
        )
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(failure)

    @property
    def server(self) -> IService | None:
        """
        The L{StreamServerEndpointService} or L{DatagramServerService} that
        listens (or binds) now, else C{None}.
        """
        return self._server

    def getHost(self) -> Any:
        """
        @return: the bound address (an L{IPv4Address} or L{IPv6Address}), or
            C{None} when not listening.
        """
        if self.listeningPort is None:
            return None
        return self.listeningPort.getHost()

    def privilegedStartService(self) -> None:
        """
        Bind now, before twistd drops privileges (so ports below 1024 work
        with C{twistd --uid}), but read nothing until L{startService}: a
        connection or datagram that arrives meanwhile waits in the kernel
        (the listen backlog, the socket's receive buffer) and is served
        once the server has started, its store open and its handlers
        running.
        """
        super().privilegedStartService()
        # A failure is logged here and reported by startService.
        self._listen().addErrback(lambda failure: None)

    def startService(self) -> Deferred[Any]:  # type: ignore[override]
        """
        Start listening (unless L{privilegedStartService} already did).

        @return: a L{Deferred} firing with the listening port, or failing
            with the reason (e.g. L{twisted.internet.error.CannotListenError}),
            which is logged.
        """
        super().startService()
        failure, self._failure = self._failure, None
        if failure is not None:
            # privilegedStartService tried and failed (and logged it).
            return fail(failure)
        if self._held:
            self._held = False
            self.listeningPort.resumeProducing()
        listening = self._listen()
        if self._server is not None and not self._server.running:
            self._server.startService()
        return listening

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        """
        Stop listening.  Live connections stay open: closing them is
        L{ConnectionTable.closeAll}'s job.

        @return: a L{Deferred} firing with C{None} once the port is closed.
        """
        super().stopService()
        self._held = False
        server, self._server = self._server, None
        self.listeningPort = None
        self.port = None
        if server is None:
            return succeed(None)
        d = maybeDeferred(server.stopService)
        d.addCallback(lambda ignored: None)
        return d
