# -*- test-case-name: tests.test_proxy -*-
"""
The proxy's pure decisions (no I/O): next hops without DNS, Via branches
with loop detection, flow tokens for Record-Route, and the choice of the
best final response (RFC 3261 section 16.7).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sipcore.message import URI, Request, Response, SIPParseError, parseURI
from sipcore.message._random import randomHex
from sipcore.message.via import MAGIC_COOKIE

__all__ = [
    "ACK_BRANCH_PREFIX",
    "BRANCH_PREFIX",
    "FLOW_PARAM",
    "SIGNATURE_PARAM",
    "FlowTokens",
    "NextHop",
    "NoRoute",
    "NodeRef",
    "chooseBest",
    "isIPLiteral",
    "loopHash",
    "nextHopOf",
    "parseReceived",
    "proxyBranch",
    "statelessBranch",
]

#: Branches of requests this proxy forwards statefully start with this,
#: followed by the loop hash, a dot and random text.
BRANCH_PREFIX = MAGIC_COOKIE + "sc"

#: Branches of ACKs for 2xx forwarded statelessly start with this.
ACK_BRANCH_PREFIX = MAGIC_COOKIE + "sa"

#: The Record-Route URI parameter carrying flow tokens.
FLOW_PARAM = "ftok"

#: The Record-Route URI parameter carrying the signature of the entry.
SIGNATURE_PARAM = "rrsig"

_LOOP_HASH_LENGTH = 16
_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "ws": 80, "tls": 5061, "wss": 443}
_TRANSPORTS = frozenset(_DEFAULT_PORTS)


class NoRoute(Exception):
    """
    A URI names no next hop this proxy can reach without DNS.

    @ivar status: the response status to answer with.
    @ivar reason: the reason phrase.
    """

    def __init__(self, reason: str, status: int = 404) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class NextHop:
    """
    Where a request goes next.

    @ivar transport: C{"udp"}, C{"tcp"}, C{"tls"}, C{"ws"} or C{"wss"}.
    @ivar host: an IP address (IPv6 without brackets).
    @ivar port: the port.
    """

    transport: str
    host: str
    port: int


@dataclass(frozen=True)
class NodeRef:
    """
    Another member of the cluster, as a flow token names it: the side of a
    dialog that member serves, reached at its node URI.

    @ivar serverId: its C{server_id}.
    """

    serverId: int


def isIPLiteral(host: str | None) -> bool:
    """
    Whether C{host} is an IPv4 or IPv6 address (not a name that would need
    DNS).
    """
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def nextHopOf(uri: URI) -> NextHop:
    """
    The next hop a SIP URI names, without DNS (RFC 3263 is not used):
    the C{maddr} is ignored, the host must be an IP literal, the port
    defaults by transport (5060, or 5061 for TLS and C{sips}), the
    transport is the C{transport} parameter (UDP when absent, TLS for
    C{sips}).

    @raise NoRoute: for a non-SIP URI, a host name, or an unknown
        transport.
    """
    if not uri.isSIP:
        raise NoRoute("Not Found (no route for a {} URI)".format(uri.scheme or "non-SIP"))
    if not isIPLiteral(uri.host):
        raise NoRoute("Not Found (no DNS-free route to {})".format(uri.host))
    transport = (uri.param("transport") or "").lower()
    if not transport:
        transport = "tls" if uri.scheme == "sips" else "udp"
    if transport not in _TRANSPORTS:
        raise NoRoute("Not Found (unsupported transport {})".format(transport))
    if uri.scheme == "sips" and transport == "tcp":
        transport = "tls"
    port = uri.port or _DEFAULT_PORTS[transport]
    assert uri.host is not None
    return NextHop(transport, uri.host, port)


def parseReceived(received: str | None) -> NextHop | None:
    """
    The address of a binding's C{received} value (C{"sip:HOST:PORT;
    transport=udp"}, as the registrar writes it).

    @return: the L{NextHop}, or C{None} when there is none or it cannot be
        parsed.
    """
    if not received:
        return None
    try:
        return nextHopOf(parseURI(received))
    except (SIPParseError, NoRoute):
        return None


def loopHash(request: Request) -> str:
    """
    The loop-detection hash of a request as received (RFC 3261 16.3 step 4
    and 16.6 step 8): Request-URI, From and To tags, Call-ID, CSeq number,
    C{Proxy-Require} and C{Proxy-Authorization}.  The top Via is left out,
    so a request that comes back unchanged through other hops is a loop,
    while one whose Request-URI was retargeted is a spiral.

    @raise SIPParseError: if From, To, Call-ID or CSeq is malformed.
    """
    parts = [
        str(request.uri),
        request.fromAddr.tag or "",
        request.toAddr.tag or "",
        request.callId,
        str(request.cseq[0]),
        "\x00".join(request.headers.lines("Proxy-Require")),
        "\x00".join(request.headers.lines("Proxy-Authorization")),
    ]
    digest = hashlib.sha256("\x01".join(parts).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:_LOOP_HASH_LENGTH]


def proxyBranch(hashValue: str) -> str:
    """
    A new branch for a forwarded request: the magic cookie, C{sc}, the
    loop hash of the request received, a dot and 64 random bits.
    """
    return BRANCH_PREFIX + hashValue + "." + randomHex(8)


def loopHashOfBranch(branch: str | None) -> str | None:
    """
    The loop hash inside a branch made by L{proxyBranch}, or C{None}.
    """
    if not branch or not branch.startswith(BRANCH_PREFIX):
        return None
    value, dot, _ = branch[len(BRANCH_PREFIX):].partition(".")
    if not dot or len(value) != _LOOP_HASH_LENGTH:
        return None
    return value


def statelessBranch(request: Request) -> str:
    """
    The branch for an ACK forwarded statelessly (RFC 3261 16.11): derived
    from the received top Via branch, Request-URI, Call-ID and CSeq, so a
    retransmitted ACK gets the same branch.
    """
    via = request.vias[0]
    parts = [via.branch or "", str(via), str(request.uri), request.callId,
             str(request.cseq[0])]
    digest = hashlib.sha256("\x01".join(parts).encode("utf-8", "surrogateescape"))
    return ACK_BRANCH_PREFIX + digest.hexdigest()[:24]


def _sameText(received: str, expected: str) -> bool:
    """
    Compare a received MAC with the expected one in constant time (any
    text: C{hmac.compare_digest} refuses non-ASCII C{str}).
    """
    return hmac.compare_digest(received.encode("utf-8", "surrogateescape"),
                               expected.encode("ascii"))


class FlowTokens:
    """
    Signed connection ids and signed Record-Route entries, under one random
    key made per process.

    Flow tokens (after RFC 5626 section 5.2): a WebSocket client's Contact
    (C{sip:x@y.invalid;transport=ws}) cannot be reached, so the
    Record-Route entries name the flows of both sides of a dialog, and
    in-dialog requests routed through them go back over those flows,
    never to an address taken from the request.  A stream connection's
    token is C{CONID.MAC}, the MAC an HMAC-SHA256 of the conid; a UDP
    peer's is C{uHEX.MAC}, C{HEX} its packed IP address and its port
    (four hex digits), the MAC an HMAC-SHA256 of C{uHEX}; another node of
    the cluster's is C{nID.MAC}, C{ID} its C{server_id}, the MAC an
    HMAC-SHA256 of C{nID}.

    Route signatures: every Record-Route entry the proxy inserts carries
    C{rrsig=MAC}, an HMAC-SHA256 of the entry's transport, host, port and
    flow tokens and of the dialog's Call-ID.  Only a Route entry with a
    valid signature proves that a request follows a Route set this proxy
    built (a preloaded C{Route: <sip:US;lr>, <sip:VICTIM;lr>} must not
    make the proxy an open relay).

    Neither can be forged without the key, and both die with the process
    (conids restart at 1; in-dialog requests come back to the node that
    record-routed them).
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def _mac(self, conid: int) -> str:
        return hmac.new(self._key, str(conid).encode("ascii"), hashlib.sha256).hexdigest()[:16]

    def make(self, conid: int) -> str:
        """
        @return: the token for connection C{conid}.
        """
        return "{}.{}".format(conid, self._mac(conid))

    def _addressMac(self, body: str) -> str:
        return hmac.new(self._key, body.encode("ascii"), hashlib.sha256).hexdigest()[:16]

    def makeAddress(self, host: str, port: int) -> str:
        """
        @param host: a UDP peer's IP address.
        @param port: its port.
        @return: the token for that peer.
        @raise ValueError: if C{host} is not an IP address.
        """
        body = "u" + ipaddress.ip_address(host.split("%", 1)[0]).packed.hex() + (
            "{:04x}".format(port))
        return "{}.{}".format(body, self._addressMac(body))

    def makeNode(self, serverId: int) -> str:
        """
        @return: the token for the cluster member C{serverId}.
        """
        body = "n{}".format(serverId)
        return "{}.{}".format(body, self._addressMac(body))

    def check(self, token: str) -> int | NextHop | NodeRef | None:
        """
        @return: the conid a token names, or the L{NextHop} of the UDP peer
            it names, or the L{NodeRef} of the cluster member it names, or
            C{None} if it is not one of ours (malformed, or made with
            another key).
        """
        value, dot, mac = token.partition(".")
        if not dot:
            return None
        if value.startswith("n"):
            number = value[1:]
            if not (number.isascii() and number.isdigit()) or len(number) > 10:
                return None
            if not _sameText(mac, self._addressMac(value)):
                return None
            return NodeRef(int(number))
        if value.startswith("u") and len(value) in (13, 37):
            try:
                packed = bytes.fromhex(value[1:-4])
                port = int(value[-4:], 16)
            except ValueError:
                return None
            if not _sameText(mac, self._addressMac(value)):
                return None
            return NextHop("udp", str(ipaddress.ip_address(packed)), port)
        if not (value.isascii() and value.isdigit()) or len(value) > 12:
            return None
        if not _sameText(mac, self._mac(int(value))):
            return None
        return int(value)

    def fromURIs(self, uris: Iterable[URI]) -> list[int | NextHop | NodeRef]:
        """
        The valid flows named by the flow tokens of C{uris}, in order:
        conids of stream connections, L{NextHop}s of UDP peers, L{NodeRef}s
        of cluster members.
        """
        flows: list[int | NextHop | NodeRef] = []
        for uri in uris:
            value = uri.param(FLOW_PARAM)
            if not value:
                continue
            for token in value.split("-"):
                flow = self.check(token)
                if flow is not None and flow not in flows:
                    flows.append(flow)
        return flows

    def _routeMac(self, transport: str, host: str, port: int | None, flowTokens: str,
                  callId: str) -> str:
        host = host.lower()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        parts = ["rr", transport.lower(), host, "" if port is None else str(port),
                 flowTokens, callId]
        data = "\x00".join(parts).encode("utf-8", "surrogateescape")
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()[:20]

    def signRoute(self, transport: str, host: str, port: int | None, flowTokens: str,
                  callId: str) -> str:
        """
        The signature of a Record-Route entry (the value of
        L{SIGNATURE_PARAM}).

        @param transport: the entry's C{transport} parameter.
        @param host: its host (an IPv6 address with or without brackets).
        @param port: its port, or C{None}.
        @param flowTokens: its L{FLOW_PARAM} value, C{""} if none.
        @param callId: the Call-ID of the request that creates the dialog.
        """
        return self._routeMac(transport, host, port, flowTokens, callId)

    def isSignedRoute(self, uri: URI, callId: str) -> bool:
        """
        Whether C{uri} is a Record-Route entry this proxy signed for the
        dialog of C{callId}.
        """
        signature = uri.param(SIGNATURE_PARAM)
        if not signature or uri.host is None:
            return False
        expected = self._routeMac(uri.param("transport") or "", uri.host, uri.port,
                                  uri.param(FLOW_PARAM) or "", callId)
        return _sameText(signature.lower(), expected)


