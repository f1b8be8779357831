# -*- test-case-name: tests.test_message_parser -*-
"""
Pure SIP message handling (sans-IO, no Twisted): parse and serialize
requests and responses, URIs, addresses and Via headers, and frame them on
stream transports.

See C{docs/messages.rst} for what is accepted and refused.
"""

from sipcore.message.address import Address, parseAddress, parseAddressList
from sipcore.message.errors import SIPParseError
from sipcore.message.framing import PING, Ping, StreamFramer, contentLength
from sipcore.message.headers import COMPACT_FORMS, LIST_HEADERS, Headers, canonicalName, prettyName
from sipcore.message.messages import (
    MALFORMED_EXPIRES,
    MAX_CSEQ,
    Request,
    Response,
    generateBranch,
    generateTag,
    parseExpires,
    reasonPhrase,
)
from sipcore.message.parser import (
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_LINE_LENGTH,
    DEFAULT_MAX_SIZE,
    parseMessage,
)
from sipcore.message.uri import URI, parseURI, unescape
from sipcore.message.via import MAGIC_COOKIE, Via, parseVia, parseViaList

__all__ = [
    "Address",
    "COMPACT_FORMS",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_LINE_LENGTH",
    "DEFAULT_MAX_SIZE",
    "Headers",
    "LIST_HEADERS",
    "MAGIC_COOKIE",
    "MALFORMED_EXPIRES",
    "MAX_CSEQ",
    "PING",
    "Ping",
    "Request",
    "Response",
    "SIPParseError",
    "StreamFramer",
    "URI",
    "Via",
    "canonicalName",
    "contentLength",
    "generateBranch",
    "generateTag",
    "parseAddress",
    "parseAddressList",
    "parseExpires",
    "parseMessage",
    "parseURI",
    "parseVia",
    "parseViaList",
    "prettyName",
    "reasonPhrase",
    "unescape",
]
