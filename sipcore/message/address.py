# -*- test-case-name: tests.test_message_address -*-
"""
Addresses: the value of To, From, Contact, Route, Record-Route and similar
headers (RFC 3261 section 20.10, C{name-addr} / C{addr-spec} followed by
header parameters).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from sipcore.message._syntax import (
    DISPLAY_TOKENS,
    QUOTED,
    Params,
    findParam,
    formatParams,
    parseParams,
    quote,
    removeParam,
    replaceParam,
    skipWhitespace,
    splitList,
    unquote,
)
from sipcore.message.errors import SIPParseError
from sipcore.message.uri import URI, parseURI

_ADDR_SPEC = re.compile(r"[^;\s]+")


@dataclasses.dataclass(init=False, unsafe_hash=True, slots=True)
class Address:
    """
    A C{name-addr} or C{addr-spec} with its header parameters: a value,
    never changed once made (L{copy} makes changed ones).

    @ivar displayName: the display name, unquoted and unescaped, or C{None}
        if there is none.
    @ivar uri: the URI.
    @ivar params: the header parameters (C{tag}, C{expires}, C{q},
        C{+sip.instance}, ...), in order, as C{(name, value)} pairs as
        written: quoted values keep their quotes, C{value} is C{None} for a
        parameter without C{=}.
    """

    displayName: str | None
    uri: URI
    params: Params = ()

    def __init__(self, displayName: str | None, uri: URI, params: Params = ()) -> None:
        self.displayName = displayName
        self.uri = uri
        self.params = params

    def __str__(self) -> str:
        text = "<" + str(self.uri) + ">"
        if self.displayName is not None:
            text = quote(self.displayName) + " " + text
        return text + formatParams(self.params)

    def param(self, name: str) -> str | None:
        """
        The value of a header parameter, name matched case-insensitively.

        @return: the value with quotes and escapes removed if it was a
            quoted string, C{""} for a parameter present without a value,
            or C{None} if it is absent.
        """
        found, value = findParam(self.params, name)
        if not found:
            return None
        if value is None:
            return ""
        if value.startswith('"'):
            return unquote(value)
        return value

    def hasParam(self, name: str) -> bool:
        """
        Whether the address has a header parameter of that name.
        """
        return findParam(self.params, name)[0]

    @property
    def tag(self) -> str | None:
        """
        The C{tag} parameter, or C{None}.
        """
        return self.param("tag") or None

    def copy(self, **changes: Any) -> Address:
        """
        A copy with some fields replaced.
        """
        return dataclasses.replace(self, **changes)

    def withParam(self, name: str, value: str | None = None) -> Address:
        """
        A copy with header parameter C{name} set to C{value} (written as
        given: quote it yourself if it needs quotes), replacing any
        parameter of that name.
        """
        return self.copy(params=replaceParam(self.params, name, value))

    def withoutParam(self, name: str) -> Address:
        """
        A copy without any header parameter called C{name}.
        """
        return self.copy(params=removeParam(self.params, name))


def _parse(text: str) -> tuple[Address, bool]:
    """
    @return: the address and whether it was a C{name-addr} (had C{<>}).
    """
    if text[:1] == "<":
        # The usual shape, <uri> and parameters: what the general path
        # below does for it, without its search for a display name.
        close = text.find(">")
        if close < 0:
            raise SIPParseError("Unterminated <> in address")
        uri = parseURI(text[1:close])
        return Address(None, uri, parseParams(text, close + 1, "address parameters")), True
    end = len(text)
    pos = skipWhitespace(text, 0)
    if pos == end:
        raise SIPParseError("Empty address")
    displayName: str | None = None
    if text[pos] == '"':
        match = QUOTED.match(text, pos)
        if match is None:
            raise SIPParseError("Unterminated quoted string in address")
        displayName = unquote(match.group())
        pos = skipWhitespace(text, match.end())
        if pos == end or text[pos] != "<":
            raise SIPParseError("Invalid address")
        nameAddr = True
    else:
        angle = text.find("<", pos)
        nameAddr = angle >= 0
        if nameAddr:
            for stop in (";", '"'):
                index = text.find(stop, pos)
                if 0 <= index < angle:
                    nameAddr = False
        if nameAddr:
            words = text[pos:angle].rstrip(" \t")
            if words:
                if DISPLAY_TOKENS.fullmatch(words) is None:
                    raise SIPParseError("Invalid display name")
                displayName = words
            pos = angle
    if nameAddr:
        close = text.find(">", pos)
        if close < 0:
            raise SIPParseError("Unterminated <> in address")
        uri = parseURI(text[pos + 1 : close])
        pos = close + 1
    else:
        match = _ADDR_SPEC.match(text, pos)
        if match is None:
            raise SIPParseError("Invalid address")
        uriText = match.group()
        if "," in uriText or "?" in uriText:
            raise SIPParseError("URI with ',' or '?' must be in <>")
        uri = parseURI(uriText)
        pos = match.end()
    params = parseParams(text, pos, "address parameters")
    return Address(displayName, uri, params), nameAddr


def parseAddress(text: str, nameAddrOnly: bool = False) -> Address:
    """
    Parse one C{name-addr} or C{addr-spec} with header parameters, as in
    a To, From or Contact value.

    In the C{addr-spec} form (no C{<>}) the URI ends at the first C{;} and
    what follows are header parameters; such a URI may not contain C{,}
    or C{?}.  A display name is a quoted string or tokens separated by
    whitespace; whitespace before C{<} is optional and none is allowed
    inside C{<>}.

    @param nameAddrOnly: require the C{name-addr} form (Route,
        Record-Route, Path, Service-Route).
    @raise SIPParseError: if C{text} is not one valid address.
    """
    address, nameAddr = _parse(text)
    if nameAddrOnly and not nameAddr:
        raise SIPParseError("Address must be in <>")
    return address


def parseAddressList(text: str, nameAddrOnly: bool = False) -> list[Address]:
    """
    Parse a comma-separated list of addresses (a Contact or Route value).

    @raise SIPParseError: if an element is empty or not a valid address.
    """
    out = []
    for element in splitList(text):
        if not element:
            raise SIPParseError("Empty element in address list")
        out.append(parseAddress(element, nameAddrOnly))
    return out
