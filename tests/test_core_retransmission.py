# -*- test-case-name: tests.test_core_retransmission -*-
"""
Tests for the core's cheap retransmission path
(L{sipcore.sip.core.SIPCore} answering a byte-identical UDP retransmission
from its server transaction without parsing it) and for the stamped Via
staying parsed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import sipcore.sip.core as coremodule
from sipcore.message import parseMessage
from sipcore.sip.core import SIPCore, stampVia
from sipcore.testing import FakeFlow, parseRequest
from tests.test_core import request


class CountingParse:
    """
    A stand-in for C{parseMessage} in L{sipcore.sip.core} counting calls.
    """

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, data: bytes, **kwargs: Any) -> Any:
        self.calls += 1
        return parseMessage(data, **kwargs)


class RetransmissionPathTests(SynchronousTestCase):
    """
    A UDP retransmission of a live server transaction's request is answered
    from the transaction without parsing; anything else is parsed.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.core = SIPCore(self.clock, domains=["example.com"])
        self.handled: list[Any] = []
        self.core.route("MESSAGE", self.handled.append)
        self.flow = FakeFlow("udp", remote=("192.0.2.1", 40000))
        self.parse = CountingParse()
        self.patch(coremodule, "parseMessage", self.parse)

    def answerFirst(self, data: bytes) -> Any:
        self.core.messageReceived(data, self.flow)
        self.assertEqual(len(self.handled), 1)
        tx = self.handled[0]
        self.core.respond(tx, 200, "OK")
        self.assertEqual(len(self.flow.sent), 1)
        return tx

    def test_retransmissionReplayedWithoutParsing(self) -> None:
        """
        The same datagram again gets the last response replayed, byte for
        byte to the same address, with no parse and no new handler call;
        it is counted as absorbed.
        """
        data = request("MESSAGE", via="SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKrt1;rport")
        self.answerFirst(data)
        self.assertEqual(self.parse.calls, 1)
        self.core.messageReceived(data, self.flow)
        self.assertEqual(self.parse.calls, 1)
        self.assertEqual(len(self.handled), 1)
        self.assertEqual(len(self.flow.sent), 2)
        self.assertEqual(self.flow.sent[1], self.flow.sent[0])
        self.assertEqual(self.core.transactions.retransmissionsAbsorbed, 1)

    def test_retransmissionWhileTrying(self) -> None:
        """
        A retransmission before the handler answered is absorbed without
        parsing and without sending anything (Trying state).
        """
        data = request("MESSAGE", via="SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKrt2")
        self.core.messageReceived(data, self.flow)
        self.core.messageReceived(data, self.flow)
        self.assertEqual(self.parse.calls, 1)
        self.assertEqual(len(self.handled), 1)
        self.assertEqual(self.flow.sent, [])
        self.assertEqual(self.core.transactions.retransmissionsAbsorbed, 1)

    def test_differentBytesSameBranchParsed(self) -> None:
        """
        A datagram with the same top Via but other bytes (here a malformed
        CSeq) is parsed, and answered as the full path answers it (400),
        not with the transaction's response.
        """
        via = "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKrt3"
        self.answerFirst(request("MESSAGE", via=via))
        bad = request("MESSAGE", via=via).replace(b"CSeq: 1 MESSAGE", b"CSeq: x MESSAGE")
        self.core.messageReceived(bad, self.flow)
        self.assertEqual(self.parse.calls, 2)
        self.assertTrue(self.flow.sent[-1][0].startswith(b"SIP/2.0 400 "))

    def test_differentMessageParsed(self) -> None:
        """
        A new request (another branch) is parsed and reaches the handler.
        """
        self.answerFirst(request("MESSAGE", via="SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa"))
        self.core.messageReceived(
            request("MESSAGE", via="SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKb"), self.flow)
        self.assertEqual(self.parse.calls, 2)
        self.assertEqual(len(self.handled), 2)

    def test_terminatedTransactionParsed(self) -> None:
        """
        Once the transaction has ended (Timer J), the same datagram is a new
        request again: parsed and handed to the handler.
        """
        data = request("MESSAGE", via="SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKrt4")
        self.answerFirst(data)
        self.clock.advance(64 * 0.5 + 1)
        self.core.messageReceived(data, self.flow)
        self.assertEqual(self.parse.calls, 2)
        self.assertEqual(len(self.handled), 2)

    def test_streamsAlwaysParsed(self) -> None:
        """
        On a reliable flow there is no fast path: a repeated message is
        parsed (and matched to its transaction the normal way).
        """
        flow = FakeFlow("tcp", conid=7, remote=("192.0.2.1", 40000))
        data = request("MESSAGE", via="SIP/2.0/TCP 192.0.2.1:5070;branch=z9hG4bKrt5")
        self.core.messageReceived(data, flow)
        self.core.messageReceived(data, flow)
        self.assertEqual(self.parse.calls, 2)
        self.assertEqual(len(self.handled), 1)

    def test_completedKeepsNothingParsed(self) -> None:
        """
        Once answered, the transaction's request holds no parsed values;
        asked again, they are parsed from the (stamped) text.
        """
        data = request("MESSAGE", via="SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bKrt7")
        tx = self.answerFirst(data)
        self.assertEqual(tx.request.headers._cache, {})
        self.assertEqual(tx.request.vias[0].received, "192.0.2.1")

    def test_oneReactorCallForManyTransactions(self) -> None:
        """
        The Timer J of many answered transactions takes one reactor call,
        and none is left once they have all ended.
        """
        for n in range(50):
            self.core.messageReceived(request(
                "MESSAGE", via="SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKmany%d" % n), self.flow)
        for tx in self.handled:
            self.core.respond(tx, 200, "OK")
        self.assertEqual(self.core.transactions.serverTransactions, 50)
        self.assertLessEqual(len(self.clock.getDelayedCalls()), 2)
        self.clock.advance(64 * 0.5 * 2 + 1)
        self.assertEqual(self.core.transactions.serverTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_forgottenWhenTerminated(self) -> None:
        """
        The recorded datagram is forgotten with its transaction: the layer
        keeps no datagram of a terminated transaction.
        """
        data = request("MESSAGE", via="SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKrt6")
        self.answerFirst(data)
        self.assertIs(self.core.transactions.findRetransmission(data), self.handled[0])
        self.clock.advance(64 * 0.5 + 1)
        self.assertIsNone(self.core.transactions.findRetransmission(data))
        self.assertEqual(self.core.transactions._datagrams, {})

    def test_rfc2543RetransmissionReplayed(self) -> None:
        """
        A request without the RFC 3261 branch cookie, repeated byte for
        byte, is replayed from its transaction too.
        """
        data = request("MESSAGE", via="SIP/2.0/UDP 192.0.2.1:5070;branch=1234")
        self.answerFirst(data)
        self.core.messageReceived(data, self.flow)
        self.assertEqual(self.parse.calls, 1)
        self.assertEqual(self.flow.sent[1], self.flow.sent[0])

    def test_ackNeverAbsorbed(self) -> None:
        """
        An ACK creates no transaction, so the same ACK datagram twice is
        parsed twice (and handed to the ACK handler twice).
        """
        acks: list[Any] = []

        def ackReceived(request: Any, flow: Any) -> bool:
            acks.append(request)
            return True

        self.core.routeAcks(ackReceived)
        data = request("ACK", via="SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKack")
        self.core.messageReceived(data, self.flow)
        self.core.messageReceived(data, self.flow)
        self.assertEqual(self.parse.calls, 2)
        self.assertEqual(len(acks), 2)


class StampViaTests(SynchronousTestCase):
    """
    L{stampVia} leaves the stamped top Via parsed.
    """

    def test_stampedViaCached(self) -> None:
        """
        After stamping, C{vias} gives the stamped Via (equal to what a
        parse of the new header gives) without parsing it again.
        """
        message = parseRequest(request(
            "REGISTER", via="SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKs;rport, "
            "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKt"))
        stampVia(message, FakeFlow("udp", remote=("198.51.100.7", 4444)))
        self.assertIn("vias", message.headers._cache)
        vias = message.vias
        reparsed = parseMessage(message.serialize()).vias
        self.assertEqual(vias, reparsed)
        self.assertEqual(vias[0].received, "198.51.100.7")
        self.assertEqual(vias[0].rport, 4444)
        self.assertEqual(len(vias), 2)
