# -*- test-case-name: tests.test_message_parser -*-
"""
Parse one SIP message from bytes (a datagram, or one message cut from a
stream by L{sipcore.message.framing.StreamFramer}).
"""

from __future__ import annotations

import re

from sipcore.message._syntax import TOKEN
from sipcore.message.errors import SIPParseError
from sipcore.message.framing import DEFAULT_MAX_LINE_LENGTH, DEFAULT_MAX_SIZE, checkedLength
from sipcore.message.headers import COMPACT_FORMS, Headers, prettyName
from sipcore.message.messages import Request, Response, _Message
from sipcore.message.uri import invalidURI, parseURI

DEFAULT_MAX_HEADERS = 256

_VERSION = re.compile(r"SIP/([0-9]+)\.([0-9]+)", re.I)
_STATUS = re.compile(r"[1-6][0-9][0-9]")
_NO_WHITESPACE = re.compile(r"[^\s]+")
_DATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{1,2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)

_TOKEN_FULL = TOKEN.fullmatch
_COMPACT_GET = COMPACT_FORMS.get

#: Headers every request and response must have.
REQUIRED_HEADERS = ("via", "from", "to", "call-id", "cseq")

#: Headers that may appear only once, in the order they are checked.
SINGLE_HEADERS = (
    "call-id",
    "from",
    "to",
    "cseq",
    "max-forwards",
    "content-length",
    "content-type",
    "expires",
    "min-expires",
)


def _checkVersion(version: str) -> None:
    match = _VERSION.fullmatch(version)
    if match is None:
        raise SIPParseError("Invalid SIP version")
    if (int(match.group(1)), int(match.group(2))) != (2, 0):
        raise SIPParseError("Version Not Supported", status=505)


#: Header names as written (with any whitespace before the colon) already
#: checked, to their C{(key, name)}.  Bounded in count and in the length of
#: a name: names are chosen by senders.
_NAMES: dict[str, tuple[str, str]] = {}
_NAMES_MAX = 4096
_NAME_MAX_LENGTH = 32


def _splitHeaders(
    lines: list[str], folded: bool, maxHeaders: int, bare: bool = True
) -> tuple[list[tuple[str, str, str]], SIPParseError | None]:
    """
    Turn header lines into C{(key, name, value)} entries, unfolding
    continuation lines.

    @param folded: whether any line starts with a space or a tab.
    @param bare: whether the lines may hold a CR or LF (one not part of
        a line end); C{False} skips the check of each value.
    @return: the entries that could be read and the first error met (the
        line in error is skipped).
    @raise SIPParseError: if there are more than C{maxHeaders} headers.
    """
    error: SIPParseError | None = None
    logical: list[str] = lines
    if folded:
        groups: list[list[str]] = []
        for line in lines:
            if line[:1] in (" ", "\t"):
                if not groups:
                    error = error or SIPParseError("Continuation line before any header")
                    continue
                groups[-1].append(line)
            else:
                groups.append([line])
        logical = ["\r\n".join(group) for group in groups]
    if len(logical) > maxHeaders:
        raise SIPParseError("Too many headers")
    entries: list[tuple[str, str, str]] = []
    names = _NAMES
    for line in logical:
        written, sep, value = line.partition(":")
        if not sep:
            error = error or SIPParseError("Malformed header line")
            continue
        known = names.get(written)
        if known is None:
            name = written.rstrip(" \t")
            if _TOKEN_FULL(name) is None:
                error = error or SIPParseError("Malformed header line")
                continue
            lowered = name.lower()
            known = (_COMPACT_GET(lowered, lowered), name)
            if len(written) <= _NAME_MAX_LENGTH and len(names) < _NAMES_MAX:
                names[written] = known
        if folded and "\r\n" in value:
            pieces = [piece.strip(" \t") for piece in value.split("\r\n")]
            value = " ".join(piece for piece in pieces if piece)
        else:
            value = value.strip(" \t")
        if bare and ("\r" in value or "\n" in value):
            error = error or SIPParseError("Bare CR or LF in header")
            continue
        entries.append((known[0], known[1], value))
    return entries, error


