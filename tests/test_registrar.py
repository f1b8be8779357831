"""
Tests for L{sipcore.sip.registrar}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sipcore.interfaces import IFlow, ITransactionUser
from sipcore.location import MemoryLocationStore, StoreUnavailable
from sipcore.location.ordering import PendingWrites
from sipcore.message import Request, Response, parseMessage
from sipcore.sip.core import StatelessTransaction
from sipcore.sip.registrar import Registrar, RegistrarPolicy, contactKey, methodBits, ruidFor
from sipcore.sip.trust import TrustedPeers
from sipcore.testing import FakeFlow, LogCapture, contactsOf, parseRequest

START = 1_700_000_000.0


def register(
    contacts: list[str] | None = None,
    expires: int | None = None,
    callId: str = "reg-call-1",
    cseq: int = 1,
    to: str = "<sip:alice@example.com>",
    uri: str = "sip:example.com",
    extra: str = "",
) -> bytes:
    lines = [
        "REGISTER {} SIP/2.0".format(uri),
        "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKreg{}".format(cseq),
        "Max-Forwards: 70",
        "From: {};tag=r1".format(to),
        "To: {}".format(to),
        "Call-ID: {}".format(callId),
        "CSeq: {} REGISTER".format(cseq),
    ]
    for contact in contacts or []:
        lines.append("Contact: {}".format(contact))
    if expires is not None:
        lines.append("Expires: {}".format(expires))
    if extra:
        lines.append(extra.rstrip("\r\n"))
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class SlowStore(MemoryLocationStore):
    """
    A memory store whose writes wait until the test lets them through.
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.held: list[defer.Deferred[None]] = []

    def save(self, bindings: Any) -> defer.Deferred[None]:
        bindings = list(bindings)
        gate: defer.Deferred[None] = defer.Deferred()
        self.held.append(gate)
        gate.addCallback(lambda _: super(SlowStore, self).save(bindings))
        return gate


class DownStore(MemoryLocationStore):
    """
    A store whose database is away.
    """

    def lookup(self, aor: str, now: float) -> defer.Deferred[Any]:
        return defer.fail(StoreUnavailable("database away"))


class RegistrarTestCase(SynchronousTestCase):
    """
    A registrar on C{self.store} and C{self.clock}, and REGISTERs sent to
    it; C{setUp} builds them.
    """

    clock: Clock
    store: MemoryLocationStore
    connected: set[int]
    registrar: Registrar

    def makeRegistrar(self, store: Any, **policy: Any) -> Registrar:
        return Registrar(
            store,
            self.clock,
            isLocalDomain=lambda host: host.lower() == "example.com",
            serverId=3,
            policy=RegistrarPolicy(**policy),
            writes=PendingWrites(),
            isConnected=self.connected.__contains__,
        )

    def send(
        self, data: bytes, flow: FakeFlow | None = None, registrar: Registrar | None = None
    ) -> Response | None:
        flow = flow or FakeFlow("udp", remote=("192.0.2.1", 40000))
        before = len(flow.sent)
        tx = StatelessTransaction(parseRequest(data), flow)
        d = (registrar or self.registrar)(tx)
        self.successResultOf(d)
        sent = flow.sent[before:]
        if not sent:
            return None
        [(raw, _)] = sent
        response = parseMessage(raw)
        assert isinstance(response, Response)
        return response

    def bindings(self) -> list[Any]:
        return self.successResultOf(self.store.lookup("alice@example.com", self.clock.seconds()))


