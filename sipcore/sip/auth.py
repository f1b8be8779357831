# -*- test-case-name: tests.test_auth -*-
"""
Digest authentication (RFC 3261 section 22, RFC 8760, RFC 7616's
C{SHA-256}) as a guard of L{sipcore.sip.core.SIPCore}.

L{DigestAuthenticator} is called for each new server transaction before
its handler.  It challenges C{REGISTER} with C{401} and C{WWW-Authenticate}
(the registrar's challenge) and, when configured, other methods from local
users with C{407} and C{Proxy-Authenticate} (the proxy's challenge).  The
realm is the domain of the identity the request acts for: the To URI's host
for C{REGISTER}, the From URI's host for other requests.

Credentials come from an L{ICredentialSource}: L{MemoryCredentials} (filled
in code or from a file with L{loadCredentialFile}), or
L{PostgresCredentials}, which reads Kamailio's C{subscriber} table
(C{auth_db}, table version 7).

Nonces are stateless and signed (L{Nonces}): HMAC-SHA256 over an issue
time, random bytes and the source address the nonce was issued to, with a
secret, so every node sharing the secret verifies them, and a nonce sent
from another address is not one of ours.  An expired nonce whose response
is right is answered with a new challenge with C{stale=true}.  Replay: the
highest nonce-count seen per nonce is kept in a bounded LRU; a count not
above it is refused.

Password guessing (L{GuessingLimits}): failed authentications are counted
per account (user name and realm, whether the user exists or not); after
too many, the account's further attempts get C{403} for a while without
their password being checked, except from the sources the account
authenticated from recently.

Secrets are never logged: not passwords, not ha1 values, not the
Authorization header, not the nonce secret.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import secrets
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from sipcore.cluster.delivery import NodeRoutes
from sipcore.db.subscriber import LOOKUP as _SUBSCRIBER_LOOKUP
from sipcore.interfaces import ICredentialSource, IDatabasePool
from sipcore.message import Request, SIPParseError, parseURI
from sipcore.message._syntax import quote
from sipcore.metrics import CollectorRegistry, Metric, counterFamily, register
from sipcore.sip.core import SERVER, Refused, respond
from sipcore.throttle import LogThrottle, sourceKey

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "CredentialSource",
    "CredentialFile",
    "CredentialsUnavailable",
    "DEFAULT_AUTH_METHODS",
    "DEFAULT_FAILURE_WINDOW",
    "DEFAULT_LOCKOUT",
    "DEFAULT_MAX_FAILURES",
    "DEFAULT_NONCE_LIFETIME",
    "DigestAuthenticator",
    "FAILURE_KINDS",
    "GuessingLimits",
    "Identity",
    "MemoryCredentials",
    "NonceState",
    "Nonces",
    "PostgresCredentials",
    "Subscriber",
    "digestResponse",
    "hashHex",
    "loadCredentialFile",
    "parseDigest",
]

#: The digest algorithms supported, by their RFC 8760 names, with the hash
#: function each uses.
ALGORITHMS: dict[str, Callable[..., Any]] = {
    "SHA-256": hashlib.sha256,
    "MD5": hashlib.md5,
}

#: The algorithms challenged with unless configured otherwise: MD5 alone.
#: Some deployed clients fail on a SHA-256 challenge instead of using the
#: MD5 one beside it: baresip 1.0 (libre 1.1) on any of them, sipsak and
#: pjsip before 2.11 when it comes first (docs/security.rst, "Client
#: interoperability").
DEFAULT_ALGORITHMS: tuple[str, ...] = ("MD5",)

#: The hex length of each algorithm's digest.
_HEX_LENGTH = {"SHA-256": 64, "MD5": 32}

#: The methods challenged unless configured otherwise.
DEFAULT_AUTH_METHODS = ("REGISTER",)

#: Methods that can never be challenged (RFC 3261 section 22.1).
UNCHALLENGEABLE = frozenset({"ACK", "CANCEL"})

#: Seconds a nonce stays valid.
DEFAULT_NONCE_LIFETIME = 300.0

#: Nonces whose highest nonce-count is remembered.
DEFAULT_MAX_TRACKED_NONCES = 20000

#: Seconds a nonce issued "in the future" (another node's clock ahead of
#: ours) is still accepted.
CLOCK_SKEW = 30.0

#: Requests a failed authentication costs in the source's rate bucket.
DEFAULT_FAILURE_COST = 10.0

#: Seconds a client is asked to wait while the credential store is away.
RETRY_AFTER = 5

#: Failed authentications an account may have at once before it is locked
#: out (L{GuessingLimits}).
DEFAULT_MAX_FAILURES = 10

#: Seconds in which an account gets its whole allowance of failures back.
DEFAULT_FAILURE_WINDOW = 600.0

#: Seconds a locked-out account's attempts are refused.
DEFAULT_LOCKOUT = 900.0

#: Sources remembered per account as ones it authenticated from.
DEFAULT_KNOWN_SOURCES = 8

#: Seconds a source stays known to an account after its last success.
DEFAULT_KNOWN_SOURCE_LIFETIME = 7 * 86400.0

#: Accounts (existing users) whose failures and known sources are kept;
#: the least recently seen are forgotten first.
DEFAULT_MAX_ACCOUNTS = 100000

#: User names that do not exist whose failures are kept (a table of their
#: own, so guessing names cannot push real accounts out).
DEFAULT_MAX_UNKNOWN_ACCOUNTS = 10000

#: The kinds of failed authentication counted in
#: L{DigestAuthenticator.stats} (and the metrics), by their key.
FAILURE_KINDS = ("wrongPassword", "unknownUser", "staleNonce", "foreignNonce", "replayed",
                 "userMismatch", "malformed")

_NONCE_PREFIX = b"sipcore-nonce-v2"
_NONCE_RAW = 8 + 8 + 16


def hashHex(algorithm: str, text: str) -> str:
    """
    @return: the hex digest of C{text} (UTF-8) with C{algorithm}.
    """
    return str(ALGORITHMS[algorithm](text.encode("utf-8")).hexdigest())


def digestResponse(
    algorithm: str,
    ha1: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str,
    method: str,
    uri: str,
) -> str:
    """
    The C{response} of RFC 2617/7616 for C{qop=auth}:
    C{H(HA1:nonce:nc:cnonce:qop:H(method:uri))}.
    """
    ha2 = hashHex(algorithm, "{}:{}".format(method, uri))
    return hashHex(algorithm, ":".join((ha1, nonce, nc, cnonce, qop, ha2)))


# ---------------------------------------------------------------------------
# Credentials


@dataclass(frozen=True)
class Subscriber:
    """
    What is stored for one user, as in Kamailio's C{subscriber} table.

    @ivar username: the user part.
    @ivar domain: the domain (also the realm).
    @ivar password: the plain password, or C{None}/C{""}.
    @ivar ha1: C{H(username:domain:password)}: 32 hex digits for MD5, 64
        for SHA-256; or C{None}/C{""}.
    @ivar ha1b: C{MD5(username@domain:domain:password)}, for clients that
        send C{username@domain} as their user name; or C{None}/C{""}.
    @ivar ha1Sha256: a SHA-256 ha1 besides an MD5 one in C{ha1} (credential
        files may give both; Kamailio's table has one C{ha1} column).
    """

    username: str
    domain: str
    password: str | None = None
    ha1: str | None = None
    ha1b: str | None = None
    ha1Sha256: str | None = None

    def __repr__(self) -> str:
        # Never show secrets, even in a traceback or a debug log.
        return "<Subscriber {}@{}>".format(self.username, self.domain)

    def ha1For(self, algorithm: str, realm: str, authUser: str) -> str | None:
        """
        The HA1 for a response computed by C{authUser} in C{realm}.

        @param authUser: the C{username} the client sent: this subscriber's
            user name, or C{username@domain}.
        @return: the hex HA1, or C{None} if nothing stored allows computing
            it for C{algorithm}.
        """
        if self.password:
            return hashHex(algorithm, "{}:{}:{}".format(authUser, realm, self.password))
        if "@" in authUser:
            if algorithm == "MD5" and self.ha1b and len(self.ha1b) == 32:
                return self.ha1b.lower()
            return None
        for value in (self.ha1, self.ha1Sha256):
            if value and len(value) == _HEX_LENGTH[algorithm]:
                return value.lower()
        return None


class CredentialsUnavailable(Exception):
    """
    The credential store cannot be read now (database away).
    """


#: Kept for type hints: any L{ICredentialSource} provider.
CredentialSource = Any


@implementer(ICredentialSource)
class MemoryCredentials:
    """
    Subscribers kept in memory.
    """

    def __init__(self, subscribers: Iterable[Subscriber] = ()) -> None:
        self._subscribers: dict[tuple[str, str], Subscriber] = {}
        for subscriber in subscribers:
            self.add(subscriber)

    def __len__(self) -> int:
        return len(self._subscribers)

    def add(self, subscriber: Subscriber) -> None:
        """
        Add (or replace) a subscriber.
        """
        self._subscribers[(subscriber.username, subscriber.domain.lower())] = subscriber

    def lookup(self, username: str, domain: str) -> defer.Deferred[Subscriber | None]:
        return defer.succeed(self._subscribers.get((username, domain.lower())))


def _isHex(text: str, length: int | None = None) -> bool:
    return (length is None or len(text) == length) and all(
        c in "0123456789abcdefABCDEF" for c in text
    ) and bool(text)


def loadCredentialFile(path: str) -> MemoryCredentials:
    """
    Read a credential file: one C{user@domain:SECRET} per line, where
    C{SECRET} is a plain password, or C{ha1=HEX} (a 32-digit MD5 or 64-digit
    SHA-256 ha1 computed with the domain as realm; both may be given,
    separated by a comma).  A password that itself starts with C{ha1=} or
    C{password=} is written C{password=...}.  Blank lines and lines starting
    with C{#} are ignored.

    @raise ValueError: for a malformed line (the message names the line
        number, never its content) or an unreadable file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ValueError("cannot read credential file {!r}: {}".format(
            path, e.strerror or type(e).__name__)) from None
    except UnicodeDecodeError:
        raise ValueError("cannot read credential file {!r}: not UTF-8 text".format(
            path)) from None
    source = MemoryCredentials()
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        aor, sep, secret = text.partition(":")
        user, at, domain = aor.rpartition("@")
        if not (sep and at and user and domain and secret):
            raise ValueError(
                "credential file {!r} line {}: expected user@domain:password "
                "or user@domain:ha1=HEX".format(path, number))
        if secret.startswith("password="):
            source.add(Subscriber(user, domain.lower(), password=secret[len("password="):]))
        elif secret.startswith("ha1="):
            md5 = sha256 = None
            for value in secret[4:].split(","):
                value = value.strip()
                if _isHex(value, 32):
                    md5 = value
                elif _isHex(value, 64):
                    sha256 = value
                else:
                    raise ValueError(
                        "credential file {!r} line {}: ha1 must be 32 (MD5) or 64 "
                        "(SHA-256) hex digits".format(path, number))
            source.add(Subscriber(user, domain.lower(), ha1=md5, ha1Sha256=sha256))
        else:
            source.add(Subscriber(user, domain.lower(), password=secret))
    return source


@implementer(ICredentialSource)
class CredentialFile:
    """
    The subscribers of a credential file (L{loadCredentialFile}), read
    again by L{reload}.

    @ivar path: the file.
    """

    def __init__(self, path: str) -> None:
        """
        @raise ValueError: the file cannot be read or has a malformed line.
        """
        self.path = path
        self._credentials = loadCredentialFile(path)

    def __len__(self) -> int:
        return len(self._credentials)

    def reload(self) -> int:
        """
        Read the file again; lookups from now on see its new content.  A
        file that cannot be read or has a malformed line changes nothing.

        @return: the number of subscribers read.
        @raise ValueError: as L{loadCredentialFile}.
        """
        self._credentials = loadCredentialFile(self.path)
        return len(self._credentials)

    def lookup(self, username: str, domain: str) -> defer.Deferred[Subscriber | None]:
        return self._credentials.lookup(username, domain)


@implementer(ICredentialSource)
class PostgresCredentials:
    """
    Subscribers in Kamailio's C{subscriber} table, read with one
    parameterized C{SELECT} (L{sipcore.db.subscriber.LOOKUP}) through the
    database's pool.

    A failed read fails the lookup with L{CredentialsUnavailable}; the
    change between readable and unreadable is logged once each way.

    @ivar lookups: statements sent.
    """

    _log = Logger()

    def __init__(self, pool: IDatabasePool) -> None:
        """
        @param pool: the database's L{IDatabasePool} (a
            L{sipcore.db.DatabasePool}), or anything with C{runQuery}.
        """
        self.pool = pool
        self.lookups = 0
        self._failing = False

    def lookup(self, username: str, domain: str) -> defer.Deferred[Subscriber | None]:
        self.lookups += 1
        d = defer.maybeDeferred(
            self.pool.runQuery, _SUBSCRIBER_LOOKUP, (username, domain.lower()))
        return d.addCallbacks(self._found, self._failed,
                              callbackArgs=(username, domain.lower()))

    def _found(self, rows: Any, username: str, domain: str) -> Subscriber | None:
        if self._failing:
            self._failing = False
            self._log.info("subscriber table readable again")
        if not rows:
            return None
        password, ha1, ha1b = rows[0]
        return Subscriber(username, domain, password or None, ha1 or None, ha1b or None)

    def _failed(self, failure: Any) -> None:
        if not self._failing:
            self._failing = True
            # The error text, never the parameters.
            self._log.warn("cannot read the subscriber table: {error}",
                           error=type(failure.value).__name__)
        raise CredentialsUnavailable("subscriber table unavailable")


# ---------------------------------------------------------------------------
# Nonces


class NonceState(enum.Enum):
    """
    What L{Nonces.check} found.
    """

    VALID = "valid"
    STALE = "stale"
    INVALID = "invalid"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        return None


class Nonces:
    """
    Signed, expiring nonces bound to a source address, with nonce-count
    replay protection.

    A nonce is C{base64url(time_ms[8] random[8] mac[16])} with C{mac} the
    first 16 bytes of C{HMAC-SHA256(secret, prefix time_ms random source)}.
    C{source} is the IP address the challenge was sent to, as the per-source
    limits count it (L{sipcore.throttle.sourceKey}: an IPv6 address by its
    /64, an IPv4-mapped address as IPv4), never the port: a NAT may give a
    client's flow a new port between the challenge and the answer, and a
    TCP or WebSocket client may answer on a new connection.  The address is
    not in the nonce; only a request from the same address verifies it, so
    a nonce used from elsewhere is indistinguishable from a forged one.

    Replay protection keeps the highest nonce-count accepted for each nonce
    in an LRU of C{maxTracked} entries.  When an entry is evicted, every
    nonce issued up to the evicted one's time and not tracked any more is
    treated as used up (the client gets a new nonce), so eviction never
    reopens a replay.  The tracking is per node: nodes sharing the secret
    verify each other's nonces but do not share their counts.
    """

    def __init__(
        self,
        secret: bytes,
        clock: IReactorTime,
        lifetime: float = DEFAULT_NONCE_LIFETIME,
        maxTracked: int = DEFAULT_MAX_TRACKED_NONCES,
    ) -> None:
        """
        @raise ValueError: for an empty secret or a non-positive limit.
        """
        if not secret:
            raise ValueError("the nonce secret must not be empty")
        if not lifetime > 0:
            raise ValueError("lifetime must be positive")
        if maxTracked < 1:
            raise ValueError("maxTracked must be positive")
        self._secret = secret
        self._clock = clock
        self.lifetime = lifetime
        self.maxTracked = maxTracked
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._horizon = -1

    def __repr__(self) -> str:
        return "<Nonces lifetime={:g}s tracked={}>".format(self.lifetime, len(self._counts))

    def _mac(self, head: bytes, source: str) -> bytes:
        message = _NONCE_PREFIX + head + sourceKey(source).encode("utf-8", "replace")
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:16]

    def issue(self, source: str) -> str:
        """
        @param source: the IP address of the client the nonce is for.
        @return: a new nonce, valid from C{source} only.
        """
        millis = int(self._clock.seconds() * 1000)
        head = struct.pack(">Q", max(0, millis)) + secrets.token_bytes(8)
        return _b64(head + self._mac(head, source))

    @staticmethod
    def _decode(nonce: str) -> bytes | None:
        if len(nonce) > 64:
            return None
        raw = _unb64(nonce)
        if raw is None or len(raw) != _NONCE_RAW:
            return None
        return raw

    def _issuedAt(self, nonce: str, source: str) -> int | None:
        raw = self._decode(nonce)
        if raw is None:
            return None
        head, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(head, source)):
            return None
        return int(struct.unpack(">Q", head[:8])[0])

    def check(self, nonce: str, source: str) -> NonceState:
        """
        @param source: the IP address the request came from.
        @return: L{NonceState.INVALID} if C{nonce} was not made with this
            secret for C{source} (or comes from too far in the future),
            L{NonceState.STALE} if it expired, else L{NonceState.VALID}.
        """
        issued = self._issuedAt(nonce, source)
        if issued is None:
            return NonceState.INVALID
        age = self._clock.seconds() - issued / 1000.0
        if age < -CLOCK_SKEW:
            return NonceState.INVALID
        if age > self.lifetime:
            return NonceState.STALE
        return NonceState.VALID

    def use(self, nonce: str, nc: int, source: str) -> bool:
        """
        Record nonce-count C{nc} for a valid C{nonce} sent from C{source}.

        @return: C{True} if C{nc} is above every count accepted for it
            before; C{False} for a replay (or a nonce forgotten by the LRU,
            or one not issued to C{source}).
        """
        issued = self._issuedAt(nonce, source)
        if issued is None:
            return False
        last = self._counts.get(nonce)
        if last is None:
            if issued <= self._horizon:
                return False
        elif nc <= last:
            return False
        self._counts[nonce] = nc
        self._counts.move_to_end(nonce)
        while len(self._counts) > self.maxTracked:
            evicted, _ = self._counts.popitem(last=False)
            raw = self._decode(evicted)  # verified when it was recorded
            if raw is not None:
                when = int(struct.unpack(">Q", raw[:8])[0])
                self._horizon = max(self._horizon, when)
        return True

    def __len__(self) -> int:
        return len(self._counts)