#: Statuses preferred within the 4xx class, because they let the caller
#: retry (RFC 3261 16.7 step 6).
_PREFERRED_4XX = (401, 407, 415, 420, 484)


def chooseBest(responses: Sequence[tuple[Response, bool]]) -> Response:
    """
    Choose the response to send upstream once every branch has a final
    response (RFC 3261 16.7 step 6 and 7).

    A 6xx wins; otherwise the lowest class.  Within the 4xx class 401,
    407, 415, 420 and 484 are preferred; within a class a response
    received from downstream is preferred over one the proxy generated
    (a timeout or an unreachable branch), then the earliest.  A chosen 503
    received from downstream becomes a 500 (RFC 3261 16.7 step 6); one the
    proxy made (no location of the branch could be reached) stays.  A chosen 401 or 407 carries
    the C{WWW-Authenticate} and C{Proxy-Authenticate} values of every 401
    and 407 received (step 7).

    @param responses: C{(response, local)} pairs in arrival order,
        C{local} true for responses the proxy made itself; not empty,
        final responses (300-699) only.
    @return: the response to send (a new object when it was changed).
    """
    if not responses:
        raise ValueError("no responses to choose from")
    sixes = [pair for pair in responses if pair[0].status >= 600]
    if sixes:
        candidates = sixes
    else:
        lowest = min(response.status // 100 for response, _ in responses)
        candidates = [pair for pair in responses if pair[0].status // 100 == lowest]
        if lowest == 4:
            preferred = [pair for pair in candidates if pair[0].status in _PREFERRED_4XX]
            if preferred:
                candidates = preferred
    received = [pair for pair in candidates if not pair[1]]
    best, local = (received or candidates)[0]
    if best.status == 503 and not local:
        changed = Response(500, "Server Internal Error", best.headers.copy(), best.body)
        changed.headers.remove("Retry-After")
        return changed
    if best.status in (401, 407):
        out = Response(best.status, best.reason, best.headers.copy(), best.body)
        for other, _ in responses:
            if other is best or other.status not in (401, 407):
                continue
            for name in ("WWW-Authenticate", "Proxy-Authenticate"):
                for value in other.headers.lines(name):
                    out.headers.add(name, value)
        return out
    return best
