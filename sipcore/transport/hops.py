# -*- test-case-name: tests.test_transport_hops,tests.test_proxy -*-
"""
The flow to a next hop, for the SIP layer (L{IHopConnector}): a live
connection of the L{ConnectionTable} by its conid or by its remote address
(connection reuse), a UDP address reached through a UDP listener's socket,
or a new outgoing connection (L{HopConnector.openFlow}, through an
L{sipcore.transport.outgoing.OutgoingConnector}).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from sipcore.interfaces import IFlow, IHopConnector
from sipcore.sip.routing import NextHop
from sipcore.transport.connections import ConnectionTable, addressOf
from sipcore.transport.outgoing import ConnectFailed, OutgoingConnector
from sipcore.transport.udp import DatagramFlow

__all__ = ["HopConnector"]

_Hop = tuple[str, str, int]


@implementer(IHopConnector)
class HopConnector:
    """
    Reaches next hops through the server's listeners and connections.

    @ivar table: the L{ConnectionTable} of the live stream connections.
    @ivar listeners: the L{sipcore.transport.ListenerService}s, read each
        time: their C{spec.transport}, C{getHost()} and, for UDP, C{factory}
        (the L{sipcore.transport.udp.SIPDatagramProtocol} datagrams are sent
        from).
    """

    def __init__(self, table: ConnectionTable, listeners: Sequence[Any],
                 outgoing: OutgoingConnector | None = None) -> None:
        """
        @param table: the connection table.
        @param listeners: the listeners (a sequence read again on each
            call, so listeners added to it later are seen).
        @param outgoing: what opens connections to stream hops that have
            none, or C{None} to reach only those with a connection.
        """
        self.table = table
        self.listeners = listeners
        self.outgoing = outgoing
        # The listeners the addresses in _listening were read from.
        self._listeningOf: tuple[Any, ...] | None = None
        self._listening: tuple[_Hop, ...] = ()
        # (transport, host, port) -> flow; rebuilt when connections opened.
        self._streams: dict[_Hop, Any] = {}
        self._streamsOpened = -1

    def connection(self, conid: int) -> IFlow | None:
        """
        The live connection C{conid}, or C{None}.
        """
        return self.table.get(conid)  # type: ignore[no-any-return]

    def flowTo(self, transport: str, host: str, port: int) -> IFlow | None:
        """
        A flow reaching C{(transport, host, port)}: through the first UDP
        listener for UDP, else a live connection to that address.
        """
        if transport == "udp":
            for listener in self.listeners:
                if listener.spec.transport == "udp" and listener.factory is not None:
                    return DatagramFlow(listener.factory, (host, port))
            return None
        return self._connectionTo((transport, host.lower(), port))

    def openFlow(self, hop: NextHop, serverName: str | None = None) -> Deferred[IFlow]:
        """
        The flow L{flowTo} finds for C{hop}, else a new outgoing
        connection to it (see L{IHopConnector.openFlow}).
        """
        flow = self.flowTo(hop.transport, hop.host, hop.port)
        if flow is not None:
            return succeed(flow)
        if hop.transport == "udp":
            return fail(ConnectFailed("no UDP listener to send from"))
        if self.outgoing is None:
            return fail(ConnectFailed("no {} connection to {}:{}".format(
                hop.transport, hop.host, hop.port)))
        return self.outgoing.connect(hop, serverName)

    def _connectionTo(self, key: _Hop) -> IFlow | None:
        """
        A live connection of C{key}'s transport to its address.

        Looked up in an index by C{(transport, host, port)}, which is
        rebuilt from the table only when connections were opened since it
        was built or when the connection it names has closed.
        """
        flow = self._streams.get(key)
        if flow is not None and self.table.get(flow.conid) is flow:
            return flow  # type: ignore[no-any-return]
        opened = self.table.opened
        if flow is None and opened == self._streamsOpened:
            return None
        streams: dict[_Hop, Any] = {}
        for live in self.table:
            host, port = live.remote[0], live.remote[1]
            streams.setdefault((live.transport, str(host).lower(), int(port)), live)
        self._streams = streams
        self._streamsOpened = opened
        return streams.get(key)

    def listening(self) -> tuple[_Hop, ...]:
        """
        C{(transport, bound host, port)} of each listener listening now:
        read once every listener has an address (they do not change after
        start), and again when the listeners change.
        """
        listeners = tuple(self.listeners)
        cached = self._listeningOf
        if cached is not None and len(cached) == len(listeners) and all(
                a is b for a, b in zip(cached, listeners, strict=True)):
            return self._listening
        entries: list[_Hop] = []
        complete = True
        for listener in listeners:
            address = listener.getHost()
            if address is None:
                complete = False
                continue
            host, port = addressOf(address)
            entries.append((listener.spec.transport, host, port))
        found = tuple(entries)
        if complete:
            self._listeningOf = listeners
            self._listening = found
        else:
            self._listeningOf = None
        return found
