# -*- test-case-name: tests.test_message_uri -*-
"""
SIP, SIPS and TEL URIs (RFC 3261 section 19.1, RFC 3966), and any other
scheme kept as an opaque URI.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any
from urllib.parse import unquote

from sipcore.message._syntax import Params, findParam, formatParams, removeParam, replaceParam
from sipcore.message.errors import SIPParseError

_UNRESERVED = "A-Za-z0-9\\-_.!~*'()"
_USER = re.compile("[" + _UNRESERVED + "%&=+$,;?/]+")
_PASSWORD = re.compile("[" + _UNRESERVED + "%&=+$,]*")
_PARAMCHARS = re.compile("[" + _UNRESERVED + "%\\[\\]/:&+$]+")
_HNAME = re.compile("[" + _UNRESERVED + "%\\[\\]/?:+$]+")
_HVALUE = re.compile("[" + _UNRESERVED + "%\\[\\]/?:+$]*")
_HOSTNAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")
_NUMERIC_HOST = re.compile(r"[0-9.]+")
_OCTET = "(?:[01]?[0-9]{1,2}|2[0-4][0-9]|25[0-5])"
#: A dotted-quad IPv4 address, each part 0-255 (leading zeros allowed).
_IPV4 = re.compile(_OCTET + r"\." + _OCTET + r"\." + _OCTET + r"\." + _OCTET)
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]+")
_PORT = re.compile(r"[0-9]{1,5}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_BAD_CHARS = re.compile(r'[\x00-\x20\x7f<>"]')
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_TEL_NUMBER = re.compile(r"[0-9A-Fa-f*#+().\-]+")

_SIP_SCHEMES = frozenset({"sip", "sips"})

_FAST_PARAM = "[A-Za-z0-9\\-_.!~*'()\\[\\]/:&+$]+"
#: The common shape of a SIP URI, which needs no further checks but the
#: port range and an IPv4 host's octets: a user without escapes, C{;} or
#: C{?}, no password, a host name or IPv4 address, and parameters without
#: escapes.  Anything else takes the general path.
_FAST_SIP = re.compile(
    "([Ss][Ii][Pp][Ss]?):"
    "(?:([A-Za-z0-9\\-_.!~*'()&=+$,/]+)@)?"
    "([A-Za-z0-9_-]+(?:\\.[A-Za-z0-9_-]+)*\\.?)"
    "(?::([0-9]{1,5}))?"
    "((?:;" + _FAST_PARAM + "(?:=" + _FAST_PARAM + ")?)*)"
)


def unescape(text: str) -> str:
    """
    Decode the C{%HH} escapes of a URI component, once.  Octets that are
    not UTF-8 come back as lone surrogates (C{surrogateescape}).
    """
    if "%" not in text:
        return text
    return unquote(text, errors="surrogateescape")


def formatHost(host: str) -> str:
    """
    A host as it is written in a URI or Via: IPv6 addresses in brackets.
    """
    return "[" + host + "]" if ":" in host else host


@dataclasses.dataclass(init=False, unsafe_hash=True, slots=True)
class URI:
    """
    A URI: a value, never changed once made (L{copy} makes changed ones).

    For C{sip}, C{sips} and C{tel} URIs the components are split out; any
    other scheme keeps everything after C{scheme:} in L{opaque}.  Every
    component is kept as written, with its C{%HH} escapes: use
    L{unescapedUser}, L{param} and L{header} for decoded values.

    @ivar scheme: the scheme, in lower case (C{"sip"}, C{"sips"}, C{"tel"},
        ...).
    @ivar user: the user part as written, or C{None}; for C{tel} URIs, the
        telephone number.
    @ivar password: the password as written, or C{None}.
    @ivar host: the host; an IPv6 address is held B{without} its brackets
        (C{"2001:db8::1"}) and bracketed again by C{str()}.  C{None} for
        C{tel} and opaque URIs.
    @ivar port: the port number, or C{None} if none was given.
    @ivar params: the URI parameters, in order, as C{(name, value)} pairs
        as written; C{value} is C{None} for a parameter without C{=}.
    @ivar headers: the URI headers (after C{?}), as C{(name, value)} pairs
        as written.
    @ivar opaque: for a scheme other than sip, sips and tel, everything
        after the colon; otherwise C{None}.
    """

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()
    opaque: str | None = None
    _raw: str | None = dataclasses.field(default=None, compare=False, repr=False)

    def __init__(
        self,
        scheme: str,
        user: str | None = None,
        password: str | None = None,
        host: str | None = None,
        port: int | None = None,
        params: Params = (),
        headers: tuple[tuple[str, str], ...] = (),
        opaque: str | None = None,
        _raw: str | None = None,
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = params
        self.headers = headers
        self.opaque = opaque
        self._raw = _raw

    def __str__(self) -> str:
        if self._raw is not None:
            return self._raw
        if self.opaque is not None:
            return self.scheme + ":" + self.opaque
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts.append(":")
                parts.append(self.password)
            if self.host is not None:
                parts.append("@")
        if self.host is not None:
            parts.append(formatHost(self.host))
        if self.port is not None:
            parts.append(":" + str(self.port))
        parts.append(formatParams(self.params))
        if self.headers:
            parts.append("?" + "&".join(name + "=" + value for name, value in self.headers))
        return "".join(parts)

    @property
    def isSIP(self) -> bool:
        """
        Whether this is a C{sip} or C{sips} URI.
        """
        return self.scheme in _SIP_SCHEMES

    @property
    def unescapedUser(self) -> str | None:
        """
        The user part with its C{%HH} escapes decoded.
        """
        return None if self.user is None else unescape(self.user)

    @property
    def unescapedPassword(self) -> str | None:
        """
        The password with its C{%HH} escapes decoded.
        """
        return None if self.password is None else unescape(self.password)

    @property
    def hostport(self) -> str:
        """
        The host (bracketed if IPv6) and the port if there is one.
        """
        if self.host is None:
            return ""
        text = formatHost(self.host)
        return text if self.port is None else text + ":" + str(self.port)

    def _findParam(self, name: str) -> tuple[bool, str | None]:
        found, value = findParam(self.params, name)
        if found or "%" not in "".join(key for key, _ in self.params):
            return found, value
        lowered = name.lower()
        for key, value in self.params:
            if unescape(key).lower() == lowered:
                return True, value
        return False, None

    def param(self, name: str) -> str | None:
        """
        The decoded value of a URI parameter (name matched
        case-insensitively, escapes in names decoded).

        @return: the value, C{""} for a parameter present without a value
            (C{;lr}), or C{None} if it is absent.
        """
        found, value = self._findParam(name)
        if not found:
            return None
        return "" if value is None else unescape(value)

    def hasParam(self, name: str) -> bool:
        """
        Whether the URI has a parameter of that name.
        """
        return self._findParam(name)[0]

    def header(self, name: str) -> str | None:
        """
        The decoded value of a URI header (C{?name=value}), or C{None}.
        """
        lowered = name.lower()
        for key, value in self.headers:
            if unescape(key).lower() == lowered:
                return unescape(value)
        return None

    def copy(self, **changes: Any) -> URI:
        """
        A copy with some components replaced, e.g. C{uri.copy(port=5080)}.
        """
        changes["_raw"] = None
        return dataclasses.replace(self, **changes)

    def withParam(self, name: str, value: str | None = None) -> URI:
        """
        A copy with parameter C{name} set to C{value} (C{None}: no value),
        replacing any parameter of that name.
        """
        return self.copy(params=replaceParam(self.params, name, value))

    def withoutParam(self, name: str) -> URI:
        """
        A copy without any parameter called C{name}.
        """
        return self.copy(params=removeParam(self.params, name))


def invalidURI(text: str) -> URI:
    """
    Hold text that is not a valid URI, for a best-effort partial message:
    its scheme is empty and C{str()} gives the text back.
    """
    return URI(scheme="", opaque=text, _raw=text)


def _checkEscapes(text: str) -> None:
    if "%" in text and _BAD_ESCAPE.search(text) is not None:
        raise SIPParseError("Invalid escape in URI")


def checkHost(host: str) -> None:
    """
    Check a host: a domain name, an IPv4 address, or an IPv6 address
    (given without brackets).

    @raise SIPParseError: if it is none of these.
    """
    if ":" in host:
        if _IPV6_CHARS.fullmatch(host) is None:
            raise SIPParseError("Invalid IPv6 address")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise SIPParseError("Invalid IPv6 address") from None
    elif _NUMERIC_HOST.fullmatch(host) is not None:
        if _IPV4.fullmatch(host) is None:
            raise SIPParseError("Invalid IPv4 address")
    elif _HOSTNAME.fullmatch(host) is None:
        raise SIPParseError("Invalid host")


def parsePort(text: str) -> int:
    """
    @raise SIPParseError: unless C{text} is a decimal port 0-65535.
    """
    if _PORT.fullmatch(text) is None:
        raise SIPParseError("Invalid port")
    port = int(text)
    if port > 65535:
        raise SIPParseError("Invalid port")
    return port


def _parseURIParams(text: str) -> Params:
    params: list[tuple[str, str | None]] = []
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if _PARAMCHARS.fullmatch(name) is None:
            raise SIPParseError("Invalid URI parameter")
        if sep:
            if _PARAMCHARS.fullmatch(value) is None:
                raise SIPParseError("Invalid URI parameter")
            params.append((name, value))
        else:
            params.append((name, None))
    return tuple(params)


def _parseSIP(scheme: str, rest: str, text: str) -> URI:
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        user, sep, pw = userinfo.partition(":")
        if _USER.fullmatch(user) is None:
            raise SIPParseError("Invalid user in URI")
        if sep:
            if _PASSWORD.fullmatch(pw) is None:
                raise SIPParseError("Invalid password in URI")
            password = pw
    headers: tuple[tuple[str, str], ...] = ()
    question = rest.find("?")
    if question >= 0:
        headerText = rest[question + 1 :]
        rest = rest[:question]
        pairs = []
        for part in headerText.split("&"):
            name, sep, value = part.partition("=")
            if not sep or _HNAME.fullmatch(name) is None or _HVALUE.fullmatch(value) is None:
                raise SIPParseError("Invalid URI header")
            pairs.append((name, value))
        headers = tuple(pairs)
    params: Params = ()
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise SIPParseError("Invalid IPv6 reference")
        host = rest[1:close]
        if ":" not in host:
            raise SIPParseError("Invalid IPv6 reference")
        rest = rest[close + 1 :]
        hostEnd = 0
    else:
        hostEnd = len(rest)
        for stop in (":", ";"):
            index = rest.find(stop)
            if 0 <= index < hostEnd:
                hostEnd = index
        host = rest[:hostEnd]
    checkHost(host)
    rest = rest[hostEnd:]
    port = None
    if rest.startswith(":"):
        semi = rest.find(";")
        portText = rest[1:] if semi < 0 else rest[1:semi]
        port = parsePort(portText)
        rest = "" if semi < 0 else rest[semi:]
    if rest:
        if rest[0] != ";":
            raise SIPParseError("Invalid URI")
        params = _parseURIParams(rest[1:])
    return URI(scheme, user, password, host, port, params, headers, None, text)


def _parseTel(rest: str, text: str) -> URI:
    number, sep, paramText = rest.partition(";")
    if _TEL_NUMBER.fullmatch(number) is None:
        raise SIPParseError("Invalid tel URI")
    params = _parseURIParams(paramText) if sep else ()
    return URI("tel", number, None, None, None, params, (), None, text)


def _parseFast(text: str) -> URI | None:
    """
    Parse a SIP URI of the common shape (L{_FAST_SIP}) as the general path
    would; C{None} if it has another shape or needs the general path's
    checks.
    """
    match = _FAST_SIP.fullmatch(text)
    if match is None:
        return None
    scheme, user, host, portText, paramText = match.groups()
    if _NUMERIC_HOST.fullmatch(host) is not None and _IPV4.fullmatch(host) is None:
        return None
    port = None
    if portText is not None:
        port = int(portText)
        if port > 65535:
            return None
    params: Params = ()
    if paramText:
        pairs: list[tuple[str, str | None]] = []
        for part in paramText[1:].split(";"):
            name, sep, value = part.partition("=")
            pairs.append((name, value) if sep else (name, None))
        params = tuple(pairs)
    return URI(scheme.lower(), user, None, host, port, params, (), None, text)


def parseURI(text: str) -> URI:
    """
    Parse a URI.

    C{sip}, C{sips} and C{tel} URIs are checked against RFC 3261 / RFC 3966
    (IPv6 hosts must be bracketed and valid); any other scheme is accepted
    as an opaque URI if it has no whitespace, control characters, C{<},
    C{>} or C{"}.  C{str()} of the result gives C{text} back unchanged.

    @raise SIPParseError: if C{text} is not a URI.
    """
    return _parseFast(text) or _parseGeneral(text)


def _parseGeneral(text: str) -> URI:
    colon = text.find(":")
    if colon <= 0 or _SCHEME.fullmatch(text, 0, colon) is None:
        raise SIPParseError("Invalid URI scheme")
    if _BAD_CHARS.search(text) is not None:
        raise SIPParseError("Invalid character in URI")
    scheme = text[:colon].lower()
    rest = text[colon + 1 :]
    if not rest:
        raise SIPParseError("Empty URI")
    if scheme in _SIP_SCHEMES:
        _checkEscapes(rest)
        return _parseSIP(scheme, rest, text)
    if scheme == "tel":
        _checkEscapes(rest)
        return _parseTel(rest, text)
    return URI(scheme, opaque=rest, _raw=text)
