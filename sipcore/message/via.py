# -*- test-case-name: tests.test_message_via -*-
"""
The Via header (RFC 3261 section 20.42, RFC 3581 C{rport}).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from sipcore.message._syntax import (
    TOKEN_CHARS,
    Params,
    findParam,
    formatParams,
    parseParams,
    removeParam,
    replaceParam,
    skipWhitespace,
    splitList,
)
from sipcore.message.errors import SIPParseError
from sipcore.message.uri import checkHost, formatHost, parsePort

#: The branch prefix of RFC 3261 transactions.
MAGIC_COOKIE = "z9hG4bK"

_SENT_PROTOCOL = re.compile(
    "[ \t]*([{t}]+)[ \t]*/[ \t]*([{t}]+)[ \t]*/[ \t]*([{t}]+)[ \t]+".format(t=TOKEN_CHARS)
)
_HOST = re.compile(r"[^\s:;\[\]]+")
_DIGITS = re.compile(r"[0-9]+")


@dataclasses.dataclass(init=False, unsafe_hash=True, slots=True)
class Via:
    """
    One Via value (one hop): a value, never changed once made
    (L{withParam} and L{withoutParam} make changed ones).

    @ivar protocol: the protocol name, normally C{"SIP"}.
    @ivar version: the protocol version, normally C{"2.0"}.
    @ivar transport: the transport in upper case (C{"UDP"}, C{"TCP"},
        C{"TLS"}, C{"SCTP"}, C{"WS"}, C{"WSS"} or an extension token).
    @ivar host: the sent-by host; an IPv6 address without brackets.
    @ivar port: the sent-by port, or C{None}.
    @ivar params: the parameters in order as C{(name, value)} pairs as
        written; C{value} is C{None} for a parameter without C{=}.
    """

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP"
    version: str = "2.0"

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: Params = (),
        protocol: str = "SIP",
        version: str = "2.0",
    ) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params
        self.protocol = protocol
        self.version = version

    def __str__(self) -> str:
        return (self.protocol + "/" + self.version + "/" + self.transport + " " + self.sentBy
                + formatParams(self.params))

    @property
    def sentBy(self) -> str:
        """
        The host (bracketed if IPv6) and port, as in the header.
        """
        host = formatHost(self.host)
        return host if self.port is None else host + ":" + str(self.port)

    def param(self, name: str) -> str | None:
        """
        The value of a parameter (name matched case-insensitively): C{""}
        if present without a value, C{None} if absent.
        """
        found, value = findParam(self.params, name)
        if not found:
            return None
        return "" if value is None else value

    def hasParam(self, name: str) -> bool:
        """
        Whether the Via has a parameter of that name.
        """
        return findParam(self.params, name)[0]

    @property
    def branch(self) -> str | None:
        """
        The C{branch} parameter, or C{None}.
        """
        return self.param("branch")

    @property
    def received(self) -> str | None:
        """
        The C{received} address (brackets of an IPv6 address removed), or
        C{None}.
        """
        value = self.param("received")
        if value is not None and value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
        return value

    @property
    def rport(self) -> int | bool | None:
        """
        The C{rport} parameter: C{None} if absent, C{True} if present
        without a value (a request asking for it), else the port number.
        """
        found, value = findParam(self.params, "rport")
        if not found:
            return None
        if value is None:
            return True
        return int(value)

    @property
    def maddr(self) -> str | None:
        """
        The C{maddr} parameter, or C{None}.
        """
        return self.param("maddr")

    @property
    def ttl(self) -> int | None:
        """
        The C{ttl} parameter, or C{None}.
        """
        value = self.param("ttl")
        return int(value) if value else None

    @property
    def isRFC3261Branch(self) -> bool:
        """
        Whether the branch starts with the magic cookie and has something
        after it (RFC 3261 section 8.1.1.7).
        """
        branch = self.branch
        return branch is not None and branch.startswith(MAGIC_COOKIE) and len(branch) > 7

    def copy(self, **changes: Any) -> Via:
        """
        A copy with some fields replaced.
        """
        return dataclasses.replace(self, **changes)

    def withParam(self, name: str, value: str | None = None) -> Via:
        """
        A copy with parameter C{name} set to C{value} (C{None}: no value),
        replacing any parameter of that name; e.g. a server adding
        C{received} and filling C{rport}.
        """
        return self.copy(params=replaceParam(self.params, name, value))

    def withoutParam(self, name: str) -> Via:
        """
        A copy without any parameter called C{name}.
        """
        return self.copy(params=removeParam(self.params, name))


def _checkParams(params: Params) -> None:
    for name, value in params:
        lowered = name.lower()
        if lowered == "rport" or lowered == "ttl":
            if value is not None and (_DIGITS.fullmatch(value) is None or len(value) > 5):
                raise SIPParseError("Invalid Via " + lowered)
        elif lowered == "branch" or lowered == "maddr" or lowered == "received":
            if not value or value.startswith('"'):
                raise SIPParseError("Invalid Via " + lowered)
            if lowered == "received":
                address = value[1:-1] if value.startswith("[") and value.endswith("]") else value
                checkHost(address)


def parseVia(text: str) -> Via:
    """
    Parse one Via value (no commas).

    Whitespace is allowed around C{/}, C{:}, C{;} and C{=}.  C{received}
    may be an IPv4 or IPv6 address, with or without brackets (RFC 5118
    section 4.5); C{rport} and C{ttl} must be numbers.

    @raise SIPParseError: if C{text} is not a valid Via value.
    """
    match = _SENT_PROTOCOL.match(text)
    if match is None:
        raise SIPParseError("Invalid Via sent-protocol")
    protocol, version, transport = match.groups()
    pos = match.end()
    if text.startswith("[", pos):
        close = text.find("]", pos)
        if close < 0:
            raise SIPParseError("Invalid Via host")
        host = text[pos + 1 : close]
        if ":" not in host:
            raise SIPParseError("Invalid Via host")
        pos = close + 1
    else:
        hostMatch = _HOST.match(text, pos)
        if hostMatch is None:
            raise SIPParseError("Invalid Via host")
        host = hostMatch.group()
        pos = hostMatch.end()
    checkHost(host)
    port = None
    pos = skipWhitespace(text, pos)
    if text.startswith(":", pos):
        pos = skipWhitespace(text, pos + 1)
        portMatch = _DIGITS.match(text, pos)
        if portMatch is None:
            raise SIPParseError("Invalid Via port")
        port = parsePort(portMatch.group())
        pos = portMatch.end()
    params = parseParams(text, pos, "Via")
    _checkParams(params)
    return Via(transport.upper(), host, port, params, protocol, version)


def parseViaList(text: str) -> list[Via]:
    """
    Parse a Via header line that may hold several comma-separated values.

    @raise SIPParseError: if an element is empty or invalid.
    """
    out = []
    for element in splitList(text):
        if not element:
            raise SIPParseError("Empty Via value")
        out.append(parseVia(element))
    return out
