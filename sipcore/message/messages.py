# -*- test-case-name: tests.test_message_messages -*-
"""
SIP requests and responses as objects, and their serialization.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from sipcore.message._random import randomHex
from sipcore.message._syntax import countList, splitList
from sipcore.message.address import Address, parseAddress, parseAddressList
from sipcore.message.errors import SIPParseError
from sipcore.message.headers import Headers, prettyName
from sipcore.message.uri import URI, parseURI
from sipcore.message.via import MAGIC_COOKIE, Via, parseViaList

#: The largest CSeq sequence number (RFC 3261 section 8.1.1.5).
MAX_CSEQ = 2**32 - 1

#: The value C{expires} is clamped to (RFC 3261 says delta-seconds above
#: this are to be taken as this).
MAX_EXPIRES = 2**32 - 1

#: What a malformed C{expires} value is taken as (RFC 3261 sections
#: 10.2.1.1 and 20.19: "Malformed values SHOULD be treated as equivalent to
#: 3600").
MALFORMED_EXPIRES = 3600

_DIGITS = re.compile(r"[0-9]+")
_METHOD = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")

_REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    430: "Flow Failed",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}

_CLASS_REASONS = {
    1: "Provisional",
    2: "Success",
    3: "Redirection",
    4: "Client Error",
    5: "Server Error",
    6: "Global Failure",
}


def reasonPhrase(status: int) -> str:
    """
    The usual reason phrase of a status code (RFC 3261 section 21 and
    later RFCs), or a generic one for its class (C{"Client Error"} for an
    unknown 4xx).
    """
    reason = _REASONS.get(status)
    if reason is None:
        reason = _CLASS_REASONS.get(status // 100, "Unknown")
    return reason


def generateTag() -> str:
    """
    A new random From/To tag (64 random bits, as 16 hex digits).
    """
    return randomHex(8)


def generateBranch() -> str:
    """
    A new random Via branch: the RFC 3261 magic cookie C{z9hG4bK} followed
    by 96 random bits in hex.
    """
    return MAGIC_COOKIE + randomHex(12)


def _parseCSeq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2:
        raise SIPParseError("Invalid CSeq")
    number, method = parts
    if _DIGITS.fullmatch(number) is None:
        raise SIPParseError("Invalid CSeq")
    if len(number.lstrip("0")) > 10:
        raise SIPParseError("CSeq number too large")
    sequence = int(number)
    if sequence > MAX_CSEQ:
        raise SIPParseError("CSeq number too large")
    if _METHOD.fullmatch(method) is None:
        raise SIPParseError("Invalid CSeq method")
    return sequence, method


def _parseMaxForwards(value: str) -> int:
    value = value.strip()
    if _DIGITS.fullmatch(value) is None or len(value.lstrip("0")) > 3:
        raise SIPParseError("Invalid Max-Forwards")
    hops = int(value)
    if hops > 255:
        raise SIPParseError("Invalid Max-Forwards")
    return hops


def parseExpires(value: str) -> int:
    """
    An C{Expires} header value or a Contact's C{expires} parameter as
    RFC 3261 reads them (sections 10.2.1.1 and 20.19): seconds, a value
    above 2**32-1 taken as 2**32-1, and a malformed value (not ASCII
    digits: C{soon}, C{-1}, an RFC 2543 date) taken as L{MALFORMED_EXPIRES}.

    @return: the seconds; never raises.
    """
    value = value.strip()
    if _DIGITS.fullmatch(value) is None:
        return MALFORMED_EXPIRES
    if len(value.lstrip("0")) > 10:
        return MAX_EXPIRES
    return min(int(value), MAX_EXPIRES)


def _headersFrom(headers: Headers | Iterable[tuple[str, str]] | None) -> Headers:
    if headers is None:
        return Headers()
    if isinstance(headers, Headers):
        return headers
    return Headers(headers)


class _Message:
    """
    What requests and responses share: headers, body and typed accessors.

    Typed accessors parse on first use and are cached until the headers
    change; they raise L{SIPParseError} if the header is malformed (or, for
    C{callId}, C{cseq}, C{fromAddr} and C{toAddr}, missing).

    @ivar headers: the L{Headers}.
    @ivar body: the body bytes.
    @ivar version: the SIP version of the start line, e.g. C{"SIP/2.0"}.
    """

    isRequest: bool
    headers: Headers
    body: bytes
    version: str

    def _startLine(self) -> str:
        raise NotImplementedError()

    def serialize(self) -> bytes:
        """
        The message as bytes for the wire.

        Headers are written in order as C{name: value}, with exactly one
        Content-Length giving the body's length (in place of the first
        Content-Length line, keeping its spelling, or at the end).

        @raise ValueError: if a start-line element, header name or value
            contains CR or LF (header injection).
        """
        length = str(len(self.body))
        lines = [self._startLine()]
        wroteLength = False
        for key, name, value in self.headers._entries:
            if key == "content-length":
                if wroteLength:
                    continue
                wroteLength = True
                value = length
            lines.append(name + ": " + value)
        if not wroteLength:
            lines.append("Content-Length: " + length)
        lines.append("")
        lines.append("")
        text = "\r\n".join(lines)
        if text.count("\r") != len(lines) - 1 or text.count("\n") != len(lines) - 1:
            raise ValueError("CR or LF inside a SIP message field")
        return text.encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.serialize()

    def _required(self, name: str) -> str:
        value = self.headers.first(name)
        if value is None:
            raise SIPParseError("Missing " + prettyName(name) + " header")
        return value

    @property
    def callId(self) -> str:
        """
        The Call-ID.

        @raise SIPParseError: if it is missing.
        """
        return self._required("call-id").strip()

    @property
    def cseq(self) -> tuple[int, str]:
        """
        The CSeq as C{(number, method)}.

        @raise SIPParseError: if it is missing or malformed.
        """
        cseq: tuple[int, str] | None = self.headers.derived("cseq")
        if cseq is None:
            cseq = self.headers.remember("cseq", _parseCSeq(self._required("cseq")))
        return cseq

    @property
    def vias(self) -> list[Via]:
        """
        The Via values, topmost first.

        @raise SIPParseError: if one is malformed.
        """
        vias: list[Via] | None = self.headers.derived("vias")
        if vias is None:
            vias = []
            for line in self.headers.lines("via"):
                vias.extend(parseViaList(line))
            self.headers.remember("vias", vias)
        return list(vias)

    def replaceTopVia(self, via: Via) -> None:
        """
        Replace the topmost Via value with C{via}, as a server stamping
        C{received} and C{rport} does: in the headers (the rest of its line
        stays) and in what L{vias} gives, so the Vias are not parsed again.

        @raise SIPParseError: if the Vias are malformed.
        """
        vias = self.vias
        vias[0] = via
        self.headers.replaceFirst("via", str(via))
        self.headers.remember("vias", vias)

    @property
    def fromAddr(self) -> Address:
        """
        The From address.

        @raise SIPParseError: if it is missing or malformed.
        """
        address: Address | None = self.headers.derived("from")
        if address is None:
            address = self.headers.remember("from", parseAddress(self._required("from")))
        return address

    @property
    def toAddr(self) -> Address:
        """
        The To address.

        @raise SIPParseError: if it is missing or malformed.
        """
        address: Address | None = self.headers.derived("to")
        if address is None:
            address = self.headers.remember("to", parseAddress(self._required("to")))
        return address

    @property
    def contacts(self) -> list[Address] | Literal["*"]:
        """
        The Contact addresses in order (empty if there is no Contact), or
        the string C{"*"} for a wildcard Contact.

        @raise SIPParseError: if one is malformed, or C{*} is not alone.
        """
        result: list[Address] | Literal["*"] | None = self.headers.derived("contacts")
        if result is None:
            result = _parseContacts(self.headers)
            self.headers.remember("contacts", result)
        return result if result == "*" else list(result)

    def countContacts(self, limit: int) -> int:
        """
        The number of Contact values (C{*} is one), counted without parsing
        them: counting stops past C{limit}, so a message with thousands of
        values costs about as much as one with C{limit + 1}.

        @return: the count, or C{limit + 1} if there are more than C{limit}.
        """
        total = 0
        for line in self.headers.lines("contact"):
            if total >= limit:
                return limit + 1
            total += countList(line, limit - total)
        return min(total, limit + 1)

    def _routeList(self, name: str) -> list[Address]:
        routes: list[Address] | None = self.headers.derived(name)
        if routes is None:
            routes = []
            for line in self.headers.lines(name):
                routes.extend(parseAddressList(line, nameAddrOnly=True))
            self.headers.remember(name, routes)
        return list(routes)

    @property
    def routes(self) -> list[Address]:
        """
        The Route addresses, in order.

        @raise SIPParseError: if one is malformed or not in C{<>}.
        """
        return self._routeList("route")

    @property
    def recordRoutes(self) -> list[Address]:
        """
        The Record-Route addresses, in order.

        @raise SIPParseError: if one is malformed or not in C{<>}.
        """
        return self._routeList("record-route")

    @property
    def maxForwards(self) -> int | None:
        """
        The Max-Forwards value (0-255), or C{None} if absent.

        @raise SIPParseError: if it is malformed or above 255.
        """
        hops: int | None = self.headers.derived("max-forwards")
        if hops is None:
            value = self.headers.first("max-forwards")
            if value is None:
                return None
            hops = self.headers.remember("max-forwards", _parseMaxForwards(value))
        return hops

    @property
    def expires(self) -> int | None:
        """
        The Expires header in seconds, clamped to 2**32-1, or C{None} if
        absent.  A malformed value reads as 3600 (L{parseExpires}).
        """
        expires: int | None = self.headers.derived("expires")
        if expires is None:
            value = self.headers.first("expires")
            if value is None:
                return None
            expires = self.headers.remember("expires", parseExpires(value))
        return expires

    @property
    def contentType(self) -> str | None:
        """
        The Content-Type value as written, or C{None}.
        """
        return self.headers.first("content-type")


def _parseContacts(headers: Headers) -> list[Address] | Literal["*"]:
    lines = headers.lines("contact")
    elements: list[str] = []
    for line in lines:
        elements.extend(splitList(line))
    if len(elements) == 1 and elements[0] == "*":
        return "*"
    out = []
    for element in elements:
        if not element:
            raise SIPParseError("Empty Contact value")
        if element == "*":
            raise SIPParseError("Contact '*' must be alone")
        out.append(parseAddress(element))
    return out


#: The headers a response copies from its request after the Vias, in
#: order, with the names it writes them with.
_COPIED = {"from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}


class Request(_Message):
    """
    A SIP request.

    @ivar method: the method, case-sensitive (C{"REGISTER"}).
    @ivar uri: the Request-URI.
    """

    isRequest = True

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        """
        @param uri: a L{URI}, or text that L{parseURI} accepts.
        """
        self.method = method
        self.uri = parseURI(uri) if isinstance(uri, str) else uri
        self.headers = _headersFrom(headers)
        self.body = body
        self.version = version

    def _startLine(self) -> str:
        return self.method + " " + str(self.uri) + " " + self.version

    def __repr__(self) -> str:
        return "<Request {} {}>".format(self.method, self.uri)


class Response(_Message):
    """
    A SIP response.

    @ivar status: the status code.
    @ivar reason: the reason phrase.
    """

    isRequest = False

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        """
        @param reason: the reason phrase; C{None} for L{reasonPhrase}.
        """
        self.status = status
        self.reason = reasonPhrase(status) if reason is None else reason
        self.headers = _headersFrom(headers)
        self.body = body
        self.version = version

    def _startLine(self) -> str:
        return self.version + " " + str(self.status) + " " + self.reason

    def __repr__(self) -> str:
        return "<Response {} {}>".format(self.status, self.reason)

    @classmethod
    def forRequest(
        cls,
        request: Request,
        status: int,
        reason: str | None = None,
        toTag: str | None = None,
    ) -> Response:
        """
        Start a response to C{request} (RFC 3261 section 8.2.6.2): all its
        Via lines in order, then From, To, Call-ID and CSeq, copied as
        written.

        This works on the C{partial} request of a L{SIPParseError} too:
        only the headers are needed, and whatever is missing is left out.

        @param reason: the reason phrase; C{None} for L{reasonPhrase}.
        @param toTag: a tag to add to To if To has none (a To that cannot
            be parsed is copied unchanged).  When not given, a response
            other than C{100} gets a new tag (RFC 3261 8.2.6.2: a UAS MUST
            tag its responses); C{100 Trying} gets none.
        """
        if toTag is None and status > 100:
            toTag = generateTag()
        vias: list[tuple[str, str, str]] = []
        found: dict[str, str] = {}
        for key, _, value in request.headers._entries:
            if key == "via":
                vias.append(("via", "Via", value))
            elif key in _COPIED and key not in found:
                found[key] = value
        entries = vias
        for key, pretty in _COPIED.items():
            copied = found.get(key)
            if copied is None:
                continue
            value = copied
            if key == "to" and toTag is not None:
                try:
                    hasTag = request.toAddr.hasParam("tag")
                except SIPParseError:
                    hasTag = True
                if not hasTag:
                    value = value + ";tag=" + toTag
            entries.append((key, pretty, value))
        headers = Headers._fromEntries(entries)
        return cls(status, reason, headers)