def _parseStartLine(line: str, headers: Headers) -> tuple[_Message | None, SIPParseError | None]:
    """
    @return: the message (or a best-effort one for C{partial}, or C{None})
        and the error in the start line, if any.
    """
    if line[:4].upper() == "SIP/":
        parts = line.split(" ", 2)
        if len(parts) < 2:
            return None, SIPParseError("Invalid Status-Line")
        version, code = parts[0], parts[1]
        reason = parts[2] if len(parts) == 3 else ""
        if _STATUS.fullmatch(code) is None:
            return None, SIPParseError("Invalid status code")
        if "\r" in reason or "\n" in reason:
            return None, SIPParseError("Invalid reason phrase")
        response = Response(int(code), reason, headers, version=version)
        try:
            _checkVersion(version)
        except SIPParseError as e:
            return response, e
        return response, None
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        words = line.split()
        if len(words) >= 3 and words[-1][:4].upper() == "SIP/" and TOKEN.fullmatch(words[0]):
            partial = Request(
                words[0], invalidURI(" ".join(words[1:-1])), headers, version=words[-1]
            )
            return partial, SIPParseError("Invalid Request-Line")
        return None, SIPParseError("Invalid Request-Line")
    method, uriText, version = parts
    if TOKEN.fullmatch(method) is None:
        return None, SIPParseError("Invalid method")
    error: SIPParseError | None = None
    try:
        uri = parseURI(uriText)
    except SIPParseError:
        uri = invalidURI(uriText)
        error = SIPParseError("Invalid Request-URI")
    request = Request(method, uri, headers, version=version)
    try:
        _checkVersion(version)
    except SIPParseError as e:
        return request, e
    if error is None and uri.isSIP and uri.headers:
        error = SIPParseError("Request-URI has headers")
    return request, error


def _contentLength(entries: list[tuple[str, str, str]]) -> int | None:
    return checkedLength(value for key, _, value in entries if key == "content-length")


def _validate(message: _Message, entries: list[tuple[str, str, str]],
              maxContacts: int | None = None) -> None:
    counts: dict[str, int] = {}
    for key, _, _ in entries:
        counts[key] = counts.get(key, 0) + 1
    for key in REQUIRED_HEADERS:
        if key not in counts:
            raise SIPParseError("Missing " + prettyName(key) + " header")
    for key in SINGLE_HEADERS:
        if counts.get(key, 0) > 1:
            raise SIPParseError("Repeated " + prettyName(key) + " header")
    if _NO_WHITESPACE.fullmatch(message.callId) is None:
        raise SIPParseError("Invalid Call-ID")
    number, method = message.cseq
    if isinstance(message, Request) and method != message.method:
        raise SIPParseError("CSeq method does not match the request")
    _ = message.vias
    _ = message.fromAddr
    _ = message.toAddr
    if "max-forwards" in counts:
        _ = message.maxForwards
    if "expires" in counts:
        _ = message.expires
    if "contact" in counts and (
        maxContacts is None
        or not isinstance(message, Request)
        or message.method != "REGISTER"
        or message.countContacts(maxContacts) <= maxContacts
    ):
        _ = message.contacts
    if "route" in counts:
        _ = message.routes
    if "record-route" in counts:
        _ = message.recordRoutes
    if "date" in counts:
        for value in message.headers.lines("date"):
            if _DATE.fullmatch(value) is None:
                raise SIPParseError("Invalid Date")


