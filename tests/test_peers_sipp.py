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

import os
import secrets
import shutil
import socket
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import SkipTest, TestCase

from tests.serverhelpers import startServer, waitUntil

SCENARIOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "sipp")

#: Seconds one sipp run may take before sipp gives up (and fails).
SIPP_TIMEOUT = 20

#: Seconds the test waits for a sipp process beyond its own timeout.
GRACE = 10.0


def peersRequired() -> bool:
    """
    @return: whether a missing peer tool fails the tests
        (C{SIPCORE_REQUIRE_PEERS=1}) instead of skipping them.
    """
    return os.environ.get("SIPCORE_REQUIRE_PEERS") == "1"


def sippPath() -> str:
    """
    @return: the sipp executable.
    @raise SkipTest: when sipp is not installed (and not required).
    """
    path = shutil.which("sipp")
    if path is None:
        message = "sipp is not installed (apt-get install sip-tester)"
        if peersRequired():
            raise AssertionError(message + " and SIPCORE_REQUIRE_PEERS=1")
        raise SkipTest(message)
    return path


def freePort(kind: int) -> int:
    """
    A port on 127.0.0.1 that is free now (for sipp's C{-p}).
    """
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SippProcess(protocol.ProcessProtocol):
    """
    One sipp run: its output, and a Deferred firing with its exit code.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.output = bytearray()
        self.ended: defer.Deferred[int] = defer.Deferred()
        self.pid: int | None = None

    def connectionMade(self) -> None:
        self.pid = self.transport.pid
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        if len(self.output) < 200000:
            self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.ended.callback(-1 if code is None else code)

    def kill(self) -> None:
        """
        Kill the process by its pid if it still runs.
        """
        if not self.ended.called:
            try:
                self.transport.signalProcess("KILL")
            except Exception:
                pass

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")[-4000:]


class SippCallTests(TestCase):
    """
    sipp calls sipp through sipcore.
    """

    timeout = 120

    async def server(self) -> Any:
        service = await startServer(self)
        self.addCleanup(service.proxy.stop)
        return service

    def sipp(self, scenario: str, transport: str, proxyPort: int, user: str,
             callId: str) -> SippProcess:
        """
        Start sipp with C{scenario} against the proxy; it is killed at
        cleanup if it still runs.
        """
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        port = freePort(kind)
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        args = [
            sippPath(), "127.0.0.1:{}".format(proxyPort),
            "-sf", os.path.join(SCENARIOS, scenario),
            "-t", "u1" if transport == "udp" else "t1",
            "-i", "127.0.0.1", "-p", str(port),
            "-s", user, "-cid_str", callId + "-%u",
            "-m", "1", "-l", "1",
            "-timeout", "{}s".format(SIPP_TIMEOUT), "-timeout_error",
            "-nostdin", "-max_retrans", "5",
            "-trace_err", "-error_file", os.path.join(workdir, "errors.log"),
        ]
        process = SippProcess(scenario)
        reactor.spawnProcess(process, args[0], args, env=dict(os.environ), path=workdir)
        self.addCleanup(process.kill)
        return process

    async def finished(self, process: SippProcess) -> int:
        timer = reactor.callLater(SIPP_TIMEOUT + GRACE, process.kill)
        try:
            return await process.ended
        finally:
            if timer.active():
                timer.cancel()

    async def registered(self, service: Any, aor: str) -> None:
        async def bound() -> bool:
            return bool(await service.store.lookup(aor, reactor.seconds()))

        await waitUntil(bound, timeout=SIPP_TIMEOUT, what="registration of " + aor)

    async def call(self, transport: str, uas: str, uac: str) -> Any:
        """
        Register a sipp callee, run a sipp caller against it, and check
        that both scenarios completed.
        """
        service = await self.server()
        port = service.ports[transport]
        user = "bob" + secrets.token_hex(3)
        callId = "sipcore-" + secrets.token_hex(8)
        callee = self.sipp(uas, transport, port, user, callId)
        await self.registered(service, user + "@example.com")
        caller = self.sipp(uac, transport, port, user, callId)
        callerCode = await self.finished(caller)
        calleeCode = await self.finished(callee)
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
