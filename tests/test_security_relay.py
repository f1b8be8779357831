# -*- test-case-name: tests.test_security_relay -*-
"""
No relay through the proxy: a REGISTER's Path is honoured only from a
trusted peer (C{--trusted-peer}), a Route set never chooses a destination
outside the dialog, and forking is bounded (C{--max-branches}).

The integration tests run a whole server on loopback UDP with "far end"
UDP sockets on other loopback addresses, and count what reaches them.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IReactorUDP, IUDPTransport
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from sipcore.message import Request, Response, SIPParseError, parseMessage
from sipcore.sip.trust import TrustedPeers, parseNetwork
from sipcore.tap import Options
from tests.serverhelpers import PATIENCE, listenUDP, registerRequest, startServer, waitUntil

#: How long a far end listens for what must never come.
QUIET = 1.0


class TrustedPeersTests(SynchronousTestCase):
    """
    L{TrustedPeers}: a set of IPv4 and IPv6 networks asked about hosts.
    """

    def test_membership(self) -> None:
        """
        A host is in the set when it is in one of its networks: single
        addresses and prefixes, IPv4 and IPv6, with brackets, a zone or as
        an IPv4-mapped IPv6 address; names and garbage never are.
        """
        peers = TrustedPeers.fromStrings(["192.0.2.7", "10.0.0.0/8", "2001:db8::/32",
                                          "[::1]"])
        for host in ["192.0.2.7", "10.200.3.4", "2001:db8:1::5", "[2001:db8::1]", "::1",
                     "::ffff:10.1.1.1", "::1%lo"]:
            self.assertIn(host, peers)
        for other in ["192.0.2.8", "11.0.0.1", "2001:db9::1", "example.com", "", "10.0.0.1x",
                      None, 10]:
            self.assertNotIn(other, peers)
        self.assertTrue(peers)
        self.assertEqual(str(peers), "192.0.2.7/32, 10.0.0.0/8, 2001:db8::/32, ::1/128")

    def test_emptyTrustsNobody(self) -> None:
        """
        The default set is empty, false, and contains no host.
        """
        peers = TrustedPeers()
        self.assertFalse(peers)
        self.assertNotIn("127.0.0.1", peers)
        self.assertEqual(str(peers), "none")

    def test_badNetworks(self) -> None:
        """
        Anything that is not an address or a network without host bits
        is refused with a message naming it.
        """
        for spec in ["", "example.com", "10.0.0.1/8", "10.0.0.0/33", "1.2.3", "::1/129"]:
            with self.assertRaises(ValueError) as caught:
                parseNetwork(spec)
            self.assertIn(repr(spec) if spec else "required", str(caught.exception))
        self.assertEqual(parseNetwork(" 10.0.0.0/8 "), ipaddress.ip_network("10.0.0.0/8"))


class OptionTests(SynchronousTestCase):
    """
    C{--trusted-peer} and C{--max-branches} on the command line and in a
    configuration file.
    """

    def test_trustedPeerRepeatable(self) -> None:
        """
        C{--trusted-peer} takes IPv4 and IPv6 addresses and networks and
        may be repeated; by default there is none.
        """
        options = Options()
        options.parseOptions(["--trusted-peer", "10.0.0.0/8", "--trusted-peer", "2001:db8::1"])
        self.assertEqual(options["trusted-peer"], ["10.0.0.0/8", "2001:db8::1"])
        self.assertEqual(options["max-branches"], 10)
        defaults = Options()
        defaults.parseOptions([])
        self.assertEqual(defaults["trusted-peer"], [])

    def test_badValues(self) -> None:
        """
        A bad C{--trusted-peer} or a C{--max-branches} under 1 is a usage
        error saying what is wrong.
        """
        for args, text in [(["--trusted-peer", "proxy.example.com"], "--trusted-peer"),
                           (["--trusted-peer", "10.0.0.1/8"], "host bits"),
                           (["--max-branches", "0"], "--max-branches")]:
            with self.assertRaises(usage.UsageError) as caught:
                Options().parseOptions(args)
            self.assertIn(text, str(caught.exception))

    def test_configFile(self) -> None:
        """
        A configuration file gives several trusted peers one per line, and
        a bad one is refused naming the key.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[sipcore]\ntrusted-peer =\n    192.0.2.1\n    10.0.0.0/8\n"
                    "max-branches = 4\n")
        options = Options()
        options.parseOptions(["--config", path])
        self.assertEqual(options["trusted-peer"], ["192.0.2.1", "10.0.0.0/8"])
        self.assertEqual(options["max-branches"], 4)
        with open(path, "w") as f:
            f.write("[sipcore]\ntrusted-peer = not-an-address\n")
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["--config", path])
        self.assertIn("trusted-peer", str(caught.exception))


