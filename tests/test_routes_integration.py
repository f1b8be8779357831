"""
Routes on loopback with real peers: sipp as the upstream server reached
through sipcore's default route, and a dispatcher set of two sipp targets
whose health checks take a stopped one out of the set and back in.

Without sipp these tests skip, unless C{SIPCORE_REQUIRE_PEERS=1}.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any

from twisted.trial.unittest import TestCase

from sipcore.routes.static import StaticRoutes
from tests.peerhelpers import (
    SCENARIOS,
    SIPP_TIMEOUT,
    SippProcess,
    freePort,
    sippFinished,
    sippPath,
    startNode,
    startPeer,
    startSipp,
    waitRegistered,
)
from tests.serverhelpers import startServer, waitUntil


def startUpstream(testCase: TestCase, port: int, calls: int) -> SippProcess:
    """
    Start sipp as the upstream server (C{upstream.xml}) on UDP
    C{127.0.0.1:port}, for C{calls} calls (each OPTIONS ping is one); it
    is killed at cleanup if it still runs.
    """
    workdir = os.path.abspath(testCase.mktemp())
    os.makedirs(workdir)
    args = [
        sippPath(), "-sf", os.path.join(SCENARIOS, "upstream.xml"),
        "-t", "u1", "-i", "127.0.0.1", "-p", str(port), "-m", str(calls),
        "-timeout", "{}s".format(SIPP_TIMEOUT * 3), "-nostdin",
        "-trace_err", "-error_file", os.path.join(workdir, "errors.log"),
    ]
    return startPeer(testCase, "upstream", args, workdir)


def routesHandler(service: Any) -> StaticRoutes:
    [handler] = [h.handler for h in service.handlers if h.name == "routes"]
    assert isinstance(handler, StaticRoutes)
    return handler


class UpstreamRouteTests(TestCase):
    """
    A call to a number nobody registered goes to the upstream server.
    """

    timeout = 120

    async def test_callThroughDefaultRoute(self) -> None:
        """
        A sipp caller (a trusted peer) calls C{+4930123@example.com}: the
        default route sends the INVITE to the sipp upstream, which answers;
        ACK and BYE go end to end through sipcore's Record-Route and both
        scenarios complete.
        """
        upstreamPort = freePort(socket.SOCK_DGRAM)
        service = await startServer(
            self, "--trusted-peer", "127.0.0.1", "--handler", "routes",
            "--handler-option", "routes:default=sip:127.0.0.1:{}".format(upstreamPort),
            "--handler-option", "routes:allow=users,peers", "--router", "routes")
        self.addCleanup(service.proxy.stop)
        upstream = startUpstream(self, upstreamPort, calls=1)
        caller = startSipp(self, "uac.xml", "udp", service.ports["udp"], "+4930123",
                           "sipcore-" + secrets.token_hex(8))
        callerCode = await sippFinished(caller)
        upstreamCode = await sippFinished(upstream)
        self.assertEqual((callerCode, upstreamCode), (0, 0),
                         "caller:\n{}\nupstream:\n{}".format(caller.text(), upstream.text()))
        self.assertEqual(service.proxy.routers.stats["routed"], 1)


class DispatcherHealthTests(TestCase):
    """
    OPTIONS health checks against real servers.
    """

    timeout = 120

    async def test_stoppedTargetOutAndBackIn(self) -> None:
        """
        Of a set of two sipp targets, the one that is stopped leaves the
        set once its pings go unanswered, and returns when a new sipp
        answers on its port again; the other stays in throughout.
        """
        first, second = freePort(socket.SOCK_DGRAM), freePort(socket.SOCK_DGRAM)
        startUpstream(self, first, calls=100000)
        stopped = startUpstream(self, second, calls=100000)
        service = await startServer(
            self, "--handler", "routes", "--handler-option",
            "routes:default=sip:127.0.0.1:{},sip:127.0.0.1:{}".format(first, second),
            "--handler-option", "routes:ping-interval=0.2",
            "--handler-option", "routes:ping-timeout=0.5", "--router", "routes")
        self.addCleanup(service.proxy.stop)
        [dispatcherSet] = routesHandler(service).sets.values()
        await waitUntil(lambda: service.core.stats["received"] >= 4, what="ping answers")
        self.assertEqual(dispatcherSet.up, [True, True])
        stopped.kill()
        await stopped.ended
        await waitUntil(lambda: dispatcherSet.up == [True, False], what="second out")
        startUpstream(self, second, calls=100000)
        await waitUntil(lambda: dispatcherSet.up == [True, True], what="second back")


class BrowserThroughRouteTests(TestCase):
    """
    A browser (SIP.js over WebSocket) registered at sipcore calls a
    number; the default route takes the call to the sipp upstream.  The
    upstream calls the browser back at its registration.
    """

    timeout = 120

    async def server(self, upstreamPort: int) -> Any:
        users = self.mktemp()
        with open(users, "w") as f:
            f.write("browser@example.com:secret\n")
        service = await startServer(
            self, "--auth-file", users, "--auth-methods", "REGISTER,INVITE",
            "--trusted-peer", "127.0.0.1",
            "--handler", "routes", "--handler-option",
            "routes:default=sip:127.0.0.1:{}".format(upstreamPort), "--router", "routes")
        self.addCleanup(service.proxy.stop)
        return service

    async def test_upstreamCallsBrowser(self) -> None:
        """
        With the route in place, the upstream (a trusted peer, From another
        domain) calls the registered browser: the INVITE goes to its
        registration over its WebSocket, not to the route, and the call
        completes (ACK and BYE through sipcore).
        """
        service = await self.server(freePort(socket.SOCK_DGRAM))
        script = startNode(
            self, "mixed.mjs", "answer", "ws://127.0.0.1:{}".format(service.ports["ws"]),
            "example.com", "browser", env={"SIPCORE_PEER_PASSWORD": "secret"})
        registered = await script.event("registered")
        self.assertEqual(registered["status"], 200, script.describe())
        await waitRegistered(service, "browser@example.com")
        sipp = startSipp(self, "upstream_call.xml", "udp", service.ports["udp"], "browser",
                         "sipcore-" + secrets.token_hex(8))
        sippCode = await sippFinished(sipp)
        if sippCode == 0:
            script.send("quit")
        else:
            script.kill()
        scriptCode = await script.ended
        self.assertEqual((sippCode, scriptCode), (0, 0),
                         "SIP.js:\n{}\nupstream:\n{}".format(script.describe(), sipp.text()))
        self.assertEqual(len(script.named("inviteReceived")), 1)
        self.assertEqual(service.proxy.routers.stats["consulted"], 0)

    async def test_browserCallsUpstream(self) -> None:
        """
        The SIP.js agent registers with digest credentials, calls
        C{+4930123@example.com} (its INVITE is challenged and
        authenticated), and the call reaches the sipp upstream, which
        answers; the agent's ACK and BYE reach it through sipcore.
        """
        upstreamPort = freePort(socket.SOCK_DGRAM)
        service = await self.server(upstreamPort)
        upstream = startUpstream(self, upstreamPort, calls=1)
        script = startNode(
            self, "mixed.mjs", "call", "ws://127.0.0.1:{}".format(service.ports["ws"]),
            "example.com", "browser", "sip:+4930123@example.com",
            "sipcore-" + secrets.token_hex(8), env={"SIPCORE_PEER_PASSWORD": "secret"})
        scriptCode = await script.ended
        upstreamCode = await sippFinished(upstream)
        self.assertEqual((scriptCode, upstreamCode), (0, 0),
                         "SIP.js:\n{}\nupstream:\n{}".format(script.describe(),
                                                             upstream.text()))
        self.assertEqual(service.proxy.routers.stats["routed"], 1)
