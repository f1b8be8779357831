# -*- test-case-name: tests.test_message_via -*-
"""
Tests for L{sipcore.message.via}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipcore.message import MAGIC_COOKIE, SIPParseError, Via, generateBranch, parseVia, parseViaList


class ParseViaTests(SynchronousTestCase):
    """
    Via values: sent-protocol, sent-by and parameters.
    """

    def test_simple(self) -> None:
        """
        Transport, host, port and the usual parameters are read.
        """
        via = parseVia(
            "SIP/2.0/udp pc33.example.com:5066;branch=z9hG4bK776asdhds;received=192.0.2.1;rport=5061;maddr=224.2.0.1;ttl=16"
        )
        self.assertEqual((via.protocol, via.version, via.transport), ("SIP", "2.0", "UDP"))
        self.assertEqual((via.host, via.port), ("pc33.example.com", 5066))
        self.assertEqual(via.branch, "z9hG4bK776asdhds")
        self.assertEqual(via.received, "192.0.2.1")
        self.assertEqual(via.rport, 5061)
        self.assertEqual(via.maddr, "224.2.0.1")
        self.assertEqual(via.ttl, 16)
        self.assertTrue(via.isRFC3261Branch)

    def test_rportWithoutValue(self) -> None:
        """
        C{rport} without a value is C{True}; absent it is C{None}.
        """
        self.assertIs(parseVia("SIP/2.0/UDP h;rport;branch=z9hG4bKx").rport, True)
        self.assertIsNone(parseVia("SIP/2.0/UDP h;branch=z9hG4bKx").rport)

    def test_whitespaceEverywhere(self) -> None:
        """
        LWS is allowed around C{/}, C{:}, C{;} and C{=} (RFC 4475 wsinv).
        """
        via = parseVia("SIP  /   2.0 /UDP   192.0.2.2 : 5060  ;  branch  =   z9hG4bK9ikj8 ;rport")
        self.assertEqual(
            (via.transport, via.host, via.port, via.branch),
            ("UDP", "192.0.2.2", 5060, "z9hG4bK9ikj8"),
        )

    def test_ipv6(self) -> None:
        """
        An IPv6 sent-by is held without brackets; C{received} may be given
        with or without brackets (RFC 5118 4.5).
        """
        via = parseVia(
            "SIP/2.0/UDP [2001:db8::9:1]:6050;received=2001:db8::9:255;branch=z9hG4bKas3"
        )
        self.assertEqual((via.host, via.port), ("2001:db8::9:1", 6050))
        self.assertEqual(via.received, "2001:db8::9:255")
        self.assertEqual(via.branch, "z9hG4bKas3")
        self.assertEqual(via.sentBy, "[2001:db8::9:1]:6050")
        bracketed = parseVia("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255]")
        self.assertEqual(bracketed.received, "2001:db8::9:255")

    def test_extensionTransportsAndParams(self) -> None:
        """
        Unknown transports and parameters are kept.
        """
        via = parseVia('SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKx;alias;x-y="q v"')
        self.assertEqual(via.transport, "WSS")
        self.assertEqual(via.params[1:], (("alias", None), ("x-y", '"q v"')))
        self.assertEqual(via.param("alias"), "")

    def test_magicCookieOnly(self) -> None:
        """
        A branch that is only the magic cookie parses but is not an RFC
        3261 branch (RFC 4475 badbranch).
        """
        via = parseVia("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK")
        self.assertEqual(via.branch, "z9hG4bK")
        self.assertFalse(via.isRFC3261Branch)

    def test_invalid(self) -> None:
        """
        Malformed Via values raise L{SIPParseError}.
        """
        for text in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0 host",
            "SIP/2.0/UDP 192.0.2.15;;,;,,",
            "SIP/2.0/UDP host;",
            "SIP/2.0/UDP host;branch=",
            "SIP/2.0/UDP host;branch",
            "SIP/2.0/UDP host:port",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP [2001:db8::1",
            "SIP/2.0/UDP 2001:db8::1",
            "SIP/2.0/UDP host;rport=abc",
            "SIP/2.0/UDP host;received=not_an@address",
            "SIP/2.0/UDP host junk",
            "SIP/2.0/UDP ho/st",
        ]:
            self.assertRaises(SIPParseError, parseVia, text)

    def test_list(self) -> None:
        """
        L{parseViaList} parses comma-separated values and refuses empty
        ones.
        """
        vias = parseViaList("SIP/2.0/TCP a;branch=z9hG4bK1 , SIP/2.0/UDP b:5070")
        self.assertEqual([via.host for via in vias], ["a", "b"])
        self.assertRaises(SIPParseError, parseViaList, "SIP/2.0/TCP a,,SIP/2.0/UDP b")


class ViaObjectTests(SynchronousTestCase):
    """
    L{Via} values serialize and copy.
    """

    def test_strReparses(self) -> None:
        """
        C{str()} gives a canonical form that parses back to an equal Via.
        """
        via = parseVia("SIP / 2.0 / tcp [::1] : 5060 ; branch = z9hG4bKx ; rport")
        self.assertEqual(str(via), "SIP/2.0/TCP [::1]:5060;branch=z9hG4bKx;rport")
        self.assertEqual(parseVia(str(via)), via)

    def test_serverFillsReceivedAndRport(self) -> None:
        """
        A server adds C{received} and fills C{rport} with C{withParam}.
        """
        via = parseVia("SIP/2.0/UDP h;rport;branch=z9hG4bKx")
        updated = via.withParam("received", "192.0.2.9").withParam("rport", "5062")
        self.assertEqual(
            str(updated), "SIP/2.0/UDP h;rport=5062;branch=z9hG4bKx;received=192.0.2.9"
        )
        self.assertEqual(updated.rport, 5062)
        self.assertEqual(
            str(updated.withoutParam("received")), "SIP/2.0/UDP h;rport=5062;branch=z9hG4bKx"
        )

    def test_build(self) -> None:
        """
        A Via built from fields serializes with a new branch.
        """
        branch = generateBranch()
        via = Via("TCP", "proxy.example.com", 5060, (("branch", branch),))
        self.assertEqual(str(via), "SIP/2.0/TCP proxy.example.com:5060;branch=" + branch)
        self.assertTrue(branch.startswith(MAGIC_COOKIE))
        self.assertTrue(via.isRFC3261Branch)
