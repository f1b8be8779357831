# -*- test-case-name: tests.test_message_parser -*-
"""
The one error the message layer raises.
"""

from __future__ import annotations

from typing import Any


class SIPParseError(ValueError):
    """
    Bytes that are not an acceptable SIP message.

    @ivar reason: a short human-readable reason, fit for a reason phrase
        (ASCII, no CR or LF).
    @ivar status: the status code a server should answer with when it can
        answer at all: C{400} for malformed input, C{505} for an unsupported
        SIP version, C{413} for an oversized message.
    @ivar partial: whatever could be parsed before the error (a
        L{sipcore.message.Request} or L{sipcore.message.Response} whose
        headers may be incomplete), or C{None}; used to build an error
        response.
    """

    def __init__(self, reason: str, status: int = 400, partial: Any = None) -> None:
        reason = "".join(c if 32 <= ord(c) < 127 else "?" for c in reason)
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial
