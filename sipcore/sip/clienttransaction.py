# -*- test-case-name: tests.test_transaction -*-
"""
The client transactions of RFC 3261 section 17.1: L{InviteClientTransaction}
(figure 5, with the Accepted state of RFC 6026 figure 5) and
L{NonInviteClientTransaction} (figure 6), and the C{ACK} and C{CANCEL}
requests built for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sipcore.interfaces import IClientTransactionUser, IFlow, ITimerQueue
from sipcore.message import Headers, Request, Response
from sipcore.sip.machine import (
    ACCEPTED,
    CALLING,
    COMPLETED,
    FAILURE,
    PROCEEDING,
    PROVISIONAL,
    START,
    SUCCESS,
    TERMINATED,
    TIMER_A,
    TIMER_B,
    TIMER_D,
    TIMER_E,
    TIMER_F,
    TIMER_K,
    TIMER_M,
    TRYING,
    TimerValues,
    Transaction,
    eventFor,
)

__all__ = [
    "ClientTransaction",
    "InviteClientTransaction",
    "NonInviteClientTransaction",
    "buildAckForNon2xx",
    "buildCancel",
]


def _copyRoutes(source: Request, headers: Headers) -> None:
    for route in source.headers.lines("Route"):
        headers.add("Route", route)


def buildAckForNon2xx(request: Request, response: Response) -> Request:
    """
    Build the C{ACK} an INVITE client transaction sends for a non-2xx final
    response (RFC 3261 17.1.1.3): the INVITE's Request-URI, its top Via
    only (same branch), its C{Route} headers, C{From}, C{Call-ID} and CSeq
    number, and the C{To} of the response (with its tag).

    @param request: the INVITE.
    @param response: the 300-699 response to it.
    @return: the C{ACK} L{Request}.
    """
    return _hopRequest("ACK", request, response.headers.first("To") or "")


def buildCancel(request: Request) -> Request:
    """
    Build a C{CANCEL} for C{request} (RFC 3261 9.1): same Request-URI,
    C{Call-ID}, C{To}, C{From} and CSeq number, its top Via only (so the
    same branch), its C{Route} headers.  Send it with
    L{TransactionLayer.sendRequest}: it is a non-INVITE client transaction
    of its own, matched by branch and method C{CANCEL}.

    @param request: the request to cancel (an INVITE).
    @return: the C{CANCEL} L{Request}.
    """
    return _hopRequest("CANCEL", request, request.headers.first("To") or "")


def _hopRequest(method: str, request: Request, to: str) -> Request:
    """
    A C{method} request for the same hop as C{request}: its Request-URI,
    top Via, C{Route} headers, C{From}, C{Call-ID} and CSeq number, with
    the C{To} given.
    """
    headers = Headers()
    headers.add("Via", str(request.vias[0]))
    _copyRoutes(request, headers)
    headers.add("Max-Forwards", "70")
    headers.add("From", request.headers.first("From") or "")
    headers.add("To", to)
    headers.add("Call-ID", request.callId)
    headers.add("CSeq", "{} {}".format(request.cseq[0], method))
    return Request(method, request.uri, headers)




class ClientTransaction(Transaction):
    """
    A client transaction (RFC 3261 17.1).

    Its TU (an L{IClientTransactionUser}) receives
    C{responseReceived(response, transaction)} for every response passed
    up, C{timeout(transaction)} when timer B or F fires and
    C{transportError(transaction)} when the flow refuses a message.

    @ivar tu: the L{IClientTransactionUser}.
    @ivar address: the C{(host, port)} requests go to on an unreliable flow
        (C{None}: use C{flow.send}); ignored on reliable flows.
    @ivar lastResponse: the last response received, or C{None}.
    """

    def __init__(
        self,
        request: Request,
        flow: IFlow,
        address: tuple[str, int] | None,
        clock: ITimerQueue,
        tu: IClientTransactionUser,
        timers: TimerValues | None = None,
        onTerminated: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__(request, flow, clock, timers or TimerValues(), onTerminated)
        self.tu = tu
        self.address = address
        self.lastResponse: Response | None = None
        self._data = b""
        self._interval = self.timers.t1
        #: the ACK an INVITE transaction sent for a non-2xx final response
        #: (the ACK is part of the INVITE client transaction, RFC 3261
        #: 17.1.1.3), and its bytes for retransmissions.
        self.ack: Request | None = None
        self._ackData = b""

    def _transmit(self, data: bytes) -> bool:
        if self.reliable or self.address is None:
            return self.flow.send(data)
        return self.flow.sendTo(data, self.address)

    def start(self) -> None:
        """
        Send the request and start the timers.  Called once, by the layer,
        after the transaction is in its table.
        """
        self._fire(START)

    def responseReceived(self, response: Response) -> bool:
        """
        Feed a response matched to this transaction.

        @return: C{False} if it was ignored in the current state (for
            instance a retransmitted final response in Completed, or
            anything after Terminated).
        """
        return self._fire(eventFor(response.status), response)

    # actions

    def _transportFailed(self) -> None:
        self._tell(self.tu.transportError, self)

    def _reportTimeout(self, arg: Any) -> None:
        self._tell(self.tu.timeout, self)

    def _passToTU(self, response: Response) -> None:
        self.lastResponse = response
        self._tell(self.tu.responseReceived, response, self)


class InviteClientTransaction(ClientTransaction):
    """
    The INVITE client transaction: RFC 3261 figure 5 with the RFC 6026
    Accepted state (timer M) so that 2xx retransmissions reach the TU.

    @ivar ack: the C{ACK} sent for the non-2xx final response, or C{None}.
    """

    _INITIAL = CALLING

    def _enter(self, state: str) -> None:
        if state == COMPLETED:
            self._startTimer(TIMER_D, self.timers.d(self.reliable))
        elif state == ACCEPTED:
            self._startTimer(TIMER_M, self.timers.timeout)

    def _sendFirst(self, arg: Any) -> None:
        self._data = self.request.serialize()
        if not self._send(self._data):
            return
        if not self.reliable:
            self._interval = self.timers.t1
            self._startTimer(TIMER_A, self._interval)
        self._startTimer(TIMER_B, self.timers.timeout)

    def _retransmit(self, arg: Any) -> None:
        if self._send(self._data):
            self._interval *= 2
            self._startTimer(TIMER_A, self._interval)

    def _passToTUAndAck(self, response: Response) -> None:
        self._passToTU(response)
        if self.state != COMPLETED:
            return
        self.ack = buildAckForNon2xx(self.request, response)
        self._ackData = self.ack.serialize()
        self._send(self._ackData)

    def _resendAck(self, response: Response) -> None:
        self._send(self._ackData)


# RFC 3261 figure 5, with RFC 6026 figure 5 (Accepted).
InviteClientTransaction._TRANSITIONS = {
    (CALLING, START): (None, InviteClientTransaction._sendFirst),
    (CALLING, TIMER_A): (None, InviteClientTransaction._retransmit),
    (CALLING, TIMER_B): (TERMINATED, InviteClientTransaction._reportTimeout),
    (CALLING, PROVISIONAL): (PROCEEDING, InviteClientTransaction._passToTU),
    (CALLING, SUCCESS): (ACCEPTED, InviteClientTransaction._passToTU),
    (CALLING, FAILURE): (COMPLETED, InviteClientTransaction._passToTUAndAck),
    (PROCEEDING, PROVISIONAL): (None, InviteClientTransaction._passToTU),
    (PROCEEDING, SUCCESS): (ACCEPTED, InviteClientTransaction._passToTU),
    (PROCEEDING, FAILURE): (COMPLETED, InviteClientTransaction._passToTUAndAck),
    (COMPLETED, FAILURE): (None, InviteClientTransaction._resendAck),
    (COMPLETED, TIMER_D): (TERMINATED, None),
    (ACCEPTED, SUCCESS): (None, InviteClientTransaction._passToTU),
    (ACCEPTED, TIMER_M): (TERMINATED, None),
}


class NonInviteClientTransaction(ClientTransaction):
    """
    The non-INVITE client transaction: RFC 3261 figure 6.
    """

    _INITIAL = TRYING
    _KEEP = {(TRYING, PROCEEDING): (TIMER_E, TIMER_F)}

    def _enter(self, state: str) -> None:
        if state == COMPLETED:
            self._startTimer(TIMER_K, self.timers.k(self.reliable))

    def _sendFirst(self, arg: Any) -> None:
        self._data = self.request.serialize()
        if not self._send(self._data):
            return
        if not self.reliable:
            self._interval = self.timers.t1
            self._startTimer(TIMER_E, self._interval)
        self._startTimer(TIMER_F, self.timers.timeout)

    def _retransmit(self, arg: Any) -> None:
        if self._send(self._data):
            self._interval = min(2 * self._interval, self.timers.t2)
            self._startTimer(TIMER_E, self._interval)

    def _retransmitProceeding(self, arg: Any) -> None:
        if self._send(self._data):
            self._interval = self.timers.t2
            self._startTimer(TIMER_E, self._interval)


# RFC 3261 figure 6.
NonInviteClientTransaction._TRANSITIONS = {
    (TRYING, START): (None, NonInviteClientTransaction._sendFirst),
    (TRYING, TIMER_E): (None, NonInviteClientTransaction._retransmit),
    (TRYING, TIMER_F): (TERMINATED, NonInviteClientTransaction._reportTimeout),
    (TRYING, PROVISIONAL): (PROCEEDING, NonInviteClientTransaction._passToTU),
    (TRYING, SUCCESS): (COMPLETED, NonInviteClientTransaction._passToTU),
    (TRYING, FAILURE): (COMPLETED, NonInviteClientTransaction._passToTU),
    (PROCEEDING, TIMER_E): (None, NonInviteClientTransaction._retransmitProceeding),
    (PROCEEDING, TIMER_F): (TERMINATED, NonInviteClientTransaction._reportTimeout),
    (PROCEEDING, PROVISIONAL): (None, NonInviteClientTransaction._passToTU),
    (PROCEEDING, SUCCESS): (COMPLETED, NonInviteClientTransaction._passToTU),
    (PROCEEDING, FAILURE): (COMPLETED, NonInviteClientTransaction._passToTU),
    (COMPLETED, TIMER_K): (TERMINATED, None),
}
