# -*- test-case-name: tests.test_connections -*-
"""
The table of live stream connections.

Every TCP, TLS, WS and WSS connection is registered here when it is
accepted.  The table gives it a connection id (C{conid}) and fires the
connection events on the bus: C{tcp:connected} on L{ConnectionTable.add},
C{websocket:connected} on L{ConnectionTable.websocketOpened}, and exactly one
of C{tcp:closed}, C{tcp:reset} or C{tcp:timeout} (plus C{websocket:closed}
for a WebSocket whose handshake completed) on L{ConnectionTable.remove}.

The protocols decide which close event a close is; the table guarantees it
is fired once.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from sipcore.events import (
    CLOSE_EVENTS,
    TCP_CLOSED,
    TCP_CONNECTED,
    WEBSOCKET_CLOSED,
    WEBSOCKET_CONNECTED,
    ConnectionEvent,
)
from sipcore.interfaces import IEventBus, IMessageObserver, IStreamFlow
from sipcore.metrics import CollectorRegistry, Metric, counterFamily, gaugeFamily, register
from sipcore.throttle import LogThrottle, sourceKey

__all__ = [
    "ConnectionLimits",
    "ConnectionRefused",
    "ConnectionTable",
    "FlowOwner",
    "ShuttingDown",
    "TooManyConnections",
    "StreamFlow",
    "addressOf",
]

#: Seconds L{ConnectionTable.closeAll} waits after asking connections to
#: close before it aborts them.
DEFAULT_CLOSE_GRACE = 2.0

#: The stream transports, each served in the metrics even before its first
#: connection.
STREAM_TRANSPORTS = ("tcp", "tls", "ws", "wss")

#: The process-wide source of connection ids: never reused, even across
#: several tables (tests build many).
_conids = itertools.count(1)


class ConnectionRefused(Exception):
    """
    L{ConnectionTable.add} refused a connection: the caller must drop it,
    and no connection event fires for it (it never opened).
    """


class ShuttingDown(ConnectionRefused):
    """
    L{ConnectionTable.add} refused a connection because the table is
    closing every connection (server shutdown).
    """


class TooManyConnections(ConnectionRefused):
    """
    L{ConnectionTable.add} refused a connection because a connection limit
    (in total, or from one source address) is reached.
    """


def addressOf(address: object) -> tuple[str, int]:
    """
    Turn a Twisted address into C{(host, port)} with the host as text.

    @param address: an L{IPv4Address} or L{IPv6Address}, another
        L{twisted.internet.interfaces.IAddress}, or a tuple as UDP
        gives (C{(host, port)} or C{(host, port, flowinfo, scope)}).
    @return: C{(host, port)}; C{("", 0)} for an address without them.
    """
    if isinstance(address, tuple):
        host, port = address[0], address[1]
    elif isinstance(address, (IPv4Address, IPv6Address)):
        host, port = address.host, address.port
    else:
        host, port = "", 0
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    return (str(host), int(port or 0))


class FlowOwner(Protocol):
    """
    What a L{StreamFlow} drives: the protocol of its connection
    (L{sipcore.transport.stream.SIPStreamProtocol},
    L{sipcore.transport.websocket.SIPWebSocketProtocol}).
    """

    def flowSend(self, data: bytes) -> bool:
        """
        Send one complete message on the connection.

        @return: C{True} if the connection was open to take it.
        """

    def flowClose(self) -> None:
        """
        Close the connection gracefully.
        """

    def flowAbort(self) -> None:
        """
        Drop the connection at once.
        """

    def flowBound(self, until: float) -> None:
        """
        A binding for the connection was saved, valid until C{until}.
        """


@implementer(IStreamFlow)
class StreamFlow:
    """
    The L{IStreamFlow} of one stream connection (TCP, TLS, WS, WSS).

    A protocol owns one and hands it to the sink with every message.  It is
    a separate object because L{IFlow.transport} (the transport name) would
    clash with C{Protocol.transport} (the Twisted transport).

    It drives its protocol through the protocol's L{FlowOwner} methods.

    @ivar conid: set by L{ConnectionTable.add}; C{None} before that and for a
        connection the table refused.
    """

    reliable = True

    def __init__(
        self,
        protocol: FlowOwner,
        transport: str,
        local: tuple[str, int],
        remote: tuple[str, int],
        observer: IMessageObserver | None = None,
    ) -> None:
        """
        @param protocol: the protocol of the connection.
        @param transport: C{'tcp'}, C{'tls'}, C{'ws'} or C{'wss'}.
        @param local: C{(host, port)} of our end.
        @param remote: C{(host, port)} of the peer.
        @param observer: the L{sipcore.interfaces.IMessageObserver} told of
            each message sent, or C{None}.
        """
        self._protocol = protocol
        self._observer = observer
        self.transport = transport
        self.local = local
        self.remote = remote
        self.conid: int | None = None

    def __repr__(self) -> str:
        return "<StreamFlow {} conid={} {}:{} -> {}:{}>".format(
            self.transport, self.conid, *self.remote, *self.local
        )

    def send(self, data: bytes) -> bool:
        """
        Send one complete message on the connection.

        @return: C{True} if the connection was open to take it.
        """
        if self._observer is not None:
            self._observer.messageSeen(data, self.transport, self.local, self.remote)
        return self._protocol.flowSend(data)

    def sendTo(self, data: bytes, address: tuple[str, int]) -> bool:
        """
        Like L{send}: a stream flow has one peer, C{address} is ignored.
        """
        return self.send(data)

    def close(self) -> None:
        """
        Close the connection gracefully (pending data is flushed first).
        """
        self._protocol.flowClose()

    def abort(self) -> None:
        """
        Drop the connection at once (L{ConnectionTable.closeAll} does when
        a graceful close takes too long).
        """
        self._protocol.flowAbort()

    def bound(self, until: float) -> None:
        """
        A binding for this connection was saved, valid until C{until}
        (seconds on the server's clock): the connection keeps the idle
        timeout of a registered connection until then (called through
        L{ConnectionTable.bound}).
        """
        self._protocol.flowBound(until)


@dataclass
class _Entry:
    """
    What the table knows about one live connection.
    """

    flow: IStreamFlow
    transport: str
    local: tuple[str, int]
    remote: tuple[str, int]
    openedAt: float
    direction: str = "inbound"
    websocketOpen: bool = False
    shutdownReason: str | None = None


@dataclass(frozen=True)
class ConnectionLimits:
    """
    How many stream connections a L{ConnectionTable} holds.

    @ivar maxConnections: the most live connections at once (C{0}: no
        limit).
    @ivar maxPerSource: the most live connections from one source address
        (C{0}: no limit).
    @ivar exempt: source addresses (lower case) C{maxPerSource} does not
        apply to.
    @ivar logInterval: seconds between two log lines about refusals from
        the same source.
    """

    maxConnections: int = 0
    maxPerSource: int = 0
    exempt: frozenset[str] = frozenset()
    logInterval: float = 60.0


class ConnectionTable:
    """
    The live stream connections of this process, by connection id.

    @ivar opened: C{int}, connections added since the table was made.
    @ivar closed: C{dict} from each close event name (L{CLOSE_EVENTS}) to the
        number of connections that ended with it.
    @ivar openedBy: a L{Counter} of the connections added, by transport.
    @ivar closedBy: a L{Counter} of the connections ended, by (close event,
        transport).
    @ivar refused: C{int}, connections refused during shutdown.
    @ivar refusedByLimit: C{dict} with the connections refused because
        C{maxConnections} (key C{"total"}) or C{maxPerSource} (key
        C{"perSource"}) was reached.
    @ivar limits: the L{ConnectionLimits} it enforces.
    @ivar shuttingDown: C{True} once L{closeAll} was called: new connections
        are refused from then on.
    """

    _log = Logger()

    def __init__(
        self,
        bus: IEventBus,
        clock: IReactorTime,
        serverId: int = 0,
        closeGrace: float = DEFAULT_CLOSE_GRACE,
        limits: ConnectionLimits = ConnectionLimits(),
        metrics: CollectorRegistry | None = None,
        observer: IMessageObserver | None = None,
    ) -> None:
        """
        @param bus: the L{IEventBus} its events are fired on (only C{fire}
            is used).
        @param clock: the L{IReactorTime} for timestamps and the shutdown
            grace timer.
        @param serverId: this node's C{server_id}, copied into every event.
        @param closeGrace: seconds L{closeAll} lets a connection close
            gracefully before aborting it.
        @param limits: how many connections it holds (default: no limit).
        @param metrics: the registry its figures are served from, or C{None}.
        @param observer: the L{sipcore.interfaces.IMessageObserver} the
            flows of its connections report the messages they send to, or
            C{None}.
        """

        self._bus = bus
        self.observer = observer
        self._clock = clock
        self.serverId = serverId
        self.closeGrace = closeGrace
        self._entries: dict[int, _Entry] = {}
        self.opened = 0
        self.refused = 0
        self.limits = limits
        self.refusedByLimit: dict[str, int] = {"total": 0, "perSource": 0}
        self._perSource: dict[str, int] = {}
        self._throttle = LogThrottle(clock, limits.logInterval)
        self.closed: dict[str, int] = {name: 0 for name in CLOSE_EVENTS}
        self.openedBy: Counter[str] = Counter()
        self.closedBy: Counter[tuple[str, str]] = Counter()
        self.shuttingDown = False
        self._drained: list[Deferred[None]] = []
        self._shutdownCalls: list[IDelayedCall] = []
        register(metrics, _ConnectionCollector(self))

    # -- queries ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[IStreamFlow]:
        """
        Iterate over the live flows (a snapshot: safe while connections
        close).
        """
        return iter([entry.flow for entry in self._entries.values()])

    def __contains__(self, conid: object) -> bool:
        return conid in self._entries

    def get(self, conid: int) -> IStreamFlow | None:
        """
        @return: the L{IStreamFlow} of a live connection, or C{None}.
        """
        entry = self._entries.get(conid)
        return entry.flow if entry is not None else None

    def openedAt(self, conid: int) -> float | None:
        """
        @return: when the live connection C{conid} was accepted (seconds on
            the table's clock), or C{None} when it is not live.
        """
        entry = self._entries.get(conid)
        return entry.openedAt if entry is not None else None

    # -- life cycle -------------------------------------------------------

    def add(self, flow: IStreamFlow, direction: str = "inbound") -> int:
        """
        Register a new connection and fire C{tcp:connected}.

        Sets C{flow.conid} to the new id.

        @param flow: an L{IStreamFlow} of transport C{'tcp'}, C{'tls'}, C{'ws'} or
            C{'wss'}.
        @param direction: C{'inbound'} (accepted by a listener) or
            C{'outbound'} (opened by this node); every event of the
            connection carries it.
        @return: the new connection id, a positive C{int} never used before
            in this process.
        @raise ShuttingDown: if L{closeAll} was called; the caller must drop
            the connection (no event fires for it).
        @raise TooManyConnections: if C{maxConnections} connections are
            live, or C{maxPerSource} from the flow's source address; the
            caller must drop the connection (no event fires for it).
        """
        if self.shuttingDown:
            self.refused += 1
            raise ShuttingDown("server is shutting down")
        source = sourceKey(flow.remote[0])
        limits = self.limits
        if limits.maxConnections and len(self._entries) >= limits.maxConnections:
            self._refuseByLimit("total", source, limits.maxConnections)
        if (limits.maxPerSource and self._perSource.get(source, 0) >= limits.maxPerSource
                and flow.remote[0].lower() not in limits.exempt):
            self._refuseByLimit("perSource", source, limits.maxPerSource)
        self._perSource[source] = self._perSource.get(source, 0) + 1
        conid = next(_conids)
        now = self._clock.seconds()
        entry = _Entry(flow, flow.transport, flow.local, flow.remote, now, direction)
        self._entries[conid] = entry
        flow.conid = conid
        self.opened += 1
        self.openedBy[entry.transport] += 1
        self._fire(TCP_CONNECTED, conid, entry, now)
        return conid

    def websocketOpened(self, conid: int) -> None:
        """
        The WebSocket handshake of connection C{conid} completed: fire
        C{websocket:connected}.  A later L{remove} fires C{websocket:closed}
        as well.  Does nothing for an unknown or already opened connection.
        """
        entry = self._entries.get(conid)
        if entry is None or entry.websocketOpen:
            return
        entry.websocketOpen = True
        self._fire(WEBSOCKET_CONNECTED, conid, entry, self._clock.seconds())

    def remove(
        self,
        conid: int | None,
        kind: str,
        reason: str,
        wsCode: int | None = None,
        wsReason: str | None = None,
    ) -> bool:
        """
        Connection C{conid} ended: forget it and fire its close events.

        Fires C{websocket:closed} (with C{wsCode} and C{wsReason}) if its
        WebSocket handshake had completed, then exactly one C{kind} event
        with C{reason} and the duration.  A connection that L{closeAll}
        closed always ends as C{tcp:closed} with the shutdown reason.

        Idempotent: for an unknown or already removed C{conid} it does
        nothing.

        @param kind: one of L{CLOSE_EVENTS}.
        @return: C{True} if the connection was live and events fired.
        @raise ValueError: if C{kind} is not a close event.
        """
        if kind not in CLOSE_EVENTS:
            raise ValueError("not a close event: {!r}".format(kind))
        if conid is None:
            return False
        entry = self._entries.pop(conid, None)
        if entry is None:
            return False
        source = sourceKey(entry.remote[0])
        left = self._perSource.get(source, 1) - 1
        if left > 0:
            self._perSource[source] = left
        else:
            self._perSource.pop(source, None)
        if entry.shutdownReason is not None:
            kind = TCP_CLOSED
            reason = entry.shutdownReason
        now = self._clock.seconds()
        duration = max(0.0, now - entry.openedAt)
        self.closed[kind] += 1
        self.closedBy[kind, entry.transport] += 1
        if entry.websocketOpen:
            self._fire(
                WEBSOCKET_CLOSED,
                conid,
                entry,
                now,
                reason=reason,
                duration=duration,
                wsCode=wsCode,
                wsReason=wsReason,
            )
        self._fire(kind, conid, entry, now, reason=reason, duration=duration)
        if self.shuttingDown and not self._entries:
            self._finishShutdown()
        return True

    def closeAll(self, reason: str = "server shutdown") -> Deferred[None]:
        """
        Close every live connection and refuse new ones (server shutdown).

        Each connection is asked to close gracefully; those still open after
        C{closeGrace} seconds are aborted, and those whose transport still
        has not reported the loss C{closeGrace} seconds later are removed
        anyway.  Each fires its close events as usual, as C{tcp:closed} with
        C{reason}.

        @return: a L{Deferred} that fires with C{None} once every connection
            has fired its close event.  It does not fail.
        """
        if not self.shuttingDown:
            self.shuttingDown = True
            self._log.info(
                "closing {count} connections: {reason}",
                count=len(self._entries),
                reason=reason,
            )
        if not self._entries:
            self._finishShutdown()
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        for conid, entry in list(self._entries.items()):
            if entry.shutdownReason is not None:
                continue
            entry.shutdownReason = reason
            self._callFlow(conid, entry.flow.close)
        if self._entries and not self._shutdownCalls:
            self._shutdownCalls.append(
                self._clock.callLater(self.closeGrace, self._abortRemaining)
            )
        return d

    def bound(self, conid: int, until: float) -> None:
        """
        The registrar saved a binding for connection C{conid}, valid until
        C{until} (seconds on the table's clock): the connection keeps the
        long idle timeout until then, instead of the short one of a
        connection that never registered.  Does nothing for an unknown
        connection.  Never raises.
        """
        entry = self._entries.get(conid)
        if entry is None:
            return
        try:
            entry.flow.bound(until)
        except Exception:
            self._log.failure("extending the idle timeout of connection {conid} failed",
                              conid=conid)

    def connectionsFrom(self, host: str) -> int:
        """
        @return: the number of live connections from source address C{host}.
        """
        return self._perSource.get(host, 0)

    # -- internals --------------------------------------------------------

    def _refuseByLimit(self, which: str, source: str, limit: int) -> None:
        self.refusedByLimit[which] += 1
        suppressed = self._throttle.hit((which, source))
        if suppressed is not None:
            self._log.warn(
                "connection from {source} refused: {what} limit of {limit} reached "
                "({suppressed} more refused since the last report)",
                source=source,
                what="connection" if which == "total" else "per-source connection",
                limit=limit,
                suppressed=suppressed,
            )
        raise TooManyConnections("{} connection limit {} reached".format(which, limit))

    def _abortRemaining(self) -> None:
        """
        The grace period of L{closeAll} ran out: abort what is still open.
        """
        for conid, entry in list(self._entries.items()):
            self._callFlow(conid, entry.flow.abort)
        if self._entries:
            self._shutdownCalls.append(
                self._clock.callLater(self.closeGrace, self._forgetRemaining)
            )

    def _forgetRemaining(self) -> None:
        """
        Connections whose transport never reported the loss: remove them so
        shutdown can finish (a late C{connectionLost} then fires nothing).
        """
        for conid in list(self._entries):
            self._log.warn(
                "connection {conid} did not report its close; removing it",
                conid=conid,
            )
            self.remove(conid, TCP_CLOSED, "server shutdown")

    def _finishShutdown(self) -> None:
        for call in self._shutdownCalls:
            if call.active():
                call.cancel()
        self._shutdownCalls = []
        drained, self._drained = self._drained, []
        for d in drained:
            d.callback(None)

    def _callFlow(self, conid: int, method: Callable[[], None]) -> None:
        try:
            method()
        except Exception:
            self._log.failure("closing connection {conid} failed", conid=conid)

    def _fire(
        self,
        name: str,
        conid: int,
        entry: _Entry,
        now: float,
        reason: str | None = None,
        duration: float | None = None,
        wsCode: int | None = None,
        wsReason: str | None = None,
    ) -> None:
        event = ConnectionEvent(
            name=name,
            conid=conid,
            transport=entry.transport,
            local=entry.local,
            remote=entry.remote,
            time=now,
            reason=reason,
            duration=duration,
            wsCode=wsCode,
            wsReason=wsReason,
            serverId=self.serverId,
            direction=entry.direction,
        )
        try:
            self._bus.fire(event)
        except Exception:
            # The bus promises never to raise; if it does, it must not reach
            # the transport.
            self._log.failure("event bus raised on {name}", name=name)


class _ConnectionCollector:
    """
    The connection table's figures: open connections, accepted ones and
    closes by close event, each by transport.
    """

    def __init__(self, table: ConnectionTable) -> None:
        self._table = table

    def collect(self) -> list[Metric]:
        table = self._table
        live: Counter[str] = Counter(entry.transport for entry in table._entries.values())
        transports = sorted(set(STREAM_TRANSPORTS) | set(table.openedBy))
        closes = sorted(set(table.closedBy) | {
            (event, transport) for event in CLOSE_EVENTS for transport in STREAM_TRANSPORTS})
        return [
            gaugeFamily("sipcore_connections_open", "Stream connections open now, by transport.",
                        ["transport"], [([t], live[t]) for t in transports]),
            counterFamily("sipcore_connections_opened_total",
                          "Stream connections accepted, by transport.",
                          ["transport"], [([t], table.openedBy[t]) for t in transports]),
            counterFamily("sipcore_connections_closed_total",
                          "Stream connections closed, by close event and transport.",
                          ["event", "transport"],
                          [([event, t], table.closedBy[event, t]) for event, t in closes]),
            counterFamily("sipcore_connections_refused_total",
                          "Stream connections refused, by reason.",
                          ["reason"], [(["shutdown"], table.refused),
                                       (["limit"], table.refusedByLimit["total"]),
                                       (["perSourceLimit"], table.refusedByLimit["perSource"])]),
        ]