class Endpoint(protocol.DatagramProtocol):
    """
    A UDP socket that records every SIP request it receives and, when
    told to, answers each (but ACK) with C{200}, copying Record-Route; it
    can register itself.
    """

    transport: IUDPTransport

    def __init__(self, answer: bool = False) -> None:
        self.answer = answer
        self.requests: list[Request] = []
        self.datagrams = 0
        self.port = 0
        self._registered: defer.Deferred[Response] | None = None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.datagrams += 1
        try:
            message = parseMessage(data)
        except SIPParseError:
            return
        if isinstance(message, Response):
            waiting, self._registered = self._registered, None
            if waiting is not None and message.status >= 200:
                waiting.callback(message)
            return
        self.requests.append(message)
        if not self.answer or message.method == "ACK":
            return
        response = Response.forRequest(message, 200, "OK", toTag="far{}".format(self.port))
        for value in message.headers.lines("Record-Route"):
            response.headers.add("Record-Route", value)
        response.headers.add("Contact", "<sip:bob@127.0.0.1:{}>".format(self.port))
        self.transport.write(response.serialize(), addr)

    async def register(self, user: str, serverPort: int) -> Response:
        """
        Register C{user@example.com} from this socket (so the server
        reaches the binding here), with a Contact naming it.

        @return: the final response.
        """
        return await self.send(registerRequest(
            "udp", user, contact="<sip:{}@127.0.0.1:{}>".format(user, self.port),
            localPort=self.port), serverPort)

    async def send(self, data: bytes, serverPort: int) -> Response:
        """
        Send a request to the server and wait for its final response.
        """
        waiting: defer.Deferred[Response] = defer.Deferred()
        self._registered = waiting
        self.transport.write(data, ("127.0.0.1", serverPort))
        timer = reactor.callLater(PATIENCE, waiting.cancel)
        try:
            return await waiting
        finally:
            if timer.active():
                timer.cancel()


def listenOn(testCase: TestCase, host: str, answer: bool = False) -> Endpoint:
    """
    An L{Endpoint} on C{host} (an ephemeral port), closed at cleanup.
    """
    endpoint = Endpoint(answer)
    try:
        port = IReactorUDP(reactor).listenUDP(0, endpoint, interface=host, maxPacketSize=8192)
    except Exception as e:  # pragma: no cover - depends on the host
        raise SkipTest("cannot listen on {}: {}".format(host, e)) from None
    address = port.getHost()
    assert isinstance(address, (IPv4Address, IPv6Address))
    endpoint.port = address.port
    testCase.addCleanup(port.stopListening)
    return endpoint


def request(method: str, uri: str, localPort: int, callId: str | None = None,
            toTag: str | None = None, extra: str = "", cseq: int = 1) -> bytes:
    """
    A request from C{alice@example.com} at C{127.0.0.1:localPort}.
    """
    return (
        "{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=alice\r\n"
        "To: <sip:bob@example.com>{toTag}\r\n"
        "Call-ID: {callId}\r\n"
        "CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@127.0.0.1:{port}>\r\n"
        "{extra}"
        "Content-Length: 0\r\n\r\n"
    ).format(method=method, uri=uri, port=localPort, branch=secrets.token_hex(8),
             toTag=";tag=" + toTag if toTag else "", callId=callId or secrets.token_hex(8),
             cseq=cseq, extra=extra).encode()


def withHeader(data: bytes, line: str) -> bytes:
    """
    C{data} (a request) with one more header line.
    """
    return data.replace(b"Content-Length:", line.encode() + b"\r\nContent-Length:", 1)


async def quiet() -> None:
    """
    Wait long enough for anything the server would send to arrive.
    """
    await task.deferLater(reactor, QUIET, lambda: None)


