# -*- test-case-name: tests.test_message_headers -*-
"""
Tests for L{sipcore.message.headers}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipcore.message import SIPParseError
from sipcore.message.headers import Headers, canonicalName, prettyName


class CanonicalNameTests(SynchronousTestCase):
    """
    Header names are matched by their lower-case long form.
    """

    def test_compactForms(self) -> None:
        """
        Every compact form RFC 3261 and its extensions define maps to its
        long name.
        """
        expected = {
            "v": "via",
            "i": "call-id",
            "m": "contact",
            "f": "from",
            "t": "to",
            "l": "content-length",
            "c": "content-type",
            "k": "supported",
            "s": "subject",
            "e": "content-encoding",
            "o": "event",
            "r": "refer-to",
            "b": "referred-by",
            "u": "allow-events",
            "x": "session-expires",
            "y": "identity",
            "a": "accept-contact",
            "j": "reject-contact",
            "d": "request-disposition",
        }
        for compact, long in expected.items():
            self.assertEqual(canonicalName(compact), long)
            self.assertEqual(canonicalName(compact.upper()), long)

    def test_longNamesLowered(self) -> None:
        """
        Long names are lowered and stripped.
        """
        self.assertEqual(canonicalName(" MaX-fOrWaRdS "), "max-forwards")

    def test_prettyName(self) -> None:
        """
        L{prettyName} gives the conventional spelling of the long name.
        """
        self.assertEqual(prettyName("i"), "Call-ID")
        self.assertEqual(prettyName("cseq"), "CSeq")
        self.assertEqual(prettyName("max-forwards"), "Max-Forwards")
        self.assertEqual(prettyName("WWW-AUTHENTICATE"), "WWW-Authenticate")


class HeadersTests(SynchronousTestCase):
    """
    L{Headers} is ordered, case-insensitive and keeps what it was given.
    """

    def makeHeaders(self) -> Headers:
        return Headers(
            [
                ("v", "SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com"),
                ("Call-ID", "abc@host"),
                ("VIA", "SIP/2.0/UDP c.example.com"),
                ("Contact", '"A, B" <sip:a@x;p=1>;q=0.5, <sip:b@y>'),
                ("Date", "Sat, 15 Oct 2005 04:44:56 GMT"),
            ]
        )

    def test_firstOfListHeader(self) -> None:
        """
        C{first} of a list header is its first comma-separated element.
        """
        headers = self.makeHeaders()
        self.assertEqual(headers.first("via"), "SIP/2.0/UDP a.example.com;branch=z9hG4bK1")
        self.assertEqual(headers.first("m"), '"A, B" <sip:a@x;p=1>;q=0.5')

    def test_firstOfOtherHeader(self) -> None:
        """
        C{first} of a header that is not a list gives the whole line,
        commas included.
        """
        headers = self.makeHeaders()
        self.assertEqual(headers.first("date"), "Sat, 15 Oct 2005 04:44:56 GMT")
        self.assertEqual(headers.first("I"), "abc@host")
        self.assertIsNone(headers.first("Expires"))

    def test_valuesAcrossLines(self) -> None:
        """
        C{values} splits list headers on commas outside quotes and angle
        brackets, across all lines, in order.
        """
        headers = self.makeHeaders()
        self.assertEqual(
            headers.values("Via"),
            [
                "SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
                "SIP/2.0/TCP b.example.com",
                "SIP/2.0/UDP c.example.com",
            ],
        )
        self.assertEqual(headers.values("contact"), ['"A, B" <sip:a@x;p=1>;q=0.5', "<sip:b@y>"])
        self.assertEqual(headers.values("date"), ["Sat, 15 Oct 2005 04:44:56 GMT"])
        self.assertEqual(headers.values("route"), [])

    def test_valuesDropsEmptyElements(self) -> None:
        """
        Empty list elements are not values.
        """
        headers = Headers([("Supported", "path, ,outbound,")])
        self.assertEqual(headers.values("k"), ["path", "outbound"])

    def test_valuesUnterminatedQuote(self) -> None:
        """
        An unterminated quoted string in a list header raises
        L{SIPParseError}.
        """
        headers = Headers([("Contact", '"abc <sip:a@b>, <sip:c@d>')])
        self.assertRaises(SIPParseError, headers.values, "contact")

    def test_lines(self) -> None:
        """
        C{lines} gives each line's value as written.
        """
        headers = self.makeHeaders()
        self.assertEqual(
            headers.lines("via"),
            [
                "SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com",
                "SIP/2.0/UDP c.example.com",
            ],
        )

    def test_iterationKeepsNamesAndOrder(self) -> None:
        """
        Iterating gives C{(name, value)} with the names as given, in order.
        """
        headers = Headers([("v", "x"), ("CALL-id", "y")])
        self.assertEqual(list(headers), [("v", "x"), ("CALL-id", "y")])
        self.assertEqual(len(headers), 2)

    def test_contains(self) -> None:
        """
        C{in} matches compact and long names in any case.
        """
        headers = self.makeHeaders()
        self.assertIn("i", headers)
        self.assertIn("CALL-ID", headers)
        self.assertIn("V", headers)
        self.assertNotIn("Route", headers)
        self.assertNotIn(1, headers)

    def test_setReplacesInPlace(self) -> None:
        """
        C{set} replaces all lines of a header with one, where the first
        was.
        """
        headers = self.makeHeaders()
        headers.set("Via", "SIP/2.0/TLS new.example.com")
        self.assertEqual([name for name, _ in headers], ["Via", "Call-ID", "Contact", "Date"])
        self.assertEqual(headers.lines("v"), ["SIP/2.0/TLS new.example.com"])

    def test_setAppendsWhenAbsent(self) -> None:
        """
        C{set} of an absent header appends it.
        """
        headers = self.makeHeaders()
        headers.set("Expires", "60")
        self.assertEqual(list(headers)[-1], ("Expires", "60"))

    def test_addAppends(self) -> None:
        """
        C{add} appends a line at the end by default.
        """
        headers = self.makeHeaders()
        headers.add("Via", "SIP/2.0/UDP z.example.com")
        self.assertEqual(list(headers)[-1], ("Via", "SIP/2.0/UDP z.example.com"))
        self.assertEqual(headers.values("via")[-1], "SIP/2.0/UDP z.example.com")

    def test_addFirst(self) -> None:
        """
        C{add(first=True)} puts the line before the existing lines of that
        header, or at the top if there are none.
        """
        headers = Headers([("Call-ID", "x"), ("Via", "SIP/2.0/UDP b")])
        headers.add("Via", "SIP/2.0/UDP a", first=True)
        self.assertEqual(
            list(headers), [("Call-ID", "x"), ("Via", "SIP/2.0/UDP a"), ("Via", "SIP/2.0/UDP b")]
        )
        headers.add("Record-Route", "<sip:p;lr>", first=True)
        self.assertEqual(list(headers)[0], ("Record-Route", "<sip:p;lr>"))

    def test_remove(self) -> None:
        """
        C{remove} drops every line of a header, compact or long.
        """
        headers = self.makeHeaders()
        headers.remove("VIA")
        self.assertNotIn("v", headers)
        self.assertEqual(len(headers), 3)
        headers.remove("Route")
        self.assertEqual(len(headers), 3)

    def test_replaceFirstElement(self) -> None:
        """
        C{replaceFirst} replaces the first element of a list header, keeping
        the rest of its line and the other lines; for other headers the
        first line; an absent header is added.
        """
        headers = self.makeHeaders()
        headers.replaceFirst("v", "SIP/2.0/UDP z.example.com;received=192.0.2.1")
        self.assertEqual(headers.values("via"), [
            "SIP/2.0/UDP z.example.com;received=192.0.2.1",
            "SIP/2.0/TCP b.example.com",
            "SIP/2.0/UDP c.example.com",
        ])
        self.assertEqual(len(headers.lines("via")), 2)
        headers.replaceFirst("Call-ID", "other@host")
        self.assertEqual(headers.lines("call-id"), ["other@host"])
        headers.replaceFirst("Route", "<sip:r.example.com;lr>")
        self.assertEqual(headers.first("route"), "<sip:r.example.com;lr>")

    def test_replaceFirstDropsCache(self) -> None:
        """
        Values cached from the header are dropped when it is replaced.
        """
        headers = self.makeHeaders()
        headers.remember("vias", "old")
        self.assertEqual(headers.derived("vias"), "old")
        headers.replaceFirst("via", "SIP/2.0/UDP z.example.com")
        self.assertIsNone(headers.derived("vias"))

    def test_removeFirstElement(self) -> None:
        """
        C{removeFirst} removes the first element of a list header, leaving
        the rest of its line.
        """
        headers = self.makeHeaders()
        self.assertEqual(headers.removeFirst("via"), "SIP/2.0/UDP a.example.com;branch=z9hG4bK1")
        self.assertEqual(
            headers.lines("via"), ["SIP/2.0/TCP b.example.com", "SIP/2.0/UDP c.example.com"]
        )
        self.assertEqual(headers.removeFirst("via"), "SIP/2.0/TCP b.example.com")
        self.assertEqual(headers.lines("via"), ["SIP/2.0/UDP c.example.com"])
        self.assertEqual(headers.removeFirst("call-id"), "abc@host")
        self.assertIsNone(headers.removeFirst("call-id"))

    def test_cacheDroppedOnChange(self) -> None:
        """
        A value kept under a key that names no header is dropped on any
        change.
        """
        headers = self.makeHeaders()
        headers.remember("k", 1)
        self.assertEqual(headers.derived("k"), 1)
        headers.add("X", "y")
        self.assertIsNone(headers.derived("k"))

    def test_copyIsIndependent(self) -> None:
        """
        A copy does not see later changes to the original.
        """
        headers = self.makeHeaders()
        copy = headers.copy()
        headers.remove("via")
        self.assertIn("via", copy)
        self.assertNotEqual(headers, copy)

    def test_equality(self) -> None:
        """
        Headers are equal when their canonical names and values are equal
        in order.
        """
        self.assertEqual(Headers([("v", "a")]), Headers([("Via", "a")]))
        self.assertNotEqual(Headers([("v", "a")]), Headers([("Via", "b")]))
