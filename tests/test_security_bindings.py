# -*- test-case-name: tests.test_security_bindings -*-
"""
Integration tests of the binding limits and the expiry values on a whole
running server (C{buildService} on loopback ports with the real reactor):
C{--max-contacts} and C{--max-contacts-policy}, Contact C{expires} above
C{--max-expires}, a malformed C{Expires}, and C{--server-header}.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from twisted.internet import reactor, task
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipcore.message import Response
from sipcore.tap import Options, buildService
from sipcore.testing import UDPMemoryReactor, contactsOf
from tests.serverhelpers import (
    connectTCP,
    listenUDP,
    optionsRequest,
    startServer,
)

AOR = "alice@example.com"


def register(contacts: list[str], expires: str | None = "600", transport: str = "UDP",
             callId: str | None = None) -> bytes:
    """
    A REGISTER for C{alice@example.com} with these Contact values (several
    per line) and this C{Expires} text (C{None}: no header).
    """
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/{} 127.0.0.1:5999;branch=z9hG4bK{};rport".format(
            transport, secrets.token_hex(8)),
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag={}".format(secrets.token_hex(4)),
        "To: <sip:alice@example.com>",
        "Call-ID: {}".format(callId or secrets.token_hex(8)),
        "CSeq: 1 REGISTER",
    ]
    lines += ["Contact: " + ", ".join(contacts[i:i + 200]) for i in range(0, len(contacts), 200)]
    if expires is not None:
        lines.append("Expires: " + expires)
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def tab(n: int) -> str:
    """
    The Contact of browser tab C{n}, with its own C{+sip.instance}.
    """
    return '<sip:tab{}@127.0.0.1:5999>;+sip.instance="<urn:uuid:tab-{}>";reg-id=1'.format(n, n)


class BindingLimitsIntegrationTests(TestCase):
    """
    A running server keeps each address of record within C{--max-contacts}.
    """

    timeout = 60

    async def bindings(self, service: Any) -> list[Any]:
        return await service.store.lookup(AOR, reactor.seconds())  # type: ignore[no-any-return]

    async def registerTabs(self, client: Any, count: int) -> list[Response]:
        """
        Register C{count} tabs over UDP, one REGISTER each, in turn.
        """
        responses = []
        for n in range(count):
            responses.append(await client.request(register([tab(n)])))
            # Distinct modification times: the oldest is well defined.
            await task.deferLater(reactor, 0.01, lambda: None)
        return responses

    async def test_replaceOldestByDefault(self) -> None:
        """
        Eleven tabs registering in turn over UDP: all get C{200}, and the
        address of record keeps the ten newest (the first tab's binding is
        gone).
        """
        service = await startServer(self, transports=("udp",))
        client = listenUDP(self, service.ports["udp"])
        responses = await self.registerTabs(client, 11)
        self.assertEqual([r.status for r in responses], [200] * 11)
        self.assertEqual(len(responses[-1].contacts), 10)
        instances = {b.instance for b in await self.bindings(service)}
        self.assertEqual(instances, {"<urn:uuid:tab-{}>".format(n) for n in range(1, 11)})

    async def test_rejectPolicy(self) -> None:
        """
        With C{--max-contacts-policy reject} the eleventh tab gets C{403}
        with the reason, and the ten bindings stay.
        """
        service = await startServer(self, "--max-contacts-policy", "reject",
                                    transports=("udp",))
        client = listenUDP(self, service.ports["udp"])
        responses = await self.registerTabs(client, 11)
        self.assertEqual([r.status for r in responses], [200] * 10 + [403])
        self.assertEqual(responses[-1].reason, "Too many registered contacts (at most 10)")
        instances = {b.instance for b in await self.bindings(service)}
        self.assertEqual(instances, {"<urn:uuid:tab-{}>".format(n) for n in range(10)})

    async def test_configuredCap(self) -> None:
        """
        C{--max-contacts 3}: the fourth tab replaces the first.
        """
        service = await startServer(self, "--max-contacts", "3", transports=("udp",))
        client = listenUDP(self, service.ports["udp"])
        await self.registerTabs(client, 4)
        instances = {b.instance for b in await self.bindings(service)}
        self.assertEqual(instances, {"<urn:uuid:tab-{}>".format(n) for n in range(1, 4)})

    async def test_manyContactsInOneRegister(self) -> None:
        """
        A REGISTER over TCP with 10,000 Contact values (a server that takes
        messages that large) gets C{403} before they are parsed, and nothing
        is stored; a REGISTER with eleven gets the same over UDP.
        """
        service = await startServer(self, "--max-message-size", "400000",
                                    transports=("udp", "tcp"))
        contacts = ["<sip:u{}@127.0.0.1:5999>".format(i) for i in range(10000)]
        tcp = await connectTCP(service.ports["tcp"])
        self.addCleanup(tcp.transport.loseConnection)
        started = time.monotonic()
        response = await tcp.request(register(contacts, transport="TCP"))
        elapsed = time.monotonic() - started
        self.assertEqual((response.status, response.reason),
                         (403, "Too many contacts in one REGISTER (at most 10)"))
        udp = listenUDP(self, service.ports["udp"])
        response = await udp.request(register([tab(n) for n in range(11)]))
        self.assertEqual(response.status, 403)
        self.assertEqual(await self.bindings(service), [])
        # Parsing the 10,000 would take a good part of a second here; the
        # count takes a few milliseconds.
        self.assertLess(elapsed, 5.0)


class ExpiresIntegrationTests(TestCase):
    """
    Expiry values as RFC 3261 reads them, on a running server.
    """

    timeout = 60

    async def granted(self, contact: str, expires: str | None) -> Response:
        service = await startServer(self, transports=("udp",))
        client = listenUDP(self, service.ports["udp"])
        return await client.request(register([contact], expires=expires))  # type: ignore[no-any-return]

    async def test_contactExpiresCapped(self) -> None:
        """
        A Contact C{expires} of eleven digits is granted as
        C{--max-expires} (86400), like the Expires header.
        """
        response = await self.granted("<sip:a@127.0.0.1:5999>;expires=99999999999", None)
        self.assertEqual(response.status, 200)
        self.assertEqual(contactsOf(response)[0].param("expires"), "86400")

    async def test_malformedExpiresHeader(self) -> None:
        """
        C{Expires: soon} is taken as 3600 (RFC 3261 section 20.19).
        """
        response = await self.granted("<sip:a@127.0.0.1:5999>", "soon")
        self.assertEqual(response.status, 200)
        self.assertEqual(contactsOf(response)[0].param("expires"), "3600")

    async def test_malformedContactExpires(self) -> None:
        """
        A malformed Contact C{expires} is taken as 3600 (RFC 3261 section
        10.2.1.1), not the Expires header's value.
        """
        response = await self.granted("<sip:a@127.0.0.1:5999>;expires=later", "600")
        self.assertEqual(response.status, 200)
        self.assertEqual(contactsOf(response)[0].param("expires"), "3600")


class ServerHeaderIntegrationTests(TestCase):
    """
    C{--server-header} on a running server.
    """

    timeout = 60

    async def serverHeader(self, *args: str) -> str | None:
        service = await startServer(self, *args, transports=("udp",))
        client = listenUDP(self, service.ports["udp"])
        response = await client.request(optionsRequest("udp"))
        self.assertEqual(response.status, 200)
        return response.headers.first("Server")

    async def test_defaultWithoutVersion(self) -> None:
        """
        By default the server says C{Server: sipcore}, without its version.
        """
        self.assertEqual(await self.serverHeader(), "sipcore")

    async def test_configured(self) -> None:
        """
        C{--server-header TEXT} is sent as it is.
        """
        self.assertEqual(await self.serverHeader("--server-header", "edge-7"), "edge-7")

    async def test_empty(self) -> None:
        """
        An empty C{--server-header} sends no C{Server} header.
        """
        self.assertIsNone(await self.serverHeader("--server-header", ""))


class BindingOptionsTests(SynchronousTestCase):
    """
    The options reach the pieces they configure, from the command line and
    from a C{--config} file.
    """

    def build(self, *args: str) -> Any:
        options = Options()
        options.parseOptions(["--listen", "udp:0"] + list(args))
        return buildService(options, UDPMemoryReactor())

    def test_defaults(self) -> None:
        """
        By default: ten bindings per address of record, the oldest
        replaced, C{Server: sipcore} everywhere the server makes answers.
        """
        service = self.build()
        policy = service.registrar.policy
        self.assertEqual((policy.maxContacts, policy.maxContactsPolicy), (10, "replace"))
        self.assertEqual((service.core.maxContacts, service.core.serverHeader), (10, "sipcore"))

    def test_wired(self) -> None:
        """
        The values given reach the registrar, the core, the rate limiter
        and the authenticator.
        """
        credentials = FilePath(self.mktemp())
        credentials.setContent(b"alice@example.com:secret\n")
        service = self.build("--max-contacts", "3", "--max-contacts-policy", "Reject",
                             "--server-header", " edge ", "--auth-file", credentials.path)
        policy = service.registrar.policy
        self.assertEqual((policy.maxContacts, policy.maxContactsPolicy), (3, "reject"))
        self.assertEqual((service.core.maxContacts, service.core.serverHeader), (3, "edge"))
        self.assertEqual(service.core.limiter.serverHeader, "edge")
        self.assertEqual(service.authenticator.serverHeader, "edge")

    def test_refused(self) -> None:
        """
        An unknown policy or a Server value on several lines is a usage
        error.
        """
        for args in (["--max-contacts-policy", "drop"], ["--server-header", "a\r\nX: y"]):
            self.assertRaises(usage.UsageError, Options().parseOptions, args)

    def test_configFile(self) -> None:
        """
        In a C{--config} file too; an empty C{server-header} means none.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"[sipcore]\nmax-contacts = 0\nmax-contacts-policy = reject\n"
                        b"server-header =\n")
        service = self.build("--config", path.path)
        self.assertEqual(service.registrar.policy.maxContacts, 0)
        self.assertEqual(service.registrar.policy.maxContactsPolicy, "reject")
        self.assertEqual(service.core.serverHeader, "")