class RelayTests(TestCase):
    """
    A running server never forwards to an address an untrusted client
    chose.
    """

    timeout = 60

    async def server(self, *args: str) -> Any:
        return await startServer(self, *args, transports=("udp",))

    async def test_pathFromUntrustedSourceRefused(self) -> None:
        """
        The relay of issue 14: a client registers with
        C{Path: <sip:FAR-END;lr>} and a Contact at the far end, then
        anyone calls that address of record.  The REGISTER gets C{403}
        and nothing reaches the far end; without the Path the binding is
        reached at the address the REGISTER came from, never at the far
        end.
        """
        service = await self.server()
        port = service.ports["udp"]
        far = listenOn(self, "127.0.0.5")
        attacker = listenOn(self, "127.0.0.1")
        farEnd = "127.0.0.5:{}".format(far.port)
        register = withHeader(
            registerRequest("udp", "mallory", contact="<sip:victim@{}>".format(farEnd),
                            localPort=attacker.port),
            "Path: <sip:{};lr>".format(farEnd))
        response = await attacker.send(register, port)
        self.assertEqual((response.status, response.reason),
                         (403, "Path not accepted from this source"))
        self.assertNotIn("path", response.headers.values("Supported"))
        caller = listenUDP(self, port)
        callerPort = caller.transport.getHost().port
        response = await caller.request(request("INVITE", "sip:mallory@example.com", callerPort))
        self.assertEqual(response.status, 404)
        await quiet()
        self.assertEqual(far.datagrams, 0)

        response = await attacker.send(registerRequest(
            "udp", "mallory", contact="<sip:victim@{}>".format(farEnd), localPort=attacker.port,
            cseq=2), port)
        self.assertEqual(response.status, 200)
        caller.transport.write(request("MESSAGE", "sip:mallory@example.com", callerPort),
                               ("127.0.0.1", port))
        await waitUntil(lambda: attacker.requests, what="the MESSAGE at the registering socket")
        self.assertEqual(str(attacker.requests[0].uri), "sip:victim@" + farEnd)
        await quiet()
        self.assertEqual(far.datagrams, 0)

    async def test_pathFromTrustedPeer(self) -> None:
        """
        With C{--trusted-peer} for the registering source, the Path is
        stored and followed: a call reaches the Path hop with the Path as
        its Route set, and C{path} is advertised.
        """
        service = await self.server("--trusted-peer", "127.0.0.1/32")
        port = service.ports["udp"]
        edge = listenOn(self, "127.0.0.5")
        proxy = listenUDP(self, port)
        route = "<sip:127.0.0.5:{};lr>".format(edge.port)
        response = await proxy.request(withHeader(
            registerRequest("udp", "carol", contact="<sip:carol@10.1.1.1:5060>",
                            localPort=proxy.transport.getHost().port),
            "Path: " + route))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers.first("Path"), route)
        self.assertIn("path", response.headers.values("Supported"))
        caller = listenUDP(self, port)
        caller.transport.write(request("MESSAGE", "sip:carol@example.com",
                                       caller.transport.getHost().port), ("127.0.0.1", port))
        await waitUntil(lambda: edge.requests, what="the MESSAGE at the Path hop")
        message = edge.requests[0]
        self.assertEqual(str(message.uri), "sip:carol@10.1.1.1:5060")
        self.assertEqual(message.headers.lines("Route"), [route])

    async def test_routeRelayRefused(self) -> None:
        """
        Neither a preloaded Route naming the far end nor a Route set that
        starts with a signed Record-Route entry of a dialog the caller
        made with a local user gets a request to the far end: the first is
        refused with C{403}, the second goes to the other side of that
        dialog.
        """
        service = await self.server()
        port = service.ports["udp"]
        far = listenOn(self, "127.0.0.5")
        farEnd = "127.0.0.5:{}".format(far.port)
        bob = listenOn(self, "127.0.0.1", answer=True)
        response = await bob.register("bob", port)
        self.assertEqual(response.status, 200)
        attacker = listenUDP(self, port)
        attackerPort = attacker.transport.getHost().port

        response = await attacker.request(request(
            "INVITE", "sip:victim@{}".format(farEnd), attackerPort,
            extra="Route: <sip:127.0.0.1:{};lr>, <sip:{};lr>\r\n".format(port, farEnd)))
        self.assertEqual(response.status, 403)

        callId = secrets.token_hex(8)
        response = await attacker.request(request("INVITE", "sip:bob@example.com",
                                                  attackerPort, callId=callId))
        self.assertEqual(response.status, 200)
        recordRoute = response.headers.lines("Record-Route")
        self.assertEqual(len(recordRoute), 1)
        attacker.transport.write(request(
            "INVITE", "sip:victim@{}".format(farEnd), attackerPort, callId=callId,
            toTag=response.toAddr.tag, cseq=2,
            extra="Route: {}, <sip:{};lr>\r\n".format(recordRoute[0], farEnd)),
            ("127.0.0.1", port))
        await waitUntil(lambda: len([r for r in bob.requests if r.method == "INVITE"]) == 2,
                        what="the second INVITE at bob")
        await quiet()
        self.assertEqual(far.datagrams, 0)

    async def test_forkingCapped(self) -> None:
        """
        With C{--max-branches 3} a MESSAGE to an address of record with
        five bindings reaches three of them, the most recently registered
        (all have the same q), and no more.
        """
        service = await self.server("--max-branches", "3")
        port = service.ports["udp"]
        phones = [listenOn(self, "127.0.0.1") for _ in range(5)]
        for phone in phones:
            response = await phone.register("dave", port)
            self.assertEqual(response.status, 200)
            # Distinct registration times: "most recent" is well defined.
            await task.deferLater(reactor, 0.02, lambda: None)
        caller = listenUDP(self, port)
        caller.transport.write(request("MESSAGE", "sip:dave@example.com",
                                       caller.transport.getHost().port), ("127.0.0.1", port))
        await waitUntil(lambda: sum(1 for p in phones if p.requests) == 3,
                        what="three branches")
        await quiet()
        self.assertEqual([bool(p.requests) for p in phones], [False, False, True, True, True])
        self.assertEqual(service.proxy.stats["forksCapped"], 1)