class RegistrarTests(RegistrarTestCase):
    """
    REGISTER handling per RFC 3261 section 10.3.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = MemoryLocationStore(self.clock)
        self.connected = {5}
        self.registrar = self.makeRegistrar(self.store)

    def test_registerOverUDP(self) -> None:
        """
        A REGISTER over UDP stores a binding with the request's facts, not
        bound to a connection, and the C{200} lists it with its expiry.
        """
        response = self.send(
            register(
                ["<sip:alice@192.0.2.1:5070>"], extra="User-Agent: phone/1.0\r\nAllow: INVITE, BYE"
            )
        )
        assert response is not None
        self.assertEqual(response.status, 200)
        [contact] = contactsOf(response)
        self.assertEqual(str(contact.uri), "sip:alice@192.0.2.1:5070")
        self.assertEqual(contact.param("expires"), "3600")
        [binding] = self.bindings()
        self.assertEqual(binding.username, "alice")
        self.assertEqual(binding.domain, "example.com")
        self.assertEqual(binding.connectionId, -1)
        self.assertEqual(binding.serverId, 3)
        self.assertEqual(binding.callid, "reg-call-1")
        self.assertEqual(binding.cseq, 1)
        self.assertEqual(binding.expires, START + 3600)
        self.assertEqual(binding.userAgent, "phone/1.0")
        self.assertEqual(binding.received, "sip:192.0.2.1:40000;transport=udp")
        self.assertEqual(binding.socket, "udp:127.0.0.1:5060")
        self.assertEqual(binding.methods, methodBits(["INVITE", "BYE"]))

    def test_registerOverStream(self) -> None:
        """
        A REGISTER over a stream connection records its connection id.
        """
        flow = FakeFlow("ws", conid=5)
        response = self.send(register(["<sip:alice@df7jal23ls0d.invalid;transport=ws>"]), flow)
        assert response is not None
        self.assertEqual(response.status, 200)
        [binding] = self.bindings()
        self.assertEqual(binding.connectionId, 5)
        self.assertEqual(binding.socket, "tcp:127.0.0.1:5060")

    def test_expiresParameterWins(self) -> None:
        """
        A Contact's C{expires} parameter overrides the Expires header.
        """
        self.send(register(["<sip:a@192.0.2.1>;expires=120", "<sip:b@192.0.2.1>"], expires=600))
        expiries = sorted(b.expires - START for b in self.bindings())
        self.assertEqual(expiries, [120, 600])

    def test_tooBrief(self) -> None:
        """
        A non-zero expiry below the minimum is answered C{423} with
        Min-Expires, and nothing is stored.
        """
        response = self.send(register(["<sip:a@192.0.2.1>"], expires=10))
        assert response is not None
        self.assertEqual(response.status, 423)
        self.assertEqual(response.headers.first("Min-Expires"), "60")
        self.assertEqual(self.bindings(), [])

    def test_tooLongClamped(self) -> None:
        """
        An expiry above the maximum is granted as the maximum.
        """
        response = self.send(register(["<sip:a@192.0.2.1>"], expires=10**9))
        assert response is not None
        self.assertEqual(contactsOf(response)[0].param("expires"), "86400")

    def test_refreshKeepsRecord(self) -> None:
        """
        Registering the same contact again with a higher CSeq refreshes the
        same record (same ruid) instead of adding another.
        """
        self.send(register(["<sip:a@192.0.2.1>"], expires=100))
        [first] = self.bindings()
        self.clock.advance(50)
        self.send(register(["<sip:a@192.0.2.1>"], expires=100, cseq=2))
        [second] = self.bindings()
        self.assertEqual(first.ruid, second.ruid)
        self.assertEqual(second.expires, START + 150)
        self.assertEqual(second.cseq, 2)

    def test_outOfOrderCSeqRefused(self) -> None:
        """
        A REGISTER with the same Call-ID and a CSeq not above the stored one
        is refused with C{500}, and the binding is unchanged.
        """
        self.send(register(["<sip:a@192.0.2.1>"], cseq=5, expires=100))
        response = self.send(register(["<sip:a@192.0.2.1>"], cseq=4, expires=3000))
        assert response is not None
        self.assertEqual(response.status, 500)
        [binding] = self.bindings()
        self.assertEqual(binding.expires, START + 100)

    def test_sameCSeqIsRetransmission(self) -> None:
        """
        A REGISTER with the same Call-ID and CSeq as the one that wrote a
        binding, in a new transaction (a retransmission read by another
        worker), is answered C{200} with the binding, which is not written
        again.
        """
        self.send(register(["<sip:a@192.0.2.1>"], cseq=5, expires=100))
        saves = self.store.statementCount["save"]
        self.clock.advance(10)
        response = self.send(register(["<sip:a@192.0.2.1>"], cseq=5, expires=100))
        assert response is not None
        self.assertEqual(response.status, 200)
        self.assertEqual([str(c.uri) for c in contactsOf(response)], ["sip:a@192.0.2.1"])
        self.assertEqual(contactsOf(response)[0].param("expires"), "90")
        self.assertEqual(self.store.statementCount["save"], saves)
        [binding] = self.bindings()
        self.assertEqual(binding.expires, START + 100)

    def test_sameCSeqChangedIsRefused(self) -> None:
        """
        The same Call-ID and CSeq with a different request (another expiry,
        or C{expires=0}) is no retransmission: C{500}, nothing changed.
        """
        self.send(register(["<sip:a@192.0.2.1>"], cseq=5, expires=100))
        for changed in (register(["<sip:a@192.0.2.1>"], cseq=5, expires=300),
                        register(["<sip:a@192.0.2.1>"], cseq=5, expires=0),
                        register(["<sip:a@192.0.2.1>;q=0.5"], cseq=5, expires=100)):
            response = self.send(changed)
            assert response is not None
            self.assertEqual(response.status, 500)
        [binding] = self.bindings()
        self.assertEqual((binding.expires, binding.q), (START + 100, 1.0))

    def test_copiesNameTheSameRecord(self) -> None:
        """
        Two copies of one REGISTER taken by two registrars that do not see
        each other's writes (the first copy's write still on its way) name
        the same record: saved to one store, they leave one binding.
        """
        other = MemoryLocationStore(self.clock)
        self.send(register(["<sip:a@192.0.2.1>"], cseq=5, expires=100))
        self.send(register(["<sip:a@192.0.2.1>"], cseq=5, expires=100),
                  registrar=self.makeRegistrar(other))
        [first] = self.bindings()
        [second] = self.successResultOf(other.lookup("alice@example.com", START))
        self.assertEqual(first.ruid, second.ruid)
        self.successResultOf(self.store.save([second]))
        self.assertEqual(len(self.bindings()), 1)

    def test_ruidsDiffer(self) -> None:
        """
        Record ids differ by address of record, contact, Call-ID and CSeq.
        """
        base = ruidFor("alice@example.com", "sip:a@h", "c1", 1)
        self.assertEqual(base, ruidFor("alice@example.com", "sip:a@h", "c1", 1))
        self.assertTrue(base.startswith("sipcore-"))
        self.assertLessEqual(len(base), 64)
        others = {ruidFor("bob@example.com", "sip:a@h", "c1", 1),
                  ruidFor("alice@example.com", "sip:b@h", "c1", 1),
                  ruidFor("alice@example.com", "sip:a@h", "c2", 1),
                  ruidFor("alice@example.com", "sip:a@h", "c1", 2),
                  ruidFor("alice@example.com", "sip:a@h\x00c1", "", 1)}
        self.assertEqual(len(others), 5)
        self.assertNotIn(base, others)

    def test_otherCallIdAccepted(self) -> None:
        """
        A lower CSeq under another Call-ID (a rebooted phone) is accepted.
        """
        self.send(register(["<sip:a@192.0.2.1>"], cseq=5))
        response = self.send(register(["<sip:a@192.0.2.1>"], cseq=1, callId="other"))
        assert response is not None
        self.assertEqual(response.status, 200)
        self.assertEqual([b.callid for b in self.bindings()], ["other"])

    def test_unregisterOne(self) -> None:
        """
        C{expires=0} removes that contact only.
        """
        self.send(register(["<sip:a@192.0.2.1>", "<sip:b@192.0.2.1>"]))
        response = self.send(register(["<sip:a@192.0.2.1>;expires=0"], cseq=2))
        assert response is not None
        self.assertEqual([str(c.uri) for c in contactsOf(response)], ["sip:b@192.0.2.1"])
        self.assertEqual([b.contact for b in self.bindings()], ["sip:b@192.0.2.1"])

    def test_wildcardRemovesAll(self) -> None:
        """
        C{Contact: *} with C{Expires: 0} removes every binding of the AOR,
        and no other AOR's.
        """
        self.send(register(["<sip:a@192.0.2.1>", "<sip:b@192.0.2.1>"]))
        self.send(register(["<sip:c@192.0.2.1>"], to="<sip:carol@example.com>"))
        response = self.send(register(["*"], expires=0, cseq=2))
        assert response is not None
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers.values("Contact"), [])
        self.assertEqual(self.bindings(), [])
        self.assertEqual(
            len(self.successResultOf(self.store.lookup("carol@example.com", self.clock.seconds()))),
            1,
        )

    def test_wildcardNeedsExpiresZero(self) -> None:
        """
        C{Contact: *} without C{Expires: 0} is answered C{400}.
        """
        self.send(register(["<sip:a@192.0.2.1>"]))
        response = self.send(register(["*"], cseq=2))
        assert response is not None
        self.assertEqual(response.status, 400)
        self.assertEqual(len(self.bindings()), 1)

    def test_query(self) -> None:
        """
        A REGISTER without Contact lists the current bindings, highest q
        first, and changes nothing.
        """
        self.send(register(["<sip:a@192.0.2.1>;q=0.2", "<sip:b@192.0.2.1>;q=0.9"]))
        response = self.send(register([], cseq=2))
        assert response is not None
        self.assertEqual(
            [str(c.uri) for c in contactsOf(response)], ["sip:b@192.0.2.1", "sip:a@192.0.2.1"]
        )
        self.assertEqual([c.param("q") for c in contactsOf(response)], ["0.9", "0.2"])

    def test_foreignDomain(self) -> None:
        """
        A REGISTER for a domain the server does not serve is answered as
        configured: C{403} by default, C{404} when asked.
        """
        data = register(
            ["<sip:a@192.0.2.1>"], uri="sip:elsewhere.org", to="<sip:alice@elsewhere.org>"
        )
        response = self.send(data)
        assert response is not None
        self.assertEqual(response.status, 403)
        other = self.makeRegistrar(self.store, foreignDomainStatus=404)
        response = self.send(data, registrar=other)
        assert response is not None
        self.assertEqual(response.status, 404)

    def test_nonSipAddressOfRecord(self) -> None:
        """
        An AOR that is not a SIP or SIPS URI is answered C{400}.
        """
        response = self.send(register(["<sip:a@192.0.2.1>"], to="<isbn:2983792873>"))
        assert response is not None
        self.assertEqual(response.status, 400)

    def test_pathAndOutbound(self) -> None:
        """
        Path from a trusted peer is stored and echoed, and C{Supported}
        lists C{path}; C{+sip.instance} and C{reg-id} are stored, and an
        outbound registration gets C{Require: outbound}.
        """
        flow = FakeFlow("tcp", conid=5, remote=("198.51.100.7", 40000))
        registrar = self.makeRegistrar(
            self.store, trustedPeers=TrustedPeers.fromStrings(["198.51.100.0/24"]))
        response = self.send(
            register(
                [
                    '<sip:a@192.0.2.1;transport=tcp>;+sip.instance="<urn:uuid:00000000-0000-1000'
                    '-8000-000A95A0E128>";reg-id=1'
                ],
                extra="Path: <sip:edge.example.com;lr>\r\nSupported: outbound, path",
            ),
            flow,
            registrar,
        )
        assert response is not None
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers.values("Supported"), ["path", "outbound"])
        self.assertEqual(response.headers.first("Path"), "<sip:edge.example.com;lr>")
        self.assertEqual(response.headers.first("Require"), "outbound")
        [binding] = self.bindings()
        self.assertEqual(binding.path, "<sip:edge.example.com;lr>")
        self.assertEqual(binding.instance, "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>")
        self.assertEqual(binding.regId, 1)

    def test_pathFromUntrustedSourceRefused(self) -> None:
        """
        A REGISTER with a Path from a source that is not a trusted peer
        gets C{403} with a reason, changes nothing (an existing binding
        stays as it was) and is logged once per source per interval.
        """
        registrar = self.makeRegistrar(
            self.store, trustedPeers=TrustedPeers.fromStrings(["10.0.0.0/8"]), logInterval=60)
        self.send(register(["<sip:alice@192.0.2.1:5070>"]), registrar=registrar)
        before = self.bindings()
        logged = LogCapture(self)
        for cseq in range(2, 5):
            response = self.send(
                register(["<sip:alice@127.0.0.5:25099>"], cseq=cseq,
                         extra="Path: <sip:127.0.0.5:25099;lr>"),
                registrar=registrar)
            assert response is not None
            self.assertEqual((response.status, response.reason),
                             (403, "Path not accepted from this source"))
        self.assertEqual(self.bindings(), before)
        self.assertEqual(registrar.stats["pathRefused"], 3)
        refused = [e for e in logged.events if "Path" in e.get("log_format", "")]
        self.assertEqual([e["peer"] for e in refused], ["192.0.2.1"])
        self.clock.advance(61)
        self.send(register(["<sip:alice@127.0.0.5:25099>"], cseq=9,
                           extra="Path: <sip:127.0.0.5:25099;lr>"), registrar=registrar)
        refused = [e for e in logged.events if "Path" in e.get("log_format", "")]
        self.assertEqual([e["suppressed"] for e in refused], [0, 2])

    def test_pathRefusedByDefault(self) -> None:
        """
        Without trusted peers every Path is refused, and the C{200} of a
        REGISTER without one does not advertise C{path}.
        """
        response = self.send(register(["<sip:alice@192.0.2.1:5070>"],
                                      extra="Path: <sip:192.0.2.1;lr>"))
        assert response is not None
        self.assertEqual(response.status, 403)
        self.assertEqual(self.bindings(), [])
        response = self.send(register(["<sip:alice@192.0.2.1:5070>"], cseq=2))
        assert response is not None
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers.values("Supported"), ["outbound"])

    def test_sameInstanceReplaces(self) -> None:
        """
        With outbound, a new contact for the same instance and reg-id
        replaces the old binding (the flow changed, the device did not).
        """
        instance = '+sip.instance="<urn:uuid:1>";reg-id=1'
        self.send(register(["<sip:a@192.0.2.1:1111>;" + instance]))
        self.send(register(["<sip:a@192.0.2.1:2222>;" + instance], cseq=2))
        self.assertEqual([b.contact for b in self.bindings()], ["sip:a@192.0.2.1:2222"])

    def test_storeUnavailable(self) -> None:
        """
        While the store cannot be reached the answer is C{503} with
        Retry-After.
        """
        registrar = self.makeRegistrar(DownStore(self.clock))
        response = self.send(register(["<sip:a@192.0.2.1>"]), registrar=registrar)
        assert response is not None
        self.assertEqual(response.status, 503)
        self.assertIsNotNone(response.headers.first("Retry-After"))

    def test_noAnswerBeforeCommit(self) -> None:
        """
        The C{200} is sent only after the store says the write is durable,
        and the work is tracked for the connection until then.
        """
        store = SlowStore(self.clock)
        writes = PendingWrites()
        registrar = Registrar(
            store,
            self.clock,
            isLocalDomain=lambda h: True,
            serverId=3,
            writes=writes,
            isConnected=self.connected.__contains__,
        )
        flow = FakeFlow("tcp", conid=5)
        tx = StatelessTransaction(parseRequest(register(["<sip:a@192.0.2.1>"])), flow)
        d = registrar(tx)
        self.assertEqual(flow.sent, [])
        settled = writes.settled([5])
        self.assertNoResult(settled)
        store.held[0].callback(None)
        self.successResultOf(d)
        self.successResultOf(settled)
        self.assertEqual([m.status for m in flow.responses()], [200])

    def test_closedConnectionNotWritten(self) -> None:
        """
        A REGISTER whose connection closed before the write is neither
        stored nor answered.
        """
        flow = FakeFlow("tcp", conid=9)
        response = self.send(register(["<sip:a@192.0.2.1>"]), flow)
        self.assertIsNone(response)
        self.assertEqual(self.bindings(), [])

    def test_hostileValuesStoredVerbatim(self) -> None:
        """
        Quotes, semicolons and non-ASCII text in a user agent are stored as
        text; an oversized one is cut to the column's size.
        """
        agent = "x'; DROP TABLE location; -- \u00e9\u6f22" + "y" * 1000
        self.send(register(["<sip:a@192.0.2.1>"], extra="User-Agent: " + agent))
        [binding] = self.bindings()
        self.assertEqual(binding.userAgent, agent[:255])

    def test_contactKey(self) -> None:
        """
        Contact comparison ignores the case of scheme and host and the
        order of the significant parameters, but not the user.
        """
        from sipcore.message import parseURI

        self.assertEqual(
            contactKey(parseURI("SIP:a@HOST;transport=tcp;foo=1")),
            contactKey(parseURI("sip:a@host;transport=TCP")),
        )
        self.assertNotEqual(contactKey(parseURI("sip:A@host")), contactKey(parseURI("sip:a@host")))


class HostileRegisterTests(RegistrarTests):
    """
    Values that parse as SIP but cannot be stored are refused with 400,
    without a traceback, and nothing is stored.
    """

    def test_unicodeDigitsRefused(self) -> None:
        """
        Superscript digits in C{reg-id} are refused with 400.
        """
        response = self.send(register(
            ['<sip:a@192.0.2.1>;+sip.instance="<urn:x>";reg-id="\u00b9"']))
        assert response is not None
        self.assertEqual(response.status, 400)
        self.assertEqual(self.bindings(), [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_unicodeDigitsExpiresMalformed(self) -> None:
        """
        Superscript digits in C{expires} are a malformed value: 3600.
        """
        response = self.send(register(['<sip:a@192.0.2.1>;expires="\u00b2"']))
        assert response is not None
        self.assertEqual(response.status, 200)
        [binding] = self.bindings()
        self.assertEqual(binding.expires, START + 3600)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_oversizedUserRefused(self) -> None:
        """
        A user part longer than the table's column is refused with 400.
        """
        user = "u" * 65
        response = self.send(register(["<sip:a@192.0.2.1>"], to="<sip:{}@example.com>".format(
            user)))
        assert response is not None
        self.assertEqual(response.status, 400)
        self.assertEqual(self.flushLoggedErrors(), [])


@implementer(ITransactionUser)
class SilentUser:
    """
    A transaction user that ignores what its transactions tell it.
    """

    def ackReceived(self, request: Request, flow: IFlow) -> bool:
        return False

    def ackTimeout(self, transaction: object) -> None:
        pass

    def unanswered(self, transaction: object) -> None:
        pass

    def transportError(self, transaction: object) -> None:
        pass


class DroppedRegisterTests(SynchronousTestCase):
    """
    A REGISTER that is dropped (its connection closed meanwhile) ends its
    server transaction.
    """

    def test_transactionEnded(self) -> None:
        """
        The transaction layer holds no transaction for it afterwards.
        """
        from sipcore.sip.transaction import TransactionLayer

        clock = Clock()
        layer = TransactionLayer(clock, SilentUser())
        registrar = Registrar(MemoryLocationStore(clock), clock, isLocalDomain=lambda h: True,
                              isConnected=lambda conid: False)
        flow = FakeFlow("tcp", conid=3)
        found = layer.requestReceived(parseRequest(register(["<sip:a@192.0.2.1>"])), flow)
        assert isinstance(found, tuple)
        tx, _ = found
        self.successResultOf(registrar(tx))
        self.assertEqual(flow.sent, [])
        self.assertEqual(layer.serverTransactions, 0)


def tab(n: int, expires: str = "") -> str:
    """
    The Contact of browser tab C{n}: its own C{+sip.instance} (RFC 5626).
    """
    return '<sip:tab{}@192.0.2.1;transport=ws>;+sip.instance="<urn:uuid:{}>";reg-id=1{}'.format(
        n, n, expires)


class CountingStore(MemoryLocationStore):
    """
    A memory store that counts its lookups.
    """

    lookups = 0

    def lookup(self, aor: str, now: float) -> defer.Deferred[Any]:
        self.lookups += 1
        return super().lookup(aor, now)


class BindingLimitTests(RegistrarTestCase):
    """
    C{maxContacts}: the most bindings of one address of record (C{reject}:
    C{403}, nothing changed; C{replace}: the oldest make room) and the most
    Contact values in one REGISTER (C{403}, counted, not parsed).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = self.counting = CountingStore(self.clock)
        self.connected = set()
        self.calls = 0

    def registerTabs(self, registrar: Registrar, tabs: list[int]) -> list[Response | None]:
        """
        Register each tab with its own REGISTER, one second apart.
        """
        out = []
        for n in tabs:
            self.clock.advance(1)
            self.calls += 1
            out.append(self.send(register([tab(n)], callId="tab-{}".format(n), cseq=self.calls),
                                 registrar=registrar))
        return out

    def instances(self) -> set[str]:
        return {b.instance for b in self.bindings()}

    def test_defaults(self) -> None:
        """
        By default an address of record has at most 10 bindings, and a new
        one replaces the oldest.
        """
        policy = RegistrarPolicy()
        self.assertEqual((policy.maxContacts, policy.maxContactsPolicy), (10, "replace"))

    def test_rejectOverTheCap(self) -> None:
        """
        Under C{reject}, the REGISTER of an eleventh tab gets C{403} with
        the reason, and the ten bindings are left as they were.
        """
        registrar = self.makeRegistrar(self.store, maxContactsPolicy="reject")
        responses = self.registerTabs(registrar, list(range(10)))
        self.assertEqual({r.status for r in responses if r is not None}, {200})
        before = self.bindings()
        [response] = self.registerTabs(registrar, [10])
        assert response is not None
        self.assertEqual((response.status, response.reason),
                         (403, "Too many registered contacts (at most 10)"))
        self.assertEqual(self.bindings(), before)
        self.assertEqual(registrar.stats["tooManyContacts"], 1)

    def test_rejectAllowsRefreshAndSwap(self) -> None:
        """
        At the cap, refreshing a binding, and removing one while adding
        another in the same REGISTER, are accepted.
        """
        registrar = self.makeRegistrar(self.store, maxContactsPolicy="reject")
        self.registerTabs(registrar, list(range(10)))
        [refresh] = self.registerTabs(registrar, [3])
        assert refresh is not None
        self.assertEqual(refresh.status, 200)
        swap = self.send(register([tab(0, ";expires=0"), tab(10)], callId="swap"),
                         registrar=registrar)
        assert swap is not None
        self.assertEqual(swap.status, 200)
        self.assertEqual(len(self.bindings()), 10)
        self.assertNotIn("<urn:uuid:0>", self.instances())
        self.assertIn("<urn:uuid:10>", self.instances())

    def test_replaceRemovesOldest(self) -> None:
        """
        Under C{replace}, an eleventh tab is registered and the binding
        written longest ago goes: tab 1, since tab 0 refreshed after it.
        The C{200} lists ten bindings.
        """
        registrar = self.makeRegistrar(self.store)
        self.registerTabs(registrar, list(range(10)) + [0])
        [response] = self.registerTabs(registrar, [10])
        assert response is not None
        self.assertEqual(response.status, 200)
        self.assertEqual(len(contactsOf(response)), 10)
        self.assertEqual(self.instances(),
                         {"<urn:uuid:{}>".format(n) for n in [0] + list(range(2, 11))})
        self.assertEqual(registrar.stats["replacedOldest"], 1)

    def test_replaceSeveral(self) -> None:
        """
        A REGISTER adding three bindings at the cap removes the three
        oldest; the bindings it names itself are never removed for it.
        """
        registrar = self.makeRegistrar(self.store)
        self.registerTabs(registrar, list(range(10)))
        response = self.send(register([tab(0), tab(10), tab(11), tab(12)], callId="more"),
                             registrar=registrar)
        assert response is not None
        self.assertEqual(response.status, 200)
        self.assertEqual(self.instances(),
                         {"<urn:uuid:{}>".format(n) for n in [0] + list(range(4, 13))})

    def test_tooManyInOneRegister(self) -> None:
        """
        A REGISTER with more Contact values than the cap gets C{403} under
        either policy, before the store is read; nothing is stored.
        """
        for policy in ("replace", "reject"):
            registrar = self.makeRegistrar(self.store, maxContactsPolicy=policy)
            response = self.send(register([tab(n) for n in range(11)], callId=policy),
                                 registrar=registrar)
            assert response is not None
            self.assertEqual((response.status, response.reason),
                             (403, "Too many contacts in one REGISTER (at most 10)"))
        self.assertEqual(self.counting.lookups, 0)
        self.assertEqual(self.bindings(), [])

    def test_thousandsCountedNotParsed(self) -> None:
        """
        A REGISTER with 10,000 Contact values parsed with the cap (as the
        core does) is refused by their count: the malformed last one is
        never parsed (it would be answered C{400}).
        """
        values = ["<sip:u{}@192.0.2.1>".format(i) for i in range(9999)] + ["<bad"]
        lines = "\r\n".join("Contact: " + ", ".join(values[i:i + 300])
                            for i in range(0, len(values), 300))
        request = parseMessage(register(extra=lines), maxSize=2**20, maxContacts=10)
        assert isinstance(request, Request)
        flow = FakeFlow("udp", remote=("192.0.2.1", 40000))
        registrar = self.makeRegistrar(self.store)
        self.successResultOf(registrar(StatelessTransaction(request, flow)))
        [response] = flow.responses()
        self.assertEqual(response.status, 403)
        self.assertEqual(self.counting.lookups, 0)

    def test_noLimit(self) -> None:
        """
        C{maxContacts=0}: no limit on either count.
        """
        registrar = self.makeRegistrar(self.store, maxContacts=0)
        response = self.send(register([tab(n) for n in range(50)]), registrar=registrar)
        assert response is not None
        self.assertEqual(response.status, 200)
        self.assertEqual(len(self.bindings()), 50)

    def test_concurrentRegisters(self) -> None:
        """
        Each REGISTER decides on the bindings its own lookup saw: two
        REGISTERs whose lookups overlap can each add one at nine bindings,
        and the address of record has eleven.  The next REGISTER that adds
        one sees them all: under C{replace} it takes the count back to the
        cap.
        """
        store = SlowStore(self.clock)
        self.store = store
        registrar = self.makeRegistrar(store)
        for n in range(9):
            d = registrar(StatelessTransaction(parseRequest(register(
                [tab(n)], callId="tab-{}".format(n))), FakeFlow("udp")))
            store.held.pop().callback(None)
            self.successResultOf(d)
        first = registrar(StatelessTransaction(parseRequest(register(
            [tab(9)], callId="tab-9")), FakeFlow("udp")))
        second = registrar(StatelessTransaction(parseRequest(register(
            [tab(10)], callId="tab-10")), FakeFlow("udp")))
        for gate in store.held:
            gate.callback(None)
        del store.held[:]
        self.assertEqual([self.successResultOf(d).status for d in (first, second)],  # type: ignore[union-attr]
                         [200, 200])
        self.assertEqual(len(self.bindings()), 11)
        third = registrar(StatelessTransaction(parseRequest(register(
            [tab(11)], callId="tab-11")), FakeFlow("udp")))
        store.held.pop().callback(None)
        self.assertEqual(self.successResultOf(third).status, 200)  # type: ignore[union-attr]
        self.assertEqual(len(self.bindings()), 10)


