# -*- test-case-name: tests.test_message_torture -*-
"""
The SIP torture messages of RFC 4475 and RFC 5118 (see
C{tests/torture/SOURCE.md}), checked against C{tests/torture/manifest.tsv}.
"""

from __future__ import annotations

import csv
import hashlib

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from sipcore.message import Request, Response, SIPParseError, parseMessage

TORTURE = FilePath(__file__).sibling("torture")


def manifest() -> list[dict[str, str]]:
    """
    The rows of C{manifest.tsv}.
    """
    with TORTURE.child("manifest.tsv").open("r") as f:
        return list(csv.DictReader((line.decode("utf-8") for line in f), delimiter="\t"))


def load(name: str) -> bytes:
    """
    The bytes of torture message C{name}.
    """
    return TORTURE.child(name + ".dat").getContent()


def parse(name: str) -> Request | Response:
    """
    Parse torture message C{name}.
    """
    return parseMessage(load(name))


class ManifestTests(SynchronousTestCase):
    """
    Every message is accepted or refused as the manifest says.
    """

    def test_filesIntact(self) -> None:
        """
        The files match C{SHA256SUMS} (nothing rewrote their line ends).
        """
        count = 0
        for line in TORTURE.child("SHA256SUMS").getContent().decode("ascii").splitlines():
            digest, name = line.split(None, 1)
            content = TORTURE.preauthChild(name.lstrip("*")).getContent()
            self.assertEqual(hashlib.sha256(content).hexdigest(), digest, name)
            count += 1
        self.assertGreaterEqual(count, 62)

    def test_manifestComplete(self) -> None:
        """
        The manifest lists every C{.dat} file.
        """
        names = {row["name"] for row in manifest()}
        files = {path.basename()[:-4] for path in TORTURE.globChildren("*.dat")}
        self.assertEqual(names, files)
        self.assertEqual(len(names), 63)

    def test_validMessagesParseAndRoundTrip(self) -> None:
        """
        Every C{valid} and C{valid-semantic-error} message parses, and
        serializing then parsing again gives equal header values (all but
        Content-Length, which serialization rewrites) and body.
        """
        checked = 0
        for row in manifest():
            if row["expected"] not in ("valid", "valid-semantic-error"):
                continue
            try:
                message = parse(row["name"])
                again = parseMessage(message.serialize())
            except SIPParseError as e:
                self.fail("{}: {}".format(row["name"], e.reason))
            self.assertEqual(again.body, message.body, row["name"])

            def values(m: Request | Response) -> list[tuple[str, str]]:
                return [
                    (name, value)
                    for name, value in m.headers
                    if name.lower() not in ("l", "content-length")
                ]

            self.assertEqual(values(again), values(message), row["name"])
            self.assertEqual(again.vias, message.vias, row["name"])
            self.assertEqual(again.cseq, message.cseq, row["name"])
            self.assertEqual(again.contacts, message.contacts, row["name"])
            checked += 1
        self.assertEqual(checked, 37)

    def test_invalidMessagesRaise(self) -> None:
        """
        Every C{invalid} message raises L{SIPParseError}, and nothing else.
        C{ipv6-bug-abnf-3-colons} is refused too: we follow RFC 4291 and
        do not take up RFC 5118's offer of leniency.
        """
        checked = 0
        for row in manifest():
            if row["expected"] != "invalid":
                continue
            try:
                parse(row["name"])
            except SIPParseError:
                checked += 1
            else:
                self.fail(row["name"] + " parsed")
        self.assertEqual(checked, 26)


