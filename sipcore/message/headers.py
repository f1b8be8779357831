# -*- test-case-name: tests.test_message_headers -*-
"""
An ordered, case-insensitive SIP header collection that keeps the text it
was given.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from sipcore.message._syntax import splitList

_T = TypeVar("_T")

#: Compact header names (RFC 3261 section 7.3.3 and the IANA registry),
#: lower case, to the lower-case long name.
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

#: Headers whose value is a comma-separated list (lower-case long names).
#: L{Headers.values} splits these; any other header gives one element per
#: line, because commas are legal inside, e.g., Date or Authorization.
LIST_HEADERS = frozenset(
    {
        "accept",
        "accept-contact",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "in-reply-to",
        "p-associated-uri",
        "path",
        "privacy",
        "proxy-require",
        "reason",
        "record-route",
        "reject-contact",
        "request-disposition",
        "require",
        "route",
        "security-client",
        "security-server",
        "security-verify",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    }
)

_PRETTY = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "p-associated-uri": "P-Associated-URI",
    "rack": "RAck",
    "rseq": "RSeq",
}


#: Names already canonicalised (bounded: names are attacker-chosen).
_CANONICAL: dict[str, str] = {}
_CANONICAL_MAX = 4096


def canonicalName(name: str) -> str:
    """
    The lookup key of a header name: its long form, in lower case.

    >>> canonicalName("v")
    'via'
    """
    try:
        return _CANONICAL[name]
    except KeyError:
        pass
    lowered = name.strip().lower()
    key = COMPACT_FORMS.get(lowered, lowered)
    if len(_CANONICAL) < _CANONICAL_MAX:
        _CANONICAL[name] = key
    return key


#: The keys of L{Headers.remember} known to depend on one header only,
#: to that header's key: a change to another header keeps them.  Values
#: kept under any other key are dropped on every change.
_CACHE_SOURCES = {
    "vias": "via",
    "contacts": "contact",
    "cseq": "cseq",
    "from": "from",
    "to": "to",
    "route": "route",
    "record-route": "record-route",
    "max-forwards": "max-forwards",
    "expires": "expires",
}


def prettyName(name: str) -> str:
    """
    The conventional spelling of a header's long name (C{"i"} gives
    C{"Call-ID"}, C{"max-forwards"} gives C{"Max-Forwards"}).
    """
    key = canonicalName(name)
    pretty = _PRETTY.get(key)
    if pretty is None:
        pretty = "-".join(part[:1].upper() + part[1:] for part in key.split("-"))
    return pretty


class Headers:
    """
    The header lines of a SIP message, in order.

    Names are matched case-insensitively and compact forms (C{v}, C{i},
    C{m}, ...) match their long names; the name and value of each line are
    kept as given, so serializing writes back the original text (folded
    lines come back unfolded).

    Typed values derived from the headers (parsed Via, CSeq, ...) may be
    kept here with L{remember} and read back with L{derived}.  A change to
    a header drops the values derived from it (the message accessors' keys,
    see C{_CACHE_SOURCES}) and every value kept under another key.
    """

    __slots__ = ("_entries", "_cache")

    def __init__(self, items: Iterable[tuple[str, str]] | None = None) -> None:
        """
        @param items: C{(name, value)} pairs, in order.
        """
        self._entries: list[tuple[str, str, str]] = []
        self._cache: dict[str, Any] = {}
        if items is not None:
            for name, value in items:
                self._entries.append((canonicalName(name), name, value))

    @classmethod
    def _fromEntries(cls, entries: list[tuple[str, str, str]]) -> Headers:
        """
        Build from C{(key, name, value)} triples already canonicalised.
        """
        self = cls()
        self._entries = entries
        return self

    def derived(self, key: str) -> Any:
        """
        The value derived from the headers that L{remember} keeps under
        C{key}, or C{None} if there is none (never kept, or dropped by a
        change to the headers).
        """
        return self._cache.get(key)

    def remember(self, key: str, value: _T) -> _T:
        """
        Keep C{value}, derived from the headers, under C{key} until the
        headers change (L{derived} gives it back).

        @return: C{value}.
        """
        self._cache[key] = value
        return value

    def forgetDerived(self) -> None:
        """
        Drop every value kept with L{remember} (they are
        computed again when asked for): for a message kept only for
        reference, so that what was parsed from it need not stay in memory.
        """
        self._cache = {}

    def _changed(self, key: str) -> None:
        cache = self._cache
        if not cache:
            return
        for cacheKey in [k for k in cache if _CACHE_SOURCES.get(k, key) == key]:
            del cache[cacheKey]

    def first(self, name: str) -> str | None:
        """
        The first value of a header.

        @return: for a list header (L{LIST_HEADERS}: Via, Contact, Route,
            ...) the first comma-separated element, otherwise the first
            line's value; C{None} if the header is absent.
        """
        key = canonicalName(name)
        if key in LIST_HEADERS:
            for element in self.values(key):
                return element
            return None
        for entryKey, _, value in self._entries:
            if entryKey == key:
                return value
        return None

    def values(self, name: str) -> list[str]:
        """
        All the values of a header, across all its lines, in order.

        List headers (L{LIST_HEADERS}) are split on commas outside quoted
        strings and angle brackets, and empty elements are dropped; other
        headers give one element per line.

        @raise sipcore.message.SIPParseError: if a list header has an
            unterminated quoted string.
        """
        key = canonicalName(name)
        if key not in LIST_HEADERS:
            return [value for entryKey, _, value in self._entries if entryKey == key]
        out: list[str] = []
        for entryKey, _, value in self._entries:
            if entryKey == key:
                out.extend(element for element in splitList(value) if element)
        return out

    def lines(self, name: str) -> list[str]:
        """
        The field value of each line of a header, as written (unfolded).
        """
        key = canonicalName(name)
        return [value for entryKey, _, value in self._entries if entryKey == key]

    def set(self, name: str, value: str) -> None:
        """
        Replace every line of a header with one line, placed where the first
        old line was (or at the end).
        """
        key = canonicalName(name)
        entries: list[tuple[str, str, str]] = []
        placed = False
        for entry in self._entries:
            if entry[0] == key:
                if not placed:
                    entries.append((key, name, value))
                    placed = True
            else:
                entries.append(entry)
        if not placed:
            entries.append((key, name, value))
        self._entries = entries
        self._changed(key)

    def add(self, name: str, value: str, first: bool = False) -> None:
        """
        Add a header line.

        @param first: if true, put the line before the existing lines of the
            same header (or at the top of all headers if there are none), as
            a proxy does with its Via; otherwise append it after all
            headers.
        """
        key = canonicalName(name)
        entry = (key, name, value)
        if first:
            index = next((i for i, old in enumerate(self._entries) if old[0] == key), 0)
            self._entries.insert(index, entry)
        else:
            self._entries.append(entry)
        self._changed(key)

    def remove(self, name: str) -> None:
        """
        Remove every line of a header (nothing happens if there is none).
        """
        key = canonicalName(name)
        self._entries = [entry for entry in self._entries if entry[0] != key]
        self._changed(key)

    def removeFirst(self, name: str) -> str | None:
        """
        Remove the first element of a header, as a proxy removes its own
        Via from a response or a Route that names it.

        For a list header the first comma-separated element is removed
        (the rest of that line stays); otherwise the first line.

        @return: the removed element, or C{None} if the header is absent.
        """
        key = canonicalName(name)
        for index, (entryKey, entryName, value) in enumerate(self._entries):
            if entryKey != key:
                continue
            if key in LIST_HEADERS:
                elements = splitList(value)
                nonEmpty = [element for element in elements if element]
                if not nonEmpty:
                    continue
                removed = nonEmpty[0]
                rest = nonEmpty[1:]
                if rest:
                    self._entries[index] = (key, entryName, ", ".join(rest))
                else:
                    del self._entries[index]
            else:
                removed = value
                del self._entries[index]
            self._changed(key)
            return removed
        return None

    def replaceFirst(self, name: str, value: str) -> None:
        """
        Replace the first element of a header with C{value}, as a server
        stamping C{received} on the top Via does: for a list header the
        first comma-separated element (the rest of its line stays),
        otherwise the first line.  If the header is absent, C{value} is
        added as its first line.
        """
        key = canonicalName(name)
        for index, (entryKey, entryName, old) in enumerate(self._entries):
            if entryKey != key:
                continue
            if key in LIST_HEADERS and "," in old:
                elements = [element for element in splitList(old) if element]
                if not elements:
                    continue
                elements[0] = value
                value = ", ".join(elements)
            elif not old.strip():
                continue
            self._entries[index] = (key, entryName, value)
            self._changed(key)
            return
        self.add(name, value, first=True)

    def copy(self) -> Headers:
        """
        @return: an independent copy.
        """
        return Headers._fromEntries(list(self._entries))

    def items(self) -> list[tuple[str, str]]:
        """
        @return: the C{(name, value)} of every line, in order.
        """
        return [(name, value) for _, name, value in self._entries]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonicalName(name)
        return any(entry[0] == key for entry in self._entries)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items())

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [entry[0::2] for entry in self._entries] == [entry[0::2] for entry in other._entries]

    def __repr__(self) -> str:
        return "Headers({!r})".format(self.items())
