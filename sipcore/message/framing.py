# -*- test-case-name: tests.test_framing -*-
"""
Sans-IO framing of SIP messages on stream transports (RFC 3261 section
18.3), with the CRLF keepalive of RFC 5626 section 3.5.1.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipcore.message.errors import SIPParseError

DEFAULT_MAX_SIZE = 65536

_PING = b"\r\n\r\n"
_CRLF = b"\r\n"


@dataclass(frozen=True)
class Ping:
    """
    The peer sent a CRLF CRLF keepalive; answer it with a single CRLF.
    """


PING = Ping()


def contentLength(headerBlock: bytes) -> int | None:
    """
    Read the Content-Length of a message from its header block.

    @param headerBlock: the start line and header lines, without the empty
        line that ends them.
    @return: the declared body length, or C{None} if there is no
        Content-Length header (long form or compact C{l}).
    @raise SIPParseError: if the value is not a non-negative decimal
        number, or two values disagree.
    """
    found: int | None = None
    for line in headerBlock.split(b"\n")[1:]:
        if not line or line[:1] in (b" ", b"\t"):
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        if name.strip().lower() not in (b"content-length", b"l"):
            continue
        text = value.strip()
        if not text.isdigit() or len(text) > 10:
            raise SIPParseError("Invalid Content-Length")
        length = int(text)
        if found is not None and found != length:
            raise SIPParseError("Conflicting Content-Length values")
        found = length
    return found


class StreamFramer:
    """
    Split a byte stream into SIP messages and keepalive pings.

    After L{feed} raises, the framer is unusable: the stream is out of sync
    and the connection must be closed.

    @ivar maxSize: the largest message (headers and body) accepted.
    """

    def __init__(self, maxSize: int = DEFAULT_MAX_SIZE) -> None:
        self.maxSize = maxSize
        self._buffer = b""
        self._broken = False

    @property
    def buffered(self) -> bytes:
        """
        The bytes received and not yet framed.
        """
        return self._buffer

    def feed(self, data: bytes) -> list[bytes | Ping]:
        """
        Add received bytes.

        @return: the complete messages (C{bytes}) and L{PING}s now
            available, in order.
        @raise SIPParseError: on a framing error: an oversized message or an
            invalid Content-Length.  C{partial} is not set; the bytes seen
            so far are in L{buffered}.
        """
        if self._broken:
            raise SIPParseError("Stream is out of sync")
        self._buffer += data
        out: list[bytes | Ping] = []
        while True:
            buf = self._buffer
            if buf.startswith(_CRLF):
                if buf.startswith(_PING):
                    out.append(PING)
                    self._buffer = buf[4:]
                    continue
                if len(buf) < 4 and _PING.startswith(buf):
                    break
                # A lone CRLF between messages (a keepalive pong, or
                # padding): ignored, as RFC 3261 section 7.5 says.
                self._buffer = buf[2:]
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.maxSize:
                    self._broken = True
                    raise SIPParseError("Message Too Large", status=413)
                break
            try:
                length = contentLength(buf[:end]) or 0
            except SIPParseError:
                self._broken = True
                raise
            total = end + 4 + length
            if total > self.maxSize:
                self._broken = True
                raise SIPParseError("Message Too Large", status=413)
            if len(buf) < total:
                break
            out.append(buf[:total])
            self._buffer = buf[total:]
        return out
