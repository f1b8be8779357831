# -*- test-case-name: tests.test_auth -*-
"""
Tests for L{sipcore.sip.auth}: digest authentication as a guard of the
core, against every credential source (in memory, a credential file, and
Kamailio's C{subscriber} table in a real PostgreSQL), plus signed nonces,
the credentials parser, and the promise that no secret reaches the logs.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipcore.message import Request, Response, parseMessage
from sipcore.sip.auth import (
    CredentialsUnavailable,
    DigestAuthenticator,
    Identity,
    MemoryCredentials,
    Nonces,
    NonceState,
    PostgresCredentials,
    Subscriber,
    initSubscriberSchema,
    loadCredentialFile,
    parseDigest,
)
from sipcore.sip.core import SIPCore
from sipcore.sip.limits import RateLimiter
from sipcore.testing import FakeFlow

PASSWORD = "s3cret-Pa55"
REALM = "example.com"


def h(algorithm: str, text: str) -> str:
    f = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5
    return f(text.encode()).hexdigest()


def ha1(user: str, algorithm: str = "MD5", password: str = PASSWORD) -> str:
    return h(algorithm, "{}:{}:{}".format(user, REALM, password))


def request(
    method: str = "REGISTER",
    toUser: str = "alice",
    fromUser: str | None = None,
    fromDomain: str = REALM,
    auth: str | None = None,
    header: str | None = None,
    uri: str = "sip:example.com",
) -> bytes:
    """
    A request with a new branch (a new transaction) and, optionally, a
    credentials header.
    """
    fromUser = fromUser or toUser
    if header is None:
        header = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
    lines = [
        "{} {} SIP/2.0".format(method, uri),
        "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK{}".format(secrets.token_hex(6)),
        "Max-Forwards: 70",
        "From: <sip:{}@{}>;tag={}".format(fromUser, fromDomain, secrets.token_hex(3)),
        "To: <sip:{}@{}>".format(toUser, REALM),
        "Call-ID: {}".format(secrets.token_hex(6)),
        "CSeq: 1 {}".format(method),
        "Contact: <sip:{}@192.0.2.1:5070>".format(toUser),
    ]
    if auth is not None:
        lines.append("{}: {}".format(header, auth))
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def challenges(response: Response) -> list[dict[str, str]]:
    name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    return [parseDigest(line) or {} for line in response.headers.lines(name)]


def credentials(
    challenge: dict[str, str],
    user: str = "alice",
    password: str = PASSWORD,
    method: str = "REGISTER",
    uri: str = "sip:example.com",
    nc: int = 1,
    algorithm: str | None = None,
    qop: str | None = "auth",
    storedHa1: str | None = None,
) -> str:
    """
    The credentials a client computes for C{challenge} (written
    independently of the server's code).
    """
    algorithm = algorithm or challenge["algorithm"]
    cnonce = "c" + secrets.token_hex(4)
    ncText = "{:08x}".format(nc)
    first = storedHa1 or h(algorithm, "{}:{}:{}".format(user, challenge["realm"], password))
    second = h(algorithm, "{}:{}".format(method, uri))
    response = h(algorithm, ":".join((first, challenge["nonce"], ncText, cnonce, "auth", second)))
    parts = [
        'Digest username="{}"'.format(user),
        'realm="{}"'.format(challenge["realm"]),
        'nonce="{}"'.format(challenge["nonce"]),
        'uri="{}"'.format(uri),
        'response="{}"'.format(response),
        "algorithm={}".format(algorithm),
        'cnonce="{}"'.format(cnonce),
        "nc={}".format(ncText),
    ]
    if qop:
        parts.append("qop={}".format(qop))
    return ", ".join(parts)


class AuthTestsMixin:
    """
    Authentication through the core, for one credential source.  The
    source holds: alice (password), bob (password), carol (an MD5 ha1
    only); L{makeSource} builds it.
    """

    lifetime = 300.0

    async def makeSource(self) -> Any:
        raise NotImplementedError()

    async def setUp(self) -> None:
        self.clock = Clock()
        self.core = SIPCore(self.clock, domains=[REALM])
        self.source = await self.makeSource()
        self.auth = DigestAuthenticator(
            self.source, self.clock, isLocalDomain=self.core.isLocal,
            secret=b"shared-secret", methods=["REGISTER", "INVITE"],
            nonceLifetime=self.lifetime,
        )
        self.core.addGuard(self.auth)
        self.handled: list[Any] = []

        def handler(tx: Any) -> None:
            self.handled.append(tx)
            self.core.respond(tx, 200, "OK", toTag="t")

        self.core.route("REGISTER", handler)
        self.core.routeDefault(handler)
        self.flow = FakeFlow("udp", remote=("192.0.2.1", 5070))

    async def send(self, data: bytes) -> Response:
        """
        Hand C{data} to the core; wait (bounded) for its answer.
        """
        before = len(self.flow.sent)
        self.core.messageReceived(data, self.flow)
        for _ in range(1000):
            if len(self.flow.sent) > before:
                break
            await task.deferLater(reactor, 0.005, lambda: None)
        [(raw, _)] = self.flow.sent[before:]
        response = parseMessage(raw)
        assert isinstance(response, Response)
        return response

    async def challenge(self, method: str = "REGISTER", algorithm: str = "MD5",
                        **kwargs: Any) -> dict[str, str]:
        response = await self.send(request(method, **kwargs))
        [found] = [c for c in challenges(response) if c["algorithm"] == algorithm]
        return found

    async def test_challenge(self) -> None:
        """
        A REGISTER without credentials gets 401 with a SHA-256 challenge
        then an MD5 one (RFC 8760), both for the To domain with qop auth,
        and a To tag; the registrar never sees it.
        """
        response = await self.send(request())
        self.assertEqual(response.status, 401)
        found = challenges(response)
        self.assertEqual([c["algorithm"] for c in found], ["SHA-256", "MD5"])
        for challenge in found:
            self.assertEqual((challenge["realm"], challenge["qop"]), (REALM, "auth"))
            self.assertNotIn("stale", challenge)
        self.assertIsNotNone(response.toAddr.tag)
        self.assertEqual(self.handled, [])

    async def test_successBothAlgorithms(self) -> None:
        """
        A right answer with MD5 or SHA-256 reaches the registrar, with the
        authenticated identity on the transaction.
        """
        for algorithm in ("MD5", "SHA-256"):
            challenge = await self.challenge(algorithm=algorithm)
            response = await self.send(request(auth=credentials(challenge)))
            self.assertEqual(response.status, 200, algorithm)
        self.assertEqual([tx.authenticated for tx in self.handled],
                         [Identity("alice", REALM)] * 2)
        self.assertEqual(self.auth.stats["authenticated"], 2)

    async def test_storedHa1(self) -> None:
        """
        A subscriber stored with an MD5 ha1 only authenticates with MD5;
        a SHA-256 answer cannot be checked and is challenged again.
        """
        challenge = await self.challenge(toUser="carol")
        response = await self.send(request(toUser="carol", auth=credentials(
            challenge, user="carol", storedHa1=ha1("carol"))))
        self.assertEqual(response.status, 200)
        challenge = await self.challenge(toUser="carol", algorithm="SHA-256")
        response = await self.send(request(toUser="carol", auth=credentials(
            challenge, user="carol")))
        self.assertEqual(response.status, 401)

    async def test_userAtDomain(self) -> None:
        """
        A client that sends C{user@domain} as its digest user name (the
        C{ha1b} form) is authenticated as that user.
        """
        challenge = await self.challenge()
        response = await self.send(request(auth=credentials(challenge, user="alice@example.com")))
        self.assertEqual(response.status, 200)
        self.assertEqual(self.handled[0].authenticated, Identity("alice", REALM))

    async def test_wrongPassword(self) -> None:
        """
        A wrong password is challenged again (not stale) and counted.
        """
        challenge = await self.challenge()
        response = await self.send(request(auth=credentials(challenge, password="guess")))
        self.assertEqual(response.status, 401)
        self.assertTrue(all("stale" not in c for c in challenges(response)))
        self.assertEqual(self.handled, [])
        self.assertEqual(self.auth.stats["failed"], 1)

    async def test_unknownUser(self) -> None:
        """
        An unknown user gets the same answer as a wrong password.
        """
        challenge = await self.challenge(toUser="mallory")
        response = await self.send(request(toUser="mallory", auth=credentials(
            challenge, user="mallory")))
        self.assertEqual(response.status, 401)
        self.assertEqual(self.handled, [])
        self.assertEqual(self.auth.stats["failed"], 1)

    async def test_staleNonce(self) -> None:
        """
        A right answer with an expired nonce gets a new challenge with
        C{stale=true}; answering that one succeeds.
        """
        challenge = await self.challenge()
        self.clock.advance(self.lifetime + 1)
        response = await self.send(request(auth=credentials(challenge)))
        self.assertEqual(response.status, 401)
        fresh = [c for c in challenges(response) if c["algorithm"] == "MD5"][0]
        self.assertEqual(fresh["stale"], "true")
        self.assertNotEqual(fresh["nonce"], challenge["nonce"])
        response = await self.send(request(auth=credentials(fresh)))
        self.assertEqual(response.status, 200)

    async def test_expiredNonceWrongPassword(self) -> None:
        """
        A wrong answer with an expired nonce is not called stale.
        """
        challenge = await self.challenge()
        self.clock.advance(self.lifetime + 1)
        response = await self.send(request(auth=credentials(challenge, password="x")))
        self.assertEqual(response.status, 401)
        self.assertTrue(all("stale" not in c for c in challenges(response)))

    async def test_replayedNonceCount(self) -> None:
        """
        The same credentials sent again (a replay) are refused with a new
        challenge; a higher nonce-count on the same nonce is accepted.
        """
        challenge = await self.challenge()
        auth = credentials(challenge, nc=1)
        self.assertEqual((await self.send(request(auth=auth))).status, 200)
        replay = await self.send(request(auth=auth))
        self.assertEqual(replay.status, 401)
        self.assertEqual(challenges(replay)[0]["stale"], "true")
        self.assertEqual((await self.send(request(auth=credentials(challenge, nc=2)))).status, 200)
        self.assertEqual(self.auth.stats["replayed"], 1)
        self.assertEqual(len(self.handled), 2)

    async def test_userMismatch(self) -> None:
        """
        Alice, with her right password, cannot register Bob: 403.
        """
        challenge = await self.challenge(toUser="bob")
        response = await self.send(request(toUser="bob", auth=credentials(challenge)))
        self.assertEqual(response.status, 403)
        self.assertEqual(self.handled, [])
        self.assertEqual(self.auth.stats["forbidden"], 1)

    async def test_unsupportedAlgorithm(self) -> None:
        """
        An answer with an algorithm not offered (SHA-512-256, MD5-sess) gets
        a new challenge.
        """
        challenge = await self.challenge()
        for algorithm in ("SHA-512-256", "MD5-sess"):
            auth = credentials(challenge, algorithm="MD5").replace(
                "algorithm=MD5", "algorithm=" + algorithm)
            response = await self.send(request(auth=auth))
            self.assertEqual(response.status, 401, algorithm)
            self.assertEqual(len(challenges(response)), 2)
        self.assertEqual(self.handled, [])

    async def test_malformed(self) -> None:
        """
        Credentials without qop, with a bad quoted string, or for another
        Request-URI are refused with 400.
        """
        challenge = await self.challenge()
        for auth in (credentials(challenge, qop=None),
                     'Digest realm="example.com", username="alice',
                     credentials(challenge, uri="sip:other.example.com")):
            response = await self.send(request(auth=auth))
            self.assertEqual(response.status, 400, auth)
        self.assertEqual(self.handled, [])

    async def test_inviteProxyChallenge(self) -> None:
        """
        An INVITE from a local user is challenged with 407 and
        Proxy-Authenticate for the From domain; with credentials it goes on,
        without the Proxy-Authorization for our realm.
        """
        response = await self.send(request("INVITE", toUser="bob", fromUser="alice",
                                           uri="sip:bob@example.com"))
        self.assertEqual(response.status, 407)
        [challenge] = [c for c in challenges(response) if c["algorithm"] == "SHA-256"]
        auth = credentials(challenge, method="INVITE", uri="sip:bob@example.com")
        response = await self.send(request("INVITE", toUser="bob", fromUser="alice",
                                           uri="sip:bob@example.com", auth=auth))
        self.assertEqual(response.status, 200)
        [tx] = self.handled
        self.assertEqual(tx.authenticated, Identity("alice", REALM))
        self.assertNotIn("Proxy-Authorization", tx.request.headers)

    async def test_inviteAsSomeoneElse(self) -> None:
        """
        Alice's credentials in an INVITE whose From is Bob: 403.
        """
        response = await self.send(request("INVITE", fromUser="bob", uri="sip:x@example.com"))
        [challenge] = [c for c in challenges(response) if c["algorithm"] == "MD5"]
        auth = credentials(challenge, method="INVITE", uri="sip:x@example.com")
        response = await self.send(request("INVITE", fromUser="bob", uri="sip:x@example.com",
                                           auth=auth))
        self.assertEqual(response.status, 403)

    async def test_notChallenged(self) -> None:
        """
        Methods not configured, and requests from foreign domains, pass
        without a challenge.
        """
        response = await self.send(request("MESSAGE", uri="sip:bob@example.com"))
        self.assertEqual(response.status, 200)
        response = await self.send(request("INVITE", fromDomain="elsewhere.example",
                                           uri="sip:bob@example.com"))
        self.assertEqual(response.status, 200)
        self.assertEqual(len(self.handled), 2)

    async def test_noSecretsLogged(self) -> None:
        """
        Successes and every kind of refusal log nothing that contains the
        password, an ha1, a response digest or the Authorization header.
        """
        with capturedLogs() as events:
            challenge = await self.challenge()
            good = credentials(challenge)
            await self.send(request(auth=good))
            bad = credentials(challenge, password="wrong-" + PASSWORD, nc=2)
            await self.send(request(auth=bad))
            mismatch = credentials(challenge, nc=3)
            await self.send(request(toUser="bob", auth=mismatch))
            await self.send(request(auth=good))  # replay
        self.assertTrue(events)
        secretsSeen = [PASSWORD, ha1("alice"), ha1("alice", "SHA-256"), ha1("carol"),
                       good, bad, mismatch]
        for auth in (good, bad, mismatch):
            secretsSeen.append(parseDigest(auth)["response"])  # type: ignore[index]
        for event in events:
            text = (formatEvent(event) or "") + repr(event)
            for secret in secretsSeen:
                self.assertNotIn(secret, text)


async def _memorySource(self: Any) -> MemoryCredentials:
    return MemoryCredentials([
        Subscriber("alice", REALM, password=PASSWORD),
        Subscriber("bob", REALM, password="bobs-" + PASSWORD),
        Subscriber("carol", REALM, ha1=ha1("carol")),
    ])


class MemoryAuthTests(AuthTestsMixin, TestCase):
    """
    Authentication with L{MemoryCredentials}.
    """

    makeSource = _memorySource


class FileAuthTests(AuthTestsMixin, TestCase):
    """
    Authentication with a credential file (L{loadCredentialFile}).
    """

    async def makeSource(self) -> MemoryCredentials:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# users\n\nalice@example.com:{}\nbob@Example.com:password=bobs-{}\n"
                    "carol@example.com:ha1={}\n".format(PASSWORD, PASSWORD, ha1("carol")))
        return loadCredentialFile(path)


class PostgresAuthTests(AuthTestsMixin, TestCase):
    """
    Authentication with Kamailio's C{subscriber} table in a real
    PostgreSQL, read through the location store's pool.
    """

    timeout = 60

    async def makeSource(self) -> PostgresCredentials:
        from sipcore.location import PostgresLocationStore
        from tests.dbhelpers import createTestSchema

        schema = await createTestSchema(self, withLocation=False)  # type: ignore[arg-type]
        store = PostgresLocationStore(schema.dsn, reactor)
        await store.start()
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        await initSubscriberSchema(store.pool)
        await initSubscriberSchema(store.pool)  # idempotent
        rows = [
            ("alice", REALM, PASSWORD, ha1("alice"), ""),
            ("bob", REALM, "bobs-" + PASSWORD, "", ""),
            ("carol", REALM, "", ha1("carol"), h("MD5", "carol@example.com:example.com:x")),
        ]
        for row in rows:
            await store.pool.runOperation(
                "INSERT INTO subscriber (username, domain, password, ha1, ha1b) "
                "VALUES (%s, %s, %s, %s, %s)", row)
        version = await store.pool.runQuery(
            "SELECT table_version FROM version WHERE table_name = %s", ("subscriber",))
        self.assertEqual(version, [(7,)])  # type: ignore[attr-defined]
        source = PostgresCredentials(store.pool)
        self.store = store
        return source

    async def test_databaseAway(self) -> None:
        """
        While the subscriber table cannot be read, authenticated requests
        get 503 with Retry-After (logged once); they authenticate again
        once it can.
        """
        challenge = await self.challenge()
        pool = self.source.pool
        self.source.pool = _FailingPool()
        with capturedLogs() as events:
            for nc in (1, 2):
                response = await self.send(request(auth=credentials(challenge, nc=nc)))
                self.assertEqual(response.status, 503)
                self.assertEqual(response.headers.first("Retry-After"), "5")
        warnings = [e for e in events if e.get("log_level") is not None
                    and e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 2)  # the source's and the guard's, once each
        self.source.pool = pool
        response = await self.send(request(auth=credentials(challenge, nc=3)))
        self.assertEqual(response.status, 200)


class _FailingPool:
    def runQuery(self, *args: Any) -> defer.Deferred[Any]:
        import psycopg2

        return defer.fail(psycopg2.OperationalError("server closed the connection"))


class NonceTests(SynchronousTestCase):
    """
    L{Nonces}: signed, expiring, replay-tracked in bounded memory.
    """

    def test_signed(self) -> None:
        """
        A nonce verifies with its secret only; a tampered one does not.
        """
        clock = Clock()
        nonces = Nonces(b"one", clock)
        nonce = nonces.issue()
        self.assertEqual(nonces.check(nonce), NonceState.VALID)
        self.assertEqual(Nonces(b"one", clock).check(nonce), NonceState.VALID)
        self.assertEqual(Nonces(b"two", clock).check(nonce), NonceState.INVALID)
        tampered = ("A" if nonce[0] != "A" else "B") + nonce[1:]
        for bad in (tampered, "", "!!!", nonce + "AAAA", "x" * 500):
            self.assertEqual(nonces.check(bad), NonceState.INVALID)

    def test_expiry(self) -> None:
        """
        After C{lifetime} seconds a nonce is stale; one from far in the
        future (another node's wrong clock) is invalid.
        """
        clock = Clock()
        clock.advance(1000)
        nonces = Nonces(b"k", clock, lifetime=10)
        nonce = nonces.issue()
        clock.advance(10)
        self.assertEqual(nonces.check(nonce), NonceState.VALID)
        clock.advance(0.01)
        self.assertEqual(nonces.check(nonce), NonceState.STALE)
        future = Clock()
        future.advance(2000)
        self.assertEqual(nonces.check(Nonces(b"k", future).issue()), NonceState.INVALID)

    def test_counts(self) -> None:
        """
        Each nonce-count is accepted once, increasing only.
        """
        nonces = Nonces(b"k", Clock())
        nonce = nonces.issue()
        self.assertEqual([nonces.use(nonce, nc) for nc in (1, 1, 3, 2, 4)],
                         [True, False, True, False, True])

    def test_evictionNeverReopensReplay(self) -> None:
        """
        With C{maxTracked} nonces tracked, the oldest is forgotten, and a
        nonce issued no later than a forgotten one is refused rather than
        accepted afresh; newer nonces still work.
        """
        clock = Clock()
        nonces = Nonces(b"k", clock, maxTracked=2)
        issued = []
        for _ in range(3):
            issued.append(nonces.issue())
            clock.advance(1)
        for nonce in issued:
            self.assertTrue(nonces.use(nonce, 1))
        self.assertEqual(len(nonces), 2)
        self.assertFalse(nonces.use(issued[0], 2))
        self.assertTrue(nonces.use(issued[2], 2))
        self.assertTrue(nonces.use(nonces.issue(), 1))

    def test_reprHidesSecret(self) -> None:
        """
        The secret is not in the repr.
        """
        self.assertNotIn("hunter2", repr(Nonces(b"hunter2", Clock())))


class ParseDigestTests(SynchronousTestCase):
    """
    L{parseDigest}.
    """

    def test_parse(self) -> None:
        """
        Quoted and token values, escapes, names case-insensitive.
        """
        self.assertEqual(
            parseDigest('Digest Username="a\\"b", realm="x, y",NC=00000001 ,qop=auth'),
            {"username": 'a"b', "realm": "x, y", "nc": "00000001", "qop": "auth"})
        self.assertIsNone(parseDigest('Basic YWxhZGRpbjpvcGVuc2VzYW1l'))

    def test_malformed(self) -> None:
        """
        Unterminated quotes, missing values and repeated parameters raise.
        """
        for text in ('Digest a="x', "Digest a=", "Digest a", 'Digest a=1, a=2'):
            self.assertRaises(ValueError, parseDigest, text)


class CredentialFileTests(SynchronousTestCase):
    """
    L{loadCredentialFile}.
    """

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_errorsHideContent(self) -> None:
        """
        A malformed line is reported by number, without its content.
        """
        e = self.assertRaises(ValueError, loadCredentialFile,
                              self.write("alice@example.com:ok\nno-domain:topsecret\n"))
        self.assertIn("line 2", str(e))
        self.assertNotIn("topsecret", str(e))
        e = self.assertRaises(ValueError, loadCredentialFile,
                              self.write("bob@example.com:ha1=nothex\n"))
        self.assertIn("line 1", str(e))
        self.assertRaises(ValueError, loadCredentialFile, "/nonexistent/users")

    def test_entries(self) -> None:
        """
        Passwords (with colons), escaped passwords and hashes for both
        algorithms are read; the repr shows no secret.
        """
        md5, sha = ha1("a"), ha1("a", "SHA-256")
        source = loadCredentialFile(self.write(
            "a@example.com:ha1={},{}\nb@example.com:pa:ss\nc@example.com:password=ha1=x\n"
            .format(md5, sha)))
        a = self.successResultOf(source.lookup("a", "EXAMPLE.com"))
        self.assertEqual((a.ha1For("MD5", REALM, "a"), a.ha1For("SHA-256", REALM, "a")),
                         (md5, sha))
        b = self.successResultOf(source.lookup("b", REALM))
        self.assertEqual(b.password, "pa:ss")
        self.assertEqual(self.successResultOf(source.lookup("c", REALM)).password, "ha1=x")
        self.assertNotIn("pa:ss", repr(b))


class GuardFailureTests(SynchronousTestCase):
    """
    What the core does when a guard breaks, and the rate-limit penalty for
    failed authentications.
    """

    def test_guardRaises(self) -> None:
        """
        A guard that raises gets the request answered 500, logged.
        """
        core = SIPCore(Clock(), domains=[REALM])
        core.route("REGISTER", lambda tx: self.fail("handler reached"))

        def broken(tx: Any) -> bool:
            raise RuntimeError("boom")

        core.addGuard(broken)
        flow = FakeFlow("udp")
        core.messageReceived(request(), flow)
        [response] = flow.messages()
        self.assertEqual(response.status, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_failuresCostTokens(self) -> None:
        """
        Each failed authentication takes C{failureCost} requests from the
        source's rate bucket, so password guessing is throttled.
        """
        clock = Clock()
        core = SIPCore(clock, domains=[REALM])
        limiter = RateLimiter(clock, rate=1, burst=30, overdraft=0)
        core.limiter = limiter
        auth = DigestAuthenticator(
            MemoryCredentials([Subscriber("alice", REALM, password=PASSWORD)]), clock,
            isLocalDomain=core.isLocal, secret=b"k", limiter=limiter, failureCost=10)
        core.addGuard(auth)
        core.route("REGISTER", lambda tx: core.respond(tx, 200))
        flow = FakeFlow("udp", remote=("192.0.2.1", 5070))
        core.messageReceived(request(), flow)
        [first] = flow.messages()
        challenge = challenges(first)[1]
        statuses = []
        for nc in range(1, 6):
            flow.sent.clear()
            core.messageReceived(request(auth=credentials(challenge, password="guess", nc=nc)),
                                 flow)
            statuses.append([m.status for m in flow.messages()])
        # 30 tokens: 1 for the challenge, 11 for each failure (its request
        # and the penalty), then the bucket is empty and guessing is dropped.
        self.assertEqual(statuses, [[401], [401], [401], [], []])
        self.assertEqual(limiter.stats["penalized"], 3)

    def test_unavailableSourceType(self) -> None:
        """
        L{CredentialsUnavailable} is what the PostgreSQL source fails with.
        """
        source = PostgresCredentials(_FailingPool())
        self.failureResultOf(source.lookup("a", REALM), CredentialsUnavailable)
        self.assertIsInstance(Request("REGISTER", "sip:example.com"), Request)


class CredentialSourceInterfaceTests(SynchronousTestCase):
    """
    The credential sources provide L{ICredentialSource}.
    """

    def test_memory(self) -> None:
        """
        L{MemoryCredentials} provides the interface.
        """
        from zope.interface.verify import verifyObject

        from sipcore.interfaces import ICredentialSource
        from sipcore.sip.auth import MemoryCredentials

        self.assertTrue(verifyObject(ICredentialSource, MemoryCredentials()))

    def test_postgres(self) -> None:
        """
        L{PostgresCredentials} provides the interface.
        """
        from zope.interface.verify import verifyObject

        from sipcore.interfaces import ICredentialSource
        from sipcore.sip.auth import PostgresCredentials

        self.assertTrue(verifyObject(ICredentialSource, PostgresCredentials(object())))