class ExpiresValueTests(RegistrarTestCase):
    """
    Expiry values as RFC 3261 reads them (sections 10.2.1.1 and 20.19):
    a malformed one is taken as 3600, a huge one is capped; then the
    policy's bounds apply as to any other.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = MemoryLocationStore(self.clock)
        self.connected = set()

    def granted(self, contact: str, extra: str = "", **policy: Any) -> list[float]:
        self.store = MemoryLocationStore(self.clock)
        response = self.send(register([contact], extra=extra),
                             registrar=self.makeRegistrar(self.store, **policy))
        assert response is not None
        self.assertEqual(response.status, 200, (contact, extra))
        return [b.expires - START for b in self.bindings()]

    def test_contactExpiresAboveMaximumCapped(self) -> None:
        """
        A Contact C{expires} above C{--max-expires}, however many digits, is
        granted as the maximum, like the Expires header.
        """
        for value in ("86401", "4294967296", "9" * 40):
            self.assertEqual(self.granted("<sip:a@192.0.2.1>;expires=" + value), [86400])
        self.assertEqual(self.granted("<sip:a@192.0.2.1>;expires=99999999999", maxExpires=600),
                         [600])

    def test_malformedExpiresHeader(self) -> None:
        """
        C{Expires: soon} is taken as 3600, and bounded by the policy.
        """
        self.assertEqual(self.granted("<sip:a@192.0.2.1>", extra="Expires: soon"), [3600])
        self.assertEqual(self.granted("<sip:a@192.0.2.1>", extra="Expires: soon",
                                      maxExpires=600), [600])

    def test_malformedContactExpires(self) -> None:
        """
        A malformed Contact C{expires} (text, a sign, no value, an RFC 2543
        date) is taken as 3600, whatever the Expires header says.
        """
        for param in ("=soon", "=-1", "", '="Thu, 01 Dec 2040 16:00:00 GMT"'):
            self.assertEqual(
                self.granted("<sip:a@192.0.2.1>;expires" + param, extra="Expires: 120"), [3600])
