# -*- test-case-name: tests.test_transaction -*-
"""
Tests for L{sipcore.sip.transaction}, L{sipcore.sip.clienttransaction},
L{sipcore.sip.servertransaction} and L{sipcore.sip.machine}: the four RFC
3261 section 17 state machines (with the RFC 6026 Accepted states), their
timers, and the matching tables of L{TransactionLayer}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from sipcore.interfaces import IClientTransactionUser, IFlow, ITransactionUser
from sipcore.message import Request, Response, parseMessage
from sipcore.sip import machine
from sipcore.sip.clienttransaction import (
    InviteClientTransaction,
    NonInviteClientTransaction,
    buildAckForNon2xx,
    buildCancel,
)
from sipcore.sip.machine import (
    ACCEPTED,
    CALLING,
    COMPLETED,
    CONFIRMED,
    PROCEEDING,
    TERMINATED,
    TIMER_J,
    TIMER_UNANSWERED,
    TRYING,
    TimerValues,
)
from sipcore.sip.servertransaction import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    responseAddress,
)
from sipcore.sip.transaction import OVERLOADED, TransactionLayer
from sipcore.testing import parseRequest
from sipcore.timers import TimerQueues

BRANCH = "z9hG4bK-test-1"
CLIENT = ("192.0.2.1", 5060)
NEXT_HOP = ("198.51.100.7", 5060)


def serverTransaction(layer: TransactionLayer, request: Request, flow: IFlow) -> ServerTransaction:
    """
    The server transaction C{layer} matches C{request} to (a new one,
    started, or not).
    """
    found = layer.requestReceived(request, flow)
    assert isinstance(found, tuple), found
    tx, isNew = found
    if isNew:
        tx.start()
    return tx


@implementer(IFlow)
class FakeFlow:
    """
    A recording L{IFlow}: every message sent is kept with the clock time
    and the address it went to (C{None} for C{send}).

    @ivar alive: what C{send}/C{sendTo} return; C{False} plays a closed
        flow.
    """

    def __init__(
        self,
        clock: Clock,
        transport: str = "udp",
        remote: tuple[str, int] = CLIENT,
        local: tuple[str, int] = ("192.0.2.10", 5060),
    ) -> None:
        self.clock = clock
        self.transport = transport
        self.reliable = transport != "udp"
        self.conid = None if transport == "udp" else 7
        self.remote = remote
        self.local = local
        self.alive = True
        self.sent: list[tuple[float, bytes, tuple[str, int] | None]] = []

    def send(self, data: bytes) -> bool:
        self.sent.append((self.clock.seconds(), data, None))
        return self.alive

    def sendTo(self, data: bytes, address: tuple[str, int]) -> bool:
        self.sent.append((self.clock.seconds(), data, address))
        return self.alive

    def close(self) -> None:
        self.alive = False

    def messages(self) -> list[Any]:
        """
        The messages sent, parsed.
        """
        return [parseMessage(data) for _, data, _ in self.sent]

    def times(self) -> list[float]:
        """
        When each message was sent.
        """
        return [when for when, _, _ in self.sent]

    def addresses(self) -> list[tuple[str, int] | None]:
        return [address for _, _, address in self.sent]


@implementer(ITransactionUser, IClientTransactionUser)
class RecordingTU:
    """
    A transaction user recording every callback with the clock time (the
    transactions that ended unanswered apart, in C{unansweredTransactions}).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.events: list[tuple[Any, ...]] = []
        self.unansweredTransactions: list[Any] = []

    def unanswered(self, transaction: Any) -> None:
        self.unansweredTransactions.append(transaction)

    def responseReceived(self, response: Response, transaction: Any) -> None:
        self.events.append(("response", self.clock.seconds(), response.status, transaction))

    def timeout(self, transaction: Any) -> None:
        self.events.append(("timeout", self.clock.seconds(), transaction))

    def transportError(self, transaction: Any) -> None:
        self.events.append(("transportError", self.clock.seconds(), transaction))

    def ackTimeout(self, transaction: Any) -> None:
        self.events.append(("ackTimeout", self.clock.seconds(), transaction))

    #: What L{ackReceived} answers: whether the ACK belonged to a dialog.
    inDialog = False

    def ackReceived(self, request: Request, flow: Any) -> bool:
        self.events.append(("ackReceived", self.clock.seconds(), request, flow))
        return self.inDialog

    def names(self) -> list[str]:
        return [event[0] for event in self.events]


class BrokenTU(RecordingTU):
    """
    A transaction user whose every callback raises.
    """

    def responseReceived(self, response: Response, transaction: Any) -> None:
        raise ZeroDivisionError("response")

    def timeout(self, transaction: Any) -> None:
        raise ZeroDivisionError("timeout")

    def ackTimeout(self, transaction: Any) -> None:
        raise ZeroDivisionError("ackTimeout")

    def ackReceived(self, request: Request, flow: Any) -> bool:
        raise ZeroDivisionError("ackReceived")


def makeRequest(
    method: str = "INVITE",
    branch: str | None = BRANCH,
    sentBy: str = "192.0.2.1:5060",
    transport: str = "UDP",
    toTag: str | None = None,
    fromTag: str = "a1",
    callId: str = "call-1",
    cseq: int = 1,
    cseqMethod: str | None = None,
    uri: str = "sip:bob@example.com",
    viaParams: str = "",
    extra: str = "",
) -> Request:
    """
    Parse a request built from the given parts.
    """
    to = "<sip:bob@example.com>" + (";tag=" + toTag if toTag else "")
    branchPart = ";branch=" + branch if branch else ""
    text = (
        "{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/{transport} {sentBy}{branchPart}{viaParams}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag={fromTag}\r\n"
        "To: {to}\r\n"
        "Call-ID: {callId}\r\n"
        "CSeq: {cseq} {cseqMethod}\r\n"
        "{extra}"
        "Content-Length: 0\r\n"
        "\r\n"
    ).format(
        method=method,
        uri=uri,
        transport=transport,
        sentBy=sentBy,
        branchPart=branchPart,
        viaParams=viaParams,
        fromTag=fromTag,
        to=to,
        callId=callId,
        cseq=cseq,
        cseqMethod=cseqMethod or method,
        extra=extra,
    )
    request = parseMessage(text.encode("ascii"))
    assert isinstance(request, Request)
    return request


def makeResponse(request: Request, status: int, toTag: str | None = "b2") -> Response:
    """
    A response to C{request}, with a To tag for non-100 responses.
    """
    return Response.forRequest(request, status, toTag=None if status == 100 else toTag)


def ackFor(request: Request, response: Response, branch: str | None = BRANCH) -> Request:
    """
    The ACK a client sends for a non-2xx final response (same branch).
    """
    return makeRequest(
        "ACK",
        branch=branch,
        toTag=response.toAddr.tag,
        cseq=request.cseq[0],
    )


# ---------------------------------------------------------------------------


class TimerValuesTests(SynchronousTestCase):
    """
    Tests for L{TimerValues}: the derived RFC 3261 timer durations.
    """

    def test_defaults(self) -> None:
        """
        T1, T2 and T4 default to 500 ms, 4 s and 5 s.
        """
        values = TimerValues()
        self.assertEqual((values.t1, values.t2, values.t4), (0.5, 4.0, 5.0))
        self.assertEqual((machine.T1, machine.T2, machine.T4), (0.5, 4.0, 5.0))

    def test_timeout(self) -> None:
        """
        Timers B, F, H, L and M are 64*T1.
        """
        self.assertEqual(TimerValues().timeout, 32.0)
        self.assertEqual(TimerValues(t1=0.25, t2=1.0).timeout, 16.0)

    def test_unreliableWaits(self) -> None:
        """
        On unreliable flows D is 32 s, I and K are T4, J is 64*T1.
        """
        values = TimerValues()
        self.assertEqual(
            (values.d(False), values.i(False), values.j(False), values.k(False)),
            (32.0, 5.0, 32.0, 5.0),
        )

    def test_timerDAtLeast64T1(self) -> None:
        """
        Timer D is never shorter than 64*T1, so it outlasts the server's
        timer H when T1 is raised.
        """
        self.assertEqual(TimerValues(t1=1.0, t2=4.0).d(False), 64.0)
        self.assertEqual(TimerValues(t1=0.25, t2=1.0).d(False), 32.0)

    def test_reliableWaitsAreZero(self) -> None:
        """
        On reliable flows D, I, J and K are zero.
        """
        values = TimerValues()
        self.assertEqual(
            (values.d(True), values.i(True), values.j(True), values.k(True)),
            (0.0, 0.0, 0.0, 0.0),
        )

    def test_invalid(self) -> None:
        """
        A non-positive T1 or T4, or T2 below T1, is refused.
        """
        self.assertRaises(ValueError, TimerValues, 0, 4.0, 5.0)
        self.assertRaises(ValueError, TimerValues, 1.0, 0.5, 5.0)
        self.assertRaises(ValueError, TimerValues, 0.5, 4.0, 0)
        self.assertRaises(ValueError, TransactionLayer, Clock(), None, -1.0)


