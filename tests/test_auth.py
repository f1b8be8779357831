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

import psycopg2
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipcore.db.subscriber import initSubscriberSchema
from sipcore.message import Request, Response, parseMessage
from sipcore.sip.auth import (
    CredentialsUnavailable,
    DigestAuthenticator,
    GuessingLimits,
    Identity,
    MemoryCredentials,
    Nonces,
    NonceState,
    PostgresCredentials,
    Subscriber,
    loadCredentialFile,
    parseDigest,
)
from sipcore.sip.core import SIPCore
from sipcore.sip.limits import RateLimiter
from sipcore.testing import FakeFlow, FakePool
from tests.mixins import TestMixin
from tests.serverhelpers import waitUntil

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


class AuthTestsMixin(TestMixin):
    """
    Authentication through the core, for one credential source.  The
    source holds: alice (password), bob (password), carol (an MD5 ha1
    only); L{makeSource} builds it.
    """

    lifetime = 300.0
    maxFailures = 3
    failureWindow = 60.0
    lockout = 600.0

    async def makeSource(self) -> Any:
        raise NotImplementedError()

    # trial waits for the coroutine; unittest's stub says setUp returns None.
    async def setUp(self) -> None:  # type: ignore[override]
        self.clock = Clock()
        self.core = SIPCore(self.clock, domains=[REALM])
        self.source = await self.makeSource()
        self.auth = DigestAuthenticator(
            self.source, self.clock, isLocalDomain=self.core.isLocal,
            secret=b"shared-secret", methods=["REGISTER", "INVITE"],
            algorithms=("MD5", "SHA-256"), nonceLifetime=self.lifetime, maxFailures=self.maxFailures,
            failureWindow=self.failureWindow, lockout=self.lockout,
        )
        self.core.addGuard(self.auth)
        self.handled: list[Any] = []

        def handler(tx: Any) -> None:
            self.handled.append(tx)
            self.core.respond(tx, 200, "OK", toTag="t")

        self.core.route("REGISTER", handler)
        self.core.routeDefault(handler)
        self.flow = FakeFlow("udp", remote=("192.0.2.1", 5070))

    async def send(self, data: bytes, flow: FakeFlow | None = None) -> Response:
        """
        Hand C{data} to the core as received on C{flow} (default
        C{self.flow}); wait (bounded) for its answer.
        """
        flow = flow or self.flow
        before = len(flow.sent)
        self.core.messageReceived(data, flow)
        await waitUntil(lambda: len(flow.sent) > before, interval=0.005, what="an answer")
        [(raw, _)] = flow.sent[before:]
        response = parseMessage(raw)
        assert isinstance(response, Response)
        return response

    async def challenge(self, method: str = "REGISTER", algorithm: str = "MD5",
                        flow: FakeFlow | None = None, **kwargs: Any) -> dict[str, str]:
        response = await self.send(request(method, **kwargs), flow)
        [found] = [c for c in challenges(response) if c["algorithm"] == algorithm]
        return found

    async def test_challenge(self) -> None:
        """
        A REGISTER without credentials gets 401 with an MD5 challenge then
        a SHA-256 one (RFC 8760), both for the To domain with qop auth,
        and a To tag; the registrar never sees it.
        """
        response = await self.send(request())
        self.assertEqual(response.status, 401)
        found = challenges(response)
        self.assertEqual([c["algorithm"] for c in found], ["MD5", "SHA-256"])
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
        self.assertEqual(self.auth.stats["userMismatch"], 1)

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

    async def test_nonceFromAnotherAddress(self) -> None:
        """
        Right credentials computed with a nonce issued to another address
        get a fresh challenge, not C{stale=true} (the nonce is not ours
        for this address), counted as C{foreignNonce}; the same answer
        from the address the nonce was issued to, on another port (a NAT
        rebinding), succeeds.
        """
        challenge = await self.challenge()
        elsewhere = FakeFlow("udp", remote=("192.0.2.99", 5070))
        response = await self.send(request(auth=credentials(challenge)), elsewhere)
        self.assertEqual(response.status, 401)
        self.assertTrue(all("stale" not in c for c in challenges(response)))
        self.assertEqual(self.auth.stats["foreignNonce"], 1)
        self.assertEqual(self.handled, [])
        rebound = FakeFlow("tcp", remote=("192.0.2.1", 41234))
        response = await self.send(request(auth=credentials(challenge)), rebound)
        self.assertEqual(response.status, 200)

    async def guess(self, flow: FakeFlow, user: str = "alice", times: int = 1,
                    password: str = "guess") -> list[int]:
        """
        C{times} attempts for C{user} from C{flow}, each with a nonce of
        its own.

        @return: the statuses of the answers.
        """
        statuses = []
        for _ in range(times):
            challenge = await self.challenge(flow=flow, toUser=user)
            response = await self.send(request(toUser=user, auth=credentials(
                challenge, user=user, password=password)), flow)
            statuses.append(response.status)
        return statuses

    async def test_lockout(self) -> None:
        """
        After C{maxFailures} failed authentications of an account, its
        further attempts get C{403} without their password being checked,
        even the right password, from any address (the guesser uses many);
        the lockout is counted.  Other accounts are not affected.
        """
        guessers = [FakeFlow("udp", remote=("198.51.100.{}".format(n), 5060))
                    for n in range(1, 5)]
        statuses = []
        for flow in guessers[:self.maxFailures]:
            statuses += await self.guess(flow)
        self.assertEqual(statuses, [401] * self.maxFailures)
        lookups = getattr(self.source, "lookups", None)
        self.assertEqual(await self.guess(guessers[-1], password=PASSWORD), [403])
        self.assertEqual(getattr(self.source, "lookups", None), lookups)
        challenge = await self.challenge(flow=guessers[0])
        response = await self.send(request(auth=credentials(challenge)), guessers[0])
        self.assertEqual((response.status, response.reason),
                         (403, "Too many failed authentications"))
        self.assertEqual(self.handled, [])
        self.assertEqual((self.auth.stats["wrongPassword"], self.auth.stats["lockouts"],
                          self.auth.stats["lockedOut"]), (self.maxFailures, 1, 2))
        self.assertEqual(await self.guess(guessers[0], user="bob", password="bobs-" + PASSWORD),
                         [200])

    async def test_knownSourceNotLockedOut(self) -> None:
        """
        While an account is locked out, its own sources (addresses it
        authenticated from before) still authenticate, on any port; an
        address it never authenticated from does not.
        """
        self.assertEqual(await self.guess(self.flow, password=PASSWORD), [200])
        guesser = FakeFlow("udp", remote=("198.51.100.1", 5060))
        await self.guess(guesser, times=self.maxFailures)
        self.assertEqual(self.auth.stats["lockouts"], 1)
        rebound = FakeFlow("udp", remote=(self.flow.remote[0], 40001))
        self.assertEqual(await self.guess(rebound, password=PASSWORD), [200])
        newPhone = FakeFlow("udp", remote=("203.0.113.5", 5060))
        self.assertEqual(await self.guess(newPhone, password=PASSWORD), [403])
        self.assertEqual(len(self.handled), 2)

    async def test_lockoutEnds(self) -> None:
        """
        C{lockout} seconds after it started, the account authenticates
        from anywhere again.
        """
        guesser = FakeFlow("udp", remote=("198.51.100.1", 5060))
        await self.guess(guesser, times=self.maxFailures)
        self.clock.advance(self.lockout - 1)
        self.assertEqual(await self.guess(guesser, password=PASSWORD), [403])
        self.clock.advance(1)
        self.assertEqual(await self.guess(guesser, password=PASSWORD), [200])

    async def test_unknownUserLockedOutAlike(self) -> None:
        """
        A user name that does not exist is locked out after as many
        failures as an existing one, with the same answers, so lockouts
        do not tell which users exist; the name is never logged.
        """
        guesser = FakeFlow("udp", remote=("198.51.100.1", 5060))
        with capturedLogs() as events:
            statuses = await self.guess(guesser, user="mallory-x7", times=self.maxFailures + 1)
        self.assertEqual(statuses, [401] * self.maxFailures + [403])
        self.assertEqual((self.auth.stats["unknownUser"], self.auth.stats["lockouts"]),
                         (self.maxFailures, 1))
        texts = [formatEvent(e) or "" for e in events]
        self.assertTrue([t for t in texts if "does not exist" in t and "locked out" in t])
        self.assertFalse([t for t in texts if "mallory-x7" in t])

    async def test_lockoutLoggedOncePerInterval(self) -> None:
        """
        A lockout is logged once per account per log interval, however
        many attempts it refuses, with the account and never a password;
        the next interval's line counts what was not logged.
        """
        with capturedLogs() as events:
            for n in range(self.maxFailures + 5):
                await self.guess(FakeFlow("udp", remote=("198.51.100.{}".format(n + 1), 5060)))
            self.clock.advance(60)
            await self.guess(FakeFlow("udp", remote=("198.51.100.200", 5060)))
        lines = [formatEvent(e) or "" for e in events]
        lockouts = [t for t in lines if "alice@example.com" in t]
        self.assertEqual(len(lockouts), 2, lockouts)
        self.assertIn("locked out for 600 s", lockouts[0])
        self.assertIn("5 more lockout events", lockouts[1])

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
            elsewhere = FakeFlow("udp", remote=("192.0.2.99", 5070))
            foreign = credentials(challenge, nc=4)
            await self.send(request(auth=foreign), elsewhere)
            guesses = []
            for n in range(self.maxFailures):
                guesser = FakeFlow("udp", remote=("198.51.100.{}".format(n + 1), 5060))
                fresh = await self.challenge(flow=guesser)
                guesses.append(credentials(fresh, password="guess-{}-{}".format(n, PASSWORD)))
                await self.send(request(auth=guesses[-1]), guesser)
            fresh = await self.challenge(flow=guesser)
            locked = credentials(fresh)
            self.assertEqual((await self.send(request(auth=locked), guesser)).status, 403)
        self.assertTrue(events)
        self.assertEqual(self.auth.stats["lockouts"], 1)
        secretsSeen = [PASSWORD, ha1("alice"), ha1("alice", "SHA-256"), ha1("carol"),
                       good, bad, mismatch, foreign, locked] + guesses
        for auth in [good, bad, mismatch, foreign, locked] + guesses:
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
    PostgreSQL, read through a database's pool.
    """

    timeout = 60

    async def makeSource(self) -> PostgresCredentials:
        from tests.dbhelpers import createTestSchema, startDatabase

        schema = await createTestSchema(self, withLocation=False)  # type: ignore[arg-type]
        database = await startDatabase(self, schema.dsn)  # type: ignore[arg-type]
        pool = database.pool
        await initSubscriberSchema(pool)
        await initSubscriberSchema(pool)  # idempotent
        rows = [
            ("alice", REALM, PASSWORD, ha1("alice"), ""),
            ("bob", REALM, "bobs-" + PASSWORD, "", ""),
            ("carol", REALM, "", ha1("carol"), h("MD5", "carol@example.com:example.com:x")),
        ]
        for row in rows:
            await pool.runOperation(
                "INSERT INTO subscriber (username, domain, password, ha1, ha1b) "
                "VALUES (%s, %s, %s, %s, %s)", row)
        version = await pool.runQuery(
            "SELECT table_version FROM version WHERE table_name = %s", ("subscriber",))
        self.assertEqual(version, [(7,)])  # type: ignore[attr-defined]
        return PostgresCredentials(pool)

    async def test_databaseAway(self) -> None:
        """
        While the subscriber table cannot be read, authenticated requests
        get 503 with Retry-After (logged once); they authenticate again
        once it can.
        """
        challenge = await self.challenge()
        pool = self.source.pool
        self.source.pool = FakePool(psycopg2.OperationalError("server closed the connection"))
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


class NonceTests(SynchronousTestCase):
    """
    L{Nonces}: signed, bound to a source address, expiring, replay-tracked
    in bounded memory.
    """

    source = "192.0.2.1"

    def test_signed(self) -> None:
        """
        A nonce verifies with its secret only; a tampered one does not.
        """
        clock = Clock()
        nonces = Nonces(b"one", clock)
        nonce = nonces.issue(self.source)
        self.assertEqual(nonces.check(nonce, self.source), NonceState.VALID)
        self.assertEqual(Nonces(b"one", clock).check(nonce, self.source), NonceState.VALID)
        self.assertEqual(Nonces(b"two", clock).check(nonce, self.source), NonceState.INVALID)
        tampered = ("A" if nonce[0] != "A" else "B") + nonce[1:]
        for bad in (tampered, "", "!!!", nonce + "AAAA", "x" * 500):
            self.assertEqual(nonces.check(bad, self.source), NonceState.INVALID)

    def test_boundToSource(self) -> None:
        """
        A nonce verifies only from the address it was issued to, on every
        node sharing the secret; from any other address it is invalid (not
        stale), and its nonce-count cannot be used there either.
        """
        clock = Clock()
        nonces = Nonces(b"k", clock)
        nonce = nonces.issue("192.0.2.1")
        for other in ("192.0.2.2", "198.51.100.1", "2001:db8::1", ""):
            self.assertEqual(nonces.check(nonce, other), NonceState.INVALID, other)
        self.assertFalse(nonces.use(nonce, 1, "192.0.2.2"))
        self.assertEqual(Nonces(b"k", clock).check(nonce, "192.0.2.1"), NonceState.VALID)
        self.assertTrue(nonces.use(nonce, 1, "192.0.2.1"))

    def test_sourceIsTheAddressAsLimitsCountIt(self) -> None:
        """
        The source is the IP address as the per-source limits count it:
        case does not matter, an IPv4-mapped IPv6 address is its IPv4
        address, and an IPv6 host is its /64 (its privacy addresses change
        within it).
        """
        nonces = Nonces(b"k", Clock())
        nonce = nonces.issue("192.0.2.7")
        self.assertEqual(nonces.check(nonce, "::ffff:192.0.2.7"), NonceState.VALID)
        nonce = nonces.issue("2001:DB8::1")
        self.assertEqual(nonces.check(nonce, "2001:db8::abcd:1"), NonceState.VALID)
        self.assertEqual(nonces.check(nonce, "2001:db8:0:1::1"), NonceState.INVALID)

    def test_expiry(self) -> None:
        """
        After C{lifetime} seconds a nonce is stale; one from far in the
        future (another node's wrong clock) is invalid.
        """
        clock = Clock()
        clock.advance(1000)
        nonces = Nonces(b"k", clock, lifetime=10)
        nonce = nonces.issue(self.source)
        clock.advance(10)
        self.assertEqual(nonces.check(nonce, self.source), NonceState.VALID)
        clock.advance(0.01)
        self.assertEqual(nonces.check(nonce, self.source), NonceState.STALE)
        future = Clock()
        future.advance(2000)
        self.assertEqual(nonces.check(Nonces(b"k", future).issue(self.source), self.source),
                         NonceState.INVALID)

    def test_counts(self) -> None:
        """
        Each nonce-count is accepted once, increasing only.
        """
        nonces = Nonces(b"k", Clock())
        nonce = nonces.issue(self.source)
        self.assertEqual([nonces.use(nonce, nc, self.source) for nc in (1, 1, 3, 2, 4)],
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
            issued.append(nonces.issue(self.source))
            clock.advance(1)
        for nonce in issued:
            self.assertTrue(nonces.use(nonce, 1, self.source))
        self.assertEqual(len(nonces), 2)
        self.assertFalse(nonces.use(issued[0], 2, self.source))
        self.assertTrue(nonces.use(issued[2], 2, self.source))
        self.assertTrue(nonces.use(nonces.issue(self.source), 1, self.source))

    def test_reprHidesSecret(self) -> None:
        """
        The secret is not in the repr.
        """
        self.assertNotIn("hunter2", repr(Nonces(b"hunter2", Clock())))


class GuessingLimitsTests(SynchronousTestCase):
    """
    L{GuessingLimits}: a token bucket of failures per account, lockouts
    that spare the account's known sources, bounded memory.
    """

    alice = Identity("alice", REALM)

    def limits(self, **kwargs: Any) -> tuple[Clock, GuessingLimits]:
        clock = Clock()
        kwargs.setdefault("maxFailures", 3)
        kwargs.setdefault("window", 60.0)
        kwargs.setdefault("lockout", 300.0)
        return clock, GuessingLimits(clock, **kwargs)

    def test_bucket(self) -> None:
        """
        C{maxFailures} failures in a row lock the account; the allowance
        comes back at C{maxFailures} per C{window}, so failures spread out
        at that rate never lock it.
        """
        clock, limits = self.limits()
        self.assertEqual([limits.failed(self.alice, True) for _ in range(2)], [False, False])
        clock.advance(60)
        self.assertEqual([limits.failed(self.alice, True) for _ in range(2)], [False, False])
        for _ in range(30):
            clock.advance(20)
            self.assertFalse(limits.failed(self.alice, True))
        self.assertFalse(limits.locked(self.alice, "198.51.100.1"))
        # One failure left: the next one, coming faster, locks.
        self.assertTrue(limits.failed(self.alice, True))
        self.assertTrue(limits.locked(self.alice, "198.51.100.1"))
        self.assertEqual(limits.lockouts, 1)

    def test_lockoutLasts(self) -> None:
        """
        A lockout lasts C{lockout} seconds from the failure that started
        it; failures during it (from known sources) do not prolong it, and
        a success does not end it.
        """
        clock, limits = self.limits()
        limits.succeeded(self.alice, "192.0.2.1")
        for _ in range(3):
            limits.failed(self.alice, True)
        clock.advance(299)
        self.assertFalse(limits.failed(self.alice, True))
        limits.succeeded(self.alice, "192.0.2.1")
        self.assertTrue(limits.locked(self.alice, "198.51.100.1"))
        clock.advance(1)
        self.assertFalse(limits.locked(self.alice, "198.51.100.1"))
        self.assertEqual(limits.lockouts, 1)

    def test_knownSources(self) -> None:
        """
        A source the account authenticated from is not locked out, for
        C{knownSourceLifetime} after its last success; only the
        C{knownSources} most recent are remembered.  Sources are addresses
        as the per-source limits count them.
        """
        clock, limits = self.limits(knownSources=2, knownSourceLifetime=1000, lockout=5000)
        for address in ("192.0.2.1", "192.0.2.2", "2001:db8::1"):
            limits.succeeded(self.alice, address)
            clock.advance(1)
        for _ in range(3):
            limits.failed(self.alice, True)
        self.assertEqual(
            [limits.locked(self.alice, a) for a in
             ("192.0.2.1", "192.0.2.2", "2001:db8::2", "::ffff:192.0.2.2", "198.51.100.1")],
            [True, False, False, False, True])
        clock.advance(998)
        self.assertFalse(limits.locked(self.alice, "192.0.2.2"))
        clock.advance(2)
        self.assertTrue(limits.locked(self.alice, "192.0.2.2"))

    def test_accountsAreUserAndRealm(self) -> None:
        """
        Another user, or the same user name in another realm, has its own
        allowance.
        """
        _, limits = self.limits()
        for _ in range(3):
            limits.failed(self.alice, True)
        self.assertFalse(limits.locked(Identity("bob", REALM), "198.51.100.1"))
        self.assertFalse(limits.locked(Identity("alice", "example.org"), "198.51.100.1"))

    def test_unknownNamesCannotEvictAccounts(self) -> None:
        """
        User names that do not exist are kept in a bounded table of their
        own: guessing any number of them keeps memory bounded and never
        forgets an existing account's failures or known sources.
        """
        _, limits = self.limits(maxAccounts=10, maxUnknown=5)
        limits.succeeded(self.alice, "192.0.2.1")
        for _ in range(2):
            limits.failed(self.alice, True)
        for n in range(1000):
            limits.failed(Identity("user{}".format(n), REALM), False)
        self.assertEqual(len(limits), 6)
        self.assertTrue(limits.isSubscriber(self.alice))
        self.assertFalse(limits.isSubscriber(Identity("user999", REALM)))
        self.assertTrue(limits.failed(self.alice, True))
        self.assertFalse(limits.locked(self.alice, "192.0.2.1"))
        self.assertTrue(limits.locked(self.alice, "198.51.100.1"))

    def test_badLimits(self) -> None:
        """
        Limits that are not positive are refused.
        """
        clock = Clock()
        for kwargs in ({"maxFailures": 0}, {"window": 0}, {"lockout": -1},
                       {"knownSources": 0}, {"maxUnknown": 0}):
            self.assertRaises(ValueError, GuessingLimits, clock, **kwargs)

    def test_failuresInFlight(self) -> None:
        """
        Attempts that passed the lockout check while their credentials
        were being read are refused once the read completes if failures
        meanwhile locked the account: a guesser cannot get more guesses
        by sending many at once to a slow credential store.
        """
        clock = Clock()
        core = SIPCore(clock, domains=[REALM])
        pending: list[defer.Deferred[Any]] = []

        class SlowCredentials:
            def lookup(self, username: str, domain: str) -> defer.Deferred[Any]:
                d: defer.Deferred[Any] = defer.Deferred()
                pending.append(d)
                return d

        auth = DigestAuthenticator(SlowCredentials(), clock, isLocalDomain=core.isLocal,
                                   secret=b"k", maxFailures=3)
        core.addGuard(auth)
        core.route("REGISTER", lambda tx: core.respond(tx, 200))
        flow = FakeFlow("udp", remote=("198.51.100.1", 5060))
        core.messageReceived(request(), flow)
        [first] = flow.responses()
        [challenge] = challenges(first)
        flow.sent.clear()
        for nc in range(1, 7):
            core.messageReceived(request(auth=credentials(challenge, password="guess", nc=nc)),
                                 flow)
        self.assertEqual((len(pending), flow.sent), (6, []))
        subscriber = Subscriber("alice", REALM, password=PASSWORD)
        for d in pending:
            d.callback(subscriber)
        self.assertEqual([m.status for m in flow.responses()], [401, 401, 401, 403, 403, 403])
        self.assertEqual(auth.stats["wrongPassword"], 3)


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

    def test_unreadable(self) -> None:
        """
        A file that cannot be opened, or is not UTF-8 text, is refused with
        a message that says why and shows none of its content.
        """
        e = self.assertRaises(ValueError, loadCredentialFile, "/nonexistent/users")
        self.assertIn("No such file or directory", str(e))
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"alice@example.com:secret\xff\n")
        e = self.assertRaises(ValueError, loadCredentialFile, path)
        self.assertIn("not UTF-8 text", str(e))
        self.assertNotIn("secret", str(e))

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
        assert a is not None
        self.assertEqual((a.ha1For("MD5", REALM, "a"), a.ha1For("SHA-256", REALM, "a")),
                         (md5, sha))
        b = self.successResultOf(source.lookup("b", REALM))
        c = self.successResultOf(source.lookup("c", REALM))
        assert b is not None and c is not None
        self.assertEqual(b.password, "pa:ss")
        self.assertEqual(c.password, "ha1=x")
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
        [response] = flow.responses()
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
        [first] = flow.responses()
        [challenge] = challenges(first)
        statuses = []
        for nc in range(1, 6):
            flow.sent.clear()
            core.messageReceived(request(auth=credentials(challenge, password="guess", nc=nc)),
                                 flow)
            statuses.append([m.status for m in flow.responses()])
        # 30 tokens: 1 for the challenge, 11 for each failure (its request
        # and the penalty), then the bucket is empty and guessing is dropped.
        self.assertEqual(statuses, [[401], [401], [401], [], []])
        self.assertEqual(limiter.stats["penalized"], 3)

    def test_unavailableSourceType(self) -> None:
        """
        L{CredentialsUnavailable} is what the PostgreSQL source fails with.
        """
        source = PostgresCredentials(
            FakePool(psycopg2.OperationalError("server closed the connection")))
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

        self.assertTrue(verifyObject(ICredentialSource, PostgresCredentials(FakePool())))
