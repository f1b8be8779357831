# -*- test-case-name: tests.test_transaction -*-
"""
The SIP transaction layer: RFC 3261 section 17, with the C{Accepted} states
of RFC 6026.

L{TransactionLayer} matches incoming messages to transactions (17.1.3,
17.2.3, with the RFC 2543 fallback), creates server transactions for new
requests and client transactions for outgoing ones, and forgets them when
they terminate.  The four state machines, one per figure of RFC 3261
section 17, are in L{sipcore.sip.clienttransaction} (17.1.1, 17.1.2) and
L{sipcore.sip.servertransaction} (17.2.1, 17.2.2), on the base of
L{sipcore.sip.machine}.

The layer only sends through L{IFlow} objects and schedules on its clock; it
does no DNS, opens no connection and builds no response other than the
automatic C{100 Trying} and the C{ACK} for a non-2xx final response.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, Literal

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sipcore.interfaces import IClientTransactionUser, IFlow, ITransactionUser
from sipcore.message import Request, Response
from sipcore.sip.clienttransaction import (
    ClientTransaction,
    InviteClientTransaction,
    NonInviteClientTransaction,
)
from sipcore.sip.machine import (
    CONFIRMED,
    DEFAULT_PORT,
    DEFAULT_TLS_PORT,
    T1,
    T2,
    T4,
    TimerValues,
    Transaction,
)
from sipcore.sip.servertransaction import (
    DEFAULT_TRYING_DELAY,
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
)
from sipcore.timers import TimerQueues

__all__ = [
    "DEFAULT_MAX_TRANSACTIONS",
    "MAGIC_COOKIE",
    "OVERLOADED",
    "TransactionLayer",
    "sentBy",
]

#: The RFC 3261 branch prefix; a branch without it is matched by the RFC
#: 2543 rules.
MAGIC_COOKIE = "z9hG4bK"

#: The server transaction tables, by index (L{TransactionLayer}).
_SERVERS, _SERVERS_2543, _ACKS_2543 = 0, 1, 2

#: Default cap on transactions in flight.
DEFAULT_MAX_TRANSACTIONS = 50000

class _Marker(enum.Enum):
    OVERLOADED = "overloaded"


#: What L{TransactionLayer.requestReceived} returns for a new request when
#: the layer already holds C{maxTransactions} transactions: the core should
#: answer C{503 Service Unavailable} statelessly (with C{Retry-After}).
OVERLOADED = _Marker.OVERLOADED


def sentBy(via: Any) -> tuple[str, int]:
    """
    A Via's sent-by as transactions match it: lower-cased host and the
    port, 5060 (5061 for TLS and WSS) when the Via names none.
    """
    port = via.port
    if not port:
        transport = (via.transport or "").upper()
        port = DEFAULT_TLS_PORT if transport in ("TLS", "WSS") else DEFAULT_PORT
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
    @ivar strayAcks: ACKs that matched no server transaction and that the
        TU did not take as belonging to a dialog.
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
            must answer with C{transaction.respond} and, once it has had
            the request (answered or not), start with
            C{transaction.start()}; C{(transaction, False)}
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
            try:
                inDialog = self.tu.ackReceived(request, flow)
            except Exception:
                self._log.failure("Transaction user {tu!r} failed on an ACK", tu=self.tu)
                inDialog = False
            if not inDialog:
                self.strayAcks += 1
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
        transactions: Iterable[Transaction] = list(self._serverKeys) + list(
            self._clients.values()
        )
        for tx in transactions:
            tx.terminate()
