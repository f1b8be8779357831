# -*- test-case-name: tests.test_transaction -*-
"""
The SIP transaction layer: RFC 3261 section 17, with the C{Accepted} states
of RFC 6026.

Four explicit state machines, one per figure of RFC 3261 section 17:

  - L{InviteClientTransaction} (17.1.1, figure 5, plus RFC 6026 figure 5),
  - L{NonInviteClientTransaction} (17.1.2, figure 6),
  - L{InviteServerTransaction} (17.2.1, figure 7, plus RFC 6026 figure 7),
  - L{NonInviteServerTransaction} (17.2.2, figure 8),

and the L{TransactionLayer} that matches incoming messages to them
(17.1.3, 17.2.3, with the RFC 2543 fallback).

Each machine keeps its transitions in one table, C{_TRANSITIONS}, mapping
C{(state, event)} to C{(next state, action)}, the action one of the
machine's methods (the table follows the class, whose methods it holds);
an event not in the table is ignored in that state.  Timers run on an
injected L{ITimerQueue}; a terminated transaction has no delayed call left.

The layer only sends through L{IFlow} objects and schedules on its clock; it
does no DNS, opens no connection and builds no response other than the
automatic C{100 Trying} and the C{ACK} for a non-2xx final response.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sipcore.interfaces import IClientTransactionUser, IFlow, ITimer, ITimerQueue, ITransactionUser
from sipcore.message import Headers, Request, Response, SIPParseError
from sipcore.timers import TimerQueues

__all__ = [
    "ACCEPTED",
    "CALLING",
    "COMPLETED",
    "CONFIRMED",
    "DEFAULT_MAX_TRANSACTIONS",
    "DEFAULT_TRYING_DELAY",
    "MAGIC_COOKIE",
    "OVERLOADED",
    "PROCEEDING",
    "T1",
    "T2",
    "T4",
    "TERMINATED",
    "TRYING",
    "ClientTransaction",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "ServerTransaction",
    "TimerValues",
    "TransactionLayer",
    "buildAckForNon2xx",
    "buildCancel",
    "responseAddress",
    "sendToSender",
]

#: The RFC 3261 branch prefix; a branch without it is matched by the RFC
#: 2543 rules.
MAGIC_COOKIE = "z9hG4bK"

#: RTT estimate (seconds).
T1 = 0.5
#: Maximum retransmission interval for non-INVITE requests and INVITE
#: responses (seconds).
T2 = 4.0
#: Maximum time a message stays in the network (seconds).
T4 = 5.0

#: How long an INVITE server transaction waits for the TU's first response
#: before sending C{100 Trying} itself (RFC 3261 17.2.1: 200 ms).
DEFAULT_TRYING_DELAY = 0.2

#: The server transaction tables, by index (L{TransactionLayer}).
_SERVERS, _SERVERS_2543, _ACKS_2543 = 0, 1, 2

#: Default cap on transactions in flight.
DEFAULT_MAX_TRANSACTIONS = 50000

#: The Via port assumed when a sent-by has none (unreliable flows are UDP).
_DEFAULT_PORT = 5060
_DEFAULT_TLS_PORT = 5061

# -- states ---------------------------------------------------------------

CALLING = "Calling"
TRYING = "Trying"
PROCEEDING = "Proceeding"
COMPLETED = "Completed"
CONFIRMED = "Confirmed"
ACCEPTED = "Accepted"
TERMINATED = "Terminated"

# -- events ---------------------------------------------------------------

_START = "start"
# responses, received (client) or passed by the TU (server)
_PROVISIONAL = "1xx"
_SUCCESS = "2xx"
_FAILURE = "300-699"
# requests received (server)
_REQUEST = "request retransmission"
_ACK = "ACK"
# timers: the event name is the timer's letter
TIMER_A = "A"
TIMER_B = "B"
TIMER_D = "D"
TIMER_E = "E"
TIMER_F = "F"
TIMER_G = "G"
TIMER_H = "H"
TIMER_I = "I"
TIMER_J = "J"
TIMER_K = "K"
TIMER_L = "L"
TIMER_M = "M"
#: The INVITE server transaction's 200 ms "send 100 Trying" timer.
TIMER_TRYING = "100 Trying"
#: A non-INVITE server transaction whose transaction user never sends a
#: final response ends after 2*64*T1 (the client gave up at 64*T1, and a
#: proxy's own 408 after its Timer F still gets through), so a request
#: nobody answers cannot hold a transaction for ever.
TIMER_UNANSWERED = "unanswered"


class _Marker(enum.Enum):
    OVERLOADED = "overloaded"


#: What L{TransactionLayer.requestReceived} returns for a new request when
#: the layer already holds C{maxTransactions} transactions: the core should
#: answer C{503 Service Unavailable} statelessly (with C{Retry-After}).
OVERLOADED = _Marker.OVERLOADED


def _eventFor(status: int) -> str:
    if status < 200:
        return _PROVISIONAL
    if status < 300:
        return _SUCCESS
    return _FAILURE


@dataclass(frozen=True)
class TimerValues:
    """
    The base timer values and the RFC 3261 timers derived from them
    (RFC 3261 appendix A).

    @ivar t1: RTT estimate.
    @ivar t2: maximum retransmission interval of non-INVITE requests and
        INVITE responses.
    @ivar t4: maximum duration a message remains in the network.
    """

    t1: float = T1
    t2: float = T2
    t4: float = T4

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 > 0):
            raise ValueError("need 0 < t1 <= t2 and t4 > 0")

    @property
    def timeout(self) -> float:
        """
        C{64*T1}: timers B, F, H, L, M, and J on unreliable flows.
        """
        return 64 * self.t1

    def d(self, reliable: bool) -> float:
        """
        Timer D: wait for response retransmissions, at least 32 s
        (C{max(32, 64*T1)}) on unreliable flows, 0 on reliable ones.
        """
        return 0.0 if reliable else max(32.0, self.timeout)

    def i(self, reliable: bool) -> float:
        """
        Timer I: wait for ACK retransmissions, T4 unreliable, 0 reliable.
        """
        return 0.0 if reliable else self.t4

    def j(self, reliable: bool) -> float:
        """
        Timer J: wait for non-INVITE request retransmissions, C{64*T1}
        unreliable, 0 reliable.
        """
        return 0.0 if reliable else self.timeout

    def k(self, reliable: bool) -> float:
        """
        Timer K: wait for response retransmissions, T4 unreliable, 0
        reliable.
        """
        return 0.0 if reliable else self.t4


# -- helpers -----------------------------------------------------------------


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
    headers = Headers()
    headers.add("Via", str(request.vias[0]))
    _copyRoutes(request, headers)
    headers.add("Max-Forwards", "70")
    headers.add("From", request.headers.first("From") or "")
    headers.add("To", response.headers.first("To") or "")
    headers.add("Call-ID", request.callId)
    headers.add("CSeq", "{} ACK".format(request.cseq[0]))
    return Request("ACK", request.uri, headers)


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
    headers = Headers()
    headers.add("Via", str(request.vias[0]))
    _copyRoutes(request, headers)
    headers.add("Max-Forwards", "70")
    headers.add("From", request.headers.first("From") or "")
    headers.add("To", request.headers.first("To") or "")
    headers.add("Call-ID", request.callId)
    headers.add("CSeq", "{} CANCEL".format(request.cseq[0]))
    return Request("CANCEL", request.uri, headers)


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
    return sourceHost, via.port or _DEFAULT_PORT


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


def sentBy(via: Any) -> tuple[str, int]:
    """
    A Via's sent-by as transactions match it: lower-cased host and the
    port, 5060 (5061 for TLS and WSS) when the Via names none.
    """
    port = via.port
    if not port:
        transport = (via.transport or "").upper()
        port = _DEFAULT_TLS_PORT if transport in ("TLS", "WSS") else _DEFAULT_PORT
    return (via.host or "").lower(), int(port)


def _viaKey(via: Any) -> tuple[str, str, int, str]:
    """
    The top Via as the RFC 2543 matching rules compare it: transport,
    sent-by and branch (C{received}/C{rport}, which a server may add, are
    left out).
    """
    host, port = sentBy(via)
    return ((via.transport or "").upper(), host, port, via.branch or "")


def _tag(address: Any) -> str:
    if address is None:
        return ""
    return address.tag or ""


# -- the machines -----------------------------------------------------------

#: What a transition does: the action is called with the transaction and
#: the event's argument (the response, the request, ...).
_Action = Callable[[Any, Any], None]
_Transition = tuple[str | None, _Action | None]


class _Transaction:
    """
    What the four machines share: state, timers, the transition dispatcher,
    sending through the flow, calling the TU.

    @ivar request: the request that created the transaction.
    @ivar flow: the L{IFlow} it uses.
    @ivar state: the current state name.
    @ivar branch: the top Via branch of C{request}.
    @ivar method: the method of C{request}.
    @ivar reliable: whether C{flow} is reliable (no retransmissions,
        zero-length wait timers).
    """

    _log: ClassVar[Logger] = Logger()
    _INITIAL: ClassVar[str]
    #: C{(state, event)} -> C{(next state or None, action or None)}, set
    #: after each machine's class (its actions are its methods).
    _TRANSITIONS: ClassVar[dict[tuple[str, str], _Transition]]
    #: Timers that survive a given state change; every other is cancelled.
    _KEEP: ClassVar[dict[tuple[str, str], tuple[str, ...]]] = {}

    def __init__(
        self,
        request: Request,
        flow: IFlow,
        clock: ITimerQueue,
        timers: TimerValues,
        onTerminated: Callable[[Any], None] | None,
    ) -> None:
        self.request = request
        self.flow = flow
        self.clock = clock
        self.timers = timers
        self.reliable = bool(flow.reliable)
        self.branch: str = request.vias[0].branch or ""
        self.method: str = request.method
        self.state: str = self._INITIAL
        self._calls: dict[str, ITimer] = {}
        self._onTerminated = onTerminated
        self._lastSendOk = True

    def __repr__(self) -> str:
        return "<{} {} {} {}>".format(
            type(self).__name__, self.method, self.branch, self.state
        )

    # -- the dispatcher: every state change goes through here ---------------

    def _fire(self, event: str, arg: Any = None) -> bool:
        """
        Apply the transition for C{event} in the current state: change state
        (so the action and the TU see the new state), run the action, then
        start the new state's timers.

        @return: C{False} if C{event} means nothing in this state (ignored).
        """
        entry = self._TRANSITIONS.get((self.state, event))
        if entry is None:
            return False
        nextState, action = entry
        changing = nextState is not None and nextState != self.state
        if changing:
            assert nextState is not None
            self._setState(nextState, event)
        if action is not None:
            action(self, arg)
        if changing and self.state == nextState and nextState != TERMINATED:
            self._enter(nextState)
        return True

    def _setState(self, state: str, event: str) -> None:
        old = self.state
        self.state = state
        keep = self._KEEP.get((old, state), ())
        for name in list(self._calls):
            if name not in keep:
                self._cancelTimer(name)
        if state == TERMINATED and self._onTerminated is not None:
            onTerminated, self._onTerminated = self._onTerminated, None
            onTerminated(self)

    def _enter(self, state: str) -> None:
        """
        Entry action of C{state}: start its timers.  Overridden.
        """

    # -- timers -------------------------------------------------------------

    def _startTimer(self, name: str, delay: float) -> None:
        """
        Start timer C{name}; a zero delay (the reliable-flow value of D, I,
        J, K) fires it at once.
        """
        self._cancelTimer(name)
        if delay <= 0:
            self._fire(name)
            return
        self._calls[name] = self.clock.callLater(delay, self._timerFired, name)

    def _timerFired(self, name: str) -> None:
        self._calls.pop(name, None)
        self._fire(name)

    def _cancelTimer(self, name: str) -> None:
        call = self._calls.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    @property
    def timerNames(self) -> list[str]:
        """
        The names of the timers running now (sorted), for tests and metrics.
        """
        return sorted(self._calls)

    # -- I/O ------------------------------------------------------------------

    def _transmit(self, data: bytes) -> bool:
        raise NotImplementedError()

    def _send(self, data: bytes) -> bool:
        """
        Send C{data}; on failure move to Terminated and tell the TU
        (C{transportError}).

        @return: whether the flow took the data.
        """
        try:
            ok = bool(self._transmit(data))
        except Exception:
            self._log.failure("Flow {flow!r} raised on send", flow=self.flow)
            ok = False
        self._lastSendOk = ok
        if not ok and self.state != TERMINATED:
            self._setState(TERMINATED, "transport error")
            self._transportFailed()
        return ok

    def _transportFailed(self) -> None:
        """
        Tell the TU that the flow refused a message.  Overridden.
        """

    def _tell(self, callback: Callable[..., object], *args: Any) -> None:
        """
        Call C{callback}, a method of the TU, with C{args}; an exception is
        logged, never raised.
        """
        try:
            callback(*args)
        except Exception:
            self._log.failure("Transaction user callback {callback} failed",
                              callback=callback.__qualname__)

    # -- public -------------------------------------------------------------

    def terminate(self) -> None:
        """
        Terminate now, without telling the TU (shutdown).  Cancels every
        timer.
        """
        if self.state != TERMINATED:
            self._setState(TERMINATED, "terminate()")


# -- client -------------------------------------------------------------------


class ClientTransaction(_Transaction):
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
        self._fire(_START)

    def responseReceived(self, response: Response) -> bool:
        """
        Feed a response matched to this transaction.

        @return: C{False} if it was ignored in the current state (for
            instance a retransmitted final response in Completed, or
            anything after Terminated).
        """
        return self._fire(_eventFor(response.status), response)

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
    (CALLING, _START): (None, InviteClientTransaction._sendFirst),
    (CALLING, TIMER_A): (None, InviteClientTransaction._retransmit),
    (CALLING, TIMER_B): (TERMINATED, InviteClientTransaction._reportTimeout),
    (CALLING, _PROVISIONAL): (PROCEEDING, InviteClientTransaction._passToTU),
    (CALLING, _SUCCESS): (ACCEPTED, InviteClientTransaction._passToTU),
    (CALLING, _FAILURE): (COMPLETED, InviteClientTransaction._passToTUAndAck),
    (PROCEEDING, _PROVISIONAL): (None, InviteClientTransaction._passToTU),
    (PROCEEDING, _SUCCESS): (ACCEPTED, InviteClientTransaction._passToTU),
    (PROCEEDING, _FAILURE): (COMPLETED, InviteClientTransaction._passToTUAndAck),
    (COMPLETED, _FAILURE): (None, InviteClientTransaction._resendAck),
    (COMPLETED, TIMER_D): (TERMINATED, None),
    (ACCEPTED, _SUCCESS): (None, InviteClientTransaction._passToTU),
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
    (TRYING, _START): (None, NonInviteClientTransaction._sendFirst),
    (TRYING, TIMER_E): (None, NonInviteClientTransaction._retransmit),
    (TRYING, TIMER_F): (TERMINATED, NonInviteClientTransaction._reportTimeout),
    (TRYING, _PROVISIONAL): (PROCEEDING, NonInviteClientTransaction._passToTU),
    (TRYING, _SUCCESS): (COMPLETED, NonInviteClientTransaction._passToTU),
    (TRYING, _FAILURE): (COMPLETED, NonInviteClientTransaction._passToTU),
    (PROCEEDING, TIMER_E): (None, NonInviteClientTransaction._retransmitProceeding),
    (PROCEEDING, TIMER_F): (TERMINATED, NonInviteClientTransaction._reportTimeout),
    (PROCEEDING, _PROVISIONAL): (None, NonInviteClientTransaction._passToTU),
    (PROCEEDING, _SUCCESS): (COMPLETED, NonInviteClientTransaction._passToTU),
    (PROCEEDING, _FAILURE): (COMPLETED, NonInviteClientTransaction._passToTU),
    (COMPLETED, TIMER_K): (TERMINATED, None),
}


# -- server -------------------------------------------------------------------


class ServerTransaction(_Transaction):
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
        Start the transaction's timers, if any.  Called once by the layer.
        """
        self._fire(_START)

    def respond(self, response: Response) -> bool:
        """
        Send C{response} (from the TU) through the flow the request came
        on, and move the machine accordingly.

        @return: C{True} if it was sent; C{False} if the current state
            discards it (a final response was already sent, or the
            transaction is terminated) or the flow refused it.
        """
        if not self._fire(_eventFor(response.status), response):
            return False
        return self._lastSendOk

    def requestRetransmitted(self, request: Request) -> None:
        """
        A retransmission of the request arrived: replay the last response
        if the state says so.
        """
        self._fire(_REQUEST, request)

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
        return self._fire(_ACK, (request, flow))

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
    (PROCEEDING, _START): (None, InviteServerTransaction._startTrying),
    (PROCEEDING, TIMER_TRYING): (None, InviteServerTransaction._sendTrying),
    (PROCEEDING, _REQUEST): (None, InviteServerTransaction._resendLast),
    (PROCEEDING, _PROVISIONAL): (None, InviteServerTransaction._sendProvisional),
    (PROCEEDING, _SUCCESS): (ACCEPTED, InviteServerTransaction._sendResponse),
    (PROCEEDING, _FAILURE): (COMPLETED, InviteServerTransaction._sendResponse),
    (COMPLETED, _REQUEST): (None, InviteServerTransaction._resendLast),
    (COMPLETED, TIMER_G): (None, InviteServerTransaction._retransmitFinal),
    (COMPLETED, TIMER_H): (TERMINATED, InviteServerTransaction._reportAckTimeout),
    (COMPLETED, _ACK): (CONFIRMED, None),
    (CONFIRMED, _ACK): (None, None),
    (CONFIRMED, _REQUEST): (None, None),
    (CONFIRMED, TIMER_I): (TERMINATED, None),
    (ACCEPTED, _REQUEST): (None, None),
    (ACCEPTED, _ACK): (None, InviteServerTransaction._passAckToTU),
    (ACCEPTED, _SUCCESS): (None, InviteServerTransaction._sendResponse),
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
    (TRYING, _START): (None, NonInviteServerTransaction._startUnanswered),
    (TRYING, _REQUEST): (None, None),
    (TRYING, TIMER_UNANSWERED): (TERMINATED, NonInviteServerTransaction._unanswered),
    (PROCEEDING, TIMER_UNANSWERED): (TERMINATED, NonInviteServerTransaction._unanswered),
    (TRYING, _PROVISIONAL): (PROCEEDING, NonInviteServerTransaction._sendResponse),
    (TRYING, _SUCCESS): (COMPLETED, NonInviteServerTransaction._sendResponse),
    (TRYING, _FAILURE): (COMPLETED, NonInviteServerTransaction._sendResponse),
    (PROCEEDING, _REQUEST): (None, NonInviteServerTransaction._resendLast),
    (PROCEEDING, _PROVISIONAL): (None, NonInviteServerTransaction._sendResponse),
    (PROCEEDING, _SUCCESS): (COMPLETED, NonInviteServerTransaction._sendResponse),
    (PROCEEDING, _FAILURE): (COMPLETED, NonInviteServerTransaction._sendResponse),
    (COMPLETED, _REQUEST): (None, NonInviteServerTransaction._resendLast),
    (COMPLETED, TIMER_J): (TERMINATED, None),
}


