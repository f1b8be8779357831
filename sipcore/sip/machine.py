# -*- test-case-name: tests.test_transaction -*-
"""
What the four transaction state machines of RFC 3261 section 17 share: the
timer values (appendix A), the names of the states and events, and
L{Transaction}, the base class that holds the state, runs the transition
table, starts and cancels the timers and sends through the flow.

The machines are in L{sipcore.sip.clienttransaction} and
L{sipcore.sip.servertransaction}; L{sipcore.sip.transaction} holds the
layer that matches messages to them.

Each machine keeps its transitions in one table, C{_TRANSITIONS}, mapping
C{(state, event)} to C{(next state, action)}, the action one of the
machine's methods (the table follows the class, whose methods it holds);
an event not in the table is ignored in that state.  Timers run on an
injected L{ITimerQueue}; a terminated transaction has no delayed call left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from twisted.logger import Logger

from sipcore.interfaces import IFlow, ITimer, ITimerQueue
from sipcore.message import Request

__all__ = [
    "ACCEPTED",
    "ACK",
    "CALLING",
    "COMPLETED",
    "CONFIRMED",
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "FAILURE",
    "PROCEEDING",
    "PROVISIONAL",
    "REQUEST",
    "START",
    "SUCCESS",
    "T1",
    "T2",
    "T4",
    "TERMINATED",
    "TIMER_A",
    "TIMER_B",
    "TIMER_D",
    "TIMER_E",
    "TIMER_F",
    "TIMER_G",
    "TIMER_H",
    "TIMER_I",
    "TIMER_J",
    "TIMER_K",
    "TIMER_L",
    "TIMER_M",
    "TIMER_TRYING",
    "TIMER_UNANSWERED",
    "TRYING",
    "TimerValues",
    "Transaction",
    "eventFor",
]

#: RTT estimate (seconds).
T1 = 0.5
#: Maximum retransmission interval for non-INVITE requests and INVITE
#: responses (seconds).
T2 = 4.0
#: Maximum time a message stays in the network (seconds).
T4 = 5.0

#: The Via port assumed when a sent-by has none (unreliable flows are UDP).
DEFAULT_PORT = 5060
DEFAULT_TLS_PORT = 5061

# -- states ---------------------------------------------------------------

CALLING = "Calling"
TRYING = "Trying"
PROCEEDING = "Proceeding"
COMPLETED = "Completed"
CONFIRMED = "Confirmed"
ACCEPTED = "Accepted"
TERMINATED = "Terminated"

# -- events ---------------------------------------------------------------

START = "start"
# responses, received (client) or passed by the TU (server)
PROVISIONAL = "1xx"
SUCCESS = "2xx"
FAILURE = "300-699"
# requests received (server)
REQUEST = "request retransmission"
ACK = "ACK"
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


def eventFor(status: int) -> str:
    """
    The event a response of C{status} is to a machine: L{PROVISIONAL},
    L{SUCCESS} or L{FAILURE}.
    """
    if status < 200:
        return PROVISIONAL
    if status < 300:
        return SUCCESS
    return FAILURE


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


# -- the machines -----------------------------------------------------------

#: What a transition does: the action is called with the transaction and
#: the event's argument (the response, the request, ...).
_Action = Callable[[Any, Any], None]
_Transition = tuple[str | None, _Action | None]


class Transaction:
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
