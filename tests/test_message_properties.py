# -*- test-case-name: tests.test_message_properties -*-
"""
Property tests for the message layer: no input makes it raise anything but
L{SIPParseError}, and what it accepts round-trips.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from sipcore.message import (
    URI,
    Address,
    Ping,
    Request,
    Response,
    SIPParseError,
    StreamFramer,
    parseAddress,
    parseMessage,
    parseURI,
    parseVia,
)
from sipcore.message import uri as uri_module
from sipcore.message._syntax import countList, splitList

TORTURE = FilePath(__file__).sibling("torture")
SAMPLES = [path.getContent() for path in sorted(TORTURE.globChildren("*.dat"))]

SETTINGS = settings(
    max_examples=int(os.environ.get("SIPCORE_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Bytes that matter to SIP syntax, to make mutations hit interesting spots.
SIGNIFICANT = b' \t\r\n:;,<>"\\@[]%=?/&*0123456789SIPsipv'


def exercise(message: Request | Response) -> tuple[object, ...]:
    """
    Use every typed accessor of an accepted message.
    """
    return (
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
        str(message.uri) if isinstance(message, Request) else message.status,
    )


def checkAccepted(test: SynchronousTestCase, data: bytes) -> None:
    """
    Parse C{data}: it must either raise L{SIPParseError} or give a message
    whose accessors work and which round-trips.
    """
    try:
        message = parseMessage(data)
    except SIPParseError as e:
        test.assertIn(e.status, (400, 413, 505))
        test.assertTrue(e.reason.isprintable())
        return
    exercise(message)
    again = parseMessage(message.serialize())
    test.assertEqual(again.body, message.body)
    test.assertEqual(
        [(n, v) for n, v in again.headers if n.lower() not in ("l", "content-length")],
        [(n, v) for n, v in message.headers if n.lower() not in ("l", "content-length")],
    )
    test.assertEqual(again.vias, message.vias)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """
    A torture message with a few random edits.
    """
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "truncate"]))
        position = draw(st.integers(0, len(data)))
        if kind == "insert":
            chunk = draw(
                st.binary(min_size=1, max_size=4)
                | st.sampled_from([bytes([b]) for b in SIGNIFICANT])
            )
            data[position:position] = chunk
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        elif kind == "replace" and position < len(data):
            data[position] = draw(st.sampled_from(list(SIGNIFICANT)))
        elif kind == "duplicate":
            end = data.find(b"\r\n", position)
            if end > 0:
                data[end:end] = data[position : end + 2]
        elif kind == "truncate":
            del data[position:]
    return bytes(data)


class NeverCrashTests(SynchronousTestCase):
    """
    Hostile input raises L{SIPParseError} and nothing else.
    """

    @SETTINGS
    @given(st.binary(max_size=1500))
    def test_arbitraryBytes(self, data: bytes) -> None:
        """
        Arbitrary bytes parse or raise L{SIPParseError}.
        """
        checkAccepted(self, data)

    @SETTINGS
    @given(
        st.lists(
            st.sampled_from([bytes([b]) for b in SIGNIFICANT]) | st.binary(max_size=3), max_size=300
        )
    )
    def test_sipAlphabetSoup(self, pieces: list[bytes]) -> None:
        """
        Soup of SIP-significant bytes after a plausible start line parses
        or raises L{SIPParseError}.
        """
        checkAccepted(self, b"INVITE sip:a@b SIP/2.0\r\nVia: " + b"".join(pieces))

    @SETTINGS
    @given(mutated())
    def test_mutatedTorture(self, data: bytes) -> None:
        """
        Mutated torture messages parse (and then round-trip) or raise
        L{SIPParseError}.
        """
        checkAccepted(self, data)

    @SETTINGS
    @given(st.text(max_size=200))
    def test_componentParsers(self, text: str) -> None:
        """
        The URI, address and Via parsers raise only L{SIPParseError}.
        """
        for parser in (parseURI, parseAddress, parseVia):
            try:
                result = parser(text)
            except SIPParseError:
                continue
            str(result)

    @SETTINGS
    @given(mutated(), st.lists(st.integers(1, 50), max_size=40))
    def test_framerSplitsAnyWay(self, data: bytes, cuts: list[int]) -> None:
        """
        However a stream is cut into chunks, the framer gives the same
        frames as when fed at once (or raises L{SIPParseError} both ways).
        """
        stream = data + b"\r\n\r\n" + data
        try:
            whole: list[bytes | Ping] | None = StreamFramer().feed(stream)
        except SIPParseError:
            whole = None
        framer = StreamFramer()
        pieces: list[bytes | Ping] = []
        position = 0
        try:
            for cut in cuts + [len(stream)]:
                pieces.extend(framer.feed(stream[position : position + cut]))
                position += cut
            pieces.extend(framer.feed(stream[position:]))
        except SIPParseError:
            self.assertIsNone(whole)
            return
        self.assertEqual(pieces, whole)


TOKEN_ALPHABET = "abcXYZ019-.!%*_+`'~"
tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=12)
labels = st.text("abcdefxyz0123456789", min_size=1, max_size=8).filter(
    lambda label: not label.isdigit()
)
hosts = st.one_of(
    st.lists(labels, min_size=1, max_size=3).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: "%d.%d.%d.%d" % t),
    st.sampled_from(["::1", "2001:db8::10", "::ffff:192.0.2.1", "fe80::1:2:3:4"]),
)
userChars = st.text("abcAB09-_.!~*'()&=+$,;?/", min_size=1, max_size=10)
escapes = st.sampled_from(["%00", "%41", "%25", "%3A", "%40"])
users = st.lists(userChars | escapes, min_size=1, max_size=4).map("".join)
paramNames = st.text("abclrxyz-", min_size=1, max_size=8)
paramValues = st.none() | st.text("abc019-_.[]:/&+$", min_size=1, max_size=8)


@st.composite
def sipURIs(draw: st.DrawFn) -> URI:
    """
    Random SIP URIs.
    """
    return URI(
        draw(st.sampled_from(["sip", "sips"])),
        user=draw(st.none() | users),
        password=None,
        host=draw(hosts),
        port=draw(st.none() | st.integers(0, 65535)),
        params=draw(st.lists(st.tuples(paramNames, paramValues), max_size=3).map(tuple)),
        headers=draw(
            st.lists(
                st.tuples(
                    st.text("abcH", min_size=1, max_size=5),
                    st.lists(st.sampled_from(["a", "b", "%20", "?", ":"]), max_size=4).map("".join),
                ),
                max_size=2,
            ).map(tuple)
        ),
    )


displayNames = st.none() | st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=20
)
headerParams = st.lists(
    st.tuples(
        tokens,
        st.none()
        | tokens
        | st.text('abc \\",;', max_size=6).map(
            lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'
        ),
    ),
    max_size=3,
).map(tuple)


class RoundTripTests(SynchronousTestCase):
    """
    What we build, we can read back.
    """

    @SETTINGS
    @given(sipURIs())
    def test_uri(self, uri: URI) -> None:
        """
        A built URI serializes to text that parses back to it.
        """
        self.assertEqual(parseURI(str(uri)), uri)

    @SETTINGS
    @given(displayNames, sipURIs(), headerParams)
    def test_address(
        self, displayName: str | None, uri: URI, params: list[tuple[str, str | None]]
    ) -> None:
        """
        A built address serializes to text that parses back to it.
        """
        address = Address(displayName, uri, tuple(params))
        self.assertEqual(parseAddress(str(address)), address)

    @SETTINGS
    @given(
        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=10),
        sipURIs().map(lambda uri: uri.copy(headers=())),
        displayNames,
        st.integers(0, 2**32 - 1),
        st.integers(0, 255),
        st.lists(
            st.tuples(
                st.text("XYZabc-", min_size=1, max_size=8).map(lambda n: "X-" + n),
                st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30),
            ),
            max_size=5,
        ),
        st.binary(max_size=200),
    )
    def test_request(
        self,
        method: str,
        uri: URI,
        displayName: str | None,
        sequence: int,
        hops: int,
        extra: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        """
        A built request serializes to bytes that parse back to equal
        values.
        """
        fromAddr = Address(displayName, uri, (("tag", "abc"),))
        request = Request(
            method,
            uri,
            [
                ("Via", "SIP/2.0/UDP host.example.com;branch=z9hG4bKx"),
                ("From", str(fromAddr)),
                ("To", "<sip:b@h>"),
                ("Call-ID", "c1"),
                ("CSeq", "{} {}".format(sequence, method)),
                ("Max-Forwards", str(hops)),
            ]
            + extra,
            body,
        )
        parsed = parseMessage(request.serialize())
        assert isinstance(parsed, Request)
        self.assertEqual((parsed.method, parsed.uri), (method, uri))
        self.assertEqual(parsed.cseq, (sequence, method))
        self.assertEqual(parsed.maxForwards, hops)
        self.assertEqual(parsed.fromAddr, fromAddr)
        self.assertEqual(parsed.body, body)
        self.assertEqual(
            [(name, value) for name, value in parsed.headers if name.startswith("X-")],
            [(name, value.strip(" \t")) for name, value in extra],
        )


#: Characters that matter to SIP URI syntax, for texts near the fast path's
#: boundary.
_URI_CHARS = "sSiIpP:@;=.%?&[]-_!~*'()+$,/ 0123456789abcdefxyz"


def _outcome(parse: Any, text: str) -> tuple[object, ...]:
    try:
        uri = parse(text)
    except SIPParseError as e:
        return ("error", e.reason)
    return ("uri", uri, str(uri))


class FastURIPathTests(SynchronousTestCase):
    """
    L{sipcore.message.uri._parseFast} gives what the general parser gives,
    or declines.
    """

    @SETTINGS
    @given(st.text(_URI_CHARS, max_size=40).map(lambda t: "sip:" + t))
    def test_nearMisses(self, text: str) -> None:
        """
        For texts built of URI syntax characters, the fast path's URI (when
        it gives one) equals the general path's, which accepts the text.
        """
        fast = uri_module._parseFast(text)
        if fast is not None:
            self.assertEqual(("uri", fast, str(fast)), _outcome(uri_module._parseGeneral, text))

    @SETTINGS
    @given(sipURIs())
    def test_built(self, uri: URI) -> None:
        """
        parseURI (fast path first) and the general path agree on built URIs.
        """
        text = str(uri)
        self.assertEqual(_outcome(parseURI, text), _outcome(uri_module._parseGeneral, text))

    def test_declines(self) -> None:
        """
        Shapes the fast path leaves to the general path: IPv6, escapes,
        passwords, URI headers, out-of-range ports and octets, tel URIs.
        """
        for text in ["sip:a@[::1]", "sip:a%41@h", "sip:a:pw@h", "sip:a@h?x=y",
                     "sip:a@h:65536", "sip:a@256.0.0.1", "tel:+123", "sip:a;b=c@h"]:
            self.assertIsNone(uri_module._parseFast(text), text)

    def test_takes(self) -> None:
        """
        The common shapes are taken, with every component as the general
        path reads it.
        """
        for text in ["sip:u1x1@127.0.0.1:5070;transport=UDP", "SIPS:Bob@Example.COM.",
                     "sip:example.com;lr", "sip:1.2.3.4:65535;maddr=[2001:db8::1];x"]:
            fast = uri_module._parseFast(text)
            self.assertIsNotNone(fast, text)
            self.assertEqual(fast, uri_module._parseGeneral(text))
            self.assertEqual(str(fast), text)


class ListCountTests(SynchronousTestCase):
    """
    L{countList} counts the elements L{splitList} finds, stopping past its
    limit.
    """

    @SETTINGS
    @given(st.text(',"<>\\ ab', max_size=60), st.integers(0, 30))
    def test_agreesWithSplitList(self, text: str, limit: int) -> None:
        """
        For any text L{splitList} accepts, the count is its element count,
        or C{limit + 1} when that is more than C{limit}.
        """
        try:
            elements = splitList(text)
        except SIPParseError:
            return
        self.assertEqual(countList(text, limit), min(len(elements), limit + 1))
