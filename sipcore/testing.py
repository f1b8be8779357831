# -*- test-case-name: tests.test_core,tests.test_tap -*-
"""
Fakes for testing code that uses sipcore, plugin authors' included.

  - L{FakeFlow}: an L{IFlow} that records what is sent.
  - L{RecordingBus}: an L{IEventBus} that records what is fired.
  - L{FakeDatagramTransport}: a UDP port that records what is written.
  - L{FakePool}: an L{IDatabasePool} that records its statements.
  - L{MemoryLocationStore} (re-exported): the in-memory store.
  - L{connectionEvent}: build a L{ConnectionEvent} with defaults.
  - L{LogCapture}: the log events emitted while a test runs.
  - L{parseRequest}, L{parseResponse}: parse one message of a known kind.
  - L{contactsOf}: the Contact addresses of a message without a wildcard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IUDPTransport
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sipcore.events import TCP_CLOSED, ConnectionEvent
from sipcore.interfaces import IDatabasePool, IEventBus, IFlow, IStreamFlow
from sipcore.location import MemoryLocationStore
from sipcore.message import Address, Request, Response, parseMessage

__all__ = [
    "FakeDatagramTransport",
    "FakeFlow",
    "FakePool",
    "LogCapture",
    "MemoryLocationStore",
    "FakeStreamFlow",
    "RecordingBus",
    "UDPMemoryReactor",
    "connectionEvent",
    "contactsOf",
    "parseRequest",
    "parseResponse",
]


@implementer(IFlow)
class FakeFlow:
    """
    A flow that keeps what is sent through it.

    @ivar sent: C{list} of C{(data, address)}; C{address} is C{None} for
        L{send}.
    @ivar closed: whether L{close} was called.
    """

    def __init__(
        self,
        transport: str = "udp",
        conid: int | None = None,
        local: tuple[str, int] = ("127.0.0.1", 5060),
        remote: tuple[str, int] = ("127.0.0.1", 40000),
    ) -> None:
        self.transport = transport
        self.conid = conid
        self.local = local
        self.remote = remote
        self.reliable = transport != "udp"
        self.sent: list[tuple[bytes, tuple[str, int] | None]] = []
        self.closed = False

    def send(self, data: bytes) -> bool:
        if self.closed:
            return False
        self.sent.append((data, None))
        return True

    def sendTo(self, data: bytes, address: tuple[str, int]) -> bool:
        if self.closed:
            return False
        self.sent.append((data, None if self.reliable else tuple(address)))  # type: ignore[arg-type]
        return True

    def close(self) -> None:
        self.closed = True

    def messages(self) -> list[Request | Response]:
        """
        Everything sent, parsed.
        """
        return [parseMessage(data) for data, _ in self.sent]

    def requests(self) -> list[Request]:
        """
        Everything sent, parsed: requests only (else C{TypeError}).
        """
        return [parseRequest(data) for data, _ in self.sent]

    def responses(self) -> list[Response]:
        """
        Everything sent, parsed: responses only (else C{TypeError}).
        """
        return [parseResponse(data) for data, _ in self.sent]


@implementer(IStreamFlow)
class FakeStreamFlow(FakeFlow):
    """
    A stream flow that keeps what is sent through it, for a
    L{sipcore.transport.connections.ConnectionTable}.

    @ivar aborted: whether L{abort} was called.
    @ivar boundUntil: the C{until} of each call of L{bound}, in order.
    """

    def __init__(
        self,
        transport: str = "tcp",
        conid: int | None = None,
        local: tuple[str, int] = ("127.0.0.1", 5060),
        remote: tuple[str, int] = ("127.0.0.1", 40000),
    ) -> None:
        super().__init__(transport, conid, local, remote)
        self.aborted = False
        self.boundUntil: list[float] = []

    def abort(self) -> None:
        self.closed = self.aborted = True

    def bound(self, until: float) -> None:
        self.boundUntil.append(until)


@implementer(IUDPTransport)
class FakeDatagramTransport:
    """
    A UDP port without a socket: it records the datagrams written to it.

    @ivar written: C{(data, address)} per datagram written, in order.
    @ivar refuse: when true, L{write} raises C{OSError}, as for a datagram
        the kernel refuses.
    @ivar listening: false once L{stopListening} was called.
    """

    def __init__(self, host: tuple[str, int] = ("127.0.0.1", 5060), refuse: bool = False) -> None:
        self.host = host
        self.refuse = refuse
        self.written: list[tuple[bytes, Any]] = []
        self.listening = True
        self.connected: tuple[str, int] | None = None
        self.broadcastAllowed = False

    def write(self, packet: bytes, addr: Any = None) -> None:
        if self.refuse:
            raise OSError("Message too long")
        self.written.append((packet, addr))

    def connect(self, host: str, port: int) -> None:
        self.connected = (host, port)

    def getHost(self) -> IPv4Address | IPv6Address:
        host, port = self.host
        if ":" in host:
            return IPv6Address("UDP", host, port)
        return IPv4Address("UDP", host, port)

    def stopListening(self) -> None:
        self.listening = False

    def setBroadcastAllowed(self, enabled: bool) -> None:
        self.broadcastAllowed = enabled

    def getBroadcastAllowed(self) -> bool:
        return self.broadcastAllowed


@implementer(IDatabasePool)
class FakePool:
    """
    A database pool that records each call and answers it with a
    L{Deferred} the test fires, or fails every call at once.

    @ivar calls: C{(statement, params, deferred)} per C{runQuery} or
        C{runOperation}, and C{(interaction, args, deferred)} per
        C{runInteraction}, in order.
    @ivar failure: when not C{None}, every call fails with it (and is not
        recorded).
    """

    def __init__(self, failure: BaseException | None = None) -> None:
        self.failure = failure
        self.available = failure is None
        self.calls: list[tuple[Any, Any, defer.Deferred[Any]]] = []

    def _call(self, what: Any, args: Any) -> defer.Deferred[Any]:
        if self.failure is not None:
            return defer.fail(self.failure)
        d: defer.Deferred[Any] = defer.Deferred()
        self.calls.append((what, args, d))
        return d

    def runQuery(self, statement: str, params: Any = None) -> defer.Deferred[Any]:
        return self._call(statement, params)

    def runOperation(self, statement: str, params: Any = None) -> defer.Deferred[Any]:
        return self._call(statement, params)

    def runInteraction(self, interaction: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        return self._call(interaction, (args, kwargs))


@implementer(IEventBus)
class RecordingBus:
    """
    A bus that records fired events, delivers them to its subscribers and
    lets a test wait for one.

    @ivar events: every event fired, in order.
    """

    def __init__(self) -> None:
        self.events: list[ConnectionEvent] = []
        self.handlers: list[Any] = []
        self._waiters: list[
            tuple[Callable[[ConnectionEvent], bool], defer.Deferred[ConnectionEvent]]
        ] = []

    def subscribe(self, handler: Any) -> None:
        self.handlers.append(handler)

    def unsubscribe(self, handler: Any) -> None:
        if handler in self.handlers:
            self.handlers.remove(handler)

    def fire(self, event: ConnectionEvent) -> defer.Deferred[None]:
        self.events.append(event)
        for handler in list(self.handlers):
            if event.name in handler.events:
                handler.handle(event)
        for waiter in list(self._waiters):
            match, d = waiter
            if match(event):
                self._waiters.remove(waiter)
                d.callback(event)
        return defer.succeed(None)

    def drain(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def names(self, conid: int | None = None) -> list[str]:
        """
        The names of the events fired (for one connection), in order.
        """
        return [e.name for e in self.events if conid is None or e.conid == conid]

    def named(self, name: str, conid: int | None = None) -> list[ConnectionEvent]:
        """
        The events called C{name} fired (for one connection), in order.
        """
        return [e for e in self.events if e.name == name and (conid is None or e.conid == conid)]

    def waitFor(
        self,
        names: str | tuple[str, ...],
        conid: int | None = None,
        remotePort: int | None = None,
    ) -> defer.Deferred[ConnectionEvent]:
        """
        @param names: an event name, or several (any of them matches).
        @param conid: only an event of this connection.
        @param remotePort: only an event whose remote port is this.
        @return: a L{Deferred} firing with the first matching event,
            already fired or not.
        """
        if isinstance(names, str):
            names = (names,)

        def match(event: ConnectionEvent) -> bool:
            return (
                event.name in names
                and (conid is None or event.conid == conid)
                and (remotePort is None or event.remote[1] == remotePort)
            )

        for event in self.events:
            if match(event):
                return defer.succeed(event)
        d: defer.Deferred[ConnectionEvent] = defer.Deferred()
        self._waiters.append((match, d))
        return d


_Message = TypeVar("_Message", Request, Response)


def _parseAs(data: bytes, kind: type[_Message]) -> _Message:
    message = parseMessage(data)
    if not isinstance(message, kind):
        raise TypeError("not a {}: {!r}".format(kind.__name__, data[:40]))
    return message


def parseRequest(data: bytes) -> Request:
    """
    Parse a request.

    @raise TypeError: if C{data} is a response.
    @raise sipcore.message.SIPParseError: if it is malformed.
    """
    return _parseAs(data, Request)


def parseResponse(data: bytes) -> Response:
    """
    Parse a response.

    @raise TypeError: if C{data} is a request.
    @raise sipcore.message.SIPParseError: if it is malformed.
    """
    return _parseAs(data, Response)


def contactsOf(message: Request | Response) -> list[Address]:
    """
    The Contact addresses of C{message}, in order.

    @raise TypeError: if its Contact is the wildcard C{*}.
    """
    contacts = message.contacts
    if not isinstance(contacts, list):
        raise TypeError("wildcard Contact")
    return contacts


@implementer(ILogObserver)
class LogCapture:
    """
    Observes the global log publisher until the end of a test.

    @ivar events: every event observed, in order.
    """

    def __init__(self, case: SynchronousTestCase, namespace: str = "") -> None:
        """
        @param case: the test; the capture ends at its cleanup.
        @param namespace: what L{at} keeps: events whose C{log_namespace}
            starts with it.
        """
        self.namespace = namespace
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self)
        case.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)

    def at(self, level: LogLevel) -> list[LogEvent]:
        """
        The events at C{level} in the namespace, in order.
        """
        return [
            event for event in self.events
            if event.get("log_level") == level
            and event.get("log_namespace", "").startswith(self.namespace)
        ]


def connectionEvent(name: str = TCP_CLOSED, conid: int = 1, **fields: Any) -> ConnectionEvent:
    """
    A L{ConnectionEvent} with plausible defaults for the fields not given.
    """
    values: dict[str, Any] = {
        "transport": "tcp",
        "local": ("127.0.0.1", 5060),
        "remote": ("127.0.0.1", 40000),
        "time": 0.0,
    }
    values.update(fields)
    return ConnectionEvent(name=name, conid=conid, **values)


class UDPMemoryReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} that also fakes C{listenUDP}, so a whole
    sipcore service can be built and started on it.

    @ivar udpServers: C{list} of C{(port, protocol, interface)}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udpServers: list[tuple[int, Any, str]] = []
        self.udpPacketSizes: list[int] = []

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> Any:
        self.udpServers.append((port, protocol, interface))
        self.udpPacketSizes.append(maxPacketSize)
        return _FakeUDPPort(port or 40404, interface)


class _FakeUDPPort:
    def __init__(self, port: int, interface: str) -> None:
        self.port = port
        self.interface = interface
        self.stopped = False

    def getHost(self) -> Any:
        if ":" in self.interface:
            return IPv6Address("UDP", self.interface, self.port)
        return IPv4Address("UDP", self.interface or "0.0.0.0", self.port)

    def stopListening(self) -> None:
        self.stopped = True