# ---------------------------------------------------------------------------
# Password guessing


class _Account:
    """
    What L{GuessingLimits} keeps about one account.

    @ivar tokens: failures the account may still have before it is locked.
    @ivar updated: when C{tokens} was last brought up to date.
    @ivar lockedUntil: when its lockout ends (0: not locked).
    @ivar sources: source address -> time of its last success.
    """

    __slots__ = ("tokens", "updated", "lockedUntil", "sources")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.updated = now
        self.lockedUntil = 0.0
        self.sources: dict[str, float] = {}


class GuessingLimits:
    """
    Per-account limits on failed authentications.

    An account is a user name in a realm (an L{Identity}), whether such a
    user exists or not.  Each has a token bucket of C{maxFailures} failures,
    refilled at C{maxFailures} per C{window} seconds: C{maxFailures}
    failures in a row, or more than C{maxFailures} per C{window} sustained,
    lock it out for C{lockout} seconds.  While locked, its attempts are
    refused (L{locked}), except those from its known sources: the source
    addresses (L{sipcore.throttle.sourceKey}) it authenticated from in the
    last C{knownSourceLifetime} seconds, C{knownSources} at most, so a
    guesser elsewhere cannot lock a user out of their own phone.  A success
    neither ends a lockout nor gives failures back.

    Memory is bounded: accounts of existing users and user names that do
    not exist are kept in two LRU tables (C{maxAccounts} and
    C{maxUnknown} entries), so guessing user names never pushes a real
    account's state out.

    @ivar lockouts: lockouts started.
    """

    def __init__(
        self,
        clock: IReactorTime,
        maxFailures: int = DEFAULT_MAX_FAILURES,
        window: float = DEFAULT_FAILURE_WINDOW,
        lockout: float = DEFAULT_LOCKOUT,
        knownSources: int = DEFAULT_KNOWN_SOURCES,
        knownSourceLifetime: float = DEFAULT_KNOWN_SOURCE_LIFETIME,
        maxAccounts: int = DEFAULT_MAX_ACCOUNTS,
        maxUnknown: int = DEFAULT_MAX_UNKNOWN_ACCOUNTS,
    ) -> None:
        """
        @raise ValueError: for a limit that is not positive.
        """
        if maxFailures < 1:
            raise ValueError("maxFailures must be positive")
        if not (window > 0 and lockout > 0 and knownSourceLifetime > 0):
            raise ValueError("window, lockout and knownSourceLifetime must be positive")
        if min(knownSources, maxAccounts, maxUnknown) < 1:
            raise ValueError("knownSources, maxAccounts and maxUnknown must be positive")
        self._clock = clock
        self.maxFailures = maxFailures
        self.window = float(window)
        self.lockout = float(lockout)
        self.knownSources = knownSources
        self.knownSourceLifetime = float(knownSourceLifetime)
        self.maxAccounts = maxAccounts
        self.maxUnknown = maxUnknown
        self._rate = maxFailures / self.window
        self._accounts: OrderedDict[Identity, _Account] = OrderedDict()
        self._unknown: OrderedDict[Identity, _Account] = OrderedDict()
        self.lockouts = 0

    def __repr__(self) -> str:
        return "<GuessingLimits {} failures/{:g}s, lockout {:g}s>".format(
            self.maxFailures, self.window, self.lockout)

    def __len__(self) -> int:
        return len(self._accounts) + len(self._unknown)

    def _entry(self, account: Identity, exists: bool, now: float) -> _Account:
        table = self._accounts if exists else self._unknown
        limit = self.maxAccounts if exists else self.maxUnknown
        entry = table.get(account)
        if entry is None:
            entry = table[account] = _Account(float(self.maxFailures), now)
            while len(table) > limit:
                table.popitem(last=False)
        else:
            table.move_to_end(account)
            elapsed = max(0.0, now - entry.updated)
            entry.tokens = min(float(self.maxFailures), entry.tokens + elapsed * self._rate)
            entry.updated = now
        return entry

    def isSubscriber(self, account: Identity) -> bool:
        """
        @return: whether C{account} is kept as an existing user's (it had a
            success, or a failure with a wrong password rather than an
            unknown user name).
        """
        return account in self._accounts

    def locked(self, account: Identity, source: str) -> bool:
        """
        @param source: the IP address the attempt comes from.
        @return: whether an attempt for C{account} from C{source} is to be
            refused without checking its password.
        """
        entry = self._accounts.get(account) or self._unknown.get(account)
        now = self._clock.seconds()
        if entry is None or entry.lockedUntil <= now:
            return False
        since = entry.sources.get(sourceKey(source))
        return since is None or now - since > self.knownSourceLifetime

    def failed(self, account: Identity, exists: bool) -> bool:
        """
        Count one failed authentication of C{account}.

        @param exists: whether the user exists (a wrong password) or not
            (an unknown user name).
        @return: whether this failure locked the account out.
        """
        now = self._clock.seconds()
        entry = self._entry(account, exists, now)
        entry.tokens = max(0.0, entry.tokens - 1.0)
        if entry.tokens >= 1.0 or entry.lockedUntil > now:
            return False
        entry.lockedUntil = now + self.lockout
        self.lockouts += 1
        return True

    def succeeded(self, account: Identity, source: str) -> None:
        """
        Remember C{source} as one C{account} authenticated from.
        """
        now = self._clock.seconds()
        sources = self._entry(account, True, now).sources
        key = sourceKey(source)
        sources.pop(key, None)
        sources[key] = now
        while len(sources) > self.knownSources:
            del sources[next(iter(sources))]


