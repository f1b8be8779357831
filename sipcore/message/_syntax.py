# -*- test-case-name: tests.test_message_address -*-
"""
Lexical helpers shared by the message layer (RFC 3261 section 25.1).

Every regular expression here is a single character class, a sequence of
them, or an alternation whose branches start with disjoint characters, so
matching is linear in the input length (no catastrophic backtracking).
"""

from __future__ import annotations

import re

from sipcore.message.errors import SIPParseError

#: RFC 3261 C{token}.
TOKEN_CHARS = "A-Za-z0-9\\-.!%*_+`'~"
TOKEN = re.compile("[" + TOKEN_CHARS + "]+")

#: A quoted string with its quotes; a backslash escapes any character.
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)

_WS = re.compile(r"[ \t]*")

#: Display-name tokens separated by whitespace.
DISPLAY_TOKENS = re.compile("[" + TOKEN_CHARS + "]+(?:[ \t]+[" + TOKEN_CHARS + "]+)*")

_QUOTED_PAIR = re.compile(r"\\(.)", re.S)

#: Parameters as C{(name, value)} pairs, in order.
Params = tuple[tuple[str, "str | None"], ...]


def skipWhitespace(text: str, pos: int) -> int:
    """
    @return: the index of the first character at or after C{pos} that is
        not a space or a tab.
    """
    return _WS.match(text, pos).end()  # type: ignore[union-attr]


def unquote(quoted: str) -> str:
    """
    Remove the quotes and quoted-pair escapes of a quoted string.

    @param quoted: a string matched by L{QUOTED}, quotes included.
    """
    inner = quoted[1:-1]
    if "\\" not in inner:
        return inner
    return _QUOTED_PAIR.sub(lambda m: m.group(1), inner)


def quote(text: str) -> str:
    """
    Make a quoted string of C{text}, escaping backslashes and quotes.
    """
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PARAM = re.compile(
    "[ \t]*;[ \t]*([" + TOKEN_CHARS + "]+)"
    '(?:[ \t]*=[ \t]*("(?:[^"\\\\]|\\\\.)*"|[' + TOKEN_CHARS + ":\\[\\]]+))?",
    re.S,
)


def parseParams(text: str, pos: int, what: str) -> tuple[tuple[str, str | None], ...]:
    """
    Parse C{*( SEMI generic-param )} from C{pos} to the end of C{text}.

    Whitespace is allowed around C{;} and C{=}.  A value is a token, a host
    (an IPv6 reference, or leniently a bare IPv6 address) or a quoted
    string; it is kept as written (quoted strings keep their quotes).

    @param what: the name of the construct, for error messages.
    @return: the parameters as C{(name, value)} pairs in order; C{value} is
        C{None} for a parameter without C{=}.
    @raise SIPParseError: on an empty parameter, a bad name or value, an
        unterminated quoted string, or anything else left over.
    """
    params: list[tuple[str, str | None]] = []
    match = _PARAM.match(text, pos)
    while match is not None:
        params.append((match.group(1), match.group(2)))
        pos = match.end()
        match = _PARAM.match(text, pos)
    if skipWhitespace(text, pos) != len(text):
        raise SIPParseError("Invalid " + what)
    return tuple(params)


def formatParams(params: Params) -> str:
    """
    Serialize parameters as C{;name=value} pairs.
    """
    return "".join(
        ";" + name if value is None else ";" + name + "=" + value for name, value in params
    )


def findParam(params: Params, name: str) -> tuple[bool, str | None]:
    """
    Look a parameter up by case-insensitive name.

    @return: C{(found, value)} for the first parameter of that name.
    """
    lowered = name.lower()
    for key, value in params:
        if key.lower() == lowered:
            return True, value
    return False, None


def replaceParam(
    params: Params, name: str, value: str | None
) -> tuple[tuple[str, str | None], ...]:
    """
    @return: C{params} with every parameter called C{name} (any case)
        removed and C{(name, value)} put where the first one was, or at
        the end.
    """
    lowered = name.lower()
    out: list[tuple[str, str | None]] = []
    placed = False
    for key, old in params:
        if key.lower() == lowered:
            if not placed:
                out.append((name, value))
                placed = True
        else:
            out.append((key, old))
    if not placed:
        out.append((name, value))
    return tuple(out)


def removeParam(params: Params, name: str) -> tuple[tuple[str, str | None], ...]:
    """
    @return: C{params} without any parameter called C{name} (any case).
    """
    lowered = name.lower()
    return tuple((key, value) for key, value in params if key.lower() != lowered)


def splitList(text: str) -> list[str]:
    """
    Split a header value on the commas that are outside quoted strings and
    angle brackets.

    @return: the elements, whitespace-stripped, empty ones included.
    @raise SIPParseError: if a quoted string is not terminated.
    """
    if "," not in text:
        return [text.strip()]
    if '"' not in text and "<" not in text:
        return [part.strip() for part in text.split(",")]
    parts: list[str] = []
    start = 0
    pos = 0
    end = len(text)
    inAngle = False
    while pos < end:
        char = text[pos]
        if char == '"' and not inAngle:
            match = QUOTED.match(text, pos)
            if match is None:
                raise SIPParseError("Unterminated quoted string")
            pos = match.end()
            continue
        if char == "<":
            inAngle = True
        elif char == ">":
            inAngle = False
        elif char == "," and not inAngle:
            parts.append(text[start:pos].strip())
            start = pos + 1
        pos += 1
    parts.append(text[start:].strip())
    return parts


#: What can end or hide a list element: a comma, a quoted string, a URI in
#: angle brackets.
_LIST_SPECIAL = re.compile(r'[,"<]')


def countList(text: str, limit: int) -> int:
    """
    The number of elements L{splitList} finds in C{text}, counted without
    building them: the cost grows with the elements counted, not with the
    length of C{text}.

    @param limit: counting stops once the count is above it.
    @return: the count, or C{limit + 1} when there are more than C{limit}
        elements (at least 1: an empty text is one empty element).  As in
        L{splitList}, an unclosed angle bracket holds the rest of the text;
        an unterminated quoted string, which L{splitList} refuses, ends the
        count.
    """
    count = 1
    if count > limit:
        return count
    pos = 0
    search = _LIST_SPECIAL.search
    while True:
        match = search(text, pos)
        if match is None:
            return count
        pos = match.start()
        char = text[pos]
        if char == ",":
            count += 1
            if count > limit:
                return count
            pos += 1
        elif char == '"':
            quoted = QUOTED.match(text, pos)
            if quoted is None:
                return count
            pos = quoted.end()
        else:
            close = text.find(">", pos + 1)
            if close < 0:
                return count
            pos = close + 1
