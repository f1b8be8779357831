# -*- test-case-name: tests.test_peers_digest -*-
"""
Digest authentication with real SIP clients: baresip 1.0 (Debian package
C{baresip}) and sipsak (package C{sipsak}) over UDP, SIP.js and JsSIP (npm,
in C{tests/peers}) over WebSocket, register with a password against a whole
sipcore service on loopback, with the default C{--auth-algorithms} and with
SHA-256 offered too (the interoperability matrix in docs/security.rst,
"Client interoperability").

Without the clients these tests skip, unless C{SIPCORE_REQUIRE_PEERS=1}
(as C{.ci/run} sets), where a missing client is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import sys
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.peerhelpers import (
    PEERS,
    SippProcess,
    _missing,
    freePort,
    startNode,
    startPeer,
    waitRegistered,
)
from tests.serverhelpers import startServer, waitUntil

#: Seconds a client may take to register.
PATIENCE = 20.0


def clientPath(name: str, package: str) -> str:
    """
    @return: the executable C{name}.
    @raise SkipTest: when it is not installed (and peers are not required).
    """
    path = shutil.which(name)
    if path is None:
        _missing("{} is not installed (apt-get install {})".format(name, package))
    assert path is not None
    return path


def startClient(testCase: TestCase, args: list[str], workdir: str) -> SippProcess:
    """
    Run a client (L{startPeer}), named after its executable.
    """
    return startPeer(testCase, os.path.basename(args[0]), args, workdir)


async def authServer(testCase: TestCase, name: str, *args: str, domain: str = "example.com",
                     transports: tuple[str, ...] = ("udp",)) -> tuple[Any, str, str]:
    """
    A server with one user of C{domain} (C{name} and a random suffix) in an
    C{--auth-file}, listening on C{transports}.

    @return: the service, the user's name and password.
    """
    user = name + secrets.token_hex(3)
    password = "pw-" + secrets.token_hex(6)
    path = testCase.mktemp()
    with open(path, "w") as f:
        f.write("{}@{}:{}\n".format(user, domain, password))
    service = await startServer(testCase, "--auth-file", path, "--domain", domain, *args,
                                transports=transports)
    testCase.addCleanup(service.proxy.stop)
    return service, user, password


class DigestClientTests(TestCase):
    """
    Real clients answer sipcore's digest challenges over UDP.
    """

    timeout = 90

    async def server(self, *args: str, domain: str = "example.com") -> tuple[Any, str, str]:
        """
        A server with one user of C{domain} in an C{--auth-file}.

        @return: the service, the user's name and password.
        """
        return await authServer(self, "alice", *args, domain=domain)

    def baresip(self, port: int, user: str, password: str) -> SippProcess:
        """
        Start baresip headless with a configuration directory of its own:
        one account registering through the server on C{port}, no audio or
        video modules, quitting by itself after L{timeout} seconds.
        """
        executable = clientPath("baresip", "baresip")
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        with open(os.path.join(workdir, "config"), "w") as f:
            f.write("poll_method\tepoll\n"
                    "sip_listen\t127.0.0.1:{}\n"
                    "module_path\t/usr/lib/baresip/modules\n"
                    "module_app\taccount.so\n".format(freePort(socket.SOCK_DGRAM)))
        with open(os.path.join(workdir, "accounts"), "w") as f:
            f.write('<sip:{}@example.com>;auth_pass={};outbound="sip:127.0.0.1:{}";'
                    "regint=600\n".format(user, password, port))
        return startClient(self, [executable, "-f", workdir, "-t", str(self.timeout)],
                           workdir)

    async def test_baresipDefault(self) -> None:
        """
        baresip 1.0 registers with the default challenge (MD5 only).
        """
        service, user, password = await self.server()
        client = self.baresip(service.ports["udp"], user, password)
        await waitRegistered(service, user + "@example.com", timeout=PATIENCE)
        await waitUntil(lambda: b"200 OK" in client.output, timeout=PATIENCE,
                        what="baresip's report of its registration")

    async def test_baresipFailsWithSHA256(self) -> None:
        """
        baresip 1.0 fails on a SHA-256 challenge even with an MD5 one
        first (libre 1.1 answers every challenge of a 401 and gives up on
        one it cannot): why SHA-256 is not offered by default.
        """
        service, user, password = await self.server("--auth-algorithms", "MD5,SHA-256")
        client = self.baresip(service.ports["udp"], user, password)
        await waitUntil(lambda: b"Function not implemented" in client.output,
                        timeout=PATIENCE, what="baresip's registration failure")
        self.assertEqual(
            await service.store.lookup(user + "@example.com", reactor.seconds()), [])

    async def sipsak(self, *args: str) -> tuple[Any, str, SippProcess]:
        """
        Register a user with sipsak's usrloc mode, once (in the domain
        127.0.0.1: sipsak resolves the host of its To URI).

        @return: the service, the address of record and the finished run.
        """
        executable = clientPath("sipsak", "sipsak")
        service, user, password = await self.server(*args, domain="127.0.0.1")
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        client = startClient(self, [
            executable, "-U", "-i",
            "-C", "sip:{}@127.0.0.1:{}".format(user, freePort(socket.SOCK_DGRAM)),
            "-s", "sip:{}@127.0.0.1".format(user),
            "-p", "127.0.0.1:{}".format(service.ports["udp"]),
            "-u", user, "-a", password, "-x", "600", "-vv",
        ], workdir)
        await client.ended
        return service, user + "@127.0.0.1", client

    async def test_sipsakMD5First(self) -> None:
        """
        sipsak registers when MD5 is the first challenge, with SHA-256
        offered after it.
        """
        service, aor, client = await self.sipsak("--auth-algorithms", "MD5,SHA-256")
        self.assertIn(b"All usrloc tests completed successful", client.output,
                      client.text())
        await waitRegistered(service, aor, timeout=PATIENCE)

    async def test_sipsakFailsSHA256First(self) -> None:
        """
        sipsak gives up when the first challenge is SHA-256.
        """
        service, aor, client = await self.sipsak("--auth-algorithms", "SHA-256,MD5")
        self.assertIn(b"unsupported authentication algorithm", client.output, client.text())
        self.assertEqual(await service.store.lookup(aor, reactor.seconds()), [])


class JavaScriptDigestTests(TestCase):
    """
    SIP.js and JsSIP, in Node over WebSocket, answer sipcore's digest
    challenges (C{tests/peers/register.mjs}).
    """

    timeout = 90

    async def register(self, library: str, *args: str) -> tuple[Any, str, int]:
        """
        Start a server with one user in an C{--auth-file} and a WebSocket
        listener, and register the user with C{library}.

        @return: the service, the address of record and the final status
            the client reported.
        """
        service, user, password = await authServer(self, library, *args, transports=("ws",))
        script = startNode(self, "register.mjs", library,
                           "ws://127.0.0.1:{}".format(service.ports["ws"]), "example.com", user,
                           env={"SIPCORE_PEER_PASSWORD": password})
        event = await script.event("registered")
        return service, user + "@example.com", int(event["status"])

    async def assertRegisters(self, library: str, *args: str) -> None:
        service, aor, status = await self.register(library, *args)
        self.assertEqual(status, 200)
        await waitRegistered(service, aor, timeout=PATIENCE)

    async def assertFails(self, library: str, *args: str) -> None:
        service, aor, status = await self.register(library, *args)
        self.assertEqual(status, 401)
        self.assertEqual(await service.store.lookup(aor, reactor.seconds()), [])

    async def test_sipjsDefault(self) -> None:
        """
        SIP.js 0.21 registers with the default challenge (MD5 only).
        """
        await self.assertRegisters("sipjs")

    async def test_sipjsLastChallenge(self) -> None:
        """
        SIP.js reads only the last challenge of a 401 and computes MD5
        only: with C{MD5,SHA-256} it gives up (its final response is the
        401), with C{SHA-256,MD5} it registers.
        """
        await self.assertFails("sipjs", "--auth-algorithms", "MD5,SHA-256")
        await self.assertRegisters("sipjs", "--auth-algorithms", "SHA-256,MD5")

    async def test_jssipDefault(self) -> None:
        """
        JsSIP 3.13 registers with the default challenge (MD5 only).
        """
        await self.assertRegisters("jssip")

    async def test_jssipLastChallenge(self) -> None:
        """
        JsSIP, like SIP.js, reads only the last challenge and computes MD5
        only: C{MD5,SHA-256} fails, C{SHA-256,MD5} registers.
        """
        await self.assertFails("jssip", "--auth-algorithms", "MD5,SHA-256")
        await self.assertRegisters("jssip", "--auth-algorithms", "SHA-256,MD5")


class PjsuaDigestTests(TestCase):
    """
    pjsua2 (pjproject 2.15, the C{pjsua2-python} wheel from PyPI) answers
    sipcore's digest challenges over UDP, whichever algorithms are offered
    (C{tests/peers/pjsua2_register.py}, in a process of its own).
    """

    timeout = 90

    async def assertRegisters(self, *args: str) -> None:
        if importlib.util.find_spec("pjsua2") is None:
            _missing("pjsua2 is not installed (pip install pjsua2-python)")
        service, user, password = await authServer(self, "pj", *args)
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        client = startPeer(self, "pjsua2", [
            sys.executable, os.path.join(PEERS, "pjsua2_register.py"),
            str(service.ports["udp"]), user, password], workdir)
        await waitUntil(lambda: b"registered " in client.output or client.ended.called,
                        timeout=PATIENCE, what="pjsua2's registration")
        self.assertIn(b"registered 200 OK", client.output, client.text())
        await waitRegistered(service, user + "@example.com", timeout=PATIENCE)

    async def test_default(self) -> None:
        """
        pjsua2 registers with the default challenge (MD5 only).
        """
        await self.assertRegisters()

    async def test_eitherOrder(self) -> None:
        """
        pjsua2 registers with C{MD5,SHA-256} and with C{SHA-256,MD5}.
        """
        await self.assertRegisters("--auth-algorithms", "MD5,SHA-256")
        await self.assertRegisters("--auth-algorithms", "SHA-256,MD5")

    async def test_sha256Only(self) -> None:
        """
        pjsua2 answers a SHA-256 challenge: it registers when SHA-256 is
        the only algorithm offered.
        """
        await self.assertRegisters("--auth-algorithms", "SHA-256")
