# -*- test-case-name: tests.test_framing -*-
"""
Sans-IO framing of SIP messages on stream transports (RFC 3261 section
18.3), with the CRLF keepalive of RFC 5626 section 3.5.1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sipcore.message.errors import SIPParseError

DEFAULT_MAX_SIZE = 65536

#: The longest line (start line or header line, without its CRLF) the
#: parser and the stream framer accept.
DEFAULT_MAX_LINE_LENGTH = 8192

_PING = b"\r\n\r\n"
_CRLF = b"\r\n"


@dataclass(frozen=True)
class Ping:
    """
    The peer sent a CRLF CRLF keepalive; answer it with a single CRLF.
    """


PING = Ping()


def checkedLength(values: Iterable[str | bytes]) -> int | None:
    """
    The body length declared by a message's Content-Length values.

    @param values: the value of each Content-Length header (long form or
        compact C{l}), as written.
    @return: the length, or C{None} when there is no value.
    @raise SIPParseError: if a value is not a decimal number of at most 10
        digits, or two values disagree.
    """
    found: int | None = None
    for value in values:
        text = value.strip()
        if not text.isdigit() or not text.isascii() or len(text) > 10:
            raise SIPParseError("Invalid Content-Length")
        length = int(text)
        if found is not None and found != length:
            raise SIPParseError("Conflicting Content-Length values")
        found = length
    return found


def contentLength(headerBlock: bytes) -> int | None:
    """
    Read the Content-Length of a message from its header block.

    @param headerBlock: the start line and header lines, without the empty
        line that ends them.
    @return: the declared body length, or C{None} if there is no
        Content-Length header (long form or compact C{l}).
    @raise SIPParseError: as L{checkedLength}.
    """
    values = []
    for line in headerBlock.split(b"\n")[1:]:
        if not line or line[:1] in (b" ", b"\t"):
            continue
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in (b"content-length", b"l"):
            values.append(value)
    return checkedLength(values)


class StreamFramer:
    """
    Split a byte stream into SIP messages and keepalive pings.

    After L{feed} raises, the framer is unusable: the stream is out of sync
    and the connection must be closed.

    @ivar maxSize: the largest message (headers and body) accepted.
    @ivar maxLineLength: the longest start or header line accepted, in
        bytes (C{0}: no limit but C{maxSize}).
    """

    def __init__(self, maxSize: int = DEFAULT_MAX_SIZE,
                 maxLineLength: int = DEFAULT_MAX_LINE_LENGTH) -> None:
        self.maxSize = maxSize
        self.maxLineLength = maxLineLength
        self._buffer = bytearray()
        self._broken = False
        # How far the current message's header block was searched for its
        # end, where its last line began (and how far that was searched),
        # and the message's total length once its headers are read: a
        # message trickled in a byte at a time is scanned once, not once
        # per byte.
        self._scanned = 0
        self._lineStart = 0
        self._lineScanned = 0
        self._needed: int | None = None

    @property
    def buffered(self) -> bytes:
        """
        The bytes received and not yet framed (a copy).
        """
        return bytes(self._buffer)

    @property
    def pending(self) -> int:
        """
        How many bytes are received and not yet framed (no copy).
        """
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | Ping]:
        """
        Add received bytes.

        @return: the complete messages (C{bytes}) and L{PING}s now
            available, in order.
        @raise SIPParseError: on a framing error: an oversized message, a
            line longer than C{maxLineLength} or an invalid
            Content-Length.  C{partial} is not set; the bytes seen so far
            are in L{buffered}.
        """
        if self._broken:
            raise SIPParseError("Stream is out of sync")
        buf = self._buffer
        buf.extend(data)
        out: list[bytes | Ping] = []
        while True:
            if self._needed is None:
                if buf[:1] == b"\r":
                    # Between messages: a CRLF CRLF ping, or a lone CRLF (a
                    # keepalive pong, or padding) that RFC 3261 section 7.5
                    # says to ignore.  No start line begins with CR.
                    if buf[:4] == _PING:
                        out.append(PING)
                        del buf[:4]
                        continue
                    if len(buf) < 4 and _PING.startswith(bytes(buf)):
                        break
                    if buf[:2] == _CRLF:
                        del buf[:2]
                        continue
                end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
                limit = self.maxLineLength
                if end < 0:
                    if limit and len(buf) > limit:
                        # Only the bytes not scanned yet can end the line.
                        lineEnd = buf.rfind(b"\r\n", max(self._lineStart, self._lineScanned - 1))
                        self._lineScanned = len(buf)
                        if lineEnd >= 0:
                            self._lineStart = lineEnd + 2
                        # A line's CR may be in, its LF not yet.
                        if len(buf) - self._lineStart > limit + 1:
                            self._broken = True
                            raise SIPParseError("Line too long")
                    self._scanned = len(buf)
                    if len(buf) > self.maxSize:
                        self._broken = True
                        raise SIPParseError("Message Too Large", status=413)
                    break
                if limit and end > limit and max(map(len, bytes(buf[:end]).split(b"\r\n"))) > limit:
                    self._broken = True
                    raise SIPParseError("Line too long")
                try:
                    length = contentLength(bytes(buf[:end])) or 0
                except SIPParseError:
                    self._broken = True
                    raise
                total = end + 4 + length
                if total > self.maxSize:
                    self._broken = True
                    raise SIPParseError("Message Too Large", status=413)
                self._needed = total
            if len(buf) < self._needed:
                break
            out.append(bytes(buf[: self._needed]))
            del buf[: self._needed]
            self._needed = None
            self._scanned = 0
            self._lineStart = 0
            self._lineScanned = 0
        return out
