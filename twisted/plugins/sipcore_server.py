# -*- test-case-name: tests.test_packaging -*-
"""
The twistd plugin: C{twistd -n sipcore}.
"""

from twisted.application.service import ServiceMaker

sipcore = ServiceMaker(
    "sipcore",
    "sipcore.tap",
    "SIP registrar and proxy for UDP, TCP, TLS and WebSocket clients",
    "sipcore",
)
