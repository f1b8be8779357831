# -*- test-case-name: tests.test_location_memory -*-
"""
The binding record: one row of Kamailio's usrloc C{location} table.

A L{Binding} carries exactly what Kamailio's C{location} table (schema
version 9) carries, with Kamailio's conventions for the values:

  - C{connectionId} is the id of the stream connection (TCP, TLS, WS, WSS)
    the REGISTER came on, a positive number.  For a binding that is not bound
    to a stream connection (UDP, or a binding loaded back from the database)
    Kamailio writes C{-1} (registrar C{save()} sets C{tcpconn_id = -1} for
    every non-stream protocol, and usrloc writes C{tcpconn_id} as
    C{connection_id}); the column's default C{0} only appears in rows that
    were written by something else.  L{UDP_CONNECTION_ID} is that C{-1}.
    Every C{connection_id > 0} names a connection of the node C{serverId}.
  - C{expires} and C{lastModified} are POSIX times (seconds since the epoch,
    UTC); the database store converts them to and from the table's
    C{timestamp without time zone} columns as UTC.
  - C{domain} is the empty string when the address of record has no domain
    part; the database stores it as C{NULL}, as Kamailio does without
    C{use_domain}.
  - C{socket} is Kamailio's socket string, C{"proto:host:port"}, for example
    C{"tcp:127.0.0.1:5060"}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "UDP_CONNECTION_ID",
    "Binding",
    "InvalidBinding",
    "aorKey",
    "splitAor",
]

#: The C{connection_id} Kamailio writes for a binding that is not bound to a
#: stream connection (UDP).
UDP_CONNECTION_ID = -1

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1

# The latest POSIX time a PostgreSQL timestamp column can hold comfortably
# (9999-12-31T23:59:59Z); anything later is refused rather than mangled.
_MAX_TIME = 253402300799.0

#: Text fields and the most characters Kamailio's table allows for each, or
#: C{None} where the column is nullable (C{None} is accepted as the value).
_TEXT_LIMITS: dict[str, tuple[int, bool]] = {
    # field: (maximum length in characters, nullable)
    "ruid": (64, False),
    "username": (64, False),
    "domain": (64, False),
    "contact": (512, False),
    "received": (128, True),
    "path": (512, True),
    "callid": (255, False),
    "userAgent": (255, False),
    "socket": (64, True),
    "instance": (255, True),
}

#: Integer fields (PostgreSQL C{INTEGER}, 32 bits signed) and whether each
#: is nullable.
_INT_FIELDS: dict[str, bool] = {
    "cseq": False,
    "flags": False,
    "cflags": False,
    "methods": True,
    "regId": False,
    "serverId": False,
    "connectionId": False,
    "keepalive": False,
    "partition": False,
}


#: L{_TEXT_LIMITS} and L{_INT_FIELDS} as tuples, for L{_check}'s loops.
_TEXT_CHECKS = tuple((name, limit, nullable) for name, (limit, nullable) in _TEXT_LIMITS.items())
_INT_CHECKS = tuple(_INT_FIELDS.items())


class InvalidBinding(ValueError):
    """
    A binding holds a value the C{location} table cannot store exactly (too
    long, a NUL character, an integer out of range, a time that is not a
    finite number).  Stores refuse such a binding instead of truncating it.
    """


def aorKey(username: str, domain: str) -> str:
    """
    The address-of-record key of a binding, as Kamailio builds it.

    @param username: the user part.
    @param domain: the domain part, possibly empty.
    @return: C{"username@domain"}, or C{"username"} when C{domain} is empty.
    """
    if domain:
        return username + "@" + domain
    return username


def splitAor(aor: str) -> tuple[str, str]:
    """
    Split an address-of-record key at its first C{"@"}, as Kamailio's usrloc
    does.  The inverse of L{aorKey} (user parts never contain C{"@"}; see
    L{Binding}).

    @return: C{(username, domain)}, C{domain} empty when there is no C{"@"}.
    """
    username, _, domain = aor.partition("@")
    return username, domain


@dataclass(frozen=True, kw_only=True)
class Binding:
    """
    One registered contact of an address of record: a row of Kamailio's
    C{location} table.

    A binding holds only values the table can store exactly: the
    constructor raises L{InvalidBinding}, naming the field and the problem,
    for a text longer than its column, with a NUL character or not a
    C{str}; an integer out of the 32-bit range or not an C{int}; a time or
    C{q} that is not a finite number (times between 0 and the year 9999);
    an empty C{ruid}; or a user part with C{"@"} (the address of record
    could not be split back).  So every binding a store is given can be
    stored as it is.

    @ivar ruid: record unique id; the key stores save and remove by.
    @ivar username: user part of the address of record.
    @ivar domain: domain part of the address of record (lower case), or
        C{""}.
    @ivar contact: the Contact URI.
    @ivar expires: POSIX time at which the binding expires.
    @ivar received: C{"sip:ip:port"} the REGISTER came from when it differs
        from the contact (NAT), or C{None}.
    @ivar path: the Path header values (RFC 3327), or C{None}.
    @ivar q: preference, higher first.
    @ivar callid: Call-ID of the REGISTER.
    @ivar cseq: CSeq number of the REGISTER.
    @ivar lastModified: POSIX time of the last update.
    @ivar flags: Kamailio's internal flags.
    @ivar cflags: branch and contact flags.
    @ivar userAgent: User-Agent header value.
    @ivar socket: the local socket the REGISTER came on, C{"proto:ip:port"},
        or C{None}.
    @ivar methods: bitmap of methods the contact accepts, or C{None}.
    @ivar instance: C{+sip.instance} (RFC 5626), or C{None}.
    @ivar regId: C{reg-id} (RFC 5626), C{0} when absent.
    @ivar serverId: the C{server_id} of the node that holds the connection.
    @ivar connectionId: the stream connection id (positive), or
        L{UDP_CONNECTION_ID} (C{-1}) when not bound to a stream connection.
    @ivar keepalive: Kamailio's keepalive control value.
    @ivar partition: Kamailio's keepalive partition.
    """

    ruid: str
    username: str
    domain: str
    contact: str
    expires: float
    received: str | None = None
    path: str | None = None
    q: float = 1.0
    callid: str = "Default-Call-ID"
    cseq: int = 1
    lastModified: float = 0.0
    flags: int = 0
    cflags: int = 0
    userAgent: str = ""
    socket: str | None = None
    methods: int | None = None
    instance: str | None = None
    regId: int = 0
    serverId: int = 0
    connectionId: int = UDP_CONNECTION_ID
    keepalive: int = 0
    partition: int = 0

    @property
    def aor(self) -> str:
        """
        The address-of-record key, C{"username@domain"} (or C{"username"}
        when the domain is empty).
        """
        return aorKey(self.username, self.domain)

    @property
    def boundToConnection(self) -> bool:
        """
        C{True} if this binding belongs to a stream connection
        (C{connectionId > 0}) and must go when that connection closes.
        """
        return self.connectionId > 0

    def __post_init__(self) -> None:
        _check(self)

    def isExpired(self, now: float) -> bool:
        """
        @return: C{True} if the binding has expired at POSIX time C{now}
            (its expiry is at or before C{now}).
        """
        return self.expires <= now


def _isNumber(value: object) -> bool:
    """
    @return: C{True} for a finite C{int} or C{float} (not C{bool}).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def _check(binding: Binding) -> None:
    """
    Check that the C{location} table can store C{binding} exactly.

    @raise InvalidBinding: if it cannot (see L{Binding}).
    """
    values = binding.__dict__
    for name, limit, nullable in _TEXT_CHECKS:
        value = values[name]
        if value is None and nullable:
            continue
        if not isinstance(value, str):
            raise InvalidBinding("{} must be text, not {}".format(name, type(value).__name__))
        if len(value) > limit:
            raise InvalidBinding(
                "{} is {} characters long; the location table allows {}".format(
                    name, len(value), limit
                )
            )
        if "\x00" in value:
            raise InvalidBinding("{} contains a NUL character".format(name))
    if not binding.ruid:
        raise InvalidBinding("ruid must not be empty")
    if "@" in binding.username:
        raise InvalidBinding("username must not contain '@'")
    for name, nullable in _INT_CHECKS:
        value = values[name]
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidBinding("{} must be an integer, not {}".format(name, type(value).__name__))
        if not _INT32_MIN <= value <= _INT32_MAX:
            raise InvalidBinding("{} = {} is out of the 32-bit range".format(name, value))
    for name in ("expires", "lastModified"):
        value = values[name]
        if not _isNumber(value) or not 0 <= value <= _MAX_TIME:
            raise InvalidBinding(
                "{} must be a POSIX time between 0 and {:.0f}, not {!r}".format(
                    name, _MAX_TIME, value
                )
            )
    if not _isNumber(binding.q):
        raise InvalidBinding("q must be a finite number, not {!r}".format(binding.q))
