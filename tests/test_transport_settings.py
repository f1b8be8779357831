# -*- test-case-name: tests.test_transport_settings -*-
"""
Tests for L{sipcore.transport.settings}.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sipcore.message.framing import DEFAULT_MAX_LINE_LENGTH, DEFAULT_MAX_SIZE
from sipcore.transport.settings import ConnectionSettings


class ConnectionSettingsTests(SynchronousTestCase):
    """
    L{ConnectionSettings} is one frozen value with the defaults of both
    kinds of stream connection, refusing bad limits.
    """

    def test_defaults(self) -> None:
        """
        By default: the framing's message and line limits, an hour's idle
        timeout (two minutes unregistered), 10 s to the first message or the
        end of the WebSocket handshake, 20 s per message, 5 s of close
        grace, 1 s for the WebSocket closing handshake, no WebSocket pings,
        the same-host Origin policy and 16 KiB of WebSocket handshake.
        """
        self.assertEqual(
            ConnectionSettings(),
            ConnectionSettings(
                maxSize=DEFAULT_MAX_SIZE, idleTimeout=3600.0, unregisteredIdleTimeout=120.0,
                handshakeTimeout=10.0, messageTimeout=20.0, closeGrace=5.0,
                maxLineLength=DEFAULT_MAX_LINE_LENGTH, closeHandshakeTimeout=1.0,
                autoPingInterval=0.0, autoPingTimeout=0.0, allowedOrigins=None,
                originDomains=frozenset(), maxHandshakeSize=16384))

    def test_frozen(self) -> None:
        """
        A setting cannot be changed in place; C{replace} makes a new value.
        """
        settings = ConnectionSettings()
        self.assertRaises(FrozenInstanceError, setattr, settings, "idleTimeout", 1.0)
        self.assertEqual(replace(settings, idleTimeout=1.0).idleTimeout, 1.0)

    def test_badValues(self) -> None:
        """
        A message size that is not positive and a negative timeout or limit
        are refused, naming the setting; zero turns a timeout or limit off
        and is accepted.
        """
        error = self.assertRaises(ValueError, ConnectionSettings, maxSize=0)
        self.assertIn("maxSize", str(error))
        for name in ("idleTimeout", "unregisteredIdleTimeout", "handshakeTimeout",
                     "messageTimeout", "closeGrace", "maxLineLength", "closeHandshakeTimeout",
                     "autoPingInterval", "autoPingTimeout", "maxHandshakeSize"):
            negative: dict[str, Any] = {name: -1}
            zero: dict[str, Any] = {name: 0}
            error = self.assertRaises(ValueError, ConnectionSettings, **negative)
            self.assertIn(name, str(error))
            ConnectionSettings(**zero)
