# -*- test-case-name: tests.test_transaction -*-
"""
The server transactions of RFC 3261 section 17.2: L{InviteServerTransaction}
(figure 7, with the Accepted state of RFC 6026 figure 7) and
L{NonInviteServerTransaction} (figure 8), and where their responses go
(RFC 3261 18.2.2 with RFC 3581).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sipcore.interfaces import IFlow, ITimerQueue, ITransactionUser
from sipcore.message import Request, Response, SIPParseError
from sipcore.sip.machine import (
    ACCEPTED,
    ACK,
    COMPLETED,
    CONFIRMED,
    DEFAULT_PORT,
    FAILURE,
    PROCEEDING,
    PROVISIONAL,
    REQUEST,
    START,
    SUCCESS,
    TERMINATED,
    TIMER_G,
    TIMER_H,
    TIMER_I,
    TIMER_J,
    TIMER_L,
    TIMER_TRYING,
    TIMER_UNANSWERED,
    TRYING,
    TimerValues,
    Transaction,
    eventFor,
)

__all__ = [
    "DEFAULT_TRYING_DELAY",
    "InviteServerTransaction",
    "NonInviteServerTransaction",
    "ServerTransaction",
    "responseAddress",
    "sendToSender",
]


#: How long an INVITE server transaction waits for the TU's first response
#: before sending C{100 Trying} itself (RFC 3261 17.2.1: 200 ms).
DEFAULT_TRYING_DELAY = 0.2


def responseAddress(request: Request, flow: IFlow) -> tuple[str, int]:
    """
    Where responses to C{request} go on an unreliable flow (RFC 3261
    18.2.2 with RFC 3581).

    The host is the source address of the request: RFC 3261 18.2.1 has
    the server add C{received} whenever the sent-by host differs from the
    source address, so the source address is what C{received} says (a
    C{received} or C{rport} value the sender put in its own Via is never
    trusted: it would let anyone aim responses at a third party).  The port
    is the source port when the top Via has C{rport} (RFC 3581), else the
    sent-by port, else 5060.  C{maddr} (multicast) is ignored: responses
    are never sent to a multicast group.

    @param request: the request answered.
    @param flow: the L{IFlow} it arrived on.
    @return: C{(host, port)}.
    """
    sourceHost, sourcePort = flow.remote
    via = request.vias[0]
    if via.rport is not None:
        return sourceHost, sourcePort
    return sourceHost, via.port or DEFAULT_PORT


def sendToSender(
    flow: IFlow, request: Request, data: bytes, address: tuple[str, int] | None = None
) -> bool:
    """
    Send C{data} (a response to C{request}) back to the request's sender:
    over the connection on a reliable flow, else to C{address} or, without
    one, to L{responseAddress} (the source address of C{flow} when the top
    Via is malformed).

    @return: whether the flow took the data.
    """
    if flow.reliable:
        return flow.send(data)
    if address is None:
        try:
            address = responseAddress(request, flow)
        except (SIPParseError, IndexError):
            address = flow.remote
    return flow.sendTo(data, address)




class ServerTransaction(Transaction):
    """
    A server transaction (RFC 3261 17.2).

    The TU calls L{respond}.  Its own callbacks (an L{ITransactionUser}):
    C{transportError(tx)} when the flow refuses a response,
    C{ackTimeout(tx)} when timer H fires (INVITE only),
    C{ackReceived(request, flow)} for an ACK received in the Accepted state
    (INVITE only) and C{unanswered(tx)} when it never sent a final response
    (non-INVITE only).

    @ivar tu: the L{ITransactionUser}.
    @ivar lastResponse: the last response sent, or C{None}; a non-INVITE
        transaction lets go of it once it is completed (it resends the
        response's bytes).
    @ivar responseAddress: where responses go on an unreliable flow (see
        L{responseAddress}).
    """

    def __init__(
        self,
        request: Request,
        flow: IFlow,
        clock: ITimerQueue,
        tu: ITransactionUser,
        timers: TimerValues | None = None,
        onTerminated: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__(request, flow, clock, timers or TimerValues(), onTerminated)
        self.tu = tu
        self.lastResponse: Response | None = None
        #: the datagram the request arrived in, when the core recorded it
        #: (unreliable flows): a byte-identical datagram is a
        #: retransmission (L{TransactionLayer.findRetransmission}).
        self.received: bytes | None = None
        #: who the request was authenticated as (a
        #: L{sipcore.sip.auth.Identity}, set by the authentication guard).
        self.authenticated: Any = None
        self._lastData = b""
        self.responseAddress: tuple[str, int] | None = (
            None if self.reliable else responseAddress(request, flow)
        )

    def _transmit(self, data: bytes) -> bool:
        return sendToSender(self.flow, self.request, data, self.responseAddress)

    def _transportFailed(self) -> None:
        self._tell(self.tu.transportError, self)

    def start(self) -> None:
        """
        Start the timers the transaction still needs once its TU has had
        the request (the TU calls it once, whether it answered or not): a
        non-INVITE transaction without a final response starts its
        unanswered-request timer, an INVITE transaction that has sent
        nothing its 100 Trying timer; one answered at once needs neither.
        """
        self._fire(START)

    def respond(self, response: Response) -> bool:
        """
        Send C{response} (from the TU) through the flow the request came
        on, and move the machine accordingly.

        @return: C{True} if it was sent; C{False} if the current state
            discards it (a final response was already sent, or the
            transaction is terminated) or the flow refused it.
        """
        if not self._fire(eventFor(response.status), response):
            return False
        return self._lastSendOk

    def requestRetransmitted(self, request: Request) -> None:
        """
        A retransmission of the request arrived: replay the last response
        if the state says so.
        """
        self._fire(REQUEST, request)

    # actions

    def _sendResponse(self, response: Response) -> None:
        self.lastResponse = response
        self._lastData = response.serialize()
        self._send(self._lastData)

    def _resendLast(self, request: Request) -> None:
        if self._lastData:
            self._send(self._lastData)


class InviteServerTransaction(ServerTransaction):
    """
    The INVITE server transaction: RFC 3261 figure 7 with the RFC 6026
    Accepted state (timer L): after a 2xx the transaction lingers for
    C{64*T1} so that the TU's 2xx retransmissions go out through it and
    ACKs with its branch reach the TU (C{ackReceived}) instead of being
    absorbed.

    C{100 Trying} is sent by the transaction if the TU has not sent a
    provisional or final response within C{tryingDelay} seconds (200 ms by
    default, RFC 3261 17.2.1); C{tryingDelay=0} sends it at once.
    """

    _INITIAL = PROCEEDING

    def __init__(
        self,
        request: Request,
        flow: IFlow,
        clock: ITimerQueue,
        tu: ITransactionUser,
        timers: TimerValues | None = None,
        onTerminated: Callable[[Any], None] | None = None,
        tryingDelay: float = DEFAULT_TRYING_DELAY,
    ) -> None:
        super().__init__(request, flow, clock, tu, timers, onTerminated)
        self.tryingDelay = tryingDelay
        self._gInterval = self.timers.t1

    def ackReceived(self, request: Request, flow: IFlow) -> bool:
        """
        An ACK matching this transaction arrived.

        @return: C{False} if the state ignores it (Proceeding).
        """
        return self._fire(ACK, (request, flow))

    def _enter(self, state: str) -> None:
        if state == COMPLETED:
            if not self.reliable:
                self._gInterval = self.timers.t1
                self._startTimer(TIMER_G, self._gInterval)
            self._startTimer(TIMER_H, self.timers.timeout)
        elif state == CONFIRMED:
            self._startTimer(TIMER_I, self.timers.i(self.reliable))
        elif state == ACCEPTED:
            self._startTimer(TIMER_L, self.timers.timeout)

    def _startTrying(self, arg: Any) -> None:
        if self.lastResponse is None:
            self._startTimer(TIMER_TRYING, self.tryingDelay)

    def _sendTrying(self, arg: Any) -> None:
        if self.lastResponse is not None:
            return
        trying = Response.forRequest(self.request, 100)
        timestamp = self.request.headers.first("Timestamp")
        if timestamp:
            trying.headers.add("Timestamp", timestamp)
        self._sendResponse(trying)

    def _sendProvisional(self, response: Response) -> None:
        self._cancelTimer(TIMER_TRYING)
        self._sendResponse(response)

    def _retransmitFinal(self, arg: Any) -> None:
        if self._send(self._lastData):
            self._gInterval = min(2 * self._gInterval, self.timers.t2)
            self._startTimer(TIMER_G, self._gInterval)

    def _reportAckTimeout(self, arg: Any) -> None:
        self._tell(self.tu.ackTimeout, self)

    def _passAckToTU(self, arg: tuple[Request, IFlow]) -> None:
        request, flow = arg
        self._tell(self.tu.ackReceived, request, flow)


# RFC 3261 figure 7, with RFC 6026 figure 7 (Accepted); 100 Trying after
# tryingDelay.
InviteServerTransaction._TRANSITIONS = {
    (PROCEEDING, START): (None, InviteServerTransaction._startTrying),
    (PROCEEDING, TIMER_TRYING): (None, InviteServerTransaction._sendTrying),
    (PROCEEDING, REQUEST): (None, InviteServerTransaction._resendLast),
    (PROCEEDING, PROVISIONAL): (None, InviteServerTransaction._sendProvisional),
    (PROCEEDING, SUCCESS): (ACCEPTED, InviteServerTransaction._sendResponse),
    (PROCEEDING, FAILURE): (COMPLETED, InviteServerTransaction._sendResponse),
    (COMPLETED, REQUEST): (None, InviteServerTransaction._resendLast),
    (COMPLETED, TIMER_G): (None, InviteServerTransaction._retransmitFinal),
    (COMPLETED, TIMER_H): (TERMINATED, InviteServerTransaction._reportAckTimeout),
    (COMPLETED, ACK): (CONFIRMED, None),
    (CONFIRMED, ACK): (None, None),
    (CONFIRMED, REQUEST): (None, None),
    (CONFIRMED, TIMER_I): (TERMINATED, None),
    (ACCEPTED, REQUEST): (None, None),
    (ACCEPTED, ACK): (None, InviteServerTransaction._passAckToTU),
    (ACCEPTED, SUCCESS): (None, InviteServerTransaction._sendResponse),
    (ACCEPTED, TIMER_L): (TERMINATED, None),
}


class NonInviteServerTransaction(ServerTransaction):
    """
    The non-INVITE server transaction: RFC 3261 figure 8.  It never sends
    C{100 Trying} itself.
    """

    _INITIAL = TRYING
    _KEEP = {(TRYING, PROCEEDING): (TIMER_UNANSWERED,)}

    def _enter(self, state: str) -> None:
        if state == COMPLETED:
            # From now on the request only identifies the transaction: what
            # was parsed from it can go (it is parsed again if asked for),
            # and of the final response only its bytes are resent.  Fewer
            # objects for the garbage collector to walk while timer J runs.
            self.request.headers.forgetDerived()
            self.lastResponse = None
            self._startTimer(TIMER_J, self.timers.j(self.reliable))

    def _startUnanswered(self, arg: Any) -> None:
        self._startTimer(TIMER_UNANSWERED, 2 * self.timers.timeout)

    def _unanswered(self, arg: Any) -> None:
        self._tell(self.tu.unanswered, self)


# RFC 3261 figure 8, with the unanswered-request timer.
NonInviteServerTransaction._TRANSITIONS = {
    (TRYING, START): (None, NonInviteServerTransaction._startUnanswered),
    (PROCEEDING, START): (None, NonInviteServerTransaction._startUnanswered),
    (TRYING, REQUEST): (None, None),
    (TRYING, TIMER_UNANSWERED): (TERMINATED, NonInviteServerTransaction._unanswered),
    (PROCEEDING, TIMER_UNANSWERED): (TERMINATED, NonInviteServerTransaction._unanswered),
    (TRYING, PROVISIONAL): (PROCEEDING, NonInviteServerTransaction._sendResponse),
    (TRYING, SUCCESS): (COMPLETED, NonInviteServerTransaction._sendResponse),
    (TRYING, FAILURE): (COMPLETED, NonInviteServerTransaction._sendResponse),
    (PROCEEDING, REQUEST): (None, NonInviteServerTransaction._resendLast),
    (PROCEEDING, PROVISIONAL): (None, NonInviteServerTransaction._sendResponse),
    (PROCEEDING, SUCCESS): (COMPLETED, NonInviteServerTransaction._sendResponse),
    (PROCEEDING, FAILURE): (COMPLETED, NonInviteServerTransaction._sendResponse),
    (COMPLETED, REQUEST): (None, NonInviteServerTransaction._resendLast),
    (COMPLETED, TIMER_J): (TERMINATED, None),
}
