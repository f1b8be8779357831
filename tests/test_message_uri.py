# -*- test-case-name: tests.test_message_uri -*-
"""
Tests for L{sipcore.message.uri}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipcore.message import URI, SIPParseError, parseURI, unescape


class ParseSIPURITests(SynchronousTestCase):
    """
    SIP and SIPS URIs are split into their components, kept as written.
    """

    def test_full(self) -> None:
        """
        User, password, host, port, parameters and headers are all read.
        """
        uri = parseURI(
            "sips:alice:secret@Example.COM:5061;transport=tls;lr;maddr=10.0.0.1?subject=hi&x="
        )
        self.assertEqual(uri.scheme, "sips")
        self.assertEqual(uri.user, "alice")
        self.assertEqual(uri.password, "secret")
        self.assertEqual(uri.host, "Example.COM")
        self.assertEqual(uri.port, 5061)
        self.assertEqual(uri.params, (("transport", "tls"), ("lr", None), ("maddr", "10.0.0.1")))
        self.assertEqual(uri.headers, (("subject", "hi"), ("x", "")))
        self.assertTrue(uri.isSIP)

    def test_hostOnly(self) -> None:
        """
        A URI may have just a host.
        """
        uri = parseURI("sip:example.com")
        self.assertEqual(
            (uri.user, uri.password, uri.host, uri.port), (None, None, "example.com", None)
        )
        self.assertEqual(uri.params, ())

    def test_schemeCaseInsensitive(self) -> None:
        """
        The scheme is lowered; C{str()} still gives the text back.
        """
        uri = parseURI("SIP:bob@example.com")
        self.assertEqual(uri.scheme, "sip")
        self.assertEqual(str(uri), "SIP:bob@example.com")

    def test_ipv4(self) -> None:
        """
        An IPv4 host with a port.
        """
        uri = parseURI("sip:192.0.2.1:5060")
        self.assertEqual((uri.host, uri.port), ("192.0.2.1", 5060))

    def test_ipv6HeldWithoutBrackets(self) -> None:
        """
        An IPv6 reference is held without brackets; C{hostport} and
        C{str()} of a copy bracket it again.
        """
        uri = parseURI("sip:user@[2001:db8::10]:5070;transport=udp")
        self.assertEqual(uri.host, "2001:db8::10")
        self.assertEqual(uri.port, 5070)
        self.assertEqual(uri.hostport, "[2001:db8::10]:5070")
        self.assertEqual(str(uri.copy(port=5080)), "sip:user@[2001:db8::10]:5080;transport=udp")

    def test_ipv6AmbiguousPort(self) -> None:
        """
        C{[2001:db8::10:5070]} is an address with no port (RFC 5118 4.3).
        """
        uri = parseURI("sip:[2001:db8::10:5070]")
        self.assertEqual((uri.host, uri.port), ("2001:db8::10:5070", None))

    def test_ipv4MappedIPv6(self) -> None:
        """
        An IPv4-mapped IPv6 address is accepted.
        """
        self.assertEqual(parseURI("sip:[::ffff:192.0.2.10]:19823").host, "::ffff:192.0.2.10")

    def test_userWithSemicolonAndQuestionMark(self) -> None:
        """
        The user part may hold C{;}, C{?}, C{/} and escapes: they belong to
        it, not to parameters or headers (RFC 4475 semiuri, intmeth).
        """
        uri = parseURI("sip:user;par=u%40example.net@example.com")
        self.assertEqual(uri.user, "user;par=u%40example.net")
        self.assertEqual(uri.unescapedUser, "user;par=u@example.net")
        self.assertEqual(uri.params, ())
        uri = parseURI("sip:a?b/c;d:p&w=1,2@example.com")
        self.assertEqual((uri.user, uri.password), ("a?b/c;d", "p&w=1,2"))

    def test_escapesKeptRaw(self) -> None:
        """
        Escapes stay in the components; accessors decode them once.
        """
        uri = parseURI("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
        self.assertEqual(uri.user, "cal%6Cer")
        self.assertEqual(uri.unescapedUser, "caller")
        self.assertTrue(uri.hasParam("lr"))
        self.assertEqual(uri.param("name"), "value%41")
        self.assertEqual(uri.params[1], ("n%61me", "v%61lue%25%34%31"))

    def test_nullEscape(self) -> None:
        """
        C{%00} decodes to a NUL character, distinct from C{%00%00}.
        """
        self.assertEqual(parseURI("sip:%00@h").unescapedUser, "\x00")
        self.assertNotEqual(parseURI("sip:%00@h"), parseURI("sip:%00%00@h"))

    def test_paramLookup(self) -> None:
        """
        C{param} is case-insensitive on names, gives C{""} for a parameter
        without value and C{None} when absent.
        """
        uri = parseURI("sip:h;Transport=TCP;lr")
        self.assertEqual(uri.param("transport"), "TCP")
        self.assertEqual(uri.param("LR"), "")
        self.assertIsNone(uri.param("maddr"))
        self.assertTrue(uri.hasParam("lr"))
        self.assertFalse(uri.hasParam("maddr"))

    def test_header(self) -> None:
        """
        C{header} decodes a URI header value.
        """
        uri = parseURI("sip:user@example.com?Route=%3Csip:sip.example.com%3E")
        self.assertEqual(uri.header("route"), "<sip:sip.example.com>")
        self.assertIsNone(uri.header("subject"))


class OtherSchemeTests(SynchronousTestCase):
    """
    TEL URIs are split; other schemes are opaque.
    """

    def test_tel(self) -> None:
        """
        A tel URI's number is its C{user}; it has parameters and no host.
        """
        uri = parseURI("tel:+1-201-555-0123;phone-context=example.com")
        self.assertEqual(uri.scheme, "tel")
        self.assertEqual(uri.user, "+1-201-555-0123")
        self.assertIsNone(uri.host)
        self.assertEqual(uri.param("phone-context"), "example.com")
        self.assertEqual(str(uri.copy()), "tel:+1-201-555-0123;phone-context=example.com")

    def test_opaque(self) -> None:
        """
        Unknown schemes keep everything after the colon.
        """
        for text, scheme, opaque in [
            (
                "nobodyKnowsThisScheme:totallyopaquecontent",
                "nobodyknowsthisscheme",
                "totallyopaquecontent",
            ),
            ("soap.beep://192.0.2.103:3002", "soap.beep", "//192.0.2.103:3002"),
            ("isbn:2983792873", "isbn", "2983792873"),
            (
                "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
                "urn",
                "uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            ),
        ]:
            uri = parseURI(text)
            self.assertEqual((uri.scheme, uri.opaque, uri.host), (scheme, opaque, None))
            self.assertEqual(str(uri), text)
            self.assertFalse(uri.isSIP)


class InvalidURITests(SynchronousTestCase):
    """
    What is not a URI raises L{SIPParseError}.
    """

    def test_invalid(self) -> None:
        """
        Each of these texts is refused.
        """
        for text in [
            "",
            ":foo",
            "sip:",
            "1sip:foo",
            "sip:user@",
            "sip:@example.com",
            "sip:2001:db8::10",
            "sip:[2001:db8:::192.0.2.1]",
            "sip:[2001:db8::1",
            "sip:[example.com]",
            "sip:host:",
            "sip:host:abc",
            "sip:host:65536",
            "sip:host;",
            "sip:host;=x",
            "sip:host;a=",
            "sip:host?",
            "sip:host?a",
            "sip:ho st",
            " sip:host",
            "sip:host ",
            "<sip:host>",
            "sip:a..b",
            "sip:999.1.1.1",
            "sip:1.2.3",
            "sip:12",
            "sip:us%zzer@host",
            "sip:user@host%",
            'sip:a"b@host',
            "tel:",
            "tel:abc xyz",
            "tel:12;",
            "foo:",
            "foo:a b",
            "foo:<x>",
        ]:
            self.assertRaises(SIPParseError, parseURI, text)


class URIObjectTests(SynchronousTestCase):
    """
    L{URI} objects are immutable values.
    """

    def test_strRoundTrip(self) -> None:
        """
        C{str()} of a parsed URI is the original text, and reparsing a
        rebuilt URI gives an equal one.
        """
        for text in [
            "sip:alice@example.com",
            "sips:a:b@[::1]:5061;transport=tls;lr?h=v&i=",
            "sip:%61lice@example.com;n%61me=v",
            "tel:+12015550123",
            "mailto:joe@example.com",
        ]:
            uri = parseURI(text)
            self.assertEqual(str(uri), text)
            rebuilt = uri.copy()
            self.assertEqual(str(rebuilt), text)
            self.assertEqual(parseURI(str(rebuilt)), uri)

    def test_build(self) -> None:
        """
        A URI built from components serializes to valid text.
        """
        uri = URI("sip", user="bob", host="2001:db8::1", port=5060, params=(("transport", "tcp"),))
        self.assertEqual(str(uri), "sip:bob@[2001:db8::1]:5060;transport=tcp")
        self.assertEqual(parseURI(str(uri)), uri)

    def test_withParam(self) -> None:
        """
        C{withParam} replaces a parameter (any case) or appends it;
        C{withoutParam} removes it.
        """
        uri = parseURI("sip:h;LR;transport=udp")
        self.assertEqual(str(uri.withParam("transport", "tcp")), "sip:h;LR;transport=tcp")
        self.assertEqual(str(uri.withParam("lr")), "sip:h;lr;transport=udp")
        self.assertEqual(str(uri.withParam("ob")), "sip:h;LR;transport=udp;ob")
        self.assertEqual(str(uri.withoutParam("lr")), "sip:h;transport=udp")

    def test_equalityIgnoresRawText(self) -> None:
        """
        Equality compares components, not the original text.
        """
        self.assertEqual(parseURI("SIP:h"), parseURI("sip:h"))
        self.assertEqual(hash(parseURI("SIP:h")), hash(parseURI("sip:h")))

    def test_unescape(self) -> None:
        """
        L{unescape} decodes once and keeps non-UTF-8 octets reversible.
        """
        self.assertEqual(unescape("a%2541"), "a%41")
        self.assertEqual(unescape("%ff").encode("utf-8", "surrogateescape"), b"\xff")
