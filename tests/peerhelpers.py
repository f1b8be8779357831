# -*- test-case-name: tests.test_peers_mixed -*-
"""
Helpers for the integration tests that drive real, independent SIP peers
against a whole sipcore service on loopback: sipp (Debian package
C{sip-tester}) and SIP.js user agents on Node.js (C{tests/peers/*.mjs},
packages installed with C{npm ci --prefix tests/peers}).

A missing peer tool skips the test, unless C{SIPCORE_REQUIRE_PEERS=1} (as
C{.ci/run} sets), where it is a failure.  Every process started here is
killed by its pid at cleanup if it still runs, and is bounded in time.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.interfaces import IProcessTransport
from twisted.trial.unittest import SkipTest, TestCase

from tests.serverhelpers import waitUntil

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers")

#: The sipp scenarios.
SCENARIOS = os.path.join(PEERS, "sipp")

#: Seconds one sipp run may take before sipp gives up (and fails).
SIPP_TIMEOUT = 20

#: Seconds the test waits for a sipp process beyond its own timeout.
GRACE = 10.0

#: Seconds a Node script may run before it is killed (the scripts stop
#: themselves earlier, after their own deadline).
SCRIPT_TIMEOUT = 60.0


def peersRequired() -> bool:
    """
    @return: whether a missing peer tool fails the tests
        (C{SIPCORE_REQUIRE_PEERS=1}) instead of skipping them.
    """
    return os.environ.get("SIPCORE_REQUIRE_PEERS") == "1"


def _missing(problem: str) -> None:
    """
    Skip the test for C{problem}, or fail it when peers are required.
    """
    if peersRequired():
        raise AssertionError(problem + " and SIPCORE_REQUIRE_PEERS=1")
    raise SkipTest(problem)


def sippPath() -> str:
    """
    @return: the sipp executable.
    @raise SkipTest: when sipp is not installed (and not required).
    """
    path = shutil.which("sipp")
    if path is None:
        _missing("sipp is not installed (apt-get install sip-tester)")
    assert path is not None
    return path


def nodePath() -> str:
    """
    @return: the node executable, with SIP.js, JsSIP and ws installed.
    @raise SkipTest: when either is missing (and peers are not required).
    """
    node = shutil.which("node")
    if node is None:
        _missing("Node.js is not installed")
    for package in ("sip.js", "jssip", "ws"):
        if not os.path.isdir(os.path.join(PEERS, "node_modules", package)):
            _missing("npm package {} is missing (run: npm ci --prefix tests/peers)".format(
                package))
    assert node is not None
    return node


def freePort(kind: int) -> int:
    """
    A port on 127.0.0.1 that is free now (for sipp's C{-p}).
    """
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Process(protocol.ProcessProtocol):
    """
    A child process with a Deferred firing with its exit code.
    """

    transport: IProcessTransport

    def __init__(self) -> None:
        self.ended: defer.Deferred[int] = defer.Deferred()
        self.pid: int | None = None

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def processEnded(self, reason: Any) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.ended.callback(-1 if code is None else code)

    def kill(self) -> None:
        """
        Kill the process (by its pid, through its transport) if it still
        runs.
        """
        if not self.ended.called:
            try:
                self.transport.signalProcess("KILL")
            except Exception:
                pass


class SippProcess(_Process):
    """
    One sipp run: its output, and a Deferred firing with its exit code.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.output = bytearray()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        if len(self.output) < 200000:
            self.output += data

    errReceived = outReceived

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")[-4000:]


def startSipp(testCase: TestCase, scenario: str, transport: str, proxyPort: int,
              user: str, callId: str, timeout: float = SIPP_TIMEOUT) -> SippProcess:
    """
    Start sipp with C{scenario} (a file in L{SCENARIOS}) against the proxy
    on C{127.0.0.1:proxyPort}, for one call; it is killed at cleanup if it
    still runs.

    @param transport: C{"udp"} or C{"tcp"}.
    @param user: sipp's C{[service]}: the user it registers or calls.
    @param callId: the Call-ID prefix; sipp's first (only) call has the
        Call-ID C{callId + "-1"}.
    @param timeout: seconds sipp may take before it gives up (and fails).
    """
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    port = freePort(kind)
    workdir = os.path.abspath(testCase.mktemp())
    os.makedirs(workdir)
    args = [
        sippPath(), "127.0.0.1:{}".format(proxyPort),
        "-sf", os.path.join(SCENARIOS, scenario),
        "-t", "u1" if transport == "udp" else "t1",
        "-i", "127.0.0.1", "-p", str(port),
        "-s", user, "-cid_str", callId + "-%u",
        "-m", "1", "-l", "1",
        "-timeout", "{:g}s".format(timeout), "-timeout_error",
        "-nostdin", "-max_retrans", "5",
        "-trace_err", "-error_file", os.path.join(workdir, "errors.log"),
    ]
    return startPeer(testCase, scenario, args, workdir)


def startPeer(testCase: TestCase, name: str, args: list[str], workdir: str) -> SippProcess:
    """
    Run the peer C{args} in C{workdir}, collecting its output; at cleanup
    it is killed if it still runs, and waited for.

    @param name: what the peer is called in failure messages.
    """
    process = SippProcess(name)
    reactor.spawnProcess(process, args[0], args, env=dict(os.environ), path=workdir)

    def stop() -> Any:
        process.kill()
        return process.ended

    testCase.addCleanup(stop)
    return process


async def sippFinished(process: SippProcess, timeout: float = SIPP_TIMEOUT) -> int:
    """
    Wait for a sipp run to end, killing it when it outlives its own
    C{timeout} by L{GRACE} seconds.

    @return: its exit code (0 when its scenario completed).
    """
    timer = reactor.callLater(timeout + GRACE, process.kill)
    try:
        return await process.ended
    finally:
        if timer.active():
            timer.cancel()


async def waitRegistered(service: Any, aor: str, timeout: float = SIPP_TIMEOUT) -> None:
    """
    Wait until C{aor} has a binding in the service's location store.

    @raise AssertionError: when it has none after C{timeout} seconds.
    """
    async def bound() -> bool:
        return bool(await service.store.lookup(aor, reactor.seconds()))

    await waitUntil(bound, timeout=timeout, what="registration of " + aor)


class NodeScript(_Process):
    """
    A running Node script: the JSON events it printed (one object a line,
    with an C{event} name), a Deferred per event name, and its exit code.
    """

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self._buffer = b""
        self._waiting: dict[str, list[defer.Deferred[dict[str, Any]]]] = {}

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "unparsed", "line": line.decode("utf-8", "replace")}
            self.events.append(event)
            for d in self._waiting.pop(event.get("event"), []):
                d.callback(event)

    def errReceived(self, data: bytes) -> None:
        if len(self.stderr) < 100000:
            self.stderr += data

    def processEnded(self, reason: Any) -> None:
        for waiters in self._waiting.values():
            for d in waiters:
                d.errback(AssertionError("script ended first: " + self.describe()))
        self._waiting = {}
        super().processEnded(reason)

    def event(self, name: str) -> defer.Deferred[dict[str, Any]]:
        """
        A Deferred firing with the first event called C{name}; it fails
        if the script ends without printing one.
        """
        for event in self.events:
            if event.get("event") == name:
                return defer.succeed(event)
        if self.ended.called:
            return defer.fail(AssertionError("script ended first: " + self.describe()))
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._waiting.setdefault(name, []).append(d)
        return d

    def named(self, name: str) -> list[dict[str, Any]]:
        """
        @return: every event called C{name}, in order.
        """
        return [event for event in self.events if event.get("event") == name]

    def send(self, line: str) -> None:
        """
        Write C{line} and a newline on the script's stdin.
        """
        self.transport.write(line.encode("utf-8") + b"\n")

    def describe(self) -> str:
        return "events: {}\nstderr: {}".format(
            json.dumps(self.events, indent=1)[-6000:],
            self.stderr.decode("utf-8", "replace")[-3000:])


def startNode(testCase: TestCase, script: str, *args: str,
              timeout: float = SCRIPT_TIMEOUT,
              env: dict[str, str] | None = None) -> NodeScript:
    """
    Run C{node script args...} in L{PEERS}; it is killed after C{timeout}
    seconds, and at cleanup if it still runs.

    @param script: a file name in L{PEERS}.
    @param env: variables added to the script's environment.
    """
    node = nodePath()
    process = NodeScript()
    argv = [node, os.path.join(PEERS, script), *args]
    reactor.spawnProcess(process, node, argv, env={**os.environ, **(env or {})}, path=PEERS)
    timer = reactor.callLater(timeout, process.kill)

    def stopTimer(result: Any = None) -> Any:
        if timer.active():
            timer.cancel()
        return result

    process.ended.addBoth(stopTimer)
    testCase.addCleanup(stopTimer)
    testCase.addCleanup(process.kill)
    return process