# ---------------------------------------------------------------------------
# Parsing credentials


_TOKEN_END = frozenset(' \t,="')


def parseDigest(value: str) -> dict[str, str] | None:
    """
    Parse a C{Digest} credentials value (C{Authorization} or
    C{Proxy-Authorization}).

    @return: the parameters, names lower-cased, quoted values unquoted;
        C{None} if the scheme is not C{Digest}.
    @raise ValueError: if the parameters are malformed (an unterminated
        quoted string, a parameter without a value, a repeated parameter).
    """
    text = value.strip()
    scheme, _, rest = text.partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and rest[i] not in _TOKEN_END:
            i += 1
        name = rest[start:i].lower()
        while i < n and rest[i] in " \t":
            i += 1
        if not name or i >= n or rest[i] != "=":
            raise ValueError("malformed Digest parameter")
        i += 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted string")
                c = rest[i]
                if c == "\\" and i + 1 < n:
                    chars.append(rest[i + 1])
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                chars.append(c)
                i += 1
            val = "".join(chars)
        else:
            start = i
            while i < n and rest[i] not in " \t,":
                i += 1
            val = rest[start:i]
            if not val:
                raise ValueError("malformed Digest parameter")
        if name in params:
            raise ValueError("repeated Digest parameter")
        params[name] = val
    return params


