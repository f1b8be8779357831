# -*- test-case-name: tests.test_cluster_delivery -*-
"""
Delivery to a connection another member of the cluster holds.

A binding bound to a connection of another node (its C{server_id} is that
node's) can only be reached over that connection, which only its node
holds.  The proxy that looked the binding up sends the request to the
owner's node URI with a C{Route} on top naming the connection (a flow, as
in RFC 5626)::

    Route: <sip:127.0.0.1:5071;transport=tcp;lr;flow=12;node=1;mac=...>

C{flow} is the owner's connection id, C{node} the sender's C{server_id},
C{mac} an HMAC-SHA256, under the secret the members share
(L{sipcore.cluster.INodeDirectory.secret}), of the owner's C{server_id},
the connection id, the sender's C{server_id} and the request's
C{Call-ID}, truncated to 128 bits.  The owner accepts the request only
with a valid C{mac} (L{NodeRoutes.check}): a request from outside the
cluster cannot name one of its connections.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sipcore.cluster import INodeDirectory, Node
from sipcore.message import URI, Request, SIPParseError, parseURI
from sipcore.sip.routing import NextHop, NoRoute, nextHopOf
from sipcore.throttle import DEFAULT_LOG_INTERVAL, LogThrottle, sourceKey

__all__ = ["CONID_PARAM", "MAC_PARAM", "NODE_PARAM", "FlowRefused", "NodeRoutes"]

#: The Route URI parameter naming the owner's connection id.
CONID_PARAM = "flow"

#: The Route URI parameter naming the sending node's C{server_id}.
NODE_PARAM = "node"

#: The Route URI parameter carrying the MAC.
MAC_PARAM = "mac"

#: Hex digits of the MAC kept (128 bits).
_MAC_LENGTH = 32


class FlowRefused(Exception):
    """
    A request names one of this node's connections without a valid MAC.
    """


@dataclass(frozen=True)
class NodeFlow:
    """
    A connection of another node, as a branch reaches it.

    @ivar hop: the owner's node URI as a next hop.
    @ivar route: the C{Route} value naming the connection.
    """

    hop: NextHop
    route: str


class NodeRoutes:
    """
    Builds the C{Route} that sends a request to another node's connection
    and checks the ones this node receives.

    @ivar directory: the L{INodeDirectory} of the live members.
    """

    _log = Logger()

    def __init__(self, directory: INodeDirectory, clock: IReactorTime,
                 logInterval: float = DEFAULT_LOG_INTERVAL) -> None:
        """
        @param directory: the members and their shared secret.
        @param clock: the time refusals are logged by.
        @param logInterval: seconds between two log lines about refusals
            from one source.
        """
        self.directory = directory
        self._throttle = LogThrottle(clock, logInterval)

    @property
    def serverId(self) -> int:
        return int(self.directory.serverId)

    def mac(self, owner: int, conid: int, sender: int, callId: str) -> str:
        """
        The MAC of a Route naming connection C{conid} of node C{owner},
        sent by node C{sender} for the request of C{callId}.
        """
        data = "\x00".join(("flow", str(owner), str(conid), str(sender), callId))
        digest = hmac.new(self.directory.secret, data.encode("utf-8", "surrogateescape"),
                          hashlib.sha256)
        return digest.hexdigest()[:_MAC_LENGTH]

    def node(self, serverId: int) -> tuple[Node, NextHop] | None:
        """
        The live member C{serverId} and its node URI as a next hop, or
        C{None} when it is not live or its URI names no next hop.
        """
        node = self.directory.node(serverId)
        if node is None:
            return None
        try:
            return node, nextHopOf(parseURI(node.uri))
        except (SIPParseError, NoRoute):
            self._log.warn("node {serverId}: URI {uri} names no next hop",
                           serverId=serverId, uri=node.uri)
            return None

    def flowOf(self, owner: int, conid: int, callId: str) -> NodeFlow | None:
        """
        Where a request for connection C{conid} of node C{owner} goes.

        @return: the owner's next hop and the C{Route} to put on top, or
            C{None} when C{owner} is not a live member.
        """
        found = self.node(owner)
        if found is None:
            return None
        _, hop = found
        host = "[" + hop.host + "]" if ":" in hop.host else hop.host
        route = "<sip:{}:{};transport={};lr;{}={};{}={};{}={}>".format(
            host, hop.port, hop.transport, CONID_PARAM, conid, NODE_PARAM, self.serverId,
            MAC_PARAM, self.mac(owner, conid, self.serverId, callId))
        return NodeFlow(hop, route)

    @staticmethod
    def names(uri: URI) -> bool:
        """
        Whether a Route URI names a connection (has a C{flow} parameter).
        """
        return uri.hasParam(CONID_PARAM)

    def _verified(self, uri: URI, callId: str) -> tuple[int, int] | None:
        """
        C{(conid, sender)} of a Route naming one of this node's
        connections with a valid MAC for C{callId}, else C{None}.
        """
        conid = uri.param(CONID_PARAM) or ""
        sender = uri.param(NODE_PARAM) or ""
        mac = uri.param(MAC_PARAM) or ""
        if not (conid.isascii() and conid.isdigit() and len(conid) <= 12
                and sender.isascii() and sender.isdigit() and len(sender) <= 10
                and mac.isascii()):
            return None
        expected = self.mac(self.serverId, int(conid), int(sender), callId)
        if not hmac.compare_digest(mac.lower().encode("ascii"), expected.encode("ascii")):
            return None
        return int(conid), int(sender)

    def check(self, uri: URI, callId: str, source: str) -> tuple[int, int]:
        """
        Check a Route of this node naming one of its connections.

        @param uri: the Route URI (see L{names}).
        @param callId: the request's C{Call-ID}.
        @param source: the address the request came from (for the log).
        @return: C{(conid, sender's server_id)}.
        @raise FlowRefused: for a missing, malformed or wrong MAC (logged
            once per source per interval).
        """
        verified = self._verified(uri, callId)
        if verified is not None:
            return verified
        suppressed = self._throttle.hit(sourceKey(source))
        if suppressed is not None:
            self._log.warn(
                "refused a request from {source} naming connection {conid}: no valid "
                "cluster MAC ({suppressed} more refused from there since the last line)",
                source=source, conid=(uri.param(CONID_PARAM) or "")[:12],
                suppressed=suppressed)
        raise FlowRefused()

    def fromMember(self, request: Request) -> bool:
        """
        Whether C{request}'s top Route names one of this node's connections
        with a valid MAC: a member sent it (and authenticated its caller).
        Nothing is logged.
        """
        try:
            routes = request.routes
            callId = request.callId
        except SIPParseError:
            return False
        if not routes or not self.names(routes[0].uri):
            return False
        return self._verified(routes[0].uri, callId) is not None
