# -*- test-case-name: tests.test_fuzz -*-
"""
Fuzzing a running server: hypothesis generates SIP-shaped and random
messages, which are sent over UDP, TCP and WebSocket to a server built by
C{buildService} on loopback ports.  Afterwards the server must still answer
C{OPTIONS} on every transport, and nothing may have logged an exception.

The examples are generated first (a bounded, derandomized hypothesis run),
then sent with the real reactor: hypothesis cannot drive an asynchronous
test itself.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from sipcore.testing import LogCapture
from tests.serverhelpers import (
    PATIENCE,
    connectTCP,
    connectWS,
    listenUDP,
    optionsRequest,
    startServer,
    waitUntil,
)

#: Examples generated per run.
EXAMPLES = 200

METHODS = ["INVITE", "REGISTER", "OPTIONS", "ACK", "BYE", "CANCEL", "MESSAGE", "SUBSCRIBE",
           "NOTIFY", "PRACK", "INFO", "X-FOO", "invite", ""]
HEADERS = ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m",
           "Max-Forwards", "Content-Length", "l", "Route", "Record-Route", "Expires",
           "Authorization", "Proxy-Authorization", "Require", "Proxy-Require", "Supported",
           "Content-Type", "c", "Path", "X-Junk", ""]

_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
_value = st.one_of(
    _text,
    st.sampled_from([
        "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1", "SIP/2.0/TCP [::1];rport;branch=",
        "<sip:alice@example.com>;tag=1", "sip:@", "<>", '"unterminated <sip:x@y>',
        "1 REGISTER", "99999999999999999999 INVITE", "-1", "0", "70", "4294967296",
        'Digest username="a", realm="example.com", nonce="x", uri="sip:x", response="0"',
        'Digest realm="', "*", "\t folded\r\n continuation", "a" * 300,
    ]),
    st.integers(min_value=-(2 ** 40), max_value=2 ** 40).map(str),
)
_header = st.tuples(st.sampled_from(HEADERS), _value).map(lambda hv: "{}: {}".format(*hv))
_start = st.one_of(
    st.tuples(st.sampled_from(METHODS),
              st.sampled_from(["sip:example.com", "sips:bob@example.com", "tel:+1", "sip:",
                               "<sip:x>", "sip:[::1]:99999", "mailto:x@y"]) | _text,
              st.sampled_from(["SIP/2.0", "SIP/3.0", "HTTP/1.1", ""]))
    .map(lambda parts: " ".join(parts)),
    st.tuples(st.sampled_from(["SIP/2.0", "SIP/2.0 ", "SIP/1.0"]),
              st.integers(min_value=-5, max_value=1000), _text)
    .map(lambda parts: "{} {} {}".format(*parts)),
)
_sipShaped = st.builds(
    lambda start, headers, eol, body: (start + eol + eol.join(headers) + eol + eol)
    .encode("utf-8", "surrogatepass") + body,
    _start,
    st.lists(_header, max_size=15),
    st.sampled_from(["\r\n", "\n", "\r"]),
    st.binary(max_size=200),
)
MESSAGES = st.one_of(_sipShaped, st.binary(min_size=1, max_size=1500))


def generate() -> list[bytes]:
    """
    Run hypothesis (bounded, derandomized) and collect its examples.
    """
    examples: list[bytes] = []

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(MESSAGES)
    def collect(data: bytes) -> None:
        if data.strip(b"\r\n"):
            examples.append(data)

    collect()
    return examples


class FuzzTests(TestCase):
    """
    Hostile input on every transport does not break the server.
    """

    timeout = 120

    async def test_survivesFuzzing(self) -> None:
        """
        After a few hundred generated messages over UDP, TCP and WebSocket,
        the server answers OPTIONS on all three, and no exception was
        logged.
        """
        logged = LogCapture(self)
        examples = generate()
        self.assertGreater(len(examples), EXAMPLES // 2)
        service = await startServer(self)
        ports = service.ports

        udp = listenUDP(self, ports["udp"])
        for data in examples:
            udp.transport.write(data[:8000], ("127.0.0.1", ports["udp"]))
        await task.deferLater(reactor, 0.2, lambda: None)

        # TCP: batches of ten examples per connection (a framing error
        # closes a connection; the next batch gets a new one).
        for start in range(0, len(examples), 10):
            client = await connectTCP(ports["tcp"])
            client.transport.write(b"".join(examples[start:start + 10]))
            client.transport.loseConnection()
            await client.waiters.lost.addTimeout(PATIENCE, reactor)

        # WebSocket: one message each, reconnecting if the server closes.
        ws = await connectWS(ports["ws"])
        for data in examples:
            if ws.waiters.lost.called:
                ws = await connectWS(ports["ws"])
            ws.sendMessage(data, isBinary=True)

        # The server did see the input, and refused much of it.
        stats = service.core.stats
        await waitUntil(lambda: stats["received"] > 2 * len(examples),
                        what="the server to read the examples")
        self.assertGreater(stats["received"], 2 * len(examples))
        self.assertGreater(stats["rejected"] + stats["dropped"], len(examples) // 2)
        self.assertEqual((await ask(udp, "udp")).status, 200)
        tcp = await connectTCP(ports["tcp"])
        self.assertEqual((await ask(tcp, "tcp")).status, 200)
        if ws.waiters.lost.called:
            ws = await connectWS(ports["ws"])
        self.assertEqual((await ask(ws, "ws")).status, 200)
        self.assertEqual([e for e in logged.events if "log_failure" in e], [])
        self.assertEqual(service.core.stats["errors"], 0)

        tcp.transport.loseConnection()
        await tcp.waiters.lost
        ws.sendClose(1000)
        await ws.waiters.lost.addTimeout(PATIENCE, reactor)


async def ask(client: Any, transport: str) -> Any:
    """
    Send OPTIONS and return its answer, skipping answers to fuzz messages
    still arriving.
    """
    data = optionsRequest(transport)
    callId = data.split(b"Call-ID: ")[1].split(b"\r\n")[0].decode()
    response = await client.request(data)
    for _ in range(2 * EXAMPLES):
        if response.callId == callId:
            break
        response = await client.waiters.next()
    return response