# ---------------------------------------------------------------------------
# The guard


@dataclass(frozen=True)
class Identity:
    """
    Who a request was authenticated as.
    """

    username: str
    domain: str

    def __str__(self) -> str:
        return "{}@{}".format(self.username, self.domain)


class _Refusal(Refused):
    """
    Answer the request with C{status}, or with a fresh challenge.

    @ivar challenge: answer with a challenge instead (C{status} is unused).
    @ivar stale: the challenge says C{stale=true}.
    @ivar failed: the request counts as a failed authentication.
    @ivar why: what to log.
    """

    def __init__(self, status: int, reason: str, challenge: bool = False,
                 stale: bool = False, failed: bool = False, why: str = "") -> None:
        super().__init__(status, reason)
        self.challenge = challenge
        self.stale = stale
        self.failed = failed
        self.why = why or reason


class DigestAuthenticator:
    """
    A guard for L{sipcore.sip.core.SIPCore.addGuard} that demands Digest
    credentials.

    A request is challenged when its method is in C{methods} (never ACK or
    CANCEL) and the domain it acts for (To host for C{REGISTER}, From host
    otherwise) is one of ours (C{isLocalDomain}); requests for other
    domains pass untouched (the registrar refuses foreign domains; calls
    from foreign users cannot be authenticated here).

    On success the transaction gets an C{authenticated} attribute (an
    L{Identity}) and, for requests other than REGISTER, the credentials for
    our realm are removed from the request so they are not forwarded.

    Nonces are bound to the IP address of the request's flow
    (C{flow.remote}, whatever the transport; not the port).  Failed
    authentications are counted per account by L{GuessingLimits} (unless
    C{maxFailures} is 0); a locked-out account's attempts get C{403 Too
    many failed authentications} without their password being checked,
    except from its known sources.  A lockout is logged once per account
    (once per realm for user names that do not exist, which are never
    logged) per C{logInterval}.

    @ivar stats: a L{Counter} of C{challenged} (challenges sent),
        C{authenticated}, C{failed} (C{wrongPassword} plus C{unknownUser},
        each counted too), C{staleNonce} (a right answer with an expired
        nonce), C{foreignNonce} (a nonce not issued to this source by a
        node with our secret), C{replayed}, C{userMismatch}, C{malformed},
        C{lockouts} (accounts locked out), C{lockedOut} (attempts refused
        because their account was locked out), C{fromMember} (requests a
        cluster member forwarded, passed unchallenged), C{unavailable} (credential
        store away).
    @ivar guessing: the L{GuessingLimits}, or C{None}.
    """

    _log = Logger()

    def __init__(
        self,
        credentials: CredentialSource,
        clock: IReactorTime,
        isLocalDomain: Callable[[str], bool],
        secret: bytes | None = None,
        methods: Iterable[str] = DEFAULT_AUTH_METHODS,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        nonceLifetime: float = DEFAULT_NONCE_LIFETIME,
        maxTrackedNonces: int = DEFAULT_MAX_TRACKED_NONCES,
        limiter: Any = None,
        failureCost: float = DEFAULT_FAILURE_COST,
        logInterval: float = 60.0,
        maxFailures: int = DEFAULT_MAX_FAILURES,
        failureWindow: float = DEFAULT_FAILURE_WINDOW,
        lockout: float = DEFAULT_LOCKOUT,
        serverHeader: str = SERVER,
        metrics: CollectorRegistry | None = None,
        members: NodeRoutes | None = None,
    ) -> None:
        """
        @param credentials: the L{CredentialSource}.
        @param clock: the L{IReactorTime} for nonce times.
        @param isLocalDomain: whether a host is one of our domains.
        @param secret: the nonce secret shared by every node; C{None}: a
            random one for this process (logged as generated, never shown).
        @param methods: the methods to challenge (upper case).
        @param algorithms: the algorithms offered, in the order of their
            challenge headers (one each, RFC 8760 section 2.4).
        @param nonceLifetime: seconds a nonce is valid.
        @param maxTrackedNonces: nonces whose count is remembered.
        @param limiter: a L{sipcore.sip.limits.RateLimiter} charged
            C{failureCost} requests per failed authentication, or C{None}.
        @param logInterval: seconds between log lines about one source's
            refusals or one account's lockout.
        @param maxFailures: failed authentications an account may have at
            once before it is locked out (L{GuessingLimits}); 0: no
            per-account limit.
        @param failureWindow: seconds in which an account gets its
            C{maxFailures} back.
        @param lockout: seconds a locked-out account stays locked.
        @param serverHeader: the C{Server} header of its answers; empty:
            none.
        @param metrics: the registry its figures are served from, or
            C{None}.
        @param members: the cluster this node is a member of, or C{None}: a
            request another member forwarded to one of this node's
            connections (L{NodeRoutes.fromMember}) is not challenged, the
            member having authenticated its caller.
        @raise ValueError: for an unknown algorithm or an empty list, or a
            non-positive C{failureWindow} or C{lockout}.
        """

        algorithms = [a.upper() for a in algorithms]
        for algorithm in algorithms:
            if algorithm not in ALGORITHMS:
                raise ValueError("unsupported digest algorithm {!r} (supported: {})".format(
                    algorithm, ", ".join(ALGORITHMS)))
        if not algorithms:
            raise ValueError("at least one digest algorithm is needed")
        if secret is None:
            secret = secrets.token_bytes(32)
            self._log.info(
                "generated a random nonce secret for this process: nonces will not "
                "verify on other nodes or after a restart (set --auth-secret)")
        self.credentials = credentials
        self.isLocalDomain = isLocalDomain
        self.nonces = Nonces(secret, clock, nonceLifetime, maxTrackedNonces)
        self.methods = frozenset(m.upper() for m in methods) - UNCHALLENGEABLE
        self.algorithms = tuple(algorithms)
        self.limiter = limiter
        self.failureCost = failureCost
        self.guessing = (GuessingLimits(clock, maxFailures, failureWindow, lockout)
                         if maxFailures else None)
        self.stats: Counter[str] = Counter()
        self._throttle = LogThrottle(clock, logInterval)
        self._unavailable = False
        self.serverHeader = serverHeader
        self.members = members
        register(metrics, _AuthenticationCollector(self))

    def __repr__(self) -> str:
        return "<DigestAuthenticator methods={} algorithms={}>".format(
            ",".join(sorted(self.methods)), ",".join(self.algorithms))

    # -- the guard ----------------------------------------------------------

    def __call__(self, tx: Any) -> defer.Deferred[bool]:
        """
        Check one new server transaction.

        @return: a L{Deferred} firing with C{True} if the request may go on
            to its handler, C{False} if it was answered here (challenge,
            400, 403 or 503).  It does not fail.
        """
        request: Request = tx.request
        if request.method not in self.methods:
            return defer.succeed(True)
        if self.members is not None and self.members.fromMember(request):
            self.stats["fromMember"] += 1
            return defer.succeed(True)
        try:
            target = request.toAddr if request.method == "REGISTER" else request.fromAddr
        except SIPParseError:
            return defer.succeed(True)  # the handler answers a malformed request
        realm = (target.uri.host or "").lower()
        if not realm or not self.isLocalDomain(realm):
            return defer.succeed(True)
        d = defer.Deferred.fromCoroutine(self._check(tx, request, realm, target.uri.user or ""))
        return d.addErrback(self._crashed, tx)

    def _crashed(self, failure: Any, tx: Any) -> bool:
        self._log.failure("authentication of a request failed", failure)
        respond(tx, 500, "Server Internal Error", server=self.serverHeader)
        return False

    async def _check(self, tx: Any, request: Request, realm: str, targetUser: str) -> bool:
        proxy = request.method != "REGISTER"
        header = "Proxy-Authorization" if proxy else "Authorization"
        try:
            identity = await self._verify(request, realm, header, targetUser, tx.flow)
        except _Refusal as refusal:
            self._refuse(tx, refusal, realm, proxy)
            return False
        tx.authenticated = identity
        if proxy:
            self._stripCredentials(request, header, realm)
        self.stats["authenticated"] += 1
        return True

    async def _verify(self, request: Request, realm: str, header: str, targetUser: str,
                      flow: Any) -> Identity:
        params = self._credentialsFor(request, header, realm)
        if params is None:
            raise _Refusal(0, "", challenge=True)
        for name in ("username", "nonce", "uri", "response"):
            if not params.get(name):
                self.stats["malformed"] += 1
                raise _Refusal(400, "Bad Request (Authorization lacks {})".format(name))
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in self.algorithms:
            self.stats["malformed"] += 1
            raise _Refusal(0, "", challenge=True,
                           why="unsupported digest algorithm")
        qop = params.get("qop")
        if qop is None or qop.lower() != "auth":
            self.stats["malformed"] += 1
            raise _Refusal(400, "Bad Request (qop=auth required)")
        nc, cnonce = params.get("nc", ""), params.get("cnonce", "")
        if not _isHex(nc, 8) or not cnonce:
            self.stats["malformed"] += 1
            raise _Refusal(400, "Bad Request (nc and cnonce required)")
        if not self._sameURI(params["uri"], request):
            self.stats["malformed"] += 1
            raise _Refusal(400, "Bad Request (digest uri does not match Request-URI)")
        host = flow.remote[0]
        authUser = params["username"]
        user, at, userDomain = authUser.partition("@")
        account = Identity(user.lower(), realm)
        self._checkLockout(account, host, request)
        nonce = params["nonce"]
        state = self.nonces.check(nonce, host)
        if state is NonceState.INVALID:
            self.stats["foreignNonce"] += 1
            raise _Refusal(0, "", challenge=True, why="unknown nonce")
        if at and userDomain.lower() != realm:
            self.stats["failed"] += 1
            self.stats["unknownUser"] += 1
            raise _Refusal(0, "", challenge=True, failed=True, why="wrong domain")
        try:
            subscriber = await self.credentials.lookup(user, realm)
        except Exception:
            self.stats["unavailable"] += 1
            if not self._unavailable:
                self._unavailable = True
                self._log.warn("credentials unavailable: answering 503 to authenticated requests")
            raise _Refusal(503, "Service Unavailable") from None
        if self._unavailable:
            self._unavailable = False
            self._log.info("credentials available again")
        # Failures of attempts that were in flight with this one may have
        # locked the account while the credentials were read.
        self._checkLockout(account, host, request)
        expected = None
        if subscriber is not None:
            ha1 = subscriber.ha1For(algorithm, realm, authUser)
            if ha1 is not None:
                expected = digestResponse(algorithm, ha1, nonce, nc, cnonce, "auth",
                                          request.method, params["uri"])
        given = params["response"].lower()
        if expected is None or not hmac.compare_digest(expected.encode(), given.encode()):
            self.stats["failed"] += 1
            self.stats["unknownUser" if subscriber is None else "wrongPassword"] += 1
            self._countFailure(account, subscriber is not None, host)
            raise _Refusal(0, "", challenge=True, failed=True,
                           why="unknown user" if subscriber is None else "wrong credentials")
        if state is NonceState.STALE:
            self.stats["staleNonce"] += 1
            raise _Refusal(0, "", challenge=True, stale=True, why="stale nonce")
        if not self.nonces.use(nonce, int(nc, 16), host):
            self.stats["replayed"] += 1
            raise _Refusal(0, "", challenge=True, stale=True, why="nonce-count replayed")
        if user != targetUser:
            self.stats["userMismatch"] += 1
            raise _Refusal(403, "Forbidden (authenticated user does not match {})".format(
                "To" if request.method == "REGISTER" else "From"),
                why="user mismatch")
        if self.guessing is not None:
            self.guessing.succeeded(account, host)
        return Identity(user, realm)

    # -- password guessing --------------------------------------------------

    def _lockoutKey(self, account: Identity) -> tuple[str, str | None, str]:
        """
        The log throttle's key for C{account}'s lockout: the account for
        an existing user; one per realm for user names that do not exist
        (a guesser can make any number of them, and a user who typed a
        password as their user name must not find it in the log).
        """
        assert self.guessing is not None
        if self.guessing.isSubscriber(account):
            return ("lockout", account.username, account.domain)
        return ("lockout", None, account.domain)

    def _checkLockout(self, account: Identity, host: str, request: Request) -> None:
        """
        @raise _Refusal: C{403} if C{account} is locked out for C{host}.
        """
        if self.guessing is None or not self.guessing.locked(account, host):
            return
        self.stats["lockedOut"] += 1
        key = self._lockoutKey(account)
        suppressed = self._throttle.hit(key)
        if suppressed is not None:
            self._log.warn(
                "refused a {method} from {host} for {account}: locked out after too many "
                "failed authentications ({suppressed} more lockout events since the last report)",
                method=request.method, host=host, suppressed=suppressed,
                account=self._accountText(key))
        raise _Refusal(403, "Too many failed authentications", failed=True,
                       why="account locked out")

    def _countFailure(self, account: Identity, exists: bool, host: str) -> None:
        """
        Count a failed authentication of C{account}; log the lockout it
        starts, if it does.
        """
        if self.guessing is None or not self.guessing.failed(account, exists):
            return
        self.stats["lockouts"] += 1
        key = self._lockoutKey(account)
        suppressed = self._throttle.hit(key)
        if suppressed is not None:
            self._log.warn(
                "{account} locked out for {lockout:g} s after {failures} failed "
                "authentications, the last from {host}; its known sources may still "
                "authenticate ({suppressed} more lockout events since the last report)",
                account=self._accountText(key), lockout=self.guessing.lockout,
                failures=self.guessing.maxFailures, host=host, suppressed=suppressed)

    @staticmethod
    def _accountText(key: tuple[str, str | None, str]) -> str:
        _, username, realm = key
        if username is None:
            return "a user name that does not exist in realm {}".format(realm)
        return "account {}@{}".format(username, realm)

    # -- helpers ------------------------------------------------------------

    def _credentialsFor(self, request: Request, header: str,
                        realm: str) -> dict[str, str] | None:
        """
        The Digest credentials for C{realm}, or C{None}.

        @raise _Refusal: C{400} for malformed credentials.
        """
        for line in request.headers.lines(header):
            try:
                params = parseDigest(line)
            except ValueError:
                self.stats["malformed"] += 1
                raise _Refusal(400, "Bad Request (malformed {})".format(header)) from None
            if params is not None and params.get("realm", "").lower() == realm:
                return params
        return None

    @staticmethod
    def _sameURI(uri: str, request: Request) -> bool:
        try:
            return str(parseURI(uri)) == str(request.uri)
        except SIPParseError:
            return uri == str(request.uri)

    @staticmethod
    def _stripCredentials(request: Request, header: str, realm: str) -> None:
        lines = request.headers.lines(header)
        keep = []
        for line in lines:
            try:
                params = parseDigest(line)
            except ValueError:
                params = None
            if params is None or params.get("realm", "").lower() != realm:
                keep.append(line)
        if len(keep) != len(lines):
            request.headers.remove(header)
            for line in keep:
                request.headers.add(header, line)

    def _refuse(self, tx: Any, refusal: _Refusal, realm: str, proxy: bool) -> None:
        flow = tx.flow
        if refusal.failed and self.limiter is not None:
            self.limiter.penalize(flow, self.failureCost)
        if refusal.why and (refusal.failed or refusal.status in (400, 403)
                            or refusal.stale):
            host = flow.remote[0]
            suppressed = self._throttle.hit(("auth", host))
            if suppressed is not None:
                self._log.warn(
                    "authentication refused for a {method} from {host} in realm {realm}: "
                    "{why} ({suppressed} more refusals since the last report)",
                    method=tx.request.method, host=host, realm=realm,
                    why=refusal.why, suppressed=suppressed)
        if not refusal.challenge:
            headers = [("Retry-After", str(RETRY_AFTER))] if refusal.status == 503 else []
            respond(tx, refusal.status, refusal.reason, headers, server=self.serverHeader)
            return
        self.stats["challenged"] += 1
        nonce = self.nonces.issue(flow.remote[0])
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        headers = []
        for algorithm in self.algorithms:
            value = "Digest realm={}, nonce={}, algorithm={}, qop=\"auth\"".format(
                quote(realm), quote(nonce), algorithm)
            if refusal.stale:
                value += ", stale=true"
            headers.append((name, value))
        if proxy:
            respond(tx, 407, "Proxy Authentication Required", headers,
                    server=self.serverHeader)
        else:
            respond(tx, 401, "Unauthorized", headers, server=self.serverHeader)


