# -*- test-case-name: tests.test_message_parser -*-
"""
Tests for L{sipcore.message.parser.parseMessage}: a table of valid and
invalid messages, limits, framing of datagrams and partial results.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipcore.message import Request, Response, SIPParseError, parseMessage, parser

BASE_LINES = [
    "OPTIONS sip:bob@example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc.example.com:5060;branch=z9hG4bK74bf9",
    "Max-Forwards: 70",
    "From: Alice <sip:alice@example.com>;tag=9fxced76sl",
    "To: <sip:bob@example.com>",
    "Call-ID: 3848276298220188511@pc.example.com",
    "CSeq: 63104 OPTIONS",
    "Contact: <sip:alice@pc.example.com>",
    "Content-Length: 0",
]


def build(lines: list[str], body: bytes = b"") -> bytes:
    """
    Join lines with CRLF, add the empty line and the body.
    """
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def replaced(old: str, new: str | None) -> bytes:
    """
    The base message with the line starting with C{old} replaced by C{new}
    (or removed if C{new} is C{None}).
    """
    lines = []
    for line in BASE_LINES:
        if line.startswith(old):
            if new is not None:
                lines.append(new)
        else:
            lines.append(line)
    if lines == BASE_LINES and new is not None:
        raise AssertionError("no line starts with " + old)
    return build(lines)


def added(*extra: str) -> bytes:
    """
    The base message with lines added before Content-Length.
    """
    return build(BASE_LINES[:-1] + list(extra) + BASE_LINES[-1:])


RESPONSE = build(
    [
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP pc.example.com:5060;branch=z9hG4bK74bf9;received=192.0.2.4",
        "From: Alice <sip:alice@example.com>;tag=9fxced76sl",
        "To: <sip:bob@example.com>;tag=93810874",
        "Call-ID: 3848276298220188511@pc.example.com",
        "CSeq: 63104 OPTIONS",
        "Content-Length: 0",
    ]
)

#: (description, message) that must parse.
VALID: list[tuple[str, bytes]] = [
    ("base request", build(BASE_LINES)),
    ("base response", RESPONSE),
    ("no Max-Forwards (RFC 2543)", replaced("Max-Forwards", None)),
    ("no Contact", replaced("Contact", None)),
    ("Max-Forwards 0", replaced("Max-Forwards", "Max-Forwards: 0")),
    ("Max-Forwards 255 with leading zeros", replaced("Max-Forwards", "Max-Forwards: 000255")),
    ("CSeq 2**32-1", replaced("CSeq", "CSeq: 4294967295 OPTIONS")),
    ("CSeq 0", replaced("CSeq", "CSeq: 0 OPTIONS")),
    (
        "compact headers",
        build(
            [
                "OPTIONS sip:bob@example.com SIP/2.0",
                "v: SIP/2.0/UDP pc.example.com;branch=z9hG4bK74bf9",
                "f: <sip:alice@example.com>;tag=1",
                "t: sip:bob@example.com",
                "i: abc",
                "CSeq: 1 OPTIONS",
                "m: <sip:alice@pc.example.com>",
                "l: 0",
            ]
        ),
    ),
    (
        "lower-case names and no space after colon",
        build(
            [
                "OPTIONS sip:bob@example.com SIP/2.0",
                "via:SIP/2.0/UDP pc.example.com;branch=z9hG4bK74bf9",
                "from:<sip:alice@example.com>;tag=1",
                "to:sip:bob@example.com",
                "call-id:abc",
                "cseq:1 OPTIONS",
            ]
        ),
    ),
    (
        "folded headers",
        build(
            [
                "OPTIONS sip:bob@example.com SIP/2.0",
                "Via: SIP/2.0/UDP pc.example.com",
                "\t;branch=z9hG4bK74bf9",
                "From:",
                "   <sip:alice@example.com>;tag=1",
                "To: sip:bob@example.com",
                "Call-ID: abc",
                "CSeq: 1",
                " OPTIONS",
            ]
        ),
    ),
    (
        "several Via lines and lists",
        added("Via: SIP/2.0/TCP a.example.com, SIP/2.0/TLS [::1]:5061;branch=z9hG4bKx"),
    ),
    (
        "Route and Record-Route",
        added(
            "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
            'Record-Route: "P" <sip:rr.example.com;lr>',
        ),
    ),
    ("wildcard Contact", replaced("Contact", "Contact: *")),
    (
        "several Contacts",
        replaced("Contact", 'Contact: <sip:a@h1>;q=0.1, "B, C" <sip:b@h2>, sip:c@h3;expires=0'),
    ),
    ("Expires", added("Expires: 0")),
    ("Expires text (read as 3600, RFC 3261 section 20.19)", added("Expires: tomorrow")),
    ("Date in RFC 1123 form", added("Date: Sat, 13 Nov 2010 23:29:00 GMT")),
    ("unknown headers and odd values", added('X-Foo: ;;,,<>"', "Y:", "Z-%!: a\x01b")),
    (
        "tel Request-URI",
        build(["OPTIONS tel:+12015550123;phone-context=x SIP/2.0"] + BASE_LINES[1:]),
    ),
    ("unknown scheme Request-URI", build(["OPTIONS urn:service:sos SIP/2.0"] + BASE_LINES[1:])),
    (
        "IPv6 Request-URI",
        build(["OPTIONS sip:[2001:db8::1]:5060;transport=tcp SIP/2.0"] + BASE_LINES[1:]),
    ),
    ("lower-case sip version", build(["OPTIONS sip:bob@example.com sip/2.0"] + BASE_LINES[1:])),
    ("leading CRLFs", b"\r\n\r\n" + build(BASE_LINES)),
    ("status line without reason", RESPONSE.replace(b"200 OK", b"200")),
    ("status 699", RESPONSE.replace(b"200 OK", b"699 Whatever")),
    ("status 100", RESPONSE.replace(b"200 OK", b"100 Trying")),
    ("UTF-8 reason", RESPONSE.replace(b"200 OK", "200 Très bien".encode())),
    ("Latin-1 bytes in a header", added("Subject: caf\xe9").replace(b"caf\xc3\xa9", b"caf\xe9")),
    ("empty header value", added("Subject:")),
]

#: (description, message, status) that must be refused.
INVALID: list[tuple[str, bytes, int]] = [
    ("empty", b"", 400),
    ("only CRLFs", b"\r\n\r\n", 400),
    ("garbage", b"hello world\r\n\r\n", 400),
    ("no Via", replaced("Via", None), 400),
    ("no From", replaced("From", None), 400),
    ("no To", replaced("To", None), 400),
    ("no Call-ID", replaced("Call-ID", None), 400),
    ("no CSeq", replaced("CSeq", None), 400),
    ("response without Via", RESPONSE.replace(b"Via:", b"X-Via:"), 400),
    ("CSeq 2**32", replaced("CSeq", "CSeq: 4294967296 OPTIONS"), 400),
    ("CSeq huge", replaced("CSeq", "CSeq: " + "9" * 5000 + " OPTIONS"), 400),
    ("CSeq negative", replaced("CSeq", "CSeq: -1 OPTIONS"), 400),
    ("CSeq without method", replaced("CSeq", "CSeq: 1"), 400),
    ("CSeq with extra", replaced("CSeq", "CSeq: 1 OPTIONS x"), 400),
    ("CSeq method mismatch", replaced("CSeq", "CSeq: 1 INVITE"), 400),
    ("CSeq method case mismatch", replaced("CSeq", "CSeq: 1 options"), 400),
    ("Max-Forwards 256", replaced("Max-Forwards", "Max-Forwards: 256"), 400),
    ("Max-Forwards negative", replaced("Max-Forwards", "Max-Forwards: -1"), 400),
    ("Max-Forwards text", replaced("Max-Forwards", "Max-Forwards: ten"), 400),
    ("Call-ID repeated", added("i: other"), 400),
    ("To repeated", added("t: <sip:x@y>"), 400),
    ("From repeated", added("From: <sip:x@y>;tag=2"), 400),
    ("CSeq repeated", added("CSeq: 63104 OPTIONS"), 400),
    ("Max-Forwards repeated", added("Max-Forwards: 70"), 400),
    ("Content-Length repeated", added("l: 0"), 400),
    ("Expires repeated", added("Expires: 1", "Expires: 2"), 400),
    ("Call-ID with space", replaced("Call-ID", "Call-ID: a b"), 400),
    ("Call-ID empty", replaced("Call-ID", "Call-ID:"), 400),
    ("bad To", replaced("To", "To: Watson, Thomas <sip:t@example.org>"), 400),
    ("bad From", replaced("From", "From: <sip:alice@example.com"), 400),
    ("bad Contact", replaced("Contact", "Contact: <sip:a@b>;;"), 400),
    ("wildcard Contact with others", replaced("Contact", "Contact: *, <sip:a@b>"), 400),
    ("bad Route", added("Route: sip:p.example.com;lr"), 400),
    ("bad Record-Route", added("Record-Route: <sip:p.example.com;lr"), 400),
    ("bad second Via", added("Via: SIP/2.0/UDP"), 400),
    ("empty Via element", replaced("Via", "Via: SIP/2.0/UDP a;branch=z9hG4bK1,"), 400),
    ("bad Date", added("Date: yesterday"), 400),
    ("Request-URI in <>", build(["OPTIONS <sip:bob@example.com> SIP/2.0"] + BASE_LINES[1:]), 400),
    (
        "Request-URI with headers",
        build(["OPTIONS sip:bob@example.com?Subject=x SIP/2.0"] + BASE_LINES[1:]),
        400,
    ),
    (
        "Request-URI with space",
        build(["OPTIONS sip:bob@example.com ;lr SIP/2.0"] + BASE_LINES[1:]),
        400,
    ),
    (
        "Request-Line with tab",
        build(["OPTIONS\tsip:bob@example.com SIP/2.0"] + BASE_LINES[1:]),
        400,
    ),
    ("Request-Line without version", build(["OPTIONS sip:bob@example.com"] + BASE_LINES[1:]), 400),
    ("bad version", build(["OPTIONS sip:bob@example.com SIP/2"] + BASE_LINES[1:]), 400),
    ("HTTP request", build(["GET / HTTP/1.1", "Host: x"]), 400),
    ("bad method", build(["OPT(IONS sip:bob@example.com SIP/2.0"] + BASE_LINES[1:]), 400),
    ("SIP/3.0", build(["OPTIONS sip:bob@example.com SIP/3.0"] + BASE_LINES[1:]), 505),
    ("SIP/2.1", build(["OPTIONS sip:bob@example.com SIP/2.1"] + BASE_LINES[1:]), 505),
    ("response SIP/1.0", RESPONSE.replace(b"SIP/2.0 200", b"SIP/1.0 200"), 505),
    ("status 99", RESPONSE.replace(b"200 OK", b"099 Low"), 400),
    ("status 700", RESPONSE.replace(b"200 OK", b"700 High"), 400),
    ("status 2000", RESPONSE.replace(b"200 OK", b"2000 Long"), 400),
    ("status not a number", RESPONSE.replace(b"200 OK", b"OK 200"), 400),
    ("header without colon", added("Foobar roobar"), 400),
    ("header with space in name", added("Foo bar: x"), 400),
    ("header with empty name", added(": x"), 400),
    ("continuation before any header", build([BASE_LINES[0], " folded"] + BASE_LINES[1:]), 400),
    ("bare LF in a header", added("X: a\nb"), 400),
    ("bare CR in a header", added("X: a\rb"), 400),
    ("no empty line", build(BASE_LINES)[:-2], 400),
    ("Content-Length too large", replaced("Content-Length", "Content-Length: 10"), 400),
    ("Content-Length negative", replaced("Content-Length", "Content-Length: -1"), 400),
    ("Content-Length text", replaced("Content-Length", "Content-Length: zero"), 400),
    ("Content-Length conflict", added("l: 4") + b"abcd", 400),
]


class ValidTableTests(SynchronousTestCase):
    """
    Every message of L{VALID} parses and round-trips.
    """

    def test_valid(self) -> None:
        """
        Each message parses; serializing and parsing again gives the same
        start line, headers (but Content-Length) and body.
        """
        for description, data in VALID:
            try:
                message = parseMessage(data)
                again = parseMessage(message.serialize())
            except SIPParseError as e:
                self.fail("{}: {}".format(description, e.reason))
            self.assertEqual(type(again), type(message), description)
            self.assertEqual(again.body, message.body, description)
            self.assertEqual(
                [(n, v) for n, v in again.headers if n.lower() not in ("l", "content-length")],
                [(n, v) for n, v in message.headers if n.lower() not in ("l", "content-length")],
                description,
            )
            if isinstance(message, Request):
                assert isinstance(again, Request)
                self.assertEqual((again.method, str(again.uri)), (message.method, str(message.uri)))
            else:
                assert isinstance(message, Response) and isinstance(again, Response)
                self.assertEqual((again.status, again.reason), (message.status, message.reason))

    def test_validAccessorsDoNotRaise(self) -> None:
        """
        After a successful parse the typed accessors do not raise.
        """
        for description, data in VALID:
            message = parseMessage(data)
            values = (
                message.callId,
                message.cseq,
                message.vias,
                message.fromAddr,
                message.toAddr,
                message.contacts,
                message.maxForwards,
                message.expires,
                message.routes,
                message.recordRoutes,
            )
            self.assertTrue(values[2], description)


class InvalidTableTests(SynchronousTestCase):
    """
    Every message of L{INVALID} raises L{SIPParseError} with the expected
    status.
    """

    def test_invalid(self) -> None:
        """
        Each message raises L{SIPParseError} (and nothing else) with the
        expected status and a printable reason.
        """
        for description, data, status in INVALID:
            try:
                parseMessage(data)
            except SIPParseError as e:
                self.assertEqual(e.status, status, description)
                self.assertTrue(e.reason, description)
                self.assertTrue(e.reason.isprintable(), description)
            else:
                self.fail(description + ": parsed")


class ParseDetailsTests(SynchronousTestCase):
    """
    Details of what L{parseMessage} returns.
    """

    def test_request(self) -> None:
        """
        A request has its method, URI, version and headers in order.
        """
        message = parseMessage(build(BASE_LINES))
        assert isinstance(message, Request)
        self.assertEqual(message.method, "OPTIONS")
        self.assertEqual(str(message.uri), "sip:bob@example.com")
        self.assertEqual(message.version, "SIP/2.0")
        self.assertEqual([name for name, _ in message.headers][:3], ["Via", "Max-Forwards", "From"])

    def test_response(self) -> None:
        """
        A response has its status and reason.
        """
        message = parseMessage(RESPONSE)
        assert isinstance(message, Response)
        self.assertEqual((message.status, message.reason), (200, "OK"))
        self.assertEqual(message.vias[0].received, "192.0.2.4")

    def test_foldingUnfolded(self) -> None:
        """
        Folded lines become one value with single spaces.
        """
        message = parseMessage(dict(VALID)["folded headers"])
        self.assertEqual(
            message.headers.lines("via"), ["SIP/2.0/UDP pc.example.com ;branch=z9hG4bK74bf9"]
        )
        self.assertEqual(message.headers.lines("from"), ["<sip:alice@example.com>;tag=1"])
        self.assertEqual(message.cseq, (1, "OPTIONS"))

    def test_bodyFramedByContentLength(self) -> None:
        """
        The body is as long as Content-Length says; the rest of the
        datagram is ignored.
        """
        data = replaced("Content-Length", "Content-Length: 5") + b"hello, and more"
        self.assertEqual(parseMessage(data).body, b"hello")

    def test_bodyWithoutContentLength(self) -> None:
        """
        Without Content-Length the body is the rest of the datagram.
        """
        data = replaced("Content-Length", None) + b"v=0\r\nrest"
        self.assertEqual(parseMessage(data).body, b"v=0\r\nrest")

    def test_binaryBody(self) -> None:
        """
        The body may hold any bytes, CRLF CRLF included.
        """
        body = bytes(range(256)) + b"\r\n\r\n"
        data = replaced("Content-Length", "Content-Length: " + str(len(body))) + body
        self.assertEqual(parseMessage(data).body, body)

    def test_headerBytesRoundTrip(self) -> None:
        """
        Header bytes that are not UTF-8 come back unchanged.
        """
        data = added("Subject: caf\xe9").replace(b"caf\xc3\xa9", b"caf\xe9\xff")
        self.assertEqual(parseMessage(data).serialize(), data)


class LimitsTests(SynchronousTestCase):
    """
    Size, header count and line length are bounded.
    """

    def test_maxSize(self) -> None:
        """
        A message larger than C{maxSize} raises with status 413.
        """
        data = build(BASE_LINES)
        self.assertIsInstance(parseMessage(data, maxSize=len(data)), Request)
        error = self.assertRaises(SIPParseError, parseMessage, data, maxSize=len(data) - 1)
        self.assertEqual(error.status, 413)

    def test_longHeaderNamesNotRemembered(self) -> None:
        """
        Header names are remembered for the next message only when short:
        long names chosen by a sender cannot fill memory.
        """
        longName = "X-" + "a" * 4000
        short = "X-Short-Name"
        data = build(BASE_LINES + [longName + ": 1", short + ": 2"])
        message = parseMessage(data)
        self.assertEqual(message.headers.first(longName), "1")
        self.assertNotIn(longName, parser._NAMES)
        self.assertIn(short, parser._NAMES)

    def test_defaultMaxSize(self) -> None:
        """
        The default limit is 65536 bytes.
        """
        header = replaced("Content-Length", "Content-Length: 00000")
        length = 65536 - len(header)
        data = replaced("Content-Length", "Content-Length: {:05d}".format(length)) + b"x" * length
        self.assertEqual(len(data), 65536)
        self.assertEqual(len(parseMessage(data).body), length)
        error = self.assertRaises(SIPParseError, parseMessage, data + b"x")
        self.assertEqual(error.status, 413)

    def test_maxHeaders(self) -> None:
        """
        More headers than C{maxHeaders} (folded lines counting once) raise.
        """
        data = added(*["X-{}: y".format(i) for i in range(10)])
        count = len(BASE_LINES) - 1 + 10
        parseMessage(data, maxHeaders=count)
        self.assertRaises(SIPParseError, parseMessage, data, maxHeaders=count - 1)
        self.assertRaises(SIPParseError, parseMessage, added(*["X: y"] * 300))

    def test_maxLineLength(self) -> None:
        """
        A line longer than C{maxLineLength} raises.
        """
        data = added("X: " + "a" * 97)
        parseMessage(data, maxLineLength=100)
        self.assertRaises(SIPParseError, parseMessage, data, maxLineLength=99)
        self.assertRaises(SIPParseError, parseMessage, added("X: " + "a" * 9000))


class PartialTests(SynchronousTestCase):
    """
    Errors carry what could be parsed, so a server can answer.
    """

    def test_partialHasHeaders(self) -> None:
        """
        A semantic error carries the request with its headers.
        """
        error = self.assertRaises(SIPParseError, parseMessage, replaced("CSeq", "CSeq: 1 INVITE"))
        partial = error.partial
        self.assertIsInstance(partial, Request)
        self.assertEqual(partial.callId, "3848276298220188511@pc.example.com")
        self.assertEqual(partial.vias[0].branch, "z9hG4bK74bf9")
        self.assertEqual(partial.fromAddr.tag, "9fxced76sl")

    def test_partialForVersion(self) -> None:
        """
        An unsupported version carries the request, for a 505.
        """
        data = build(["OPTIONS sip:bob@example.com SIP/7.0"] + BASE_LINES[1:])
        error = self.assertRaises(SIPParseError, parseMessage, data)
        self.assertEqual(error.status, 505)
        self.assertEqual(error.partial.method, "OPTIONS")
        self.assertEqual(error.partial.callId, "3848276298220188511@pc.example.com")

    def test_partialForBadRequestURI(self) -> None:
        """
        A bad Request-URI still gives a partial request whose URI text is
        kept.
        """
        data = build(["OPTIONS <sip:bob@example.com> SIP/2.0"] + BASE_LINES[1:])
        error = self.assertRaises(SIPParseError, parseMessage, data)
        self.assertEqual(str(error.partial.uri), "<sip:bob@example.com>")
        self.assertEqual(error.partial.cseq, (63104, "OPTIONS"))

    def test_partialForSpacedRequestLine(self) -> None:
        """
        Extra spaces in the Request-Line still give a partial request.
        """
        data = build(["OPTIONS  sip:bob@example.com  SIP/2.0 "] + BASE_LINES[1:])
        error = self.assertRaises(SIPParseError, parseMessage, data)
        self.assertEqual(error.partial.method, "OPTIONS")

    def test_partialSkipsBadLines(self) -> None:
        """
        A malformed header line is reported; the other headers are in the
        partial message.
        """
        error = self.assertRaises(SIPParseError, parseMessage, added("Foobar roobar"))
        self.assertEqual(error.reason, "Malformed header line")
        self.assertEqual(error.partial.callId, "3848276298220188511@pc.example.com")

    def test_partialForLongLine(self) -> None:
        """
        A header line over the limit (an oversized Authorization, say) is an
        error that carries the request without that line, so it can be
        answered; a start line over the limit gives no partial.
        """
        error = self.assertRaises(
            SIPParseError, parseMessage, added("Authorization: Digest " + "a" * 9000))
        self.assertEqual((error.reason, error.status), ("Line too long", 400))
        self.assertEqual(error.partial.callId, "3848276298220188511@pc.example.com")
        self.assertEqual(error.partial.vias[0].branch, "z9hG4bK74bf9")
        self.assertNotIn("authorization", error.partial.headers)
        data = build(["OPTIONS sip:" + "b" * 9000 + "@example.com SIP/2.0"] + BASE_LINES[1:])
        error = self.assertRaises(SIPParseError, parseMessage, data)
        self.assertIsNone(error.partial)

    def test_noPartialForGarbage(self) -> None:
        """
        When the start line is not recognisable there is no partial.
        """
        error = self.assertRaises(SIPParseError, parseMessage, b"\x00\x01\x02\r\n\r\n")
        self.assertIsNone(error.partial)