class FakeFlowTests(SynchronousTestCase):
    """
    The test flow is a real L{IFlow}.
    """

    def test_provides(self) -> None:
        """
        L{FakeFlow} provides L{IFlow}.
        """
        self.assertTrue(verifyObject(IFlow, FakeFlow(Clock())))

    def test_userProvides(self) -> None:
        """
        L{RecordingTU} provides both transaction user interfaces.
        """
        self.assertTrue(verifyObject(ITransactionUser, RecordingTU(Clock())))
        self.assertTrue(verifyObject(IClientTransactionUser, RecordingTU(Clock())))


# ---------------------------------------------------------------------------
# client transactions


class _ClientMixin:
    clock: Clock
    flow: FakeFlow
    tu: RecordingTU
    layer: TransactionLayer

    def setUpClient(self, transport: str = "udp", **kwargs: Any) -> None:
        self.clock = Clock()
        self.flow = FakeFlow(self.clock, transport)
        self.tu = RecordingTU(self.clock)
        self.layer = TransactionLayer(self.clock, RecordingTU(self.clock), **kwargs)

    def send(self, request: Request, address: tuple[str, int] | None = NEXT_HOP) -> Any:
        return self.layer.sendRequest(request, self.flow, address, self.tu)


class InviteClientTransactionTests(_ClientMixin, SynchronousTestCase):
    """
    Tests for the INVITE client transaction (RFC 3261 17.1.1, figure 5,
    with RFC 6026's Accepted state) on an unreliable flow.
    """

    def setUp(self) -> None:
        self.setUpClient()
        self.request = makeRequest(
            extra="Route: <sip:p1.example.com;lr>\r\nRoute: <sip:p2.example.com;lr>\r\n"
        )

    def test_startsCalling(self) -> None:
        """
        The request is sent at once to the given address and the
        transaction is in Calling with timers A and B running.
        """
        tx = self.send(self.request)
        self.assertIsInstance(tx, InviteClientTransaction)
        self.assertEqual(tx.state, CALLING)
        self.assertEqual(self.flow.addresses(), [NEXT_HOP])
        self.assertEqual(self.flow.sent[0][1], self.request.serialize())
        self.assertEqual(tx.timerNames, ["A", "B"])
        self.assertEqual(self.layer.clientTransactions, 1)

    def test_addressNoneUsesSend(self) -> None:
        """
        Without an address, the request goes through C{flow.send}.
        """
        self.send(self.request, address=None)
        self.assertEqual(self.flow.addresses(), [None])

    def test_timerADoublesWithoutCapUntilB(self) -> None:
        """
        Timer A retransmits at T1, then doubles each time without the T2
        cap (0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s); timer B fires at 64*T1 =
        32 s: the transaction terminates and the TU gets C{timeout}.
        """
        tx = self.send(self.request)
        self.clock.pump([0.5] * 80)
        self.assertEqual(self.flow.times(), [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
        self.assertEqual(self.tu.events, [("timeout", 32.0, tx)])
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.layer.clientTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timerBNotBefore64T1(self) -> None:
        """
        Just before 64*T1 the transaction is still Calling.
        """
        tx = self.send(self.request)
        self.clock.advance(31.5)
        self.assertEqual(tx.state, CALLING)
        self.assertEqual(self.tu.events, [])

    def test_timersScaleWithT1(self) -> None:
        """
        With T1 = 250 ms, A fires at 0.25, 0.75, ... and B at 16 s.
        """
        self.setUpClient(t1=0.25, t2=1.0)
        tx = self.send(self.request)
        self.clock.pump([0.25] * 80)
        self.assertEqual(self.flow.times(), [0, 0.25, 0.75, 1.75, 3.75, 7.75, 15.75])
        self.assertEqual(self.tu.events, [("timeout", 16.0, tx)])

    def test_provisionalToProceeding(self) -> None:
        """
        A 1xx in Calling moves to Proceeding, is passed to the TU, and stops
        retransmissions and timer B: Proceeding waits for ever (a proxy's
        timer C is the TU's job).
        """
        tx = self.send(self.request)
        self.clock.advance(0.5)
        self.assertTrue(self.layer.responseReceived(makeResponse(self.request, 180), self.flow))
        self.assertEqual(tx.state, PROCEEDING)
        self.assertEqual(self.tu.events, [("response", 0.5, 180, tx)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(len(self.flow.sent), 2)
        self.assertEqual(tx.state, PROCEEDING)

    def test_provisionalInProceeding(self) -> None:
        """
        Further 1xx in Proceeding go to the TU.
        """
        tx = self.send(self.request)
        self.layer.responseReceived(makeResponse(self.request, 100), self.flow)
        self.layer.responseReceived(makeResponse(self.request, 183), self.flow)
        self.assertEqual(tx.state, PROCEEDING)
        self.assertEqual([e[2] for e in self.tu.events], [100, 183])

    def _failure(self, tx: Any, status: int = 486) -> Response:
        response = makeResponse(self.request, status, toTag="callee-1")
        self.layer.responseReceived(response, self.flow)
        return response

    def test_failureInCallingSendsAck(self) -> None:
        """
        A 300-699 in Calling moves to Completed, goes to the TU, and the
        transaction sends the ACK to the same address.
        """
        tx = self.send(self.request)
        self._failure(tx)
        self.assertEqual(tx.state, COMPLETED)
        self.assertEqual(self.tu.events, [("response", 0, 486, tx)])
        self.assertEqual(len(self.flow.sent), 2)
        ack = self.flow.messages()[1]
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(self.flow.addresses()[1], NEXT_HOP)
        self.assertEqual(tx.timerNames, ["D"])

    def test_ackContents(self) -> None:
        """
        The ACK for a non-2xx has the INVITE's Request-URI, its top Via
        only (same branch), its Route headers in order, From, Call-ID, the
        CSeq number with method ACK, and the To of the response (with its
        tag).
        """
        tx = self.send(self.request)
        self.layer.responseReceived(makeResponse(self.request, 180), self.flow)
        self._failure(tx, 603)
        ack = self.flow.messages()[-1]
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(str(ack.uri), str(self.request.uri))
        self.assertEqual(len(ack.vias), 1)
        self.assertEqual(ack.vias[0].branch, BRANCH)
        self.assertEqual(
            ack.headers.lines("Route"),
            ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"],
        )
        self.assertEqual(ack.cseq, (1, "ACK"))
        self.assertEqual(ack.callId, "call-1")
        self.assertEqual(ack.fromAddr.tag, "a1")
        self.assertEqual(ack.toAddr.tag, "callee-1")
        self.assertIs(tx.ack is not None, True)

    def test_failureRetransmissionResendsAck(self) -> None:
        """
        A retransmitted final response in Completed makes the transaction
        send the ACK again and is not passed to the TU.
        """
        tx = self.send(self.request)
        self._failure(tx)
        self.clock.advance(2)
        self.assertTrue(
            self.layer.responseReceived(
                makeResponse(self.request, 486, toTag="callee-1"), self.flow
            )
        )
        self.assertEqual(len(self.tu.events), 1)
        self.assertEqual([m.method for m in self.flow.messages()], ["INVITE", "ACK", "ACK"])
        self.assertEqual(self.flow.sent[1][1], self.flow.sent[2][1])

    def test_completedIgnoresOthers(self) -> None:
        """
        1xx and 2xx in Completed are dropped.
        """
        tx = self.send(self.request)
        self._failure(tx)
        self.layer.responseReceived(makeResponse(self.request, 180), self.flow)
        self.layer.responseReceived(makeResponse(self.request, 200), self.flow)
        self.assertEqual(len(self.tu.events), 1)
        self.assertEqual(tx.state, COMPLETED)

    def test_timerD(self) -> None:
        """
        Timer D keeps Completed for 32 s on an unreliable flow, then the
        transaction terminates (no TU callback) and leaves the table.
        """
        tx = self.send(self.request)
        self.clock.advance(1)
        self._failure(tx)
        self.clock.advance(31.5)
        self.assertEqual(tx.state, COMPLETED)
        self.clock.advance(0.5)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(len(self.tu.events), 1)
        self.assertEqual(self.layer.clientTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_successToAccepted(self) -> None:
        """
        A 2xx moves to Accepted (RFC 6026), goes to the TU, and no ACK is
        generated (the 2xx ACK is the TU's).
        """
        tx = self.send(self.request)
        self.layer.responseReceived(makeResponse(self.request, 200), self.flow)
        self.assertEqual(tx.state, ACCEPTED)
        self.assertEqual(self.tu.events, [("response", 0, 200, tx)])
        self.assertEqual(len(self.flow.sent), 1)
        self.assertEqual(tx.timerNames, ["M"])

    def test_successFromProceeding(self) -> None:
        """
        A 2xx in Proceeding moves to Accepted.
        """
        tx = self.send(self.request)
        self.layer.responseReceived(makeResponse(self.request, 180), self.flow)
        self.layer.responseReceived(makeResponse(self.request, 200), self.flow)
        self.assertEqual(tx.state, ACCEPTED)

    def test_acceptedPassesRetransmitted2xx(self) -> None:
        """
        2xx retransmissions (and 2xx from other forks) in Accepted go to the
        TU; a late non-2xx is dropped.
        """
        tx = self.send(self.request)
        self.layer.responseReceived(makeResponse(self.request, 200), self.flow)
        self.layer.responseReceived(makeResponse(self.request, 200), self.flow)
        self.layer.responseReceived(makeResponse(self.request, 200, toTag="fork2"), self.flow)
        self.layer.responseReceived(makeResponse(self.request, 486), self.flow)
        self.assertEqual([e[2] for e in self.tu.events], [200, 200, 200])
        self.assertEqual(tx.state, ACCEPTED)

    def test_timerM(self) -> None:
        """
        Timer M ends Accepted after 64*T1; a 2xx after that is stray.
        """
        tx = self.send(self.request)
        self.layer.responseReceived(makeResponse(self.request, 200), self.flow)
        self.clock.advance(31.5)
        self.assertEqual(tx.state, ACCEPTED)
        self.clock.advance(0.5)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.layer.responseReceived(makeResponse(self.request, 200), self.flow))
        self.assertEqual(self.layer.strayResponses, 1)

    def test_transportErrorOnSend(self) -> None:
        """
        If the flow refuses the request, the transaction terminates at once
        and the TU gets C{transportError}; no timer is left.
        """
        self.flow.alive = False
        tx = self.send(self.request)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.tu.events, [("transportError", 0, tx)])
        self.assertEqual(self.layer.clientTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_transportErrorOnRetransmission(self) -> None:
        """
        A refused retransmission terminates the transaction with
        C{transportError}.
        """
        tx = self.send(self.request)
        self.flow.alive = False
        self.clock.advance(0.5)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.tu.names(), ["transportError"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_transportErrorOnAck(self) -> None:
        """
        If the ACK cannot be sent, the TU has the final response and then
        gets C{transportError}.
        """
        tx = self.send(self.request)
        self.flow.alive = False
        self._failure(tx)
        self.assertEqual(self.tu.names(), ["response", "transportError"])
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_terminate(self) -> None:
        """
        C{terminate} ends the transaction without a TU callback and cancels
        its timers; later responses are stray.
        """
        tx = self.send(self.request)
        tx.terminate()
        tx.terminate()
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.tu.events, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(tx.responseReceived(makeResponse(self.request, 200)))


class InviteClientReliableTests(_ClientMixin, SynchronousTestCase):
    """
    The INVITE client transaction on a reliable flow: no retransmission,
    timer D is zero.
    """

    def setUp(self) -> None:
        self.setUpClient("tcp")
        self.request = makeRequest(transport="TCP")

    def test_noRetransmission(self) -> None:
        """
        Only timer B runs; the request is sent once, with C{flow.send}.
        """
        tx = self.send(self.request)
        self.assertEqual(tx.timerNames, ["B"])
        self.clock.advance(31)
        self.assertEqual(self.flow.times(), [0])
        self.assertEqual(self.flow.addresses(), [None])
        self.clock.advance(1)
        self.assertEqual(self.tu.names(), ["timeout"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timerDZero(self) -> None:
        """
        After a non-2xx and its ACK, the transaction terminates at once.
        """
        tx = self.send(self.request)
        self.layer.responseReceived(makeResponse(self.request, 404), self.flow)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual([m.method for m in self.flow.messages()], ["INVITE", "ACK"])
        self.assertEqual(self.layer.clientTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_acceptedStillLingers(self) -> None:
        """
        Timer M is 64*T1 on reliable flows too (2xx retransmissions by the
        UAS do not depend on the hop's transport).
        """
        tx = self.send(self.request)
        self.layer.responseReceived(makeResponse(self.request, 200), self.flow)
        self.assertEqual(tx.timerNames, ["M"])
        self.clock.advance(32)
        self.assertEqual(tx.state, TERMINATED)


class NonInviteClientTransactionTests(_ClientMixin, SynchronousTestCase):
    """
    Tests for the non-INVITE client transaction (RFC 3261 17.1.2, figure 6)
    on an unreliable flow.
    """

    def setUp(self) -> None:
        self.setUpClient()
        self.request = makeRequest("OPTIONS")

    def test_startsTrying(self) -> None:
        """
        The request is sent at once; Trying, timers E and F running.
        """
        tx = self.send(self.request)
        self.assertIsInstance(tx, NonInviteClientTransaction)
        self.assertEqual(tx.state, TRYING)
        self.assertEqual(tx.timerNames, ["E", "F"])
        self.assertEqual(len(self.flow.sent), 1)

    def test_timerEDoublesUpToT2(self) -> None:
        """
        Timer E retransmits at 0.5, 1.5, 3.5, then every T2 = 4 s; timer F
        fires at 32 s with C{timeout}.
        """
        tx = self.send(self.request)
        self.clock.pump([0.5] * 80)
        self.assertEqual(
            self.flow.times(),
            [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5],
        )
        self.assertEqual(self.tu.events, [("timeout", 32.0, tx)])
        self.assertEqual(self.layer.clientTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timerEWithSmallT2(self) -> None:
        """
        With T1 = 0.25 s and T2 = 1 s, E is capped at 1 s and F is 16 s.
        """
        self.setUpClient(t1=0.25, t2=1.0)
        tx = self.send(self.request)
        self.clock.pump([0.25] * 80)
        self.assertEqual(
            self.flow.times(),
            [0, 0.25, 0.75, 1.75] + [2.75 + i for i in range(14)],
        )
        self.assertEqual(self.tu.events, [("timeout", 16.0, tx)])

    def test_provisionalKeepsTimersAndResetsEToT2(self) -> None:
        """
        A 1xx moves to Proceeding and goes to the TU; E keeps running, and
        from its next firing retransmits every T2; F still fires at 64*T1.
        """
        tx = self.send(self.request)
        self.clock.pump([0.5, 0.5])
        self.layer.responseReceived(makeResponse(self.request, 100), self.flow)
        self.assertEqual(tx.state, PROCEEDING)
        self.assertEqual(tx.timerNames, ["E", "F"])
        self.clock.pump([0.5] * 80)
        self.assertEqual(
            self.flow.times(),
            [0, 0.5, 1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5],
        )
        self.assertEqual(self.tu.names(), ["response", "timeout"])
        self.assertEqual(self.tu.events[1][1], 32.0)

    def test_provisionalInProceeding(self) -> None:
        """
        More 1xx in Proceeding go to the TU.
        """
        tx = self.send(self.request)
        self.layer.responseReceived(makeResponse(self.request, 100), self.flow)
        self.layer.responseReceived(makeResponse(self.request, 182), self.flow)
        self.assertEqual([e[2] for e in self.tu.events], [100, 182])
        self.assertEqual(tx.state, PROCEEDING)

    def test_finalFromTrying(self) -> None:
        """
        A final response (2xx or not) in Trying moves to Completed, goes to
        the TU, and only timer K runs; no ACK is sent.
        """
        for status in (200, 404):
            self.setUpClient()
            tx = self.send(self.request)
            self.layer.responseReceived(makeResponse(self.request, status), self.flow)
            self.assertEqual(tx.state, COMPLETED)
            self.assertEqual(tx.timerNames, ["K"])
            self.assertEqual(self.tu.events, [("response", 0, status, tx)])
            self.assertEqual(len(self.flow.sent), 1)

    def test_finalFromProceeding(self) -> None:
        """
        A final response in Proceeding moves to Completed.
        """
        for status in (202, 500):
            self.setUpClient()
            tx = self.send(self.request)
            self.layer.responseReceived(makeResponse(self.request, 100), self.flow)
            self.layer.responseReceived(makeResponse(self.request, status), self.flow)
            self.assertEqual(tx.state, COMPLETED)
            self.assertEqual([e[2] for e in self.tu.events], [100, status])

    def test_completedAbsorbsRetransmissions(self) -> None:
        """
        Responses in Completed are matched but not passed to the TU.
        """
        tx = self.send(self.request)
        self.layer.responseReceived(makeResponse(self.request, 200), self.flow)
        self.assertTrue(self.layer.responseReceived(makeResponse(self.request, 200), self.flow))
        self.assertTrue(self.layer.responseReceived(makeResponse(self.request, 100), self.flow))
        self.assertEqual(len(self.tu.events), 1)
        self.assertEqual(tx.state, COMPLETED)
        self.assertEqual(self.layer.strayResponses, 0)

    def test_timerK(self) -> None:
        """
        Timer K ends Completed after T4 = 5 s on an unreliable flow.
        """
        tx = self.send(self.request)
        self.clock.advance(2)
        self.layer.responseReceived(makeResponse(self.request, 200), self.flow)
        self.clock.advance(4.5)
        self.assertEqual(tx.state, COMPLETED)
        self.clock.advance(0.5)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.layer.clientTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noRetransmissionAfterFinal(self) -> None:
        """
        Once Completed, the request is never sent again.
        """
        self.send(self.request)
        self.layer.responseReceived(makeResponse(self.request, 200), self.flow)
        self.clock.pump([0.5] * 20)
        self.assertEqual(len(self.flow.sent), 1)

    def test_transportError(self) -> None:
        """
        A refused send terminates with C{transportError}.
        """
        self.flow.alive = False
        tx = self.send(self.request)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.tu.names(), ["transportError"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_transportErrorInProceeding(self) -> None:
        """
        A refused retransmission in Proceeding terminates with
        C{transportError}.
        """
        tx = self.send(self.request)
        self.layer.responseReceived(makeResponse(self.request, 100), self.flow)
        self.flow.alive = False
        self.clock.advance(0.5)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.tu.names(), ["response", "transportError"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class NonInviteClientReliableTests(_ClientMixin, SynchronousTestCase):
    """
    The non-INVITE client transaction on a reliable flow.
    """

    def setUp(self) -> None:
        self.setUpClient("tls")
        self.request = makeRequest("REGISTER", transport="TLS")

    def test_noTimerE(self) -> None:
        """
        Only timer F runs; the request is never retransmitted.
        """
        tx = self.send(self.request)
        self.assertEqual(tx.timerNames, ["F"])
        self.clock.advance(32)
        self.assertEqual(len(self.flow.sent), 1)
        self.assertEqual(self.tu.names(), ["timeout"])

    def test_timerKZero(self) -> None:
        """
        A final response terminates the transaction at once.
        """
        tx = self.send(self.request)
        self.layer.responseReceived(makeResponse(self.request, 200), self.flow)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.tu.names(), ["response"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DirectClientTests(SynchronousTestCase):
    """
    Client transactions work without a layer.
    """

    def test_standalone(self) -> None:
        """
        A transaction built directly sends on C{start} and reports to its
        TU.
        """
        clock = Clock()
        flow = FakeFlow(clock)
        tu = RecordingTU(clock)
        request = makeRequest("BYE")
        tx = NonInviteClientTransaction(request, flow, NEXT_HOP, TimerQueues(clock), tu)
        self.assertEqual(flow.sent, [])
        tx.start()
        self.assertEqual(len(flow.sent), 1)
        self.assertTrue(tx.responseReceived(makeResponse(request, 200)))
        self.assertEqual(tu.names(), ["response"])
        assert tx.lastResponse is not None
        self.assertEqual(tx.lastResponse.status, 200)
        clock.advance(5)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertIn("BYE", repr(tx))


# ---------------------------------------------------------------------------
# server transactions


class _ServerMixin:
    clock: Clock
    flow: FakeFlow
    tu: RecordingTU
    layer: TransactionLayer

    def setUpServer(self, transport: str = "udp", **kwargs: Any) -> None:
        self.clock = Clock()
        self.flow = FakeFlow(self.clock, transport)
        self.tu = RecordingTU(self.clock)
        self.layer = TransactionLayer(self.clock, self.tu, **kwargs)

    def receive(self, request: Request) -> Any:
        return self.layer.requestReceived(request, self.flow)

    def newServer(self, request: Request) -> Any:
        """
        A new server transaction for C{request}, started as the core starts
        it when its handler has not answered at once.
        """
        tx = self.newUnstarted(request)
        tx.start()
        return tx

    def newUnstarted(self, request: Request) -> Any:
        """
        A new server transaction for C{request}, as the layer hands it to
        the core: not started.
        """
        result = self.receive(request)
        assert isinstance(result, tuple), result
        tx, isNew = result
        assert isNew
        return tx


class InviteServerTransactionTests(_ServerMixin, SynchronousTestCase):
    """
    Tests for the INVITE server transaction (RFC 3261 17.2.1, figure 7, with
    RFC 6026's Accepted state) on an unreliable flow.
    """

    def setUp(self) -> None:
        self.setUpServer()
        self.request = makeRequest(extra="Timestamp: 54\r\n")

    def test_created(self) -> None:
        """
        A new INVITE creates a transaction in Proceeding with the 100 Trying
        timer running; nothing is sent yet.
        """
        tx = self.newServer(self.request)
        self.assertIsInstance(tx, InviteServerTransaction)
        self.assertEqual(tx.state, PROCEEDING)
        self.assertEqual(tx.timerNames, ["100 Trying"])
        self.assertEqual(self.flow.sent, [])
        self.assertEqual(self.layer.serverTransactions, 1)

    def test_notStartedNoTimer(self) -> None:
        """
        The layer hands out a new transaction without timers; its start
        adds none when the TU has sent a response by then.
        """
        tx = self.newUnstarted(self.request)
        self.assertEqual(tx.timerNames, [])
        tx.respond(makeResponse(self.request, 180))
        tx.start()
        self.assertEqual(tx.timerNames, [])
        self.clock.advance(1)
        self.assertEqual([m.status for m in self.flow.messages()], [180])

    def test_tryingAfter200ms(self) -> None:
        """
        If the TU has not answered within 200 ms, the transaction sends 100
        Trying (no To tag, Timestamp copied) to the request's source.
        """
        self.newServer(self.request)
        self.clock.advance(0.1)
        self.assertEqual(self.flow.sent, [])
        self.clock.advance(0.1)
        [trying] = self.flow.messages()
        self.assertEqual(trying.status, 100)
        self.assertIsNone(trying.toAddr.tag)
        self.assertEqual(trying.headers.first("Timestamp"), "54")
        self.assertEqual(trying.vias[0].branch, BRANCH)
        self.assertEqual(self.flow.addresses(), [CLIENT])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noTryingWhenTUAnswers(self) -> None:
        """
        A provisional response from the TU within 200 ms cancels the
        automatic 100 Trying.
        """
        tx = self.newServer(self.request)
        self.clock.advance(0.1)
        self.assertTrue(tx.respond(makeResponse(self.request, 180)))
        self.clock.advance(1)
        self.assertEqual([m.status for m in self.flow.messages()], [180])
        self.assertEqual(tx.state, PROCEEDING)

    def test_tryingImmediately(self) -> None:
        """
        With C{tryingDelay=0}, 100 Trying is sent as the transaction is
        created.
        """
        self.setUpServer(tryingDelay=0)
        tx = self.newServer(self.request)
        self.assertEqual([m.status for m in self.flow.messages()], [100])
        self.assertEqual(tx.timerNames, [])

    def test_retransmissionBeforeAnyResponse(self) -> None:
        """
        A retransmitted INVITE before any response is absorbed silently and
        returns the existing transaction as not new.
        """
        tx = self.newServer(self.request)
        self.assertEqual(self.receive(self.request), (tx, False))
        self.assertEqual(self.flow.sent, [])
        self.assertEqual(self.layer.retransmissionsAbsorbed, 1)
        self.assertEqual(self.layer.serverTransactions, 1)

    def test_retransmissionReplaysProvisional(self) -> None:
        """
        A retransmitted INVITE in Proceeding replays the last provisional
        response.
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 100))
        tx.respond(makeResponse(self.request, 180))
        self.receive(self.request)
        self.assertEqual([m.status for m in self.flow.messages()], [100, 180, 180])

    def test_floodCostsOneTransaction(self) -> None:
        """
        A hundred retransmissions make one transaction and a hundred
        replays.
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 180))
        for _ in range(100):
            self.assertEqual(self.receive(self.request), (tx, False))
        self.assertEqual(self.layer.serverTransactions, 1)
        self.assertEqual(self.layer.retransmissionsAbsorbed, 100)
        self.assertEqual(len(self.flow.sent), 101)

    def test_failureToCompleted(self) -> None:
        """
        A 300-699 from the TU is sent; Completed with timers G and H.
        """
        tx = self.newServer(self.request)
        self.assertTrue(tx.respond(makeResponse(self.request, 486)))
        self.assertEqual(tx.state, COMPLETED)
        self.assertEqual(tx.timerNames, ["G", "H"])

    def test_timerGDoublesUpToT2AndTimerH(self) -> None:
        """
        Timer G retransmits the final response at 0.5, 1.5, 3.5, 7.5 s and
        then every T2; timer H at 64*T1 terminates and reports
        C{ackTimeout}.
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 486))
        self.clock.pump([0.5] * 80)
        self.assertEqual(
            self.flow.times(),
            [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5],
        )
        self.assertEqual({m.status for m in self.flow.messages()}, {486})
        self.assertEqual(self.tu.events, [("ackTimeout", 32.0, tx)])
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.layer.serverTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_retransmissionReplaysFinal(self) -> None:
        """
        A retransmitted INVITE in Completed replays the final response.
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 404))
        self.assertEqual(self.receive(self.request), (tx, False))
        self.assertEqual([m.status for m in self.flow.messages()], [404, 404])

    def test_secondFinalDiscarded(self) -> None:
        """
        Once a final response is sent, another one from the TU is discarded
        (C{respond} returns C{False}).
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 404))
        self.assertFalse(tx.respond(makeResponse(self.request, 500)))
        self.assertFalse(tx.respond(makeResponse(self.request, 200)))
        self.assertEqual(len(self.flow.sent), 1)

    def test_ackToConfirmed(self) -> None:
        """
        The ACK for the non-2xx is absorbed (not passed to the TU, C{None}
        returned): Confirmed, G and H stopped, timer I running.
        """
        tx = self.newServer(self.request)
        response = makeResponse(self.request, 486)
        tx.respond(response)
        self.clock.advance(1)
        self.assertIsNone(self.receive(ackFor(self.request, response)))
        self.assertEqual(tx.state, CONFIRMED)
        self.assertEqual(tx.timerNames, ["I"])
        self.assertEqual(self.tu.events, [])
        self.assertEqual(self.layer.strayAcks, 0)

    def test_timerI(self) -> None:
        """
        Timer I ends Confirmed after T4 = 5 s; ACK retransmissions meanwhile
        are absorbed and counted, and nothing more is sent.
        """
        tx = self.newServer(self.request)
        response = makeResponse(self.request, 486)
        tx.respond(response)
        ack = ackFor(self.request, response)
        self.receive(ack)
        self.receive(ack)
        self.receive(self.request)
        self.assertEqual(self.layer.retransmissionsAbsorbed, 2)
        self.clock.advance(4.5)
        self.assertEqual(tx.state, CONFIRMED)
        self.clock.advance(0.5)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(len(self.flow.sent), 1)
        self.assertEqual(self.tu.events, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_successToAccepted(self) -> None:
        """
        A 2xx from the TU is sent and moves to Accepted with timer L; no
        retransmission by the transaction.
        """
        tx = self.newServer(self.request)
        self.assertTrue(tx.respond(makeResponse(self.request, 200)))
        self.assertEqual(tx.state, ACCEPTED)
        self.assertEqual(tx.timerNames, ["L"])
        self.clock.advance(10)
        self.assertEqual(len(self.flow.sent), 1)

    def test_acceptedPassesTU2xx(self) -> None:
        """
        2xx retransmissions from the TU in Accepted are sent.
        """
        tx = self.newServer(self.request)
        ok = makeResponse(self.request, 200)
        tx.respond(ok)
        self.clock.advance(0.5)
        self.assertTrue(tx.respond(ok))
        self.assertEqual(self.flow.times(), [0, 0.5])
        self.assertFalse(tx.respond(makeResponse(self.request, 486)))

    def test_acceptedAbsorbsInvite(self) -> None:
        """
        An INVITE retransmission in Accepted is absorbed without a replay
        (2xx retransmission is the TU's job).
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 200))
        self.assertEqual(self.receive(self.request), (tx, False))
        self.assertEqual(len(self.flow.sent), 1)

    def test_acceptedPassesAckToTU(self) -> None:
        """
        An ACK matching the transaction in Accepted goes to the TU's
        C{ackReceived}, not absorbed.
        """
        tx = self.newServer(self.request)
        ok = makeResponse(self.request, 200)
        tx.respond(ok)
        ack = ackFor(self.request, ok)
        self.assertIsNone(self.receive(ack))
        self.assertEqual(self.tu.events, [("ackReceived", 0, ack, self.flow)])
        self.assertEqual(tx.state, ACCEPTED)
        self.assertEqual(self.layer.strayAcks, 0)

    def test_timerL(self) -> None:
        """
        Timer L ends Accepted after 64*T1.
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 200))
        self.clock.advance(31.5)
        self.assertEqual(tx.state, ACCEPTED)
        self.clock.advance(0.5)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.layer.serverTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ackInProceedingIsStray(self) -> None:
        """
        An ACK matching an INVITE still in Proceeding (no final response
        yet) is not absorbed: it goes to the TU as a stray.
        """
        self.newServer(self.request)
        ack = makeRequest("ACK", toTag="x")
        self.assertIsNone(self.receive(ack))
        self.assertEqual(self.tu.names(), ["ackReceived"])
        self.assertEqual(self.layer.strayAcks, 1)

    def test_transportErrorOnRespond(self) -> None:
        """
        A refused response terminates the transaction with
        C{transportError}; C{respond} returns C{False}.
        """
        tx = self.newServer(self.request)
        self.flow.alive = False
        self.assertFalse(tx.respond(makeResponse(self.request, 180)))
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.tu.events, [("transportError", 0, tx)])
        self.assertEqual(self.layer.serverTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_transportErrorOnTrying(self) -> None:
        """
        A refused automatic 100 Trying terminates with C{transportError}.
        """
        tx = self.newServer(self.request)
        self.flow.alive = False
        self.clock.advance(0.2)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.tu.names(), ["transportError"])

    def test_transportErrorOnTimerG(self) -> None:
        """
        A refused retransmission of the final response terminates with
        C{transportError} and no C{ackTimeout}.
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 486))
        self.flow.alive = False
        self.clock.advance(0.5)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.tu.names(), ["transportError"])
        self.clock.advance(40)
        self.assertEqual(self.tu.names(), ["transportError"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_respondAfterTerminated(self) -> None:
        """
        C{respond} on a terminated transaction sends nothing.
        """
        tx = self.newServer(self.request)
        tx.terminate()
        self.assertFalse(tx.respond(makeResponse(self.request, 200)))
        self.assertEqual(self.flow.sent, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class InviteServerReliableTests(_ServerMixin, SynchronousTestCase):
    """
    The INVITE server transaction on a reliable flow: responses go over the
    connection, no timer G, timer I is zero.
    """

    def setUp(self) -> None:
        self.setUpServer("tcp")
        self.request = makeRequest(transport="TCP")

    def test_sendsOverConnection(self) -> None:
        """
        Responses use C{flow.send}, not C{sendTo}.
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 180))
        self.assertEqual(self.flow.addresses(), [None])
        self.assertIsNone(tx.responseAddress)

    def test_noTimerG(self) -> None:
        """
        After a non-2xx only timer H runs; it still reports C{ackTimeout}.
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 486))
        self.assertEqual(tx.timerNames, ["H"])
        self.clock.advance(32)
        self.assertEqual(len(self.flow.sent), 1)
        self.assertEqual(self.tu.names(), ["ackTimeout"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timerIZero(self) -> None:
        """
        The ACK terminates the transaction at once.
        """
        tx = self.newServer(self.request)
        response = makeResponse(self.request, 486)
        tx.respond(response)
        self.receive(ackFor(self.request, response))
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.layer.serverTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lateAckIsStray(self) -> None:
        """
        An ACK retransmission after termination no longer matches: it goes
        to the TU as a stray.
        """
        tx = self.newServer(self.request)
        response = makeResponse(self.request, 486)
        tx.respond(response)
        ack = ackFor(self.request, response)
        self.receive(ack)
        self.receive(ack)
        self.assertEqual(self.tu.names(), ["ackReceived"])


class NonInviteServerTransactionTests(_ServerMixin, SynchronousTestCase):
    """
    Tests for the non-INVITE server transaction (RFC 3261 17.2.2, figure 8)
    on an unreliable flow.
    """

    def setUp(self) -> None:
        self.setUpServer()
        self.request = makeRequest("REGISTER", uri="sip:example.com")

    def test_created(self) -> None:
        """
        A new request creates a transaction in Trying with only the
        unanswered-request safety timer, nothing sent (no automatic 100 for
        non-INVITE).
        """
        tx = self.newServer(self.request)
        self.assertIsInstance(tx, NonInviteServerTransaction)
        self.assertEqual(tx.state, TRYING)
        self.assertEqual(tx.timerNames, [TIMER_UNANSWERED])
        self.clock.advance(10)
        self.assertEqual(self.flow.sent, [])

    def test_answeredBeforeStart(self) -> None:
        """
        A transaction its TU answered before it was started has only timer
        J once started: no unanswered-request timer.
        """
        tx = self.newUnstarted(self.request)
        tx.respond(makeResponse(self.request, 200))
        tx.start()
        self.assertEqual(tx.state, COMPLETED)
        self.assertEqual(tx.timerNames, [TIMER_J])

    def test_provisionalBeforeStart(self) -> None:
        """
        A transaction that sent a provisional response before it was
        started starts the unanswered-request timer in Proceeding.
        """
        tx = self.newUnstarted(self.request)
        tx.respond(makeResponse(self.request, 180))
        tx.start()
        self.assertEqual(tx.state, PROCEEDING)
        self.assertEqual(tx.timerNames, [TIMER_UNANSWERED])

    def test_tryingAbsorbsRetransmission(self) -> None:
        """
        A retransmission in Trying is absorbed with nothing sent.
        """
        tx = self.newServer(self.request)
        self.assertEqual(self.receive(self.request), (tx, False))
        self.assertEqual(self.flow.sent, [])
        self.assertEqual(self.layer.retransmissionsAbsorbed, 1)

    def test_provisionalToProceeding(self) -> None:
        """
        A 1xx from the TU is sent and moves to Proceeding; a retransmission
        then replays it, as do further 1xx.
        """
        tx = self.newServer(self.request)
        self.assertTrue(tx.respond(makeResponse(self.request, 100)))
        self.assertEqual(tx.state, PROCEEDING)
        self.receive(self.request)
        tx.respond(makeResponse(self.request, 183))
        self.assertEqual(tx.state, PROCEEDING)
        self.assertEqual([m.status for m in self.flow.messages()], [100, 100, 183])

    def test_finalToCompleted(self) -> None:
        """
        A final response from Trying or Proceeding moves to Completed with
        timer J.
        """
        for first in (None, 100):
            self.setUpServer()
            tx = self.newServer(self.request)
            if first:
                tx.respond(makeResponse(self.request, first))
            self.assertTrue(tx.respond(makeResponse(self.request, 200)))
            self.assertEqual(tx.state, COMPLETED)
            self.assertEqual(tx.timerNames, ["J"])

    def test_failureToCompleted(self) -> None:
        """
        A 4xx also completes the transaction.
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 100))
        tx.respond(makeResponse(self.request, 401))
        self.assertEqual(tx.state, COMPLETED)

    def test_completedReplaysFinal(self) -> None:
        """
        A retransmission in Completed replays the final response; other TU
        responses are discarded.
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 200))
        self.receive(self.request)
        self.assertFalse(tx.respond(makeResponse(self.request, 500)))
        self.assertFalse(tx.respond(makeResponse(self.request, 100)))
        self.assertEqual([m.status for m in self.flow.messages()], [200, 200])

    def test_completedKeepsOnlyTheBytes(self) -> None:
        """
        A completed transaction lets go of the final response object (and
        of what was parsed from the request) and replays the response's
        bytes, identical to the first copy.
        """
        tx = self.newServer(self.request)
        self.request.headers.remember("probe", 1)
        tx.respond(makeResponse(self.request, 100))
        self.assertIsNotNone(tx.lastResponse)
        tx.respond(makeResponse(self.request, 404))
        self.assertIsNone(tx.lastResponse)
        self.assertIsNone(self.request.headers.derived("probe"))
        self.receive(self.request)
        self.assertEqual(self.flow.sent[-1], self.flow.sent[-2])
        self.assertEqual([m.status for m in self.flow.messages()], [100, 404, 404])

    def test_timerJ(self) -> None:
        """
        Timer J ends Completed after 64*T1 on an unreliable flow; a
        retransmission after that is a new transaction.
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 200))
        self.clock.advance(31.5)
        self.assertEqual(tx.state, COMPLETED)
        self.clock.advance(0.5)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.layer.serverTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        tx2, isNew = self.receive(self.request)
        self.assertTrue(isNew)
        self.assertIsNot(tx2, tx)

    def test_noRetransmissionOfFinal(self) -> None:
        """
        The non-INVITE server transaction never retransmits on its own.
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 200))
        self.clock.pump([0.5] * 70)
        self.assertEqual(len(self.flow.sent), 1)
        self.assertEqual(tx.state, TERMINATED)

    def test_transportError(self) -> None:
        """
        A refused response terminates with C{transportError}.
        """
        tx = self.newServer(self.request)
        self.flow.alive = False
        self.assertFalse(tx.respond(makeResponse(self.request, 200)))
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.tu.names(), ["transportError"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_transportErrorOnReplay(self) -> None:
        """
        A refused replay terminates with C{transportError}.
        """
        tx = self.newServer(self.request)
        tx.respond(makeResponse(self.request, 200))
        self.flow.alive = False
        self.receive(self.request)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.tu.names(), ["transportError"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class NonInviteServerReliableTests(_ServerMixin, SynchronousTestCase):
    """
    The non-INVITE server transaction on a reliable flow.
    """

    def test_timerJZero(self) -> None:
        """
        A final response terminates the transaction at once, and
        C{respond} still reports success.
        """
        self.setUpServer("ws")
        request = makeRequest("REGISTER", transport="WS", sentBy="abc.invalid")
        tx = self.newServer(request)
        self.assertTrue(tx.respond(makeResponse(request, 200)))
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.flow.addresses(), [None])
        self.assertEqual(self.layer.serverTransactions, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


# ---------------------------------------------------------------------------
# response addressing and message helpers


class ResponseAddressTests(SynchronousTestCase):
    """
    Tests for L{responseAddress} (RFC 3261 18.2.2, RFC 3581).
    """

    def setUp(self) -> None:
        self.flow = FakeFlow(Clock(), remote=("203.0.113.5", 40000))

    def address(self, sentBy: str, viaParams: str = "") -> tuple[str, int]:
        return responseAddress(
            makeRequest("OPTIONS", sentBy=sentBy, viaParams=viaParams), self.flow
        )

    def test_sentByPortAtSource(self) -> None:
        """
        Without received/rport, the response goes to the source address on
        the sent-by port.
        """
        self.assertEqual(self.address("203.0.113.5:5070"), ("203.0.113.5", 5070))

    def test_defaultPort(self) -> None:
        """
        A sent-by without port means 5060.
        """
        self.assertEqual(self.address("203.0.113.5"), ("203.0.113.5", 5060))

    def test_sourceHostStandsForReceived(self) -> None:
        """
        A sent-by host that differs from the source address is replaced by
        the source address (what C{received} would carry).
        """
        self.assertEqual(self.address("10.0.0.2:5060"), ("203.0.113.5", 5060))

    def test_receivedFromSenderIgnored(self) -> None:
        """
        A C{received} the sender wrote into its own Via is not trusted: the
        response goes to the source address, on the sent-by port.
        """
        self.assertEqual(
            self.address("10.0.0.2:5062", ";received=198.51.100.9"), ("203.0.113.5", 5062)
        )

    def test_emptyRport(self) -> None:
        """
        C{rport} without a value sends to the source port.
        """
        self.assertEqual(self.address("10.0.0.2:5060", ";rport"), ("203.0.113.5", 40000))

    def test_rportValueFromSenderIgnored(self) -> None:
        """
        C{rport} with a value chosen by the sender still sends to the source
        address and port, never to an address the sender names.
        """
        self.assertEqual(
            self.address("10.0.0.2:5060", ";received=198.51.100.9;rport=41000"),
            ("203.0.113.5", 40000),
        )

    def test_maddrIgnored(self) -> None:
        """
        C{maddr} is ignored: no response goes to a multicast group.
        """
        self.assertEqual(
            self.address("10.0.0.2:5080", ";maddr=239.255.255.1"), ("203.0.113.5", 5080)
        )

    def test_serverTransactionUsesIt(self) -> None:
        """
        An unreliable server transaction sends its responses with
        C{sendTo} to that address.
        """
        clock = Clock()
        flow = FakeFlow(clock, remote=("203.0.113.5", 40000))
        layer = TransactionLayer(clock, RecordingTU(clock))
        request = makeRequest("OPTIONS", sentBy="10.0.0.2", viaParams=";rport")
        tx = serverTransaction(layer, request, flow)
        tx.respond(makeResponse(request, 200))
        self.assertEqual(flow.addresses(), [("203.0.113.5", 40000)])


class BuildTests(SynchronousTestCase):
    """
    Tests for L{buildAckForNon2xx} and L{buildCancel}.
    """

    def setUp(self) -> None:
        self.request = makeRequest(
            extra="Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
            "Contact: <sip:alice@192.0.2.1>\r\n",
        )

    def test_cancel(self) -> None:
        """
        The CANCEL has the INVITE's Request-URI, one Via with the same
        branch, Route, From, To (no tag), Call-ID, and CSeq number with
        method CANCEL; it survives serialization.
        """
        cancel = parseRequest(buildCancel(self.request).serialize())
        self.assertEqual(cancel.method, "CANCEL")
        self.assertEqual(str(cancel.uri), "sip:bob@example.com")
        self.assertEqual([v.branch for v in cancel.vias], [BRANCH])
        self.assertEqual(
            cancel.headers.values("Route"),
            ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"],
        )
        self.assertEqual(cancel.cseq, (1, "CANCEL"))
        self.assertEqual(cancel.callId, "call-1")
        self.assertEqual(cancel.fromAddr.tag, "a1")
        self.assertIsNone(cancel.toAddr.tag)
        self.assertIsNone(cancel.headers.first("Contact"))
        self.assertEqual(cancel.maxForwards, 70)

    def test_ack(self) -> None:
        """
        The ACK takes its To (with tag) from the response, the rest from the
        INVITE; it has no body.
        """
        response = makeResponse(self.request, 480, toTag="zz")
        ack = parseRequest(buildAckForNon2xx(self.request, response).serialize())
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(ack.toAddr.tag, "zz")
        self.assertEqual(ack.cseq, (1, "ACK"))
        self.assertEqual([v.branch for v in ack.vias], [BRANCH])
        self.assertEqual(len(ack.headers.values("Route")), 2)
        self.assertEqual(ack.body, b"")


# ---------------------------------------------------------------------------
# matching


class ServerMatchingTests(_ServerMixin, SynchronousTestCase):
    """
    RFC 3261 17.2.3 matching of requests to server transactions (branch
    with the magic cookie, sent-by, method).
    """

    def setUp(self) -> None:
        self.setUpServer()

    def test_sameBranchOtherSentBy(self) -> None:
        """
        The same branch from another sent-by is another transaction.
        """
        tx = self.newServer(makeRequest("OPTIONS"))
        other = self.newServer(makeRequest("OPTIONS", sentBy="192.0.2.99:5060"))
        self.assertIsNot(tx, other)
        self.assertEqual(self.layer.serverTransactions, 2)

    def test_sentByPortDefault(self) -> None:
        """
        A sent-by without port matches the same host with port 5060, and
        the host compares case-insensitively.
        """
        tx = self.newServer(makeRequest("OPTIONS", sentBy="Host.Example.com"))
        self.assertEqual(
            self.receive(makeRequest("OPTIONS", sentBy="host.example.com:5060")), (tx, False)
        )

    def test_tlsDefaultPort(self) -> None:
        """
        For TLS the default sent-by port is 5061.
        """
        tx = self.newServer(makeRequest("OPTIONS", transport="TLS", sentBy="h.example"))
        self.assertEqual(
            self.receive(makeRequest("OPTIONS", transport="TLS", sentBy="h.example:5061")),
            (tx, False),
        )
        self.assertTrue(
            self.receive(makeRequest("OPTIONS", transport="TLS", sentBy="h.example:5060"))[1]
        )

    def test_otherBranch(self) -> None:
        """
        Another branch is another transaction even if all else is equal.
        """
        tx = self.newServer(makeRequest("OPTIONS"))
        other = self.newServer(makeRequest("OPTIONS", branch="z9hG4bK-other"))
        self.assertIsNot(tx, other)

    def test_cancelIsItsOwnTransaction(self) -> None:
        """
        A CANCEL with the INVITE's branch is a new non-INVITE transaction,
        and L{TransactionLayer.findInviteForCancel} finds the INVITE.
        """
        invite = self.newServer(makeRequest())
        cancelRequest = makeRequest("CANCEL")
        cancel = self.newServer(cancelRequest)
        self.assertIsInstance(cancel, NonInviteServerTransaction)
        self.assertIs(self.layer.findInviteForCancel(cancelRequest), invite)
        cancel.respond(makeResponse(cancelRequest, 200))
        self.assertEqual(invite.state, PROCEEDING)

    def test_cancelForNothing(self) -> None:
        """
        A CANCEL matching no INVITE finds nothing (the core answers 481).
        """
        self.assertIsNone(self.layer.findInviteForCancel(makeRequest("CANCEL")))
        self.newServer(makeRequest("OPTIONS"))
        self.assertIsNone(self.layer.findInviteForCancel(makeRequest("CANCEL")))

    def test_ackMatchesInvite(self) -> None:
        """
        An ACK with the INVITE's branch and sent-by matches the INVITE
        transaction; with another branch (ACK for 2xx) it is a stray for the
        TU.
        """
        tx = self.newServer(makeRequest())
        response = makeResponse(tx.request, 486)
        tx.respond(response)
        self.assertIsNone(self.receive(ackFor(tx.request, response)))
        self.assertEqual(tx.state, CONFIRMED)
        stray = ackFor(tx.request, response, branch="z9hG4bK-2xx-ack")
        self.assertIsNone(self.receive(stray))
        self.assertEqual(self.tu.events, [("ackReceived", 0, stray, self.flow)])
        self.assertEqual(self.layer.strayAcks, 1)

    def test_dialogAckNotStray(self) -> None:
        """
        An ACK for a 2xx (a branch of its own) that the TU takes as part of
        a dialog (it forwarded it) is not a stray ACK; the next one the TU
        does not take is.
        """
        tx = self.newServer(makeRequest())
        response = makeResponse(tx.request, 200)
        tx.respond(response)
        self.tu.inDialog = True
        ack = ackFor(tx.request, response, branch="z9hG4bK-2xx-ack")
        self.assertIsNone(self.receive(ack))
        self.assertEqual(self.tu.names(), ["ackReceived"])
        self.assertEqual(self.layer.strayAcks, 0)
        self.tu.inDialog = False
        self.assertIsNone(self.receive(ackFor(tx.request, response, branch="z9hG4bK-other")))
        self.assertEqual(self.layer.strayAcks, 1)

    def test_ackNeverCreates(self) -> None:
        """
        An ACK never creates a server transaction.
        """
        self.assertIsNone(self.receive(makeRequest("ACK")))
        self.assertEqual(self.layer.serverTransactions, 0)

    def test_findServerTransaction(self) -> None:
        """
        L{TransactionLayer.findServerTransaction} finds without side
        effects.
        """
        request = makeRequest("MESSAGE")
        tx = self.newServer(request)
        self.assertIs(self.layer.findServerTransaction(request), tx)
        self.assertEqual(self.layer.retransmissionsAbsorbed, 0)

    def test_noVia(self) -> None:
        """
        A request without Via is refused with L{ValueError}.
        """
        request = makeRequest("OPTIONS")
        request.headers.remove("Via")
        self.assertRaises(ValueError, self.receive, request)


class Rfc2543MatchingTests(_ServerMixin, SynchronousTestCase):
    """
    RFC 3261 17.2.3 fallback matching for branches without the magic
    cookie (RFC 2543 clients).
    """

    def setUp(self) -> None:
        self.setUpServer()

    def test_noBranch(self) -> None:
        """
        A request without a branch is matched on Request-URI, tags,
        Call-ID, CSeq and top Via.
        """
        request = makeRequest(branch=None)
        tx = self.newServer(request)
        self.assertEqual(self.receive(makeRequest(branch=None)), (tx, False))

    def test_oldBranch(self) -> None:
        """
        A branch without the magic cookie is compared as part of the top
        Via.
        """
        tx = self.newServer(makeRequest("OPTIONS", branch="1234"))
        self.assertEqual(self.receive(makeRequest("OPTIONS", branch="1234")), (tx, False))
        self.assertTrue(self.receive(makeRequest("OPTIONS", branch="5678"))[1])

    def test_differences(self) -> None:
        """
        Any difference in Request-URI, From tag, To tag, Call-ID, CSeq
        number or method, or top Via, is another transaction.
        """
        self.newServer(makeRequest("OPTIONS", branch=None))
        variants = [
            makeRequest("OPTIONS", branch=None, uri="sip:carol@example.com"),
            makeRequest("OPTIONS", branch=None, fromTag="other"),
            makeRequest("OPTIONS", branch=None, toTag="t9"),
            makeRequest("OPTIONS", branch=None, callId="call-2"),
            makeRequest("OPTIONS", branch=None, cseq=2),
            makeRequest("OPTIONS", branch=None, sentBy="192.0.2.1:5070"),
            makeRequest("INFO", branch=None),
        ]
        for request in variants:
            result = self.receive(request)
            self.assertTrue(result[1], request)
        self.assertEqual(self.layer.serverTransactions, 1 + len(variants))

    def test_ackForNon2xxByToTag(self) -> None:
        """
        An ACK matches the INVITE transaction when its To tag is that of the
        response sent; another To tag makes it a stray.
        """
        request = makeRequest(branch=None)
        tx = self.newServer(request)
        response = makeResponse(request, 486, toTag="srv-tag")
        tx.respond(response)
        wrong = makeRequest("ACK", branch=None, toTag="other-tag")
        self.assertIsNone(self.receive(wrong))
        self.assertEqual(tx.state, COMPLETED)
        self.assertEqual(self.tu.names(), ["ackReceived"])
        self.assertIsNone(self.receive(makeRequest("ACK", branch=None, toTag="srv-tag")))
        self.assertEqual(tx.state, CONFIRMED)
        self.assertEqual(self.tu.names(), ["ackReceived"])

    def test_cancel(self) -> None:
        """
        A CANCEL (CSeq method CANCEL) is its own transaction and finds the
        INVITE.
        """
        request = makeRequest(branch=None)
        invite = self.newServer(request)
        cancelRequest = makeRequest("CANCEL", branch=None)
        cancel = self.newServer(cancelRequest)
        self.assertIsNot(cancel, invite)
        self.assertIs(self.layer.findInviteForCancel(cancelRequest), invite)

    def test_removedOnTermination(self) -> None:
        """
        A terminated RFC 2543 INVITE transaction leaves every table.
        """
        request = makeRequest(branch=None)
        tx = self.newServer(request)
        response = makeResponse(request, 486, toTag="srv")
        tx.respond(response)
        self.receive(makeRequest("ACK", branch=None, toTag="srv"))
        self.clock.advance(5)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.layer.serverTransactions, 0)
        self.assertEqual(self.layer._servers2543, {})
        self.assertEqual(self.layer._acks2543, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ClientMatchingTests(_ClientMixin, SynchronousTestCase):
    """
    RFC 3261 17.1.3 matching of responses to client transactions (top Via
    branch and CSeq method).
    """

    def setUp(self) -> None:
        self.setUpClient()

    def test_stray(self) -> None:
        """
        A response with an unknown branch, or without a branch, is stray:
        C{False} and counted.
        """
        request = makeRequest("OPTIONS")
        self.send(request)
        other = makeResponse(makeRequest("OPTIONS", branch="z9hG4bK-nope"), 200)
        noBranch = makeResponse(makeRequest("OPTIONS", branch=None), 200)
        self.assertFalse(self.layer.responseReceived(other, self.flow))
        self.assertFalse(self.layer.responseReceived(noBranch, self.flow))
        self.assertEqual(self.layer.strayResponses, 2)
        self.assertEqual(self.tu.events, [])

    def test_cseqMethodDistinguishesCancel(self) -> None:
        """
        The INVITE and its CANCEL share a branch; each response goes to the
        transaction of its CSeq method.
        """
        invite = makeRequest()
        inviteTx = self.send(invite)
        cancelRequest = buildCancel(invite)
        cancelTx = self.send(cancelRequest)
        self.assertEqual(self.layer.clientTransactions, 2)
        self.layer.responseReceived(makeResponse(cancelRequest, 200), self.flow)
        self.assertEqual(cancelTx.state, COMPLETED)
        self.assertEqual(inviteTx.state, CALLING)
        self.layer.responseReceived(makeResponse(invite, 487), self.flow)
        self.assertEqual(inviteTx.state, COMPLETED)
        self.assertEqual([(e[2], e[3]) for e in self.tu.events], [(200, cancelTx), (487, inviteTx)])

    def test_duplicateRefused(self) -> None:
        """
        Two client transactions with the same branch and method are
        refused.
        """
        self.send(makeRequest("OPTIONS"))
        self.assertRaises(ValueError, self.send, makeRequest("OPTIONS"))

    def test_ackRefused(self) -> None:
        """
        An ACK is not a transaction: L{TransactionLayer.sendRequest}
        refuses it.
        """
        self.assertRaises(ValueError, self.send, makeRequest("ACK"))

    def test_noBranchRefused(self) -> None:
        """
        A request without a branch cannot start a client transaction.
        """
        self.assertRaises(ValueError, self.send, makeRequest("OPTIONS", branch=None))


class OverloadTests(_ServerMixin, SynchronousTestCase):
    """
    The cap on transactions in flight.
    """

    def setUp(self) -> None:
        self.setUpServer(maxTransactions=2)

    def test_refusedPastCap(self) -> None:
        """
        Past C{maxTransactions}, a new request gets L{OVERLOADED} and is
        counted; retransmissions and ACKs of existing transactions still
        match; once one terminates new ones are accepted again.
        """
        first = self.newServer(makeRequest("OPTIONS", branch="z9hG4bK-1"))
        invite = makeRequest(branch="z9hG4bK-2")
        second = self.newServer(invite)
        self.assertIs(self.receive(makeRequest("OPTIONS", branch="z9hG4bK-3")), OVERLOADED)
        self.assertEqual(self.layer.refusedTransactions, 1)
        self.assertEqual(self.layer.serverTransactions, 2)
        self.assertEqual(self.receive(makeRequest("OPTIONS", branch="z9hG4bK-1")), (first, False))
        response = makeResponse(invite, 486)
        second.respond(response)
        self.assertIsNone(self.receive(ackFor(invite, response, branch="z9hG4bK-2")))
        self.assertEqual(second.state, CONFIRMED)
        first.respond(makeResponse(first.request, 200))
        self.clock.advance(32)
        self.assertEqual(self.layer.serverTransactions, 0)
        self.assertTrue(self.receive(makeRequest("OPTIONS", branch="z9hG4bK-3"))[1])

    def test_clientTransactionsCount(self) -> None:
        """
        Client transactions count towards the cap, but are never refused.
        """
        tu = RecordingTU(self.clock)
        self.layer.sendRequest(makeRequest("OPTIONS", branch="z9hG4bK-c1"), self.flow, None, tu)
        self.layer.sendRequest(makeRequest("OPTIONS", branch="z9hG4bK-c2"), self.flow, None, tu)
        self.layer.sendRequest(makeRequest("OPTIONS", branch="z9hG4bK-c3"), self.flow, None, tu)
        self.assertEqual(self.layer.clientTransactions, 3)
        self.assertIs(self.receive(makeRequest("OPTIONS")), OVERLOADED)

    def test_stats(self) -> None:
        """
        L{TransactionLayer.stats} reports every counter.
        """
        self.newServer(makeRequest("OPTIONS"))
        self.receive(makeRequest("OPTIONS"))
        self.assertEqual(
            self.layer.stats(),
            {
                "serverTransactions": 1,
                "clientTransactions": 0,
                "strayResponses": 0,
                "strayAcks": 0,
                "retransmissionsAbsorbed": 1,
                "refusedTransactions": 0,
            },
        )


class RobustnessTests(SynchronousTestCase):
    """
    TU failures and shutdown.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.flow = FakeFlow(self.clock)
        self.tu = BrokenTU(self.clock)
        self.layer = TransactionLayer(self.clock, self.tu)

    def test_brokenClientTU(self) -> None:
        """
        A TU raising in C{responseReceived} or C{timeout} is logged; the
        transaction still moves on and cleans up.
        """
        request = makeRequest("OPTIONS")
        tx = self.layer.sendRequest(request, self.flow, None, self.tu)
        self.assertTrue(self.layer.responseReceived(makeResponse(request, 200), self.flow))
        self.assertEqual(tx.state, COMPLETED)
        tx2 = self.layer.sendRequest(
            makeRequest("OPTIONS", branch="z9hG4bK-x"), self.flow, None, self.tu
        )
        self.clock.advance(32)
        self.assertEqual(tx2.state, TERMINATED)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_brokenServerTU(self) -> None:
        """
        A TU raising in C{ackTimeout} or C{ackReceived} is logged and the
        layer goes on.
        """
        request = makeRequest()
        tx = serverTransaction(self.layer, request, self.flow)
        tx.respond(makeResponse(request, 486))
        self.clock.advance(32)
        self.assertEqual(tx.state, TERMINATED)
        self.assertIsNone(self.layer.requestReceived(makeRequest("ACK"), self.flow))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_raisingFlow(self) -> None:
        """
        A flow raising in C{sendTo} counts as a transport error.
        """

        def boom(data: bytes, address: Any) -> bool:
            raise OSError("boom")

        self.flow.sendTo = boom  # type: ignore[method-assign]
        tu = RecordingTU(self.clock)
        tx = self.layer.sendRequest(makeRequest("OPTIONS"), self.flow, NEXT_HOP, tu)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(tu.names(), ["transportError"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_terminateAll(self) -> None:
        """
        L{TransactionLayer.terminateAll} ends every transaction and cancels
        every timer, without TU callbacks.
        """
        tu = RecordingTU(self.clock)
        layer = TransactionLayer(self.clock, tu)
        layer.requestReceived(makeRequest(), self.flow)
        server = serverTransaction(layer, makeRequest("OPTIONS"), self.flow)
        server.respond(makeResponse(server.request, 200))
        layer.sendRequest(makeRequest(branch="z9hG4bK-c"), self.flow, NEXT_HOP, tu)
        layer.sendRequest(makeRequest("BYE", branch="z9hG4bK-d"), self.flow, NEXT_HOP, tu)
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        layer.terminateAll()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual((layer.serverTransactions, layer.clientTransactions), (0, 0))
        self.assertEqual(tu.events, [])


class NoTimerLeakTests(SynchronousTestCase):
    """
    Whatever path a transaction takes, no delayed call outlives it.
    """

    def test_everyPathEndsClean(self) -> None:
        """
        Every client and server scenario, on UDP and TCP, ends with no
        transaction and no delayed call after 64*T1 plus T4.
        """
        scenarios = []
        for transport in ("udp", "tcp"):
            for method in ("INVITE", "OPTIONS"):
                for statuses in ((200,), (100, 200), (180, 486), (603,), (100, 404)):
                    scenarios.append((transport, method, statuses))
        for transport, method, statuses in scenarios:
            clock = Clock()
            flow = FakeFlow(clock, transport)
            tu = RecordingTU(clock)
            layer = TransactionLayer(clock, tu)
            request = makeRequest(method, transport=transport.upper())
            client = layer.sendRequest(request, flow, NEXT_HOP, tu)
            server = serverTransaction(layer, request, flow)
            for status in statuses:
                clock.advance(0.3)
                layer.responseReceived(makeResponse(request, status), flow)
                server.respond(makeResponse(request, status))
            if statuses and statuses[-1] >= 300 and method == "INVITE":
                layer.requestReceived(buildAckForNon2xx(request, makeResponse(request, 486)), flow)
            clock.advance(40)
            self.assertEqual(client.state, TERMINATED, (transport, method, statuses))
            self.assertEqual(server.state, TERMINATED, (transport, method, statuses))
            self.assertEqual(layer.activeTransactions, 0)
            self.assertEqual(clock.getDelayedCalls(), [], (transport, method, statuses))


class UnansweredServerTransactionTests(SynchronousTestCase):
    """
    A non-INVITE server transaction whose user never answers ends after
    64*T1, leaving no timer and no table entry behind.
    """

    def test_endsAfterTimeout(self) -> None:
        """
        After 64 s (2*64*T1) without a final response the transaction is
        gone and the user is told; a provisional response does not keep it
        alive.
        """
        clock = Clock()
        user = RecordingTU(clock)
        told = user.unansweredTransactions
        layer = TransactionLayer(clock, user)
        flow = FakeFlow(clock)
        found = layer.requestReceived(makeRequest("MESSAGE"), flow)
        assert found is not None and found is not OVERLOADED
        tx, isNew = found
        self.assertTrue(isNew)
        tx.start()
        tx.respond(Response.forRequest(tx.request, 180))
        clock.advance(63.9)
        self.assertEqual(layer.serverTransactions, 1)
        clock.advance(0.2)
        self.assertEqual(layer.serverTransactions, 0)
        self.assertEqual(told, [tx])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_answeredStopsTimer(self) -> None:
        """
        A final response cancels the safety timer (Timer J takes over).
        """
        clock = Clock()
        layer = TransactionLayer(clock, RecordingTU(clock))
        flow = FakeFlow(clock, transport="tcp")
        found = layer.requestReceived(makeRequest("MESSAGE"), flow)
        assert found is not None and found is not OVERLOADED
        tx, _ = found
        tx.start()
        tx.respond(Response.forRequest(tx.request, 200))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(layer.serverTransactions, 0)