def secretFromOptions(value: str | None) -> bytes | None:
    """
    The nonce secret from C{--auth-secret}, else the environment variable
    C{SIPCORE_AUTH_SECRET}, else C{None} (a random one per process).
    """
    text = value or os.environ.get("SIPCORE_AUTH_SECRET") or ""
    return text.encode("utf-8") if text else None


class _AuthenticationCollector:
    """
    Digest authentication's challenges, successes, failures by kind and
    lockouts.
    """

    def __init__(self, authenticator: DigestAuthenticator) -> None:
        self._authenticator = authenticator

    def collect(self) -> list[Metric]:
        counts = self._authenticator.stats
        return [
            counterFamily("sipcore_auth_challenges_total", "Digest challenges sent (401 and 407).",
                          values=[((), counts["challenged"])]),
            counterFamily("sipcore_auth_successes_total", "Requests authenticated.",
                          values=[((), counts["authenticated"])]),
            counterFamily("sipcore_auth_failures_total", "Failed authentications, by kind.",
                          ["kind"], [([kind], counts[kind]) for kind in FAILURE_KINDS]),
            counterFamily("sipcore_auth_lockouts_total",
                          "Accounts locked out after too many failed authentications.",
                          values=[((), counts["lockouts"])]),
            counterFamily("sipcore_auth_locked_out_total",
                          "Attempts refused with 403 because their account was locked out.",
                          values=[((), counts["lockedOut"])]),
            counterFamily("sipcore_auth_unavailable_total",
                          "Authentications answered 503: credentials unreadable.",
                          values=[((), counts["unavailable"])]),
        ]
