# -*- test-case-name: tests.test_framing -*-
"""
Tests for L{sipcore.message.framing}: stream framing and CRLF keepalives.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipcore.message import PING, SIPParseError, StreamFramer, contentLength, parseMessage

HEAD = (
    b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP pc.example.com;branch=z9hG4bK74bf9\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: abc\r\n"
    b"CSeq: 1 OPTIONS\r\n"
)


def message(body: bytes = b"", lengthHeader: bytes = b"Content-Length") -> bytes:
    """
    A complete message with C{body} and a matching Content-Length.
    """
    return HEAD + lengthHeader + b": " + str(len(body)).encode() + b"\r\n\r\n" + body


class ContentLengthTests(SynchronousTestCase):
    """
    L{contentLength} reads the declared body length of a header block.
    """

    def test_longAndCompact(self) -> None:
        """
        Both C{Content-Length} and C{l}, in any case and spacing, are read.
        """
        self.assertEqual(contentLength(HEAD + b"Content-Length: 12"), 12)
        self.assertEqual(contentLength(HEAD + b"L:3"), 3)
        self.assertEqual(contentLength(HEAD + b"content-length   :   7  "), 7)

    def test_absent(self) -> None:
        """
        Without the header the length is C{None}.
        """
        self.assertIsNone(contentLength(HEAD.rstrip(b"\r\n")))

    def test_startLineIgnored(self) -> None:
        """
        The start line is never read as a header.
        """
        self.assertIsNone(contentLength(b"l: 5 sip:x SIP/2.0\r\nCall-ID: a"))

    def test_equalRepeatsAccepted(self) -> None:
        """
        The same value twice is accepted.
        """
        self.assertEqual(contentLength(HEAD + b"l: 4\r\nContent-Length: 4"), 4)

    def test_invalid(self) -> None:
        """
        Negative, non-numeric, too long and conflicting values raise.
        """
        for block in [
            HEAD + b"Content-Length: -1",
            HEAD + b"Content-Length: abc",
            HEAD + b"Content-Length: ",
            HEAD + b"Content-Length: 1 2",
            HEAD + b"Content-Length: 12345678901",
            HEAD + b"Content-Length: 13\r\nContent-Length: 5",
        ]:
            self.assertRaises(SIPParseError, contentLength, block)


class StreamFramerTests(SynchronousTestCase):
    """
    L{StreamFramer} cuts a byte stream into messages and pings.
    """

    def test_oneMessage(self) -> None:
        """
        A complete message comes out whole.
        """
        data = message(b"hello")
        framer = StreamFramer()
        self.assertEqual(framer.feed(data), [data])
        self.assertEqual(framer.buffered, b"")

    def test_longLine(self) -> None:
        """
        A header line longer than C{maxLineLength} bytes is a framing error,
        whether its message is complete or the line still grows; a line of
        exactly the limit passes, and C{0} lifts the limit.
        """
        ok = HEAD + b"X: " + b"a" * 97 + b"\r\n" + message()[len(HEAD):]
        self.assertEqual(StreamFramer(maxLineLength=100).feed(ok), [ok])
        framer = StreamFramer(maxLineLength=99)
        error = self.assertRaises(SIPParseError, framer.feed, ok)
        self.assertEqual(error.reason, "Line too long")
        self.assertRaises(SIPParseError, framer.feed, b"")
        self.assertEqual(StreamFramer(maxLineLength=0).feed(ok), [ok])

        # Lines that ended before the buffer reached the limit count too.
        framer = StreamFramer(maxLineLength=100)
        framer.feed(b"OPTIONS sip:x SIP/2.0\r\n")
        for _ in range(90):
            framer.feed(b"a")
        framer.feed(b"\r\nX: ")
        for _ in range(97):
            framer.feed(b"a")
        framer.feed(b"\r")
        error = self.assertRaises(SIPParseError, framer.feed, b"a")
        self.assertEqual(error.reason, "Line too long")

    def test_longLineDefault(self) -> None:
        """
        By default a line may be 8192 bytes long.
        """
        line = b"X: " + b"a" * (8192 - 3)
        ok = HEAD + line + b"\r\n" + message()[len(HEAD):]
        self.assertEqual(StreamFramer().feed(ok), [ok])
        bad = HEAD + line + b"a\r\n" + message()[len(HEAD):]
        self.assertRaises(SIPParseError, StreamFramer().feed, bad)

    def test_ping(self) -> None:
        """
        A CRLF CRLF keepalive gives L{PING}.
        """
        framer = StreamFramer()
        self.assertEqual(framer.feed(b"\r\n\r\n"), [PING])
        self.assertEqual(framer.feed(b"\r\n\r\n\r\n\r\n"), [PING, PING])

    def test_pingSplit(self) -> None:
        """
        A ping that arrives in two pieces is still one L{PING}.
        """
        framer = StreamFramer()
        self.assertEqual(framer.feed(b"\r\n"), [])
        self.assertEqual(framer.buffered, b"\r\n")
        self.assertEqual(framer.feed(b"\r\n"), [PING])

    def test_loneCRLFIgnored(self) -> None:
        """
        A lone CRLF before a message (a pong, or padding) is dropped.
        """
        data = message()
        framer = StreamFramer()
        self.assertEqual(framer.feed(b"\r\n"), [])
        self.assertEqual(framer.feed(data), [data])

    def test_pipelined(self) -> None:
        """
        Several messages and pings in one chunk come out in order.
        """
        first = message(b"one")
        second = message(b"\r\n\r\ntwo", lengthHeader=b"l")
        framer = StreamFramer()
        self.assertEqual(
            framer.feed(first + b"\r\n\r\n" + second + first[:10]), [first, PING, second]
        )
        self.assertEqual(framer.buffered, first[:10])
        self.assertEqual(framer.feed(first[10:]), [first])

    def test_byteByByte(self) -> None:
        """
        Delivered one byte at a time, the same messages and pings come out
        in order, each once, when their last byte arrives.
        """
        first = message(b"body with \r\n\r\n inside")
        second = message()
        stream = b"\r\n\r\n" + first + second + b"\r\n\r\n"
        framer = StreamFramer()
        out: list[object] = []
        for index in range(len(stream)):
            out.extend(framer.feed(stream[index : index + 1]))
        self.assertEqual(out, [PING, first, second, PING])
        self.assertEqual(framer.buffered, b"")

    def test_framedMessagesParse(self) -> None:
        """
        What the framer cuts parses as a message with the right body.
        """
        data = message(b"hello")
        (framed,) = StreamFramer().feed(data + data)[:1]
        assert isinstance(framed, bytes)
        self.assertEqual(parseMessage(framed).body, b"hello")

    def test_noContentLengthMeansEmptyBody(self) -> None:
        """
        On a stream a message without Content-Length has an empty body.
        """
        data = HEAD + b"\r\n"
        framer = StreamFramer()
        self.assertEqual(framer.feed(data + b"XYZ"), [data])
        self.assertEqual(framer.buffered, b"XYZ")

    def test_waitsForBody(self) -> None:
        """
        A message whose body has not fully arrived is held back.
        """
        data = message(b"0123456789")
        framer = StreamFramer()
        self.assertEqual(framer.feed(data[:-1]), [])
        self.assertEqual(framer.feed(data[-1:]), [data])

    def test_maxSizeExactlyAccepted(self) -> None:
        """
        A message of exactly C{maxSize} bytes is accepted.
        """
        data = message(b"x" * 100)
        self.assertEqual(StreamFramer(maxSize=len(data)).feed(data), [data])

    def test_oversizedBody(self) -> None:
        """
        A declared body that makes the message exceed C{maxSize} raises
        413 at once, before the body arrives.
        """
        data = message(b"x" * 100)
        framer = StreamFramer(maxSize=len(data) - 1)
        error = self.assertRaises(SIPParseError, framer.feed, data[: len(HEAD) + 30])
        self.assertEqual(error.status, 413)

    def test_oversizedHeaders(self) -> None:
        """
        Headers that never end raise 413 once they pass C{maxSize}, and
        the framer stays broken.
        """
        framer = StreamFramer(maxSize=100)
        self.assertEqual(framer.feed(b"OPTIONS sip:x SIP/2.0\r\nX: " + b"a" * 70), [])
        error = self.assertRaises(SIPParseError, framer.feed, b"a" * 10)
        self.assertEqual(error.status, 413)
        self.assertRaises(SIPParseError, framer.feed, b"\r\n\r\n")

    def test_defaultMaxSize(self) -> None:
        """
        The default limit is 65536 bytes.
        """
        self.assertEqual(StreamFramer().maxSize, 65536)
        framer = StreamFramer()
        self.assertRaises(SIPParseError, framer.feed, b"A" * 65537)

    def test_badContentLength(self) -> None:
        """
        A bad Content-Length raises 400 and breaks the framer; the bytes
        stay in C{buffered}.
        """
        data = HEAD + b"Content-Length: -5\r\n\r\n"
        framer = StreamFramer()
        error = self.assertRaises(SIPParseError, framer.feed, data)
        self.assertEqual(error.status, 400)
        self.assertIsNone(error.partial)
        self.assertEqual(framer.buffered, data)
        self.assertRaises(SIPParseError, framer.feed, message())

    def test_conflictingContentLength(self) -> None:
        """
        Two different Content-Length values raise (RFC 4475 mcl01).
        """
        data = HEAD + b"Content-Length: 13\r\nl: 5\r\n\r\nabcde"
        self.assertRaises(SIPParseError, StreamFramer().feed, data)

    def test_errorAfterGoodMessage(self) -> None:
        """
        A message delivered by one feed stays delivered when a later feed
        raises on a bad Content-Length.
        """
        good = message()
        framer = StreamFramer()
        self.assertEqual(framer.feed(good), [good])
        self.assertRaises(SIPParseError, framer.feed, HEAD + b"l: x\r\n\r\n")
