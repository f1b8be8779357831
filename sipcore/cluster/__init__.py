"""
The nodes of a cluster: sipcore processes that share one location store.

A L{Node} is one member as the others know it: its C{server_id}, the SIP
URI the others reach it at, and the incarnation it runs under.  An
L{INodeDirectory} answers which members are alive now; the proxy asks it
where to send a request whose binding belongs to another node, and the
owning node asks it whether a request that names one of its connections
came from a member.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zope.interface import Attribute, Interface, implementer


@dataclass(frozen=True)
class Node:
    """
    One member of the cluster.

    @ivar serverId: its C{server_id} in the location table.
    @ivar uri: the SIP URI other members send to (for example
        C{sip:127.0.0.2:5060;transport=tcp}).
    @ivar incarnation: a number that changes each time the node starts.
    """

    serverId: int
    uri: str
    incarnation: int = 0


class INodeDirectory(Interface):
    """
    The live members of the cluster, as this node sees them.
    """

    serverId = Attribute("This node's own C{server_id}.")
    secret = Attribute(
        "The key (bytes) the members share for authenticating the requests "
        "they send one another.")

    def node(serverId: int) -> Node | None:
        """
        The live member with C{serverId} other than this node, or C{None}
        when there is none (unknown, or declared dead).
        """

    def nodes() -> list[Node]:
        """
        Every live member other than this node, ordered by C{server_id}.
        """


@implementer(INodeDirectory)
@dataclass
class StaticNodeDirectory:
    """
    A directory of a fixed set of members, for a cluster whose members are
    known when it starts (the workers of one host) and for tests.
    """

    serverId: int
    secret: bytes
    members: dict[int, Node] = field(default_factory=dict)

    def node(self, serverId: int) -> Node | None:
        if serverId == self.serverId:
            return None
        return self.members.get(serverId)

    def nodes(self) -> list[Node]:
        return [self.members[k] for k in sorted(self.members) if k != self.serverId]
