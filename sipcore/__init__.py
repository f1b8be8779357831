# -*- test-case-name: tests.test_packaging -*-
"""
sipcore: a SIP registrar and proxy on Twisted.

When a TCP, TLS or WebSocket connection closes, the registrations bound to it
are removed from the location store through an event bus and handler plugins,
without blocking connection handling and without losing the cleanup while the
database is away.
"""

__version__ = "0.1.0"