def parseMessage(
    data: bytes,
    *,
    maxSize: int = DEFAULT_MAX_SIZE,
    maxHeaders: int = DEFAULT_MAX_HEADERS,
    maxLineLength: int = DEFAULT_MAX_LINE_LENGTH,
    maxContacts: int | None = None,
) -> Request | Response:
    """
    Parse one SIP request or response.

    C{data} is a whole datagram or one framed stream message.  CRLFs before
    the start line are skipped.  Lines end with CRLF; folded lines are
    unfolded.  The body is the number of bytes Content-Length declares
    (bytes after it are ignored); without Content-Length it is the rest of
    C{data}.

    Beyond syntax, what a server relies on is checked: Via, From, To,
    Call-ID and CSeq present; single-value headers not repeated; CSeq
    number at most 2**32-1 and, in a request, CSeq method equal to the
    method; Max-Forwards 0-255; To, From, Contact, Route, Record-Route and
    every Via valid; a Request-URI with no LWS, no C{<>}
    and no URI headers; a status code 100-699; Date in RFC 1123 GMT form.

    @param maxSize: the largest C{data} accepted, in bytes.
    @param maxHeaders: the most header fields accepted (folded lines count
        once).
    @param maxLineLength: the longest line accepted, in characters; a
        longer header line is an error whose C{partial} is the message
        without that line.
    @param maxContacts: when given, a REGISTER with more Contact values
        than this has them counted (L{Request.countContacts}), not parsed:
        its handler refuses it by the count, and its C{contacts} parses
        them only if read.
    @return: a L{Request} or L{Response}.  Its typed accessors (C{vias},
        C{cseq}, C{fromAddr}, ...) are already parsed and will not raise
        (but for C{contacts} of a REGISTER over C{maxContacts}).
    @raise SIPParseError: if C{data} is not an acceptable SIP message;
        C{status} is 505 for a SIP version other than 2.0, 413 if C{data}
        is larger than C{maxSize}, else 400; C{partial} holds the message
        as far as it could be read when the start line and header lines
        could be split.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) > maxSize:
        raise SIPParseError("Message Too Large", status=413)
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    if start == len(data):
        raise SIPParseError("Empty message")
    end = data.find(b"\r\n\r\n", start)
    terminated = end >= 0
    if terminated:
        headerBytes = data[start:end]
        bodyStart = end + 4
    else:
        headerBytes = data[start:]
        if headerBytes.endswith(b"\r\n"):
            headerBytes = headerBytes[:-2]
        bodyStart = len(data)
    text = headerBytes.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    lineEnds = len(lines) - 1
    tooLong: SIPParseError | None = None
    if max(map(len, lines)) > maxLineLength:
        if len(lines[0]) > maxLineLength:
            raise SIPParseError("Line too long")
        # Read the rest, so that the error can be answered.
        tooLong = SIPParseError("Line too long")
        lines = [line for line in lines if len(line) <= maxLineLength]
    startLine = lines[0]
    folded = "\r\n " in text or "\r\n\t" in text
    bare = text.count("\r") != lineEnds or text.count("\n") != lineEnds
    entries, headerError = _splitHeaders(lines[1:], folded, maxHeaders, bare)
    headers = Headers._fromEntries(entries)
    if "\r" in startLine or "\n" in startLine:
        raise SIPParseError("Invalid start line")
    message, error = _parseStartLine(startLine, headers)
    if error is not None:
        error.partial = message
        raise error
    assert message is not None
    if tooLong is not None:
        tooLong.partial = message
        raise tooLong
    if headerError is not None:
        headerError.partial = message
        raise headerError
    if not terminated:
        raise SIPParseError("Missing empty line after headers", partial=message)
    try:
        length = _contentLength(entries)
        if length is None:
            message.body = data[bodyStart:]
        else:
            if bodyStart + length > len(data):
                message.body = data[bodyStart:]
                raise SIPParseError("Content-Length larger than the message")
            message.body = data[bodyStart : bodyStart + length]
        _validate(message, entries, maxContacts)
    except SIPParseError as e:
        raise SIPParseError(e.reason, e.status, message) from None
    return message  # type: ignore[return-value]