# -- the layer ---------------------------------------------------------------


class TransactionLayer:
    """
    Matches messages to transactions, creates server transactions for new
    requests and client transactions for outgoing ones, and forgets them
    when they terminate.

    The TU given here (the core, an L{ITransactionUser}) receives the
    server transactions' callbacks: C{ackTimeout(tx)}, C{transportError(tx)},
    C{unanswered(tx)}, and C{ackReceived(request, flow)} for every ACK that is not absorbed by an
    INVITE server transaction (an ACK for a 2xx, which RFC 3261 makes a
    transaction of its own, an ACK matching nothing, or an ACK arriving in
    the Accepted state).

    @ivar strayResponses: responses that matched no client transaction.
    @ivar strayAcks: ACKs that matched no server transaction.
    @ivar retransmissionsAbsorbed: requests matched to an existing server
        transaction (retransmissions) and duplicate ACKs absorbed in
        Confirmed.
    @ivar refusedTransactions: new requests refused with L{OVERLOADED}.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        tu: ITransactionUser,
        t1: float = T1,
        t2: float = T2,
        t4: float = T4,
        maxTransactions: int = DEFAULT_MAX_TRANSACTIONS,
        tryingDelay: float = DEFAULT_TRYING_DELAY,
    ) -> None:
        self.clock = clock
        # the transactions' timers, queued by delay (L{TimerQueues})
        self._timerQueues = TimerQueues(clock)
        self.tu = tu
        self.timers = TimerValues(t1, t2, t4)
        self.maxTransactions = maxTransactions
        self.tryingDelay = tryingDelay
        self.strayResponses = 0
        self.strayAcks = 0
        self.retransmissionsAbsorbed = 0
        self.refusedTransactions = 0
        self._overloaded = False
        # (branch, sent-by host, sent-by port, method) -> tx  (RFC 3261)
        self._servers: dict[tuple[Any, ...], ServerTransaction] = {}
        # (uri, to tag, from tag, call-id, cseq, cseq method, via) -> tx  (RFC 2543)
        self._servers2543: dict[tuple[Any, ...], ServerTransaction] = {}
        # (uri, from tag, call-id, cseq, via) -> INVITE tx  (RFC 2543 ACK)
        self._acks2543: dict[tuple[Any, ...], InviteServerTransaction] = {}
        # (branch, method) -> tx
        self._clients: dict[tuple[str, str], ClientTransaction] = {}
        # the datagram a live UDP server transaction's request came in -> tx
        self._datagrams: dict[bytes, ServerTransaction] = {}
        # the keys a live server transaction is found by: (table, key)
        # pairs, the table by its index in _serverTables.  Tuples of plain
        # values, which the garbage collector stops tracking.
        self._serverTables: tuple[dict[Any, Any], ...] = (
            self._servers, self._servers2543, self._acks2543)
        self._serverKeys: dict[ServerTransaction, tuple[tuple[int, Any], ...]] = {}
        # One bound method for every transaction, not one each.
        self._onServerTerminated = self._serverTerminated
        self._onClientTerminated = self._clientTerminated

    # -- counters -----------------------------------------------------------

    @property
    def serverTransactions(self) -> int:
        """
        The number of server transactions not yet terminated.
        """
        return len(self._serverKeys)

    @property
    def clientTransactions(self) -> int:
        """
        The number of client transactions not yet terminated.
        """
        return len(self._clients)

    @property
    def activeTransactions(self) -> int:
        """
        Server plus client transactions in flight.
        """
        return self.serverTransactions + self.clientTransactions

    def stats(self) -> dict[str, int]:
        """
        The counters, for metrics.
        """
        return {
            "serverTransactions": self.serverTransactions,
            "clientTransactions": self.clientTransactions,
            "strayResponses": self.strayResponses,
            "strayAcks": self.strayAcks,
            "retransmissionsAbsorbed": self.retransmissionsAbsorbed,
            "refusedTransactions": self.refusedTransactions,
        }

    # -- keys ---------------------------------------------------------------

    @staticmethod
    def _isRfc3261(branch: str | None) -> bool:
        return branch is not None and branch.startswith(MAGIC_COOKIE)

    @staticmethod
    def _key3261(request: Request, method: str) -> tuple[Any, ...]:
        via = request.vias[0]
        host, port = sentBy(via)
        return (via.branch, host, port, method)

    @staticmethod
    def _key2543(request: Request, cseqMethod: str) -> tuple[Any, ...]:
        number, _ = request.cseq
        return (
            str(request.uri),
            _tag(request.toAddr),
            _tag(request.fromAddr),
            request.callId,
            number,
            cseqMethod,
            _viaKey(request.vias[0]),
        )

    @staticmethod
    def _ackKey2543(request: Request) -> tuple[Any, ...]:
        number, _ = request.cseq
        return (
            str(request.uri),
            _tag(request.fromAddr),
            request.callId,
            number,
            _viaKey(request.vias[0]),
        )

    # -- server side --------------------------------------------------------

    def findServerTransaction(self, request: Request) -> ServerTransaction | None:
        """
        The server transaction C{request} matches (RFC 3261 17.2.3), ACK
        included (it matches its INVITE transaction; under the RFC 2543
        rules only if its To tag is that of the response sent), or C{None}.
        """
        via = request.vias[0]
        method = request.method
        if self._isRfc3261(via.branch):
            return self._servers.get(
                self._key3261(request, "INVITE" if method == "ACK" else method)
            )
        if method == "ACK":
            tx = self._acks2543.get(self._ackKey2543(request))
            if tx is None:
                return None
            sent = tx.lastResponse
            sentTag = _tag(sent.toAddr) if sent is not None else ""
            return tx if sentTag == _tag(request.toAddr) else None
        return self._servers2543.get(self._key2543(request, request.cseq[1]))

    def findRetransmission(self, data: bytes) -> ServerTransaction | None:
        """
        The live server transaction whose request arrived in exactly the
        datagram C{data} (recorded with L{recordDatagram}), found without
        parsing C{data}: byte-identical requests have the same transaction
        key, so this is the transaction a parse would match.  C{None}: parse
        C{data} and match it normally.
        """
        return self._datagrams.get(data)

    def recordDatagram(self, tx: ServerTransaction, data: bytes) -> None:
        """
        Remember that C{tx}'s request arrived in the datagram C{data}, for
        L{findRetransmission}, until C{tx} terminates.
        """
        if tx not in self._serverKeys:
            return
        tx.received = data
        self._datagrams[data] = tx

    def absorbRetransmission(self, tx: ServerTransaction) -> None:
        """
        Feed a retransmission found by L{findRetransmission} to C{tx}, as
        L{requestReceived} does for a parsed one: counted, and the last
        response replayed if the state says so.
        """
        self.retransmissionsAbsorbed += 1
        tx.requestRetransmitted(tx.request)

    def findInviteForCancel(self, cancel: Request) -> InviteServerTransaction | None:
        """
        The INVITE server transaction a C{CANCEL} cancels (RFC 3261 9.2: the
        INVITE matching rules with the method taken as INVITE), or C{None}
        (the core answers the CANCEL with 481).
        """
        via = cancel.vias[0]
        if self._isRfc3261(via.branch):
            tx = self._servers.get(self._key3261(cancel, "INVITE"))
        else:
            tx = self._servers2543.get(self._key2543(cancel, "INVITE"))
        return tx if isinstance(tx, InviteServerTransaction) else None

    def requestReceived(
        self, request: Request, flow: IFlow
    ) -> tuple[ServerTransaction, bool] | Literal[_Marker.OVERLOADED] | None:
        """
        Match an incoming request to a server transaction, or create one.

        @param request: a parsed request (with Via, CSeq, Call-ID, From, To).
        @param flow: the L{IFlow} it arrived on.
        @return: C{(transaction, True)} for a new request, which the TU
            must answer with C{transaction.respond}; C{(transaction, False)}
            for a retransmission, already handled (the last response was
            replayed): ignore it; C{None} for an ACK, which is either
            absorbed by its INVITE transaction or handed to the TU's
            C{ackReceived(request, flow)}; L{OVERLOADED} when the layer
            holds C{maxTransactions} transactions: answer C{503}
            statelessly.
        @raise ValueError: the request has no Via.
        """
        if not request.vias:
            raise ValueError("request has no Via")
        tx = self.findServerTransaction(request)
        if request.method == "ACK":
            if isinstance(tx, InviteServerTransaction):
                if tx.state == CONFIRMED:
                    self.retransmissionsAbsorbed += 1
                if tx.ackReceived(request, flow):
                    return None
            self.strayAcks += 1
            try:
                self.tu.ackReceived(request, flow)
            except Exception:
                self._log.failure("Transaction user {tu!r} failed on an ACK", tu=self.tu)
            return None
        if tx is not None:
            self.retransmissionsAbsorbed += 1
            tx.requestRetransmitted(request)
            return (tx, False)
        if self.activeTransactions >= self.maxTransactions:
            self.refusedTransactions += 1
            if not self._overloaded:
                self._overloaded = True
                self._log.warn(
                    "Transaction limit {limit} reached: refusing new requests",
                    limit=self.maxTransactions,
                )
            return OVERLOADED
        if self._overloaded:
            self._overloaded = False
            self._log.info("Below the transaction limit again: accepting new requests")
        return (self._createServer(request, flow), True)

    def _createServer(self, request: Request, flow: IFlow) -> ServerTransaction:
        tx: ServerTransaction
        if request.method == "INVITE":
            tx = InviteServerTransaction(
                request,
                flow,
                self._timerQueues,
                self.tu,
                self.timers,
                self._onServerTerminated,
                tryingDelay=self.tryingDelay,
            )
        else:
            tx = NonInviteServerTransaction(
                request, flow, self._timerQueues, self.tu, self.timers, self._onServerTerminated
            )
        keys: tuple[tuple[int, Any], ...]
        if self._isRfc3261(tx.branch):
            keys = ((_SERVERS, self._key3261(request, request.method)),)
        elif isinstance(tx, InviteServerTransaction):
            keys = ((_SERVERS_2543, self._key2543(request, request.cseq[1])),
                    (_ACKS_2543, self._ackKey2543(request)))
        else:
            keys = ((_SERVERS_2543, self._key2543(request, request.cseq[1])),)
        tables = self._serverTables
        for index, key in keys:
            tables[index][key] = tx
        self._serverKeys[tx] = keys
        tx.start()
        return tx

    def _serverTerminated(self, tx: ServerTransaction) -> None:
        tables = self._serverTables
        for index, key in self._serverKeys.pop(tx, ()):
            table = tables[index]
            if table.get(key) is tx:
                del table[key]
        data = tx.received
        if data is not None and self._datagrams.get(data) is tx:
            del self._datagrams[data]

    # -- client side ----------------------------------------------------------

    def sendRequest(
        self,
        request: Request,
        flow: IFlow,
        address: tuple[str, int] | None,
        tu: IClientTransactionUser,
    ) -> ClientTransaction:
        """
        Send C{request} in a new client transaction.

        The transaction is never refused for the cap (the server
        transaction that led to it was already accepted).  If the flow
        refuses the request at once, the transaction is already terminated
        and C{tu.transportError} was called when this returns.

        @param request: the request, its top Via carrying a branch unique
            to this transaction (C{generateBranch()}); a C{CANCEL} reuses
            the branch of the request it cancels (see L{buildCancel}).
        @param flow: the L{IFlow} to send on.
        @param address: C{(host, port)} for an unreliable flow, or C{None}
            to use C{flow.send}; ignored for reliable flows.
        @param tu: the L{IClientTransactionUser}: receives
            C{responseReceived(response, tx)}, C{timeout(tx)} and
            C{transportError(tx)}.
        @return: the L{ClientTransaction}.
        @raise ValueError: the request is an ACK (not a transaction: send it
            directly on the flow), has no Via branch, or its branch and
            method are already in use.
        """
        if request.method == "ACK":
            raise ValueError("ACK is not sent in a client transaction")
        if not request.vias or not request.vias[0].branch:
            raise ValueError("request has no Via branch")
        key = (request.vias[0].branch, request.method)
        if key in self._clients:
            raise ValueError("a client transaction already uses this branch and method")
        cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        tx = cls(request, flow, address, self._timerQueues, tu, self.timers,
                 self._onClientTerminated)
        self._clients[key] = tx
        tx.start()
        return tx

    def _clientTerminated(self, tx: ClientTransaction) -> None:
        key = (tx.branch, tx.method)
        if self._clients.get(key) is tx:
            del self._clients[key]

    def responseReceived(self, response: Response, flow: IFlow) -> bool:
        """
        Match a response to a client transaction (RFC 3261 17.1.3: top Via
        branch and CSeq method) and feed it.

        @return: C{False} if it matches none (counted in C{strayResponses});
            a proxy forwards such a response statelessly (RFC 3261 16.7).
        """
        vias = response.vias
        tx = None
        if vias and vias[0].branch:
            tx = self._clients.get((vias[0].branch, response.cseq[1]))
        if tx is None:
            self.strayResponses += 1
            return False
        tx.responseReceived(response)
        return True

    # -- shutdown -------------------------------------------------------------

    def terminateAll(self) -> None:
        """
        Terminate every transaction without telling the TUs, cancelling all
        their timers (shutdown).
        """
        transactions: Iterable[_Transaction] = list(self._serverKeys) + list(
            self._clients.values()
        )
        for tx in transactions:
            tx.terminate()
