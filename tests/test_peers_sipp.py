# -*- test-case-name: tests.test_peers_sipp -*-
"""
Calls through the proxy between two real, independent SIP user agents:
sipp (Debian package C{sip-tester}) as caller and as callee, over UDP and
over TCP, against a whole sipcore service on loopback.

The scenarios are in C{tests/peers/sipp/}.  Without sipp these tests skip,
unless C{SIPCORE_REQUIRE_PEERS=1} (as C{.ci/run} sets), where a missing
sipp is a failure.
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.trial.unittest import TestCase

from tests.peerhelpers import sippFinished, startSipp, waitRegistered
from tests.serverhelpers import startServer


class SippCallTests(TestCase):
    """
    sipp calls sipp through sipcore.
    """

    timeout = 120

    async def server(self) -> Any:
        service = await startServer(self)
        self.addCleanup(service.proxy.stop)
        return service

    async def call(self, transport: str, uas: str, uac: str) -> Any:
        """
        Register a sipp callee, run a sipp caller against it, and check
        that both scenarios completed.
        """
        service = await self.server()
        port = service.ports[transport]
        user = "bob" + secrets.token_hex(3)
        callId = "sipcore-" + secrets.token_hex(8)
        callee = startSipp(self, uas, transport, port, user, callId)
        await waitRegistered(service, user + "@example.com")
        caller = startSipp(self, uac, transport, port, user, callId)
        callerCode = await sippFinished(caller)
        calleeCode = await sippFinished(callee)
        self.assertEqual(
            (callerCode, calleeCode), (0, 0),
            "sipp caller:\n{}\nsipp callee:\n{}".format(caller.text(), callee.text()))
        return service

    async def test_callOverUDP(self) -> None:
        """
        Over UDP: the callee registers, the caller's INVITE reaches it
        through the proxy, 180 and 200 come back, ACK and BYE go end to end
        and the BYE is answered 200.
        """
        service = await self.call("udp", "uas.xml", "uac.xml")
        self.assertGreaterEqual(service.proxy.stats["forwarded"], 2)
        self.assertEqual(service.proxy.stats["acksForwarded"], 1)

    async def test_callOverTCP(self) -> None:
        """
        The same call over TCP: the INVITE reaches the callee over the
        connection it registered on, and so do the ACK and the BYE
        (by the flow token in the Record-Route).
        """
        service = await self.call("tcp", "uas.xml", "uac.xml")
        self.assertEqual(service.proxy.stats["acksForwarded"], 1)

    async def test_cancelOverUDP(self) -> None:
        """
        Over UDP the caller CANCELs after 180: 200 for the CANCEL, 487 for
        the INVITE, and the callee gets the CANCEL and is ACKed for its
        487.
        """
        service = await self.call("udp", "uas_cancel.xml", "uac_cancel.xml")
        self.assertEqual(service.proxy.stats["cancelsSent"], 1)

    async def test_cancelOverTCP(self) -> None:
        """
        The same CANCEL over TCP.
        """
        service = await self.call("tcp", "uas_cancel.xml", "uac_cancel.xml")
        self.assertEqual(service.proxy.stats["cancelsSent"], 1)
