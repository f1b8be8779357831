# -*- test-case-name: tests.test_message_messages -*-
"""
Tests for L{sipcore.message.messages}: building, serializing and the
typed accessors of requests and responses.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipcore.message import (
    MAGIC_COOKIE,
    Headers,
    Request,
    Response,
    SIPParseError,
    _random,
    generateBranch,
    generateTag,
    parseMessage,
    parseURI,
    reasonPhrase,
)

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.4:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKfirst\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: Bob <sips:bob@example.com>;tag=a73kszlfl\r\n"
    b"To: Bob <sips:bob@example.com>\r\n"
    b"Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.4\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b'Contact: <sip:bob@192.0.2.4:5060;transport=tcp>;expires=7200;+sip.instance="<urn:uuid:1>";reg-id=1\r\n'
    b"Expires: 3600\r\n"
    b"X-Custom: keep;me, as is\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


class RequestTests(SynchronousTestCase):
    """
    L{Request} construction, accessors and serialization.
    """

    def test_accessors(self) -> None:
        """
        The typed accessors read the parsed headers.
        """
        request = parseMessage(REGISTER)
        assert isinstance(request, Request)
        self.assertTrue(request.isRequest)
        self.assertEqual(request.method, "REGISTER")
        self.assertEqual(request.uri, parseURI("sip:example.com"))
        self.assertEqual(request.callId, "1j9FpLxk3uxtm8tn@192.0.2.4")
        self.assertEqual(request.cseq, (1, "REGISTER"))
        self.assertEqual([via.host for via in request.vias], ["192.0.2.4", "10.0.0.1"])
        self.assertIs(request.vias[0].rport, True)
        self.assertEqual(request.fromAddr.tag, "a73kszlfl")
        self.assertEqual(request.fromAddr.displayName, "Bob")
        self.assertIsNone(request.toAddr.tag)
        contacts = request.contacts
        assert contacts != "*"
        self.assertEqual(len(contacts), 1)
        self.assertEqual(contacts[0].param("+sip.instance"), "<urn:uuid:1>")
        self.assertEqual(contacts[0].uri.param("transport"), "tcp")
        self.assertEqual(request.maxForwards, 70)
        self.assertEqual(request.expires, 3600)
        self.assertEqual(request.body, b"")

    def test_serializeRoundTrip(self) -> None:
        """
        Serializing a parsed message writes back the same bytes when it
        was written canonically.
        """
        self.assertEqual(parseMessage(REGISTER).serialize(), REGISTER)

    def test_build(self) -> None:
        """
        A request built from parts serializes with a correct
        Content-Length and parses back.
        """
        request = Request(
            "MESSAGE",
            "sip:alice@example.com",
            [
                ("Via", "SIP/2.0/UDP h;branch=" + generateBranch()),
                ("From", "<sip:b@h>;tag=" + generateTag()),
                ("To", "<sip:alice@example.com>"),
                ("Call-ID", "x1"),
                ("CSeq", "7 MESSAGE"),
                ("Content-Type", "text/plain"),
            ],
            b"hello\r\n\r\nworld",
        )
        data = request.serialize()
        self.assertIn(b"\r\nContent-Length: 14\r\n\r\nhello", data)
        parsed = parseMessage(data)
        assert isinstance(parsed, Request)
        self.assertEqual(parsed.body, b"hello\r\n\r\nworld")
        self.assertEqual(parsed.uri, request.uri)
        self.assertEqual(parsed.cseq, (7, "MESSAGE"))
        self.assertEqual(bytes(request), data)

    def test_contentLengthReplaced(self) -> None:
        """
        Serialization keeps one Content-Length, where the first was and
        spelled as it was, with the real body length.
        """
        request = Request(
            "OPTIONS",
            parseURI("sip:h"),
            Headers([("l", "99"), ("Call-ID", "a"), ("Content-Length", "5")]),
            b"abc",
        )
        self.assertEqual(
            request.serialize(), b"OPTIONS sip:h SIP/2.0\r\nl: 3\r\nCall-ID: a\r\n\r\nabc"
        )

    def test_headerInjectionRefused(self) -> None:
        """
        CR or LF inside a header value or the start line cannot be
        serialized.
        """
        request = Request("OPTIONS", "sip:h", [("Subject", "a\r\nVia: evil")])
        self.assertRaises(ValueError, request.serialize)
        response = Response(200, "OK\r\nX: y")
        self.assertRaises(ValueError, response.serialize)

    def test_wildcardContact(self) -> None:
        """
        C{Contact: *} gives the string C{"*"}.
        """
        request = Request("REGISTER", "sip:h", [("Contact", "*")])
        self.assertEqual(request.contacts, "*")
        self.assertEqual(Request("REGISTER", "sip:h").contacts, [])

    def test_wildcardNotAlone(self) -> None:
        """
        C{*} among other Contacts is an error.
        """
        request = Request("REGISTER", "sip:h", [("Contact", "*, <sip:a@b>")])
        self.assertRaises(SIPParseError, lambda: request.contacts)

    def test_countContacts(self) -> None:
        """
        C{countContacts} counts the Contact values across lines (commas in
        quotes and angle brackets do not separate), stopping past its limit.
        """
        request = Request("REGISTER", "sip:h", [
            ("Contact", '"Doe, J" <sip:a@b;x=1,2>, <sip:c@d>'),
            ("m", "sip:e@f, sip:g@h"),
        ])
        self.assertEqual(request.countContacts(10), 4)
        self.assertEqual(request.countContacts(4), 4)
        self.assertEqual(request.countContacts(3), 4)
        self.assertEqual(request.countContacts(1), 2)
        self.assertEqual(request.countContacts(0), 1)
        self.assertEqual(Request("REGISTER", "sip:h", [("Contact", "*")]).countContacts(10), 1)
        self.assertEqual(Request("REGISTER", "sip:h").countContacts(10), 0)

    def test_missingHeadersRaise(self) -> None:
        """
        Accessors of required headers raise L{SIPParseError} when they are
        absent; optional ones give C{None} or an empty list.
        """
        request = Request("OPTIONS", "sip:h")
        for name in ("callId", "cseq", "fromAddr", "toAddr"):
            self.assertRaises(SIPParseError, getattr, request, name)
        self.assertEqual(request.vias, [])
        self.assertIsNone(request.maxForwards)
        self.assertIsNone(request.expires)
        self.assertEqual(request.routes, [])

    def test_accessorsFollowChanges(self) -> None:
        """
        Cached accessors are recomputed after the headers change.
        """
        request = parseMessage(REGISTER)
        self.assertEqual(request.maxForwards, 70)
        request.headers.set("Max-Forwards", "69")
        self.assertEqual(request.maxForwards, 69)
        request.headers.add("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp", first=True)
        self.assertEqual(request.vias[0].host, "proxy.example.com")
        self.assertEqual(len(request.vias), 3)

    def test_replaceTopVia(self) -> None:
        """
        C{replaceTopVia} replaces the first Via value in the headers (the
        rest of its line and the other lines stay) and in C{vias}, which
        then equals what a parse of the new text gives.
        """
        request = parseMessage(REGISTER)
        top = request.vias[0]
        stamped = top.withParam("received", "198.51.100.7")
        request.replaceTopVia(stamped)
        self.assertEqual(request.vias[0], stamped)
        self.assertEqual(request.headers.lines("via")[0], str(stamped))
        self.assertEqual(parseMessage(request.serialize()).vias, request.vias)
        self.assertEqual(len(request.vias), 2)

    def test_expiresClamped(self) -> None:
        """
        A huge Expires is clamped to 2**32-1 (RFC 4475 scalar02 advice).
        """
        request = Request("REGISTER", "sip:h", [("Expires", "1" * 100)])
        self.assertEqual(request.expires, 2**32 - 1)

    def test_expiresMalformed(self) -> None:
        """
        A malformed Expires reads as 3600 (RFC 3261 section 20.19), whatever
        the method: text, a sign, a fraction, non-ASCII digits, nothing.
        """
        for value in ("soon", "-1", "+5", "1.5", "\u00b2", "", "Thu, 01 Dec 1994 16:00:00 GMT"):
            for method in ("REGISTER", "INVITE"):
                request = Request(method, "sip:h", [("Expires", value)])
                self.assertEqual(request.expires, 3600, (method, value))

    def test_routes(self) -> None:
        """
        Route and Record-Route give addresses in order across lines.
        """
        request = Request(
            "INVITE",
            "sip:h",
            [
                ("Route", "<sip:p1;lr>, <sip:p2;lr>"),
                ("Route", "<sip:p3;lr>"),
                ("Record-Route", "<sip:rr;lr>"),
            ],
        )
        self.assertEqual([route.uri.host for route in request.routes], ["p1", "p2", "p3"])
        self.assertEqual([route.uri.host for route in request.recordRoutes], ["rr"])


class ResponseTests(SynchronousTestCase):
    """
    L{Response} construction, C{forRequest} and reason phrases.
    """

    def test_forRequest(self) -> None:
        """
        A response copies all Via in order, From, To, Call-ID and CSeq
        (RFC 3261 8.2.6.2) and adds the To tag.
        """
        request = parseMessage(REGISTER)
        assert isinstance(request, Request)
        response = Response.forRequest(request, 200, toTag="tt1")
        self.assertFalse(response.isRequest)
        self.assertEqual(response.reason, "OK")
        self.assertEqual(
            list(response.headers),
            [
                ("Via", "SIP/2.0/TCP 192.0.2.4:5060;branch=z9hG4bKnashds7;rport"),
                ("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKfirst"),
                ("From", "Bob <sips:bob@example.com>;tag=a73kszlfl"),
                ("To", "Bob <sips:bob@example.com>;tag=tt1"),
                ("Call-ID", "1j9FpLxk3uxtm8tn@192.0.2.4"),
                ("CSeq", "1 REGISTER"),
            ],
        )
        parsed = parseMessage(response.serialize())
        assert isinstance(parsed, Response)
        self.assertEqual((parsed.status, parsed.reason), (200, "OK"))
        self.assertEqual(parsed.toAddr.tag, "tt1")
        self.assertEqual(parsed.cseq, (1, "REGISTER"))

    def test_forRequestKeepsExistingTag(self) -> None:
        """
        A To that already has a tag keeps it.
        """
        request = parseMessage(
            REGISTER.replace(b"To: Bob <sips:bob@example.com>", b"t: sip:b@h;tag=old")
        )
        assert isinstance(request, Request)
        response = Response.forRequest(request, 486, toTag="new")
        self.assertEqual(response.headers.first("to"), "sip:b@h;tag=old")
        self.assertEqual(response.reason, "Busy Here")

    def test_forPartialRequest(self) -> None:
        """
        A 400 can be built from the C{partial} of a parse error, even when
        To cannot be parsed.
        """
        data = REGISTER.replace(b"To: Bob <sips:bob@example.com>", b'To: "unterminated <sip:b@h>')
        error = self.assertRaises(SIPParseError, parseMessage, data)
        response = Response.forRequest(error.partial, 400, error.reason, toTag="x")
        self.assertEqual(response.headers.first("to"), '"unterminated <sip:b@h>')
        self.assertEqual(response.reason, error.reason)
        self.assertEqual(len(response.headers.lines("via")), 2)

    def test_reasonPhrase(self) -> None:
        """
        Known codes have their phrase; unknown ones their class's.
        """
        self.assertEqual(reasonPhrase(100), "Trying")
        self.assertEqual(reasonPhrase(183), "Session Progress")
        self.assertEqual(reasonPhrase(404), "Not Found")
        self.assertEqual(reasonPhrase(483), "Too Many Hops")
        self.assertEqual(reasonPhrase(505), "Version Not Supported")
        self.assertEqual(reasonPhrase(499), "Client Error")
        self.assertEqual(reasonPhrase(299), "Success")
        self.assertEqual(Response(423).reason, "Interval Too Brief")

    def test_serializeStatusLine(self) -> None:
        """
        The status line is C{version SP code SP reason}, even with an
        empty reason.
        """
        self.assertTrue(Response(100, "").serialize().startswith(b"SIP/2.0 100 \r\n"))


class GeneratorTests(SynchronousTestCase):
    """
    Random tags and branches.
    """

    def test_tagsDiffer(self) -> None:
        """
        Tags are 16 hex digits and do not repeat.
        """
        tags = {generateTag() for _ in range(100)}
        self.assertEqual(len(tags), 100)
        for tag in tags:
            self.assertEqual(len(tag), 16)
            int(tag, 16)

    def test_branches(self) -> None:
        """
        Branches start with the magic cookie and do not repeat.
        """
        branches = {generateBranch() for _ in range(100)}
        self.assertEqual(len(branches), 100)
        for branch in branches:
            self.assertTrue(branch.startswith(MAGIC_COOKIE))
            self.assertGreater(len(branch), len(MAGIC_COOKIE) + 16)


class RandomPoolTests(SynchronousTestCase):
    """
    L{sipcore.message._random.RandomPool} hands out the bytes of
    C{os.urandom} blocks, each once.
    """

    def setUp(self) -> None:
        self.blocks: list[bytes] = []

        def urandom(count: int) -> bytes:
            block = bytes((len(self.blocks) * 16 + i) % 256 for i in range(count))
            self.blocks.append(block)
            return block

        self.patch(_random.os, "urandom", urandom)

    def test_eachByteOnce(self) -> None:
        """
        Successive values are consecutive slices of one block; when a value
        does not fit in what is left, a new block is read and the rest of
        the old one is not used.
        """
        pool = _random.RandomPool(block=8)
        self.assertEqual(pool.hex(3), "000102")
        self.assertEqual(pool.hex(3), "030405")
        self.assertEqual(len(self.blocks), 1)
        self.assertEqual(pool.hex(3), "101112")
        self.assertEqual(len(self.blocks), 2)

    def test_largerThanBlock(self) -> None:
        """
        A value larger than the block size gets a block of its own size.
        """
        pool = _random.RandomPool(block=4)
        self.assertEqual(len(pool.hex(10)), 20)
        self.assertEqual(len(self.blocks[0]), 10)

    def test_reset(self) -> None:
        """
        After C{reset} (what a forked child does) the next value comes from
        a new block.
        """
        pool = _random.RandomPool(block=8)
        pool.hex(2)
        pool.reset()
        self.assertEqual(pool.hex(2), "1011")


class RandomValuesTests(SynchronousTestCase):
    """
    Tags and branches are fresh random values.
    """

    def test_tagsDiffer(self) -> None:
        """
        Thousands of tags are all different, 16 hex digits each.
        """
        tags = {generateTag() for _ in range(5000)}
        self.assertEqual(len(tags), 5000)
        self.assertTrue(all(len(tag) == 16 and int(tag, 16) >= 0 for tag in tags))

    def test_branch(self) -> None:
        """
        A branch is the magic cookie and 24 hex digits.
        """
        branch = generateBranch()
        self.assertTrue(branch.startswith("z9hG4bK"))
        self.assertEqual(len(branch), 7 + 24)
