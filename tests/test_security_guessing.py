# -*- test-case-name: tests.test_security_guessing -*-
"""
Password guessing and nonce reuse against a whole running server on
loopback (C{buildService} with the real reactor, C{--limit-exempt none}):
guessers on many source addresses (127.0.0.2 and up, as UDP, TCP and
WebSocket client bind addresses) against the real user on its own address;
and the options that set the per-account limits.
"""

from __future__ import annotations

import secrets
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory
from prometheus_client import generate_latest
from twisted.internet import protocol, reactor
from twisted.internet.interfaces import IReactorUDP
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipcore.message import Response
from sipcore.sip.auth import parseDigest
from sipcore.tap import Options, buildService
from sipcore.testing import UDPMemoryReactor
from tests.serverhelpers import (
    PATIENCE,
    TCPClient,
    UDPClient,
    WSClient,
    registerRequest,
    startServer,
)
from tests.test_auth import credentials

PASSWORD = "4711"
USER = "alice"


def bindUDP(testCase: TestCase, port: int, address: str) -> UDPClient:
    """
    A UDP client of the server's C{port} bound to C{address}, closed at
    cleanup.
    """
    client = UDPClient(port)
    listening = IReactorUDP(reactor).listenUDP(0, client, interface=address, maxPacketSize=8192)
    testCase.addCleanup(listening.stopListening)
    return client


async def connectTCPFrom(testCase: TestCase, port: int, address: str) -> TCPClient:
    """
    A TCP client of the server's C{port} whose connection comes from
    C{address}, closed at cleanup.
    """
    client = TCPClient()
    creator = protocol.ClientCreator(reactor, lambda: client)
    await creator.connectTCP("127.0.0.1", port, timeout=PATIENCE, bindAddress=(address, 0))

    def close() -> Any:
        if not client.waiters.lost.called:
            client.transport.loseConnection()
        return client.waiters.lost

    testCase.addCleanup(close)
    return client


async def connectWSFrom(testCase: TestCase, port: int, address: str) -> WSClient:
    """
    A WebSocket client of the server's C{port} whose connection comes from
    C{address}, closed at cleanup.
    """
    factory = WebSocketClientFactory("ws://127.0.0.1:{}".format(port), protocols=["sip"])
    factory.protocol = WSClient
    creator = protocol.ClientCreator(reactor, factory.buildProtocol, None)
    client: WSClient = await creator.connectTCP("127.0.0.1", port, timeout=PATIENCE,
                                                bindAddress=(address, 0))
    await client.opened

    def close() -> Any:
        if not client.waiters.lost.called:
            client.drop()
        return client.waiters.lost

    testCase.addCleanup(close)
    return client


def digestChallenge(response: Response) -> dict[str, str]:
    """
    The MD5 challenge of a C{401}.
    """
    assert response.status == 401, response.status
    for line in response.headers.lines("WWW-Authenticate"):
        params = parseDigest(line) or {}
        if params.get("algorithm") == "MD5":
            return params
    raise AssertionError("no MD5 challenge")


def metricsText(service: Any) -> str:
    return generate_latest(service.metrics).decode()


