# -*- test-case-name: tests.test_peers_mixed -*-
"""
Calls through the proxy between a browser-style user agent on WebSocket
(SIP.js on Node.js, C{tests/peers/mixed.mjs}) and a sipp user agent on UDP
(C{tests/peers/sipp/}), in both directions, against a whole sipcore service
on loopback.

The proxy bridges the two transports: it record-routes twice (one entry
facing each side, the WebSocket one with a flow token), so the ACK and the
BYE come back through it and leave on the right listener.

Without sipp, Node.js or the npm packages these tests skip, unless
C{SIPCORE_REQUIRE_PEERS=1} (as C{.ci/run} sets), where a missing peer is a
failure.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from twisted.trial.unittest import TestCase

from tests.peerhelpers import (
    NodeScript,
    SippProcess,
    nodePath,
    sippFinished,
    sippPath,
    startNode,
    startSipp,
    waitRegistered,
)
from tests.serverhelpers import startServer


def routeEntries(lines: list[str]) -> list[str]:
    """
    The name-addr entries of Record-Route or Route header lines, in order
    (a line may hold several, separated by commas).
    """
    return re.findall(r"<[^>]*>", ",".join(lines))


def headerValues(lines: list[str]) -> list[str]:
    """
    The comma-separated values of header lines without angle brackets
    (such as Via), in order.
    """
    return [value.strip() for line in lines for value in line.split(",") if value.strip()]


def param(entry: str, name: str) -> str | None:
    """
    The value of the URI parameter C{name} in a Record-Route entry
    (C{""} for a parameter without a value), or L{None}.
    """
    match = re.search(r";{}(?:=([^;>]*))?(?=[;>])".format(re.escape(name)), entry)
    if match is None:
        return None
    return match.group(1) or ""


class MixedTransportCallTests(TestCase):
    """
    A SIP.js agent on WebSocket and a sipp agent on UDP call each other
    through sipcore.
    """

    timeout = 120

    async def server(self) -> Any:
        sippPath()
        nodePath()
        service = await startServer(self)
        self.addCleanup(service.proxy.stop)
        return service

    def checkDoubleRecordRoute(self, entries: list[str], wsIndex: int, context: str) -> None:
        """
        C{entries} are the proxy's two Record-Route entries of a call
        between a WebSocket and a UDP side: the WebSocket-facing one at
        C{wsIndex} carries the connection's flow token, the UDP-facing one
        the UDP peer's (C{u...}), and both are loose-routing, double
        (C{r2=on}) and signed.
        """
        self.assertEqual(len(entries), 2, context)
        ws, udp = entries[wsIndex], entries[1 - wsIndex]
        self.assertEqual(param(ws, "transport"), "ws", context)
        self.assertEqual(param(udp, "transport"), "udp", context)
        for entry in entries:
            self.assertEqual(param(entry, "lr"), "", context)
            self.assertEqual(param(entry, "r2"), "on", context)
            self.assertTrue(param(entry, "rrsig"), context)
        self.assertTrue(param(ws, "ftok"), context)
        self.assertFalse((param(ws, "ftok") or "").startswith("u"), context)
        self.assertTrue((param(udp, "ftok") or "").startswith("u"), context)

    def describe(self, script: NodeScript, sipp: SippProcess) -> str:
        return "SIP.js:\n{}\nsipp:\n{}".format(script.describe(), sipp.text())

    async def test_webSocketCallsUDP(self) -> None:
        """
        A sipp UAS registers over UDP; a SIP.js agent registered over
        WebSocket calls it with an SDP offer: 180 and 200 reach the caller
        carrying the proxy's two Record-Route entries (UDP-facing on top,
        WebSocket-facing below), and the ACK and the BYE, sent along the
        route set, traverse the proxy to sipp, which answers the BYE 200.
        """
        service = await self.server()
        callee = "udp" + secrets.token_hex(3)
        caller = "ws" + secrets.token_hex(3)
        callId = "sipcore-mixed-" + secrets.token_hex(8)
        sipp = startSipp(self, "uas.xml", "udp", service.ports["udp"], callee, callId)
        await waitRegistered(service, callee + "@example.com")
        # sipp matches messages to its scenario by Call-ID: the INVITE gets
        # the Call-ID of sipp's REGISTER (its first call is numbered 1).
        script = startNode(
            self, "mixed.mjs", "call", "ws://127.0.0.1:{}".format(service.ports["ws"]),
            "example.com", caller, "sip:{}@example.com".format(callee), callId + "-1")
        scriptCode = await script.ended
        sippCode = await sippFinished(sipp)
        context = self.describe(script, sipp)
        self.assertEqual((scriptCode, sippCode), (0, 0), context)

        [registered] = script.named("registered")
        self.assertEqual(registered["status"], 200, context)
        [established] = script.named("callEstablished")
        self.assertTrue(established["ringing"], context)
        self.assertEqual(established["status"], 200, context)
        # Top entry faces the callee (UDP), the one below the caller (WS).
        self.checkDoubleRecordRoute(routeEntries(established["recordRoute"]), 1, context)
        [bye] = script.named("byeAnswered")
        self.assertEqual(bye["status"], 200, context)
        # Both went through the proxy: the INVITE and the BYE as branches,
        # the ACK statelessly.
        self.assertEqual(service.proxy.stats["acksForwarded"], 1, context)
        self.assertEqual(service.proxy.stats["forwarded"], 2, context)

    async def test_udpCallsWebSocket(self) -> None:
        """
        A SIP.js agent registers over WebSocket; a sipp UAC over UDP calls
        it: the INVITE arrives over the agent's WebSocket with an SDP offer
        and the proxy's two Record-Route entries (WebSocket-facing, with
        its flow token, on top), SIP.js answers 180 and 200, and sipp's ACK
        and BYE reach it through the proxy (Route set from the
        Record-Route, the proxy's Via on top); the BYE is answered 200.
        """
        service = await self.server()
        callee = "ws" + secrets.token_hex(3)
        callId = "sipcore-mixed-" + secrets.token_hex(8)
        script = startNode(
            self, "mixed.mjs", "answer", "ws://127.0.0.1:{}".format(service.ports["ws"]),
            "example.com", callee)
        registered = await script.event("registered")
        self.assertEqual(registered["status"], 200, script.describe())
        await waitRegistered(service, callee + "@example.com")
        sipp = startSipp(self, "uac.xml", "udp", service.ports["udp"], callee, callId)
        sippCode = await sippFinished(sipp)
        if sippCode == 0:
            script.send("quit")
        else:
            script.kill()
        scriptCode = await script.ended
        context = self.describe(script, sipp)
        self.assertEqual((sippCode, scriptCode), (0, 0), context)

        [invite] = script.named("inviteReceived")
        self.assertTrue(invite["hasSdp"], context)
        # Top entry faces the callee (WS), the one below the caller (UDP).
        self.checkDoubleRecordRoute(routeEntries(invite["recordRoute"]), 0, context)
        # sipp's Via and the proxy's.
        for name in ("inviteReceived", "ackReceived", "byeReceived"):
            [request] = script.named(name)
            via = headerValues(request["via"])
            self.assertEqual(len(via), 2, context)
            self.assertIn("SIP/2.0/WS", via[0], context)
            self.assertIn("SIP/2.0/UDP", via[1], context)
        for name in ("ackReceived", "byeReceived"):
            # The proxy took its own entries off the Route set.
            self.assertEqual(script.named(name)[0]["route"], [], context)
        self.assertEqual(len(script.named("callEnded")), 1, context)
        self.assertEqual(service.proxy.stats["acksForwarded"], 1, context)
        self.assertEqual(service.proxy.stats["forwarded"], 2, context)
