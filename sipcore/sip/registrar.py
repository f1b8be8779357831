# -*- test-case-name: tests.test_registrar -*-
"""
The registrar (RFC 3261 section 10.3), with Path (RFC 3327) and the
C{+sip.instance}/C{reg-id} Contact parameters of RFC 5626.

Each REGISTER becomes one read of the AOR's bindings, one decision, and at
most one save and one removal in the location store.  The C{200 OK} is sent
only once the store says the change is durable.  While the store cannot be
reached the answer is C{503} with C{Retry-After}.

A binding registered over a stream connection records the connection's
C{conid} and this node's C{server_id}; the C{location-cleanup} handler
removes it when the connection closes.  The registrar tracks each REGISTER's
work in L{PendingWrites} so a cleanup never overtakes it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sipcore.events import (
    REGISTRATION_ADDED,
    REGISTRATION_REFRESHED,
    REGISTRATION_REMOVED,
    RegistrationEvent,
)
from sipcore.interfaces import IFlow, ILocationStore
from sipcore.location import Binding, InvalidBinding, StoreUnavailable
from sipcore.location.binding import UDP_CONNECTION_ID, aorKey
from sipcore.location.ordering import PendingWrites
from sipcore.message import URI, Address, Request, Response, SIPParseError, parseExpires, parseURI
from sipcore.message.uri import unescape
from sipcore.metrics import CollectorRegistry, Metric, counterFamily, labelled, register
from sipcore.sip.core import Refused, ServerTransactionLike, supportedTags
from sipcore.sip.trust import TrustedPeers
from sipcore.throttle import DEFAULT_LOG_INTERVAL, LogThrottle, sourceKey

#: Kamailio's request method bits (parser/msg_parser.h), for the C{methods}
#: column of the location table.
METHOD_BITS = {
    "INVITE": 1, "CANCEL": 2, "ACK": 4, "BYE": 8, "INFO": 16, "REGISTER": 32,
    "SUBSCRIBE": 64, "NOTIFY": 128, "MESSAGE": 256, "OPTIONS": 512, "PRACK": 1024,
    "UPDATE": 2048, "REFER": 4096, "PUBLISH": 8192,
}
METHOD_OTHER = 524288

#: Longest User-Agent kept (the column is VARCHAR(255)).
MAX_USER_AGENT = 255

#: A decimal number as a parameter may hold it (ASCII digits only).
_DIGITS = re.compile(r"[0-9]{1,10}")

#: Seconds a client is asked to wait while the store is away.
RETRY_AFTER = 5

#: The most bindings of one address of record (C{--max-contacts}), and the
#: most Contact values in one REGISTER: Kamailio's C{max_contacts} default.
DEFAULT_MAX_CONTACTS = 10

#: C{--max-contacts-policy}: a REGISTER that would take an address of
#: record over the cap is refused (C{reject}), or the oldest bindings make
#: room for it (C{replace}, the default: a browser tab opened last is the
#: one its user looks at).
REJECT = "reject"
REPLACE = "replace"
CONTACTS_POLICIES = (REPLACE, REJECT)


@dataclass(frozen=True)
class RegistrarPolicy:
    """
    The registrar's settings.

    @ivar defaultExpires: granted when the request asks for none.
    @ivar minExpires: shorter non-zero requests get C{423}.
    @ivar maxExpires: longer requests are granted this.
    @ivar foreignDomainStatus: C{403} or C{404} for a domain not served.
    @ivar trustedPeers: the sources whose C{Path} is honoured; a REGISTER
        with a C{Path} from any other source gets C{403}.  C{Supported:
        path} is advertised only when there are some.
    @ivar logInterval: seconds between two log lines about one refused
        source.
    @ivar maxContacts: the most bindings an address of record may have,
        and the most Contact values a REGISTER may carry (more: C{403},
        before any is parsed); C{0}: no limit.
    @ivar maxContactsPolicy: what a REGISTER that would take an address of
        record over C{maxContacts} gets: L{REJECT} (C{403}, nothing
        changed) or L{REPLACE} (saved; the bindings it does not name are
        removed, least recently written first, down to the cap).
    """

    defaultExpires: int = 3600
    minExpires: int = 60
    maxExpires: int = 86400
    foreignDomainStatus: int = 403
    trustedPeers: TrustedPeers = TrustedPeers()
    logInterval: float = DEFAULT_LOG_INTERVAL
    maxContacts: int = DEFAULT_MAX_CONTACTS
    maxContactsPolicy: str = REPLACE


def methodBits(allow: Iterable[str]) -> int | None:
    """
    Kamailio's C{methods} bitmask for the methods in an C{Allow} header.

    @return: the mask, or C{None} when C{allow} is empty (all methods).
    """
    mask = 0
    seen = False
    for method in allow:
        method = method.strip().upper()
        if method:
            seen = True
            mask |= METHOD_BITS.get(method, METHOD_OTHER)
    return mask if seen else None


#: The URI parameters compared when matching contacts (RFC 3261 19.1.4).
_SIGNIFICANT_PARAMS = ("transport", "user", "method", "ttl", "maddr")


def contactKey(uri: URI) -> str:
    """
    A comparison key for a Contact URI, after RFC 3261 section 19.1.4:
    scheme and host case-insensitive, user case-sensitive, the
    C{transport}, C{user}, C{method}, C{ttl} and C{maddr} parameters
    compared when present.
    """
    params: list[tuple[str, str]] = []
    if uri.params:
        if any("%" in name for name, _ in uri.params):
            # Escaped parameter names: let URI.param decode them.
            params = sorted(
                (name, (uri.param(name) or "").lower())
                for name in _SIGNIFICANT_PARAMS if uri.hasParam(name)
            )
        else:
            seen: dict[str, str] = {}
            for name, value in uri.params:
                lowered = name.lower()
                if lowered in _SIGNIFICANT_PARAMS and lowered not in seen:
                    seen[lowered] = "" if value is None else unescape(value).lower()
            params = sorted(seen.items())
    return "{}:{}@{}:{}{}".format(
        uri.scheme.lower(), uri.user or "", (uri.host or "").lower(), uri.port or "",
        "".join(";{}={}".format(k, v) for k, v in params),
    )


def socketName(flow: IFlow) -> str:
    """
    The C{socket} column value for a flow, Kamailio style
    (C{proto:host:port}; WebSocket flows are on Kamailio's TCP/TLS sockets).
    """
    proto = {"ws": "tcp", "wss": "tls"}.get(flow.transport, flow.transport)
    host, port = flow.local
    if ":" in host:
        host = "[" + host + "]"
    return "{}:{}:{}".format(proto, host, port)


def receivedURI(flow: IFlow) -> str:
    """
    The C{received} column value: where the REGISTER really came from.
    """
    host, port = flow.remote
    if ":" in host:
        host = "[" + host + "]"
    return "sip:{}:{};transport={}".format(host, port, flow.transport)


def _unquote(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def ruidFor(aor: str, key: str, callId: str, cseq: int) -> str:
    """
    The record unique id of a new binding: a digest of the address of
    record, the contact's key, the Call-ID and the CSeq.  Two copies of one
    REGISTER (a retransmission read by another worker while the first
    copy's write is still on its way) name the same record, so the second
    write replaces the first instead of adding a twin.
    """
    text = "\x00".join((aor, key, callId, str(cseq)))
    return "sipcore-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


#: The binding fields a retransmission writes exactly as its first copy did
#: (the expiry and modification times move with the clock; the node may be
#: another worker).
_requestFields = attrgetter("contact", "received", "path", "q", "userAgent", "socket", "methods",
                            "instance", "regId", "connectionId", "keepalive")


def _sameRequest(old: Binding, new: Binding) -> bool:
    """
    @return: C{True} if C{new} is what the request that wrote C{old} would
        write again (the same fields and the same expiry interval).
    """
    if _requestFields(old) != _requestFields(new):
        return False
    return abs((old.expires - old.lastModified) - (new.expires - new.lastModified)) < 0.001


class Registrar:
    """
    Answers REGISTER requests.

    @ivar stats: counts of C{registered}, C{unregistered}, C{refused},
        C{unavailable} answers; C{pathRefused} counts those of the refused
        that carried a Path from a source that is not a trusted peer.
    """

    _log = Logger()

    def __init__(
        self,
        store: ILocationStore,
        clock: IReactorTime,
        isLocalDomain: Callable[[str], bool],
        serverId: int = 0,
        policy: RegistrarPolicy | None = None,
        writes: PendingWrites | None = None,
        isConnected: Callable[[int], bool] | None = None,
        connectionBound: Callable[[int, float], None] | None = None,
        announce: Callable[[RegistrationEvent], object] | None = None,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        """
        @param connectionBound: told C{(conid, latest expiry)} after
            bindings to a connection are saved.
        @param announce: called with one L{RegistrationEvent} per binding
            a REGISTER added, refreshed or removed, once the store made
            the change (the composition root passes the bus's C{fire});
            C{None}: no events.
        @param metrics: the registry its figures are served from, or
            C{None}.
        """
        self.store = store
        self.clock = clock
        self.isLocalDomain = isLocalDomain
        self.serverId = serverId
        self.policy = policy or RegistrarPolicy()
        self.writes = writes if writes is not None else PendingWrites()
        self.isConnected = isConnected
        self.connectionBound = connectionBound
        self.announce = announce
        self.stats: dict[str, int] = {
            "registered": 0, "unregistered": 0, "refused": 0, "unavailable": 0,
            "pathRefused": 0, "tooManyContacts": 0, "replacedOldest": 0,
        }
        self._closedMeanwhile = LogThrottle(clock)
        self._pathRefusedLog = LogThrottle(clock, self.policy.logInterval)
        self._contactsLog = LogThrottle(clock, self.policy.logInterval)
        self._supported = ", ".join(supportedTags(bool(self.policy.trustedPeers)))
        register(metrics, _RegistrarCollector(self))

    def __call__(self, tx: ServerTransactionLike) -> defer.Deferred[Response | None]:
        """
        Handle one REGISTER server transaction.

        @return: a L{Deferred} firing with the response sent (C{None} when
            nothing could be sent); it never fails.
        """
        work = defer.Deferred.fromCoroutine(self._register(tx))
        return self.writes.track(tx.flow.conid, work)

    async def _register(self, tx: ServerTransactionLike) -> Response | None:
        request = tx.request
        try:
            response = await self._process(request, tx.flow)
        except Refused as e:
            self.stats["refused"] += 1
            response = Response.forRequest(request, e.status, e.reason)
            for name, value in e.headers:
                response.headers.add(name, value)
        except InvalidBinding as invalid:
            # A value the location table cannot hold exactly (too long, out
            # of range): the client's fault, refused without a traceback.
            # (Its own name: a compiled module types a name by its first use.)
            self.stats["refused"] += 1
            response = Response.forRequest(request, 400,
                                           "Unstorable value: " + str(invalid)[:100])
        except StoreUnavailable:
            self.stats["unavailable"] += 1
            response = Response.forRequest(request, 503, "Service Unavailable")
            response.headers.set("Retry-After", str(RETRY_AFTER))
        except Exception:
            self._log.failure("REGISTER processing failed")
            response = Response.forRequest(request, 500, "Server Internal Error")
        if response is None:
            # Nobody to answer: end the transaction now rather than leave it
            # waiting for a response that will never come.
            tx.terminate()
            return None
        tx.respond(response)
        return response

    async def _process(self, request: Request, flow: IFlow) -> Response | None:
        self._checkPath(request, flow)
        policy = self.policy
        host = request.uri.host or ""
        if request.uri.scheme.lower() not in ("sip", "sips") or not self.isLocalDomain(host):
            raise Refused(
                policy.foreignDomainStatus,
                "Forbidden" if policy.foreignDomainStatus == 403 else "Not Found",
            )
        limit = policy.maxContacts
        if limit and request.countContacts(limit) > limit:
            # Counted, not parsed (see SIPCore's maxContacts): thousands of
            # Contact values cost no more than limit + 1.
            self._tooManyContacts("source", sourceKey(flow.remote[0]))
            raise Refused(
                403, "Too many contacts in one REGISTER (at most {})".format(limit))
        try:
            to = request.toAddr
            contacts = request.contacts
            headerExpires = request.expires
        except SIPParseError as e:
            raise Refused(400, e.reason) from e
        aorURI = to.uri
        if aorURI.scheme.lower() not in ("sip", "sips") or not aorURI.host:
            raise Refused(400, "Address of record must be a SIP or SIPS URI")
        if not aorURI.user:
            raise Refused(400, "Address of record has no user part")
        if not self.isLocalDomain(aorURI.host):
            raise Refused(404, "Not Found")
        username = aorURI.user
        domain = aorURI.host.lower()
        aor = aorKey(username, domain)
        callId = request.callId
        cseq = request.cseq[0]
        now = self.clock.seconds()

        existing = await self.store.lookup(aor, now)

        if contacts == "*":
            if headerExpires != 0 or len(request.headers.values("Contact")) != 1:
                raise Refused(
                    400, "Wildcard Contact requires Expires: 0 and no other Contact")
            self._checkOrder(existing, callId, cseq)
            if existing:
                await self.store.remove([b.ruid for b in existing])
                for binding in existing:
                    self._announce(REGISTRATION_REMOVED, binding, now)
            self.stats["unregistered"] += 1
            if existing:
                self._log.info("removed all {count} bindings of {aor}", count=len(existing),
                               aor=aor)
            return self._ok(request, [], now)

        byKey = {self._bindingKey(b): b for b in existing}
        toSave: list[Binding] = []
        toRemove: list[str] = []
        plannedKeys: set[str] = set()
        named: set[str] = set()
        path = ", ".join(request.headers.values("Path")) or None
        userAgent = (request.headers.first("User-Agent") or "")[:MAX_USER_AGENT]
        methods = methodBits(request.headers.values("Allow"))
        conid = flow.conid
        connectionId = conid if conid is not None else UDP_CONNECTION_ID
        received = receivedURI(flow)
        socket = socketName(flow)
        for contact in contacts:
            expires = self._expiresOf(contact, headerExpires)
            instance = _unquote(contact.param("+sip.instance"))
            regId = self._regIdOf(contact)
            key = self._key(contact.uri, instance, regId)
            if key in plannedKeys:
                continue
            plannedKeys.add(key)
            old = byKey.get(key)
            if old is not None:
                named.add(old.ruid)
            binding = None
            if expires:
                binding = Binding(
                    ruid=old.ruid if old is not None else ruidFor(aor, key, callId, cseq),
                    username=username,
                    domain=domain,
                    contact=str(contact.uri),
                    received=received,
                    path=path,
                    expires=now + expires,
                    q=self._qOf(contact),
                    callid=callId,
                    cseq=cseq,
                    lastModified=now,
                    flags=0,
                    cflags=0,
                    userAgent=userAgent,
                    socket=socket,
                    methods=methods,
                    instance=instance,
                    regId=regId,
                    serverId=self.serverId,
                    connectionId=connectionId,
                    keepalive=1 if regId and flow.reliable else 0,
                    partition=0,
                )
            if old is not None and old.callid == callId and cseq <= old.cseq:
                if cseq < old.cseq or binding is None or not _sameRequest(old, binding):
                    raise Refused(500, "Out of order CSeq for this Call-ID")
                # The same Call-ID, CSeq and contact as the request that
                # wrote this binding: its retransmission, read by a process
                # whose transactions never saw the first copy (workers share
                # the UDP socket).  It is applied already: keep it, answer 200.
                continue
            if binding is None:
                if old is not None:
                    toRemove.append(old.ruid)
                continue
            toSave.append(binding)
        if limit:
            toRemove += self._makeRoom(aor, existing, toSave, toRemove, named)

        if conid is not None and self.isConnected is not None and not self.isConnected(conid):
            # The connection closed while this REGISTER waited for the store:
            # a binding to it could never be reached, and its cleanup may
            # already have run.  Write nothing and answer nobody.
            suppressed = self._closedMeanwhile.hit("closed meanwhile")
            if suppressed is not None:
                self._log.info(
                    "dropped REGISTER for {aor}: connection {conid} closed meanwhile "
                    "({suppressed} more since the last report)",
                    aor=aor, conid=conid, suppressed=suppressed)
            return None
        if toRemove:
            await self.store.remove(toRemove)
        if toSave:
            await self.store.save(toSave)
            if conid is not None and self.connectionBound is not None:
                self.connectionBound(conid, max(b.expires for b in toSave))
        removed = set(toRemove)
        known = {b.ruid for b in existing}
        for binding in existing:
            if binding.ruid in removed:
                self._announce(REGISTRATION_REMOVED, binding, now)
        for binding in toSave:
            self._announce(REGISTRATION_REFRESHED if binding.ruid in known
                           else REGISTRATION_ADDED, binding, now)
        current = {b.ruid: b for b in existing if b.ruid not in removed}
        for binding in toSave:
            current[binding.ruid] = binding
        if toSave:
            self.stats["registered"] += 1
        elif toRemove:
            self.stats["unregistered"] += 1
        outbound = any(b.regId for b in toSave) and "outbound" in [
            v.strip().lower() for v in request.headers.values("Supported")]
        return self._ok(request, sorted(current.values(), key=lambda b: -b.q), now,
                        path=path, outbound=outbound)

    # -- helpers ---------------------------------------------------------------

    def _announce(self, name: str, binding: Binding, now: float) -> None:
        """
        Fire the registration event C{name} for C{binding}.
        """
        if self.announce is None:
            return
        self.announce(RegistrationEvent.of(name, binding, now, self.serverId))

    def _checkPath(self, request: Request, flow: IFlow) -> None:
        """
        Refuse a REGISTER with a C{Path} from a source that is not a trusted
        peer (RFC 3327 Path is meaningful only when a proxy of ours inserted
        it): otherwise anyone could make calls to their address of record go
        to a host of their choosing.  Logged once per source per interval.

        @raise Refused: C{403}, before anything is read or
            written.
        """
        if "Path" not in request.headers:
            return
        host = flow.remote[0]
        if host in self.policy.trustedPeers:
            return
        self.stats["pathRefused"] += 1
        suppressed = self._pathRefusedLog.hit(sourceKey(host))
        if suppressed is not None:
            self._log.warn(
                "refused REGISTER with Path from {peer}: not a trusted peer "
                "({suppressed} more since the last report)",
                peer=host, suppressed=suppressed)
        raise Refused(403, "Path not accepted from this source")

    def _makeRoom(self, aor: str, existing: list[Binding], toSave: list[Binding],
                  toRemove: list[str], named: set[str]) -> list[str]:
        """
        Keep an address of record within C{policy.maxContacts}.  Only a
        REGISTER that adds bindings is checked: refreshing or removing
        bindings is always allowed.

        @param existing: the bindings the lookup found.
        @param toSave: the bindings the REGISTER writes.
        @param toRemove: the record ids it removes.
        @param named: the record ids of the existing bindings it names.
        @return: the record ids to remove as well to stay within the cap
            (the least recently written bindings it does not name), under
            L{REPLACE}.
        @raise Refused: C{403} under L{REJECT} when the cap
            would be exceeded.
        """
        policy = self.policy
        known = {b.ruid for b in existing}
        added = sum(1 for b in toSave if b.ruid not in known)
        if not added:
            return []
        removed = set(toRemove)
        kept = [b for b in existing if b.ruid not in removed]
        excess = len(kept) + added - policy.maxContacts
        if excess <= 0:
            return []
        older = sorted((b for b in kept if b.ruid not in named),
                       key=lambda b: (b.lastModified, b.ruid))
        if policy.maxContactsPolicy != REPLACE or len(older) < excess:
            self._tooManyContacts("aor", aor)
            raise Refused(
                403, "Too many registered contacts (at most {})".format(policy.maxContacts))
        self.stats["replacedOldest"] += 1
        suppressed = self._contactsLog.hit(("replaced", aor))
        if suppressed is not None:
            self._log.info(
                "removed the {count} oldest bindings of {aor} to stay within "
                "{limit} ({suppressed} more times since the last report)",
                count=excess, aor=aor, limit=policy.maxContacts, suppressed=suppressed)
        return [b.ruid for b in older[:excess]]

    def _tooManyContacts(self, kind: str, key: str) -> None:
        """
        Count and log (once per key per interval) a REGISTER refused for
        its contacts: too many in it (C{kind} C{source}, C{key} the
        source) or for its address of record (C{aor}).
        """
        self.stats["tooManyContacts"] += 1
        suppressed = self._contactsLog.hit((kind, key))
        if suppressed is not None:
            self._log.info(
                "refused REGISTER: too many contacts ({kind} {key}, at most {limit}; "
                "{suppressed} more since the last report)",
                kind=kind, key=key, limit=self.policy.maxContacts, suppressed=suppressed)

    def _checkOrder(self, existing: list[Binding], callId: str, cseq: int) -> None:
        for binding in existing:
            if binding.callid == callId and cseq <= binding.cseq:
                raise Refused(500, "Out of order CSeq for this Call-ID")

    def _expiresOf(self, contact: Address, headerExpires: int | None) -> int:
        policy = self.policy
        raw = contact.param("expires")
        if raw is not None:
            # Clamped to 2**32-1, a malformed value taken as 3600 (RFC 3261
            # section 10.2.1.1); then bounded by the policy like the header.
            expires = parseExpires(raw)
        elif headerExpires is not None:
            expires = headerExpires
        else:
            expires = policy.defaultExpires
        if expires == 0:
            return 0
        if expires < policy.minExpires:
            raise Refused(423, "Interval Too Brief",
                          [("Min-Expires", str(policy.minExpires))])
        return min(expires, policy.maxExpires)

    def _qOf(self, contact: Address) -> float:
        raw = contact.param("q")
        if raw is None:
            return 1.0
        try:
            q = float(raw)
        except ValueError:
            q = -1.0
        if not 0.0 <= q <= 1.0:
            raise Refused(400, "Invalid Contact q parameter")
        return q

    def _regIdOf(self, contact: Address) -> int:
        raw = contact.param("reg-id")
        if raw is None:
            return 0
        raw = raw.strip()
        if _DIGITS.fullmatch(raw) is None or not 1 <= int(raw) <= 2**31 - 1:
            raise Refused(400, "Invalid Contact reg-id parameter")
        return int(raw)

    def _key(self, uri: URI, instance: str | None, regId: int) -> str:
        if instance and regId:
            return "instance:{}:{}".format(instance, regId)
        return "contact:" + contactKey(uri)

    def _bindingKey(self, binding: Binding) -> str:
        try:
            uri = parseURI(binding.contact)
        except SIPParseError:
            return "contact:" + binding.contact
        return self._key(uri, binding.instance, binding.regId)

    def _ok(self, request: Request, bindings: list[Binding], now: float,
            path: str | None = None, outbound: bool = False) -> Response:
        response = Response.forRequest(request, 200, "OK")
        for binding in bindings:
            remaining = max(0, int(round(binding.expires - now)))
            value = "<{}>;expires={}".format(binding.contact, remaining)
            if binding.q != 1.0:
                value += ";q={:g}".format(binding.q)
            if binding.instance:
                value += ';+sip.instance="{}"'.format(binding.instance)
            if binding.regId:
                value += ";reg-id={}".format(binding.regId)
            response.headers.add("Contact", value)
        # A new response has none of these yet: add, not set.
        if path:
            response.headers.add("Path", path)
        if outbound:
            response.headers.add("Require", "outbound")
        response.headers.add("Supported", self._supported)
        return response


class _RegistrarCollector:
    """
    The registrar's REGISTER outcomes.
    """

    def __init__(self, registrar: Registrar) -> None:
        self._registrar = registrar

    def collect(self) -> list[Metric]:
        return [counterFamily("sipcore_registrar_total", "REGISTER outcomes.", ["outcome"],
                              labelled(self._registrar.stats))]
