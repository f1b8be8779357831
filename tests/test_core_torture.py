"""
The torture messages of RFC 4475 and RFC 5118 fed to the server's core, as
they would arrive in UDP datagrams: every invalid request that carries what
a response needs is answered with an error status (400, 505, ...); nothing
raises; valid requests are never answered 400.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipcore.message import Response
from sipcore.sip.core import SIPCore
from sipcore.testing import FakeFlow
from tests.test_message_torture import load, manifest

#: Invalid messages whose request is answerable and the status they get.
EXPECTED = {
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 400,
    "clerr": 400,
    "scalar02": 400,
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "escruri": 400,
    "regbadct": 400,
    "badaspec": 400,
    "badinv01": 400,
    "multi01": 400,
}


class _Status:
    """
    The status line of a response.
    """

    def __init__(self, data: bytes) -> None:
        line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        _, status, self.reason = (line.split(" ", 2) + [""])[:3]
        self.status = int(status)


class CoreTortureTests(SynchronousTestCase):
    """
    The core on every torture message.
    """

    def answer(self, name: str) -> list[_Status]:
        core = SIPCore(Clock(), domains=["example.com", "biloxi.com", "atlanta.com"])
        core.routeDefault(lambda tx: tx.respond(Response.forRequest(tx.request, 200)))
        core.route("REGISTER", lambda tx: tx.respond(Response.forRequest(tx.request, 200)))
        flow = FakeFlow("udp", remote=("192.0.2.9", 5060))
        core.messageReceived(load(name), flow)
        self.assertEqual(core.stats["errors"], 0, name)
        # Error responses copy the request's headers as they came (RFC 3261
        # section 8.2.6), broken ones included: read only the status line.
        return [_Status(d) for d, _ in flow.sent if d.startswith(b"SIP/2.0 ")]

    def test_invalidAnsweredWithError(self) -> None:
        """
        Each invalid request that names where to answer gets its error
        status, with a reason phrase.
        """
        for name, status in sorted(EXPECTED.items()):
            responses = self.answer(name)
            self.assertEqual([r.status for r in responses], [status], name)
            self.assertTrue(responses[0].reason, name)

    def test_noInvalidMessageAccepted(self) -> None:
        """
        No invalid message reaches a handler: it is answered with an error
        or dropped.
        """
        for row in manifest():
            if row["expected"] != "invalid":
                continue
            statuses = [r.status for r in self.answer(row["name"])]
            self.assertTrue(all(s >= 400 for s in statuses), (row["name"], statuses))

    def test_validNeverBadRequest(self) -> None:
        """
        Valid messages are never answered 400 or 505.
        """
        for row in manifest():
            if row["expected"] != "valid":
                continue
            statuses = [r.status for r in self.answer(row["name"])]
            self.assertFalse({400, 505} & set(statuses), (row["name"], statuses))