class ValidFactsTests(SynchronousTestCase):
    """
    Specific facts the manifest notes about valid messages.
    """

    def test_wsinv(self) -> None:
        """
        Folding and LWS everywhere: three Via values, leading zeros, an
        empty Subject, escaped quotes in display names.
        """
        message = parse("wsinv")
        self.assertEqual([via.transport for via in message.vias], ["UDP", "TCP", "UDP"])
        self.assertEqual(message.vias[2].branch, "z9hG4bK30239")
        self.assertEqual(message.maxForwards, 68)
        self.assertEqual(message.cseq, (9, "INVITE"))
        self.assertEqual(message.headers.first("s"), "")
        self.assertEqual(message.fromAddr.displayName, 'J Rosenberg \\"')
        self.assertEqual(message.fromAddr.tag, "98asjd8")
        self.assertEqual(message.toAddr.tag, "1918181833n")
        contacts = message.contacts
        assert contacts != "*"
        self.assertEqual(contacts[0].displayName, 'Quoted string ""')
        self.assertEqual(contacts[0].param("q"), "0.33")
        self.assertEqual(len(message.body), 150)

    def test_intmeth(self) -> None:
        """
        An unknown method of token characters, an odd user and password in
        the Request-URI, and NUL/BEL/DEL quoted pairs in To.
        """
        message = parse("intmeth")
        assert isinstance(message, Request)
        self.assertEqual(message.method, "!interesting-Method0123456789_*+`.%indeed'~")
        self.assertEqual(message.uri.user, "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        self.assertEqual(message.uri.password, "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        self.assertEqual(message.toAddr.displayName, "BEL:\x07 NUL:\x00 DEL:\x7f")
        self.assertEqual(message.fromAddr.tag, "_token~1'+`*%!-.")

    def test_esc01(self) -> None:
        """
        Escapes decode once: C{value%41}, not C{valueA}.
        """
        message = parse("esc01")
        assert isinstance(message, Request)
        self.assertEqual(message.uri.unescapedUser, "sips:user@example.com")
        self.assertEqual(message.toAddr.uri.unescapedUser, "user")
        self.assertEqual(message.fromAddr.uri.unescapedUser, "I have spaces")
        contacts = message.contacts
        assert contacts != "*"
        self.assertEqual(contacts[0].uri.param("name"), "value%41")
        self.assertTrue(contacts[0].uri.hasParam("lr"))

    def test_escnull(self) -> None:
        """
        C{%00} and C{%00%00} are two distinct Contacts.
        """
        contacts = parse("escnull").contacts
        assert contacts != "*"
        self.assertEqual([c.uri.unescapedUser for c in contacts], ["\x00", "\x00\x00"])
        self.assertNotEqual(contacts[0].uri, contacts[1].uri)

    def test_esc02(self) -> None:
        """
        C{%} is no escape outside URIs: the method stays C{RE%47IST%45R}
        and C{C%6Fntact} is another header, so there are 2 Contacts.
        """
        message = parse("esc02")
        assert isinstance(message, Request)
        self.assertEqual(message.method, "RE%47IST%45R")
        self.assertEqual(message.toAddr.displayName, "%Z%45")
        self.assertEqual(len(message.contacts), 2)
        self.assertEqual(message.headers.lines("C%6Fntact"), ["<sip:alias2@host2.example.com>"])

    def test_lwsdisp(self) -> None:
        """
        A token display name directly followed by C{<}.
        """
        self.assertEqual(parse("lwsdisp").fromAddr.displayName, "caller")

    def test_longreq(self) -> None:
        """
        Many Via values in many spellings, all found.
        """
        message = parse("longreq")
        self.assertEqual(len(message.vias), 34)
        self.assertEqual(message.vias[0].host, "sip33.example.com")
        self.assertEqual(message.toAddr.uri.port, 6000)

    def test_dblreq(self) -> None:
        """
        Only the REGISTER is read; the trailing INVITE is ignored.
        """
        message = parse("dblreq")
        assert isinstance(message, Request)
        self.assertEqual(message.method, "REGISTER")
        self.assertEqual(message.body, b"")

    def test_semiuri(self) -> None:
        """
        The Request-URI's user part holds the C{;par=...}.
        """
        message = parse("semiuri")
        assert isinstance(message, Request)
        self.assertEqual(message.uri.user, "user;par=u%40example.net")
        self.assertEqual(message.uri.host, "example.com")
        self.assertEqual(message.uri.params, ())

    def test_transports(self) -> None:
        """
        Extension transports are kept.
        """
        self.assertEqual(
            [via.transport for via in parse("transports").vias],
            ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"],
        )

    def test_mpart01(self) -> None:
        """
        A binary body is framed by Content-Length exactly.
        """
        message = parse("mpart01")
        self.assertEqual(len(message.body), 553)
        self.assertIn(b"\x00", message.body)

    def test_responses(self) -> None:
        """
        UTF-8 and empty reason phrases.
        """
        unreason = parse("unreason")
        assert isinstance(unreason, Response)
        self.assertEqual(unreason.status, 200)
        self.assertTrue(unreason.reason.startswith("= 2**3 * 5**2 "))
        noreason = parse("noreason")
        assert isinstance(noreason, Response)
        self.assertEqual((noreason.status, noreason.reason), (100, ""))

    def test_semanticErrorsParse(self) -> None:
        """
        Messages with semantic errors parse with the odd values visible.
        """
        self.assertEqual(parse("badbranch").vias[0].branch, "z9hG4bK")
        self.assertFalse(parse("badbranch").vias[0].isRFC3261Branch)
        unkscm = parse("unkscm")
        assert isinstance(unkscm, Request)
        self.assertEqual(unkscm.uri.scheme, "nobodyknowsthisscheme")
        novelsc = parse("novelsc")
        assert isinstance(novelsc, Request)
        self.assertEqual(novelsc.uri.scheme, "soap.beep")
        unksm2 = parse("unksm2")
        self.assertEqual(unksm2.toAddr.uri.scheme, "isbn")
        self.assertEqual(unksm2.fromAddr.uri.scheme, "http")
        self.assertEqual(parse("zeromf").maxForwards, 0)
        self.assertEqual(parse("bcast").vias[1].host, "255.255.255.255")

    def test_cparams(self) -> None:
        """
        Without C{<>} the parameter belongs to the Contact; with C{<>} to
        its URI.
        """
        bare = parse("cparam01").contacts
        angled = parse("cparam02").contacts
        assert bare != "*" and angled != "*"
        self.assertTrue(bare[0].hasParam("unknownparam"))
        self.assertFalse(bare[0].uri.hasParam("unknownparam"))
        self.assertTrue(angled[0].uri.hasParam("unknownparam"))
        self.assertFalse(angled[0].hasParam("unknownparam"))

    def test_regescrt(self) -> None:
        """
        An escaped Route header inside a bracketed Contact URI is kept.
        """
        contacts = parse("regescrt").contacts
        assert contacts != "*"
        self.assertEqual(contacts[0].uri.header("Route"), "<sip:sip.example.com>")

    def test_inv2543(self) -> None:
        """
        RFC 2543 style: no branch, no tag, no Content-Length (the body is
        the rest), no Max-Forwards.
        """
        message = parse("inv2543")
        self.assertIsNone(message.vias[0].branch)
        self.assertIsNone(message.fromAddr.tag)
        self.assertIsNone(message.maxForwards)
        self.assertTrue(message.body.startswith(b"v=0\r\n"))
        self.assertTrue(message.body.endswith(b"RTP/AVP 0\r\n"))

    def test_ipv6(self) -> None:
        """
        IPv6 references in URIs and Via.
        """
        good = parse("ipv6-good")
        assert isinstance(good, Request)
        self.assertEqual(good.uri.host, "2001:db8::10")
        self.assertEqual(good.vias[0].host, "2001:db8::9:1")
        ambiguous = parse("port-ambiguous")
        assert isinstance(ambiguous, Request)
        self.assertEqual((ambiguous.uri.host, ambiguous.uri.port), ("2001:db8::10:5070", None))
        unambiguous = parse("port-unambiguous")
        assert isinstance(unambiguous, Request)
        self.assertEqual((unambiguous.uri.host, unambiguous.uri.port), ("2001:db8::10", 5070))
        noDelim = parse("via-received-param-no-delim").vias[0]
        self.assertEqual((noDelim.received, noDelim.branch), ("2001:db8::9:255", "z9hG4bKas3"))
        withDelim = parse("via-received-param-with-delim").vias[0]
        self.assertEqual(
            (withDelim.received, withDelim.branch), ("2001:db8::9:255", "z9hG4bKas3-111")
        )
        mixed = parse("mult-ip-in-header").vias
        self.assertEqual(
            [via.host for via in mixed], ["2001:db8::9:1", "192.0.2.1", "2001:db8::9:255"]
        )
        self.assertEqual(mixed[0].port, 6050)
        self.assertEqual(mixed[2].received, "192.0.2.200")
        mapped = parse("ipv4-mapped-ipv6")
        self.assertEqual((mapped.vias[0].host, mapped.vias[0].port), ("::ffff:192.0.2.10", 19823))
        self.assertEqual(len(mapped.body), 245)
        correct = parse("ipv6-correct-abnf-2-colons")
        assert isinstance(correct, Request)
        self.assertEqual(correct.uri.host, "2001:db8::192.0.2.1")


class InvalidFactsTests(SynchronousTestCase):
    """
    Specific facts about refused messages.
    """

    def test_badversIs505(self) -> None:
        """
        C{SIP/7.0} gives status 505 and a partial request to answer.
        """
        error = self.assertRaises(SIPParseError, parse, "badvers")
        self.assertEqual(error.status, 505)
        self.assertEqual(error.partial.callId, "badvers.31417@c.example.com")

    def test_othersAre400WithPartial(self) -> None:
        """
        The other refused requests give 400 and, where the start line and
        headers could be split, a partial message that a 400 can be built
        from.
        """
        for row in manifest():
            if row["expected"] != "invalid" or row["name"] == "badvers":
                continue
            error = self.assertRaises(SIPParseError, parse, row["name"])
            self.assertEqual(error.status, 400, row["name"])
            if row["name"] in ("test", "bigcode"):
                self.assertIsNone(error.partial, row["name"])
            else:
                self.assertIsNotNone(error.partial, row["name"])
                self.assertTrue(error.partial.headers.values("via"), row["name"])

    def test_reasons(self) -> None:
        """
        Some refusals name their cause.
        """
        expected = {
            "clerr": "Content-Length larger than the message",
            "ncl": "Invalid Content-Length",
            "scalar02": "CSeq number too large",
            "scalarlg": "CSeq number too large",
            "mismatch01": "CSeq method does not match the request",
            "mcl01": "Conflicting Content-Length values",
            "insuf": "Missing From header",
            "multi01": "Repeated Call-ID header",
            "escruri": "Request-URI has headers",
            "baddate": "Invalid Date",
            "baddn-terminated": "Invalid display name",
            "ltgtruri": "Invalid Request-URI",
            "ipv6-bad": "Invalid Request-URI",
        }
        for name, reason in expected.items():
            self.assertEqual(self.assertRaises(SIPParseError, parse, name).reason, reason, name)

    def test_lfOnlyArchiveRefused(self) -> None:
        """
        The RFC 5118 archive's LF-only originals are refused: lines must
        end with CRLF.
        """
        data = TORTURE.child("rfc5118-archive").child("ipv6-good.lf").getContent()
        self.assertNotIn(b"\r\n", data)
        self.assertRaises(SIPParseError, parseMessage, data)
