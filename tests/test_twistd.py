"""
C{twistd -n sipcore} as an operator runs it: it starts, says where it
listens, answers OPTIONS over UDP, TCP and WebSocket, and stops cleanly on
SIGTERM.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import sys

from twisted.trial.unittest import SkipTest, TestCase

from sipcore import compiled
from tests.serverhelpers import (
    PATIENCE,
    SIPCORE_PATH,
    connectTCP,
    connectWS,
    listenUDP,
    optionsRequest,
    spawnChild,
    waitUntil,
)


class TwistdTests(TestCase):
    """
    The twistd plugin end to end, in a child process.
    """

    timeout = 60

    async def test_runAnswerStop(self) -> None:
        """
        The server logs each listener, answers OPTIONS on each transport and
        exits with status 0 after SIGTERM, logging a clean stop.
        """
        env = dict(os.environ, PYTHONPATH=SIPCORE_PATH)
        args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "sipcore", "--domain", "example.com",
                "--admin-listen", "none",
                "--listen", "udp:0:interface=127.0.0.1",
                "--listen", "tcp:0:interface=127.0.0.1",
                "--listen", "ws:0:interface=127.0.0.1"]
        proc, transport = spawnChild(self, args, env)
        pattern = re.compile(r"listening on (udp|tcp|ws) 127\.0\.0\.1:(\d+)")
        await waitUntil(lambda: len(pattern.findall(proc.output)) == 3, timeout=PATIENCE * 2,
                        what="three listeners: " + proc.output[-500:])
        ports = {kind: int(port) for kind, port in pattern.findall(proc.output)}

        udp = listenUDP(self, ports["udp"])
        self.assertEqual((await udp.request(optionsRequest("udp"))).status, 200)
        tcp = await connectTCP(ports["tcp"])
        self.assertEqual((await tcp.request(optionsRequest("tcp"))).status, 200)
        ws = await connectWS(ports["ws"])
        self.assertEqual((await ws.request(optionsRequest("ws"))).status, 200)

        os.kill(transport.pid, signal.SIGTERM)
        await proc.ended
        # twistd ends by re-raising the signal it stopped for, so the exit
        # status says SIGTERM; what matters is the orderly shutdown.
        self.assertEqual(proc.signal, signal.SIGTERM, proc.output[-3000:])
        self.assertIn("stopped cleanly", proc.output, proc.output[-3000:])
        self.assertIn("build: " + compiled.buildName(), proc.output)
        self.assertNotIn("compiled modules not built from", proc.output)
        self.assertIn("Server Shut Down.", proc.output)
        self.assertNotIn("Traceback", proc.output)
        await tcp.waiters.lost
        await ws.waiters.lost

    async def test_privilegedPortWithUid(self) -> None:
        """
        Started as root with C{--uid}, the server binds ports below 1024
        before it drops its privileges, then answers on them as the
        unprivileged user.
        """
        if os.geteuid() != 0:
            raise SkipTest("binding a port below 1024 needs root")
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            raise SkipTest("no user nobody") from None
        unreadable = [path for path in (sys.prefix, SIPCORE_PATH, os.getcwd())
                      if not _othersCanEnter(path)]
        if unreadable:
            raise SkipTest("user nobody cannot enter {}".format(", ".join(unreadable)))
        port = _freeLowPort()
        env = dict(os.environ, PYTHONPATH=SIPCORE_PATH)
        args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "--uid", str(nobody.pw_uid), "--gid", str(nobody.pw_gid),
                "sipcore", "--domain", "example.com", "--admin-listen", "none",
                "--listen", "udp:{}:interface=127.0.0.1".format(port),
                "--listen", "tcp:{}:interface=127.0.0.1".format(port)]
        proc, transport = spawnChild(self, args, env)
        await waitUntil(lambda: "set uid/gid" in proc.output and "handler" in proc.output,
                        timeout=PATIENCE * 2, what="privileges dropped: " + proc.output[-500:])
        udp = listenUDP(self, port)
        self.assertEqual((await udp.request(optionsRequest("udp"))).status, 200)
        tcp = await connectTCP(port)
        self.assertEqual((await tcp.request(optionsRequest("tcp"))).status, 200)
        self.assertEqual(_processUser(transport.pid), nobody.pw_uid)
        os.kill(transport.pid, signal.SIGTERM)
        await proc.ended
        self.assertIn("stopped cleanly", proc.output, proc.output[-3000:])
        self.assertNotIn("Traceback", proc.output)
        await tcp.waiters.lost


def _othersCanEnter(path: str) -> bool:
    """
    Whether a user without privileges can reach C{path}: every directory
    from the root down to it lets others search it.
    """
    path = os.path.realpath(path)
    while True:
        if not os.stat(path).st_mode & 0o001:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _freeLowPort() -> int:
    """
    A port below 1024 free for both UDP and TCP on 127.0.0.1.
    """
    for port in range(990, 900, -1):
        sockets = [socket.socket(socket.AF_INET, kind)
                   for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)]
        try:
            for sock in sockets:
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return port
    raise SkipTest("no free port below 1024")


def _processUser(pid: int) -> int:
    """
    The real user id of process C{pid} (from C{/proc}).
    """
    with open("/proc/{}/status".format(pid)) as status:
        for line in status:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line for process {}".format(pid))