class GuessingTests(TestCase):
    """
    The per-account guessing limit and source-bound nonces on a running
    server.
    """

    timeout = 60

    async def server(self, *args: str) -> Any:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("{}@example.com:{}\nbob@example.com:bobs-password\n".format(USER, PASSWORD))
        return await startServer(self, "--auth-file", path, "--limit-exempt", "none", *args)

    async def register(self, client: Any, transport: str, password: str = PASSWORD,
                       user: str = USER) -> Response:
        """
        REGISTER C{user}: get a challenge, answer it with C{password}.

        @return: the answer to the credentials.
        """
        challenge = digestChallenge(await client.request(registerRequest(transport, user)))
        request = registerRequest(transport, user).replace(
            b"\r\nContent-Length", "\r\nAuthorization: {}\r\nContent-Length".format(
                credentials(challenge, user=user, password=password)).encode(), 1)
        response: Response = await client.request(request)
        return response

    async def test_guessingFromManyAddressesLocksOut(self) -> None:
        """
        Guessers on 39 source addresses (127.0.0.2 to 127.0.0.40), a few
        guesses each (the per-source limit alone never stops them), get
        their first 10 wrong passwords answered 401 and everything after
        403 "Too many failed authentications", even the right password;
        meanwhile the real user registers from its known address, and the
        lockout is in the metrics.
        """
        service = await self.server()
        port = service.ports["udp"]
        phone = bindUDP(self, port, "127.0.0.1")
        self.assertEqual((await self.register(phone, "udp")).status, 200)
        guessers = [bindUDP(self, port, "127.0.0.{}".format(n)) for n in range(2, 41)]
        statuses = []
        for attempt in range(2):
            for n, guesser in enumerate(guessers):
                guess = "{:04d}".format(attempt * 100 + n)
                statuses.append((await self.register(guesser, "udp", password=guess)).status)
        self.assertEqual(statuses, [401] * 10 + [403] * (2 * len(guessers) - 10))
        right = await self.register(guessers[-1], "udp")
        self.assertEqual((right.status, right.reason), (403, "Too many failed authentications"))
        self.assertEqual((await self.register(phone, "udp")).status, 200)
        self.assertEqual((await self.register(guessers[0], "udp", user="bob",
                                              password="bobs-password")).status, 200)
        text = metricsText(service)
        self.assertIn('sipcore_auth_failures_total{kind="wrongPassword"} 10.0\n', text)
        self.assertIn("sipcore_auth_lockouts_total 1.0\n", text)
        self.assertIn("sipcore_auth_locked_out_total {}.0\n".format(2 * len(guessers) - 9),
                      text)
        self.assertIn("sipcore_auth_successes_total 3.0\n", text)

    async def test_nonceFromAnotherAddress(self) -> None:
        """
        A nonce obtained from one source address is refused from another,
        whatever the transport (a fresh challenge, not stale); from its own
        address it is accepted, even on another transport and port.
        """
        service = await self.server()
        issuedTo = bindUDP(self, service.ports["udp"], "127.0.0.2")
        challenge = digestChallenge(await issuedTo.request(registerRequest("udp", USER)))

        def answer(transport: str, nc: int) -> bytes:
            return registerRequest(transport, USER).replace(
                b"\r\nContent-Length", "\r\nAuthorization: {}\r\nContent-Length".format(
                    credentials(challenge, user=USER, password=PASSWORD, nc=nc)).encode(), 1)

        others: list[tuple[str, UDPClient | TCPClient | WSClient]] = [
            ("udp", bindUDP(self, service.ports["udp"], "127.0.0.3")),
            ("tcp", await connectTCPFrom(self, service.ports["tcp"], "127.0.0.4")),
            ("ws", await connectWSFrom(self, service.ports["ws"], "127.0.0.5")),
        ]
        for nc, (transport, client) in enumerate(others, 1):
            refused = await client.request(answer(transport, nc))
            fresh = digestChallenge(refused)
            self.assertNotIn("stale", fresh, transport)
            self.assertNotEqual(fresh["nonce"], challenge["nonce"])
        self.assertIn('sipcore_auth_failures_total{kind="foreignNonce"} 3.0\n',
                      metricsText(service))
        sameAddress = await connectTCPFrom(self, service.ports["tcp"], "127.0.0.2")
        self.assertEqual((await sameAddress.request(answer("tcp", 10))).status, 200)


class GuessingOptionsTests(SynchronousTestCase):
    """
    C{--auth-max-failures}, C{--auth-failure-window}, C{--auth-lockout}.
    """

    def build(self, *args: str) -> Any:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("alice@example.com:{}\n".format(secrets.token_hex(8)))
        options = Options()
        options.parseOptions(["--auth-file", path] + list(args))
        return buildService(options, UDPMemoryReactor())

    def test_defaults(self) -> None:
        """
        By default an account is locked out for 900 s after 10 failures,
        which come back at 10 per 600 s.
        """
        guessing = self.build().authenticator.guessing
        self.assertEqual((guessing.maxFailures, guessing.window, guessing.lockout),
                         (10, 600.0, 900.0))

    def test_options(self) -> None:
        """
        The options set the limit; C{--auth-max-failures 0} turns it off.
        """
        guessing = self.build("--auth-max-failures", "3", "--auth-failure-window", "30",
                              "--auth-lockout", "120").authenticator.guessing
        self.assertEqual((guessing.maxFailures, guessing.window, guessing.lockout),
                         (3, 30.0, 120.0))
        self.assertIsNone(self.build("--auth-max-failures", "0").authenticator.guessing)

    def test_invalid(self) -> None:
        """
        A zero window or lockout is a usage error while the limit is on.
        """
        for args in (["--auth-lockout", "0"], ["--auth-failure-window", "0"],
                     ["--auth-max-failures", "-1"]):
            self.assertRaises(usage.UsageError, Options().parseOptions, args)
        Options().parseOptions(["--auth-max-failures", "0", "--auth-lockout", "0"])

    def test_configFile(self) -> None:
        """
        The options can be set in the configuration file.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[sipcore]\nauth-max-failures = 4\nauth-lockout = 60\n")
        guessing = self.build("--config", path).authenticator.guessing
        self.assertEqual((guessing.maxFailures, guessing.lockout), (4, 60.0))

    def test_noAuthentication(self) -> None:
        """
        Without a credential source there is no authenticator.
        """
        options = Options()
        options.parseOptions([])
        self.assertIsNone(buildService(options, UDPMemoryReactor()).authenticator)
