# -*- test-case-name: tests.test_message_address -*-
"""
Tests for L{sipcore.message.address}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipcore.message import Address, SIPParseError, parseAddress, parseAddressList, parseURI


class ParseAddressTests(SynchronousTestCase):
    """
    C{name-addr} and C{addr-spec} forms with header parameters.
    """

    def test_nameAddrQuoted(self) -> None:
        """
        A quoted display name is unescaped; parameters after C{>} are
        header parameters.
        """
        address = parseAddress('"J Rosenberg \\\\\\"" <sip:jdrosen@example.com> ; tag = 98asjd8')
        self.assertEqual(address.displayName, 'J Rosenberg \\"')
        self.assertEqual(address.uri, parseURI("sip:jdrosen@example.com"))
        self.assertEqual(address.params, (("tag", "98asjd8"),))
        self.assertEqual(address.tag, "98asjd8")

    def test_nameAddrTokens(self) -> None:
        """
        An unquoted display name is tokens separated by whitespace; the
        space before C{<} is optional (RFC 4475 lwsdisp).
        """
        self.assertEqual(parseAddress("A. Bell <sip:a@b>").displayName, "A. Bell")
        self.assertEqual(
            parseAddress("caller<sip:caller@example.com>;tag=323").displayName, "caller"
        )

    def test_noDisplayName(self) -> None:
        """
        Without a display name, C{displayName} is C{None}.
        """
        self.assertIsNone(parseAddress("<sip:a@b>").displayName)
        self.assertIsNone(parseAddress("sip:a@b").displayName)

    def test_emptyQuotedDisplayName(self) -> None:
        """
        An empty quoted display name is the empty string.
        """
        self.assertEqual(parseAddress('"" <sip:a@b>').displayName, "")

    def test_addrSpecParamsAreHeaderParams(self) -> None:
        """
        Without C{<>}, what follows the first C{;} is header parameters
        (RFC 4475 cparam01); inside C{<>} it is URI parameters (cparam02).
        """
        bare = parseAddress("sip:+19725552222@gw1.example.net;unknownparam")
        self.assertEqual(bare.params, (("unknownparam", None),))
        self.assertEqual(bare.uri.params, ())
        angled = parseAddress("<sip:+19725552222@gw1.example.net;unknownparam>")
        self.assertEqual(angled.params, ())
        self.assertEqual(angled.uri.params, (("unknownparam", None),))

    def test_contactParams(self) -> None:
        """
        Contact parameters: values as written, C{param} unquotes.
        """
        address = parseAddress(
            '<sip:u@h;ob>;expires=3600;q=0.7;+sip.instance="<urn:uuid:1234>";reg-id=1;x'
        )
        self.assertEqual(address.param("expires"), "3600")
        self.assertEqual(address.param("Q"), "0.7")
        self.assertEqual(address.param("+sip.instance"), "<urn:uuid:1234>")
        self.assertEqual(dict(address.params)["+sip.instance"], '"<urn:uuid:1234>"')
        self.assertEqual(address.param("x"), "")
        self.assertIsNone(address.param("y"))
        self.assertTrue(address.hasParam("REG-ID"))

    def test_addrSpecWithQuotedParamHoldingAngle(self) -> None:
        """
        A C{<} inside a quoted parameter of an addr-spec does not make it a
        name-addr.
        """
        address = parseAddress('sip:a@b;+sip.instance="<urn:x>"')
        self.assertIsNone(address.displayName)
        self.assertEqual(address.uri, parseURI("sip:a@b"))

    def test_otherSchemes(self) -> None:
        """
        Addresses may hold any URI scheme (RFC 4475 unksm2).
        """
        self.assertEqual(parseAddress("isbn:2983792873").uri.scheme, "isbn")
        self.assertEqual(
            parseAddress("<http://www.example.com>;tag=3").uri.opaque, "//www.example.com"
        )

    def test_controlCharsInQuotedPair(self) -> None:
        """
        Quoted pairs may escape NUL, BEL and DEL (RFC 4475 intmeth).
        """
        address = parseAddress('"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:a@b>')
        self.assertEqual(address.displayName, "BEL:\x07 NUL:\x00 DEL:\x7f")

    def test_invalid(self) -> None:
        """
        Malformed addresses raise L{SIPParseError}.
        """
        for text in [
            "",
            "   ",
            '"Mr. J. User <sip:j.user@example.com>',
            "Bell, Alexander <sip:a@b>",
            "< sip:t.watson@example.org >",
            "<sip:a@b",
            "<sip:a@b>;;",
            '"Joe" <sip:joe@example.org>;;;;',
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "sip:a@b junk",
            "<sip:a@b> junk",
            '"x" sip:a@b',
            "<sip:a@b>;tag=",
            '<sip:a@b>;p="unterminated',
            "<>",
            "name <not a uri>",
        ]:
            self.assertRaises(SIPParseError, parseAddress, text)

    def test_nameAddrOnly(self) -> None:
        """
        Route-like headers require C{<>}.
        """
        self.assertEqual(parseAddress("<sip:p;lr>", nameAddrOnly=True).uri.host, "p")
        self.assertRaises(SIPParseError, parseAddress, "sip:p;lr", nameAddrOnly=True)


class AddressListTests(SynchronousTestCase):
    """
    L{parseAddressList} splits on commas outside quotes and brackets.
    """

    def test_list(self) -> None:
        """
        Commas inside quotes and C{<>} do not split.
        """
        addresses = parseAddressList('"A, B" <sip:a,b@x;p=1>;q=0.5 , <sip:b@y>, sip:c@z')
        self.assertEqual(
            [str(address.uri) for address in addresses], ["sip:a,b@x;p=1", "sip:b@y", "sip:c@z"]
        )
        self.assertEqual(addresses[0].displayName, "A, B")

    def test_emptyElement(self) -> None:
        """
        An empty element is an error.
        """
        self.assertRaises(SIPParseError, parseAddressList, "<sip:a@b>,,<sip:c@d>")
        self.assertRaises(SIPParseError, parseAddressList, "<sip:a@b>,")


class AddressObjectTests(SynchronousTestCase):
    """
    L{Address} values serialize and copy.
    """

    def test_strReparses(self) -> None:
        """
        C{str()} always uses C{<>} and quotes the display name; parsing it
        gives an equal address.
        """
        for text in [
            'J "Rosenberg <sip:a@b>',
            "sip:a@b;tag=1",
            '"A \\"B\\" \\\\ C" <sip:a@b;lr>;expires=0;q=1',
            "token name <sip:a@[::1]>",
        ]:
            try:
                address = parseAddress(text)
            except SIPParseError:
                continue
            self.assertEqual(parseAddress(str(address)), address)

    def test_strExample(self) -> None:
        """
        The serialized form of a built address.
        """
        address = Address('Bob "B"', parseURI("sip:bob@example.com"), (("tag", "x"),))
        self.assertEqual(str(address), '"Bob \\"B\\"" <sip:bob@example.com>;tag=x')

    def test_withParam(self) -> None:
        """
        C{withParam} replaces or appends; C{withoutParam} removes.
        """
        address = parseAddress("<sip:a@b>;expires=60")
        self.assertEqual(str(address.withParam("expires", "0")), "<sip:a@b>;expires=0")
        self.assertEqual(address.withParam("tag", "t1").tag, "t1")
        self.assertEqual(address.withoutParam("expires").params, ())
        self.assertEqual(address.params, (("expires", "60"),))
