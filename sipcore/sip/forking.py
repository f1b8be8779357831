# -*- test-case-name: tests.test_proxy -*-
"""
Forking (RFC 3261 16.6 to 16.8): the response context of one proxied
request (L{ResponseContext}), the branches it forked to (L{Branch}, the TU
of each branch's client transaction), timer C and CANCEL of INVITE
branches, and the choice of the best final response.

The L{sipcore.sip.proxy.Proxy} decides where a request goes (a
L{Decision}: one L{Target} per branch) and builds and sends each branch's
request (L{sipcore.sip.proxy.Proxy.sendBranch}); what the branches answer
is gathered here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from zope.interface import implementer

from sipcore.dns import Location
from sipcore.interfaces import IClientTransactionUser, IFlow
from sipcore.location import Binding
from sipcore.message import URI, Request, Response, SIPParseError, generateTag
from sipcore.sip.clienttransaction import buildCancel
from sipcore.sip.machine import ACCEPTED, PROCEEDING, TRYING
from sipcore.sip.routing import NextHop, chooseBest
from sipcore.sip.servertransaction import sendToSender

if TYPE_CHECKING:
    from sipcore.sip.proxy import Proxy

__all__ = ["Branch", "Decision", "IgnoreResponses", "ResponseContext", "Target"]


@dataclass
class Target:
    """
    One place a request is forked to.

    @ivar uri: the new Request-URI, or C{None} to keep it.
    @ivar conid: deliver over this connection of this node.
    @ivar hop: else deliver to this address.
    @ivar locate: else deliver to the locations of this URI (RFC 3263).
    @ivar routes: C{Route} values to put on top (a binding's Path).
    @ivar failStatus: the status of the branch when it cannot be sent.
    @ivar binding: the binding this target comes from, if any.
    @ivar node: the C{server_id} of the cluster member the target is
        reached through (C{hop} is its node URI), or C{None}.
    """

    uri: URI | None = None
    conid: int | None = None
    hop: NextHop | None = None
    locate: URI | None = None
    routes: list[str] = field(default_factory=list)
    failStatus: int = 503
    failReason: str = "Service Unavailable"
    binding: Binding | None = None
    node: int | None = None


@dataclass
class Decision:
    """
    Where a request goes: the request to copy for each branch (own Route
    entries removed), and either targets or an address of record to look
    up.
    """

    request: Request
    targets: list[Target]
    aor: str | None = None
    loopHash: str = ""
    #: whether the routers are asked when no binding takes it (an initial
    #: request for no registered local user).
    routable: bool = False
    #: try the targets one after another (failover) rather than all at once.
    serial: bool = False
    #: the C{server_id} of the cluster member the request came from, when
    #: it named one of this node's connections.
    fromNode: int | None = None


@implementer(IClientTransactionUser)
class IgnoreResponses:
    """
    The TU of the CANCELs the proxy sends: their responses mean nothing.
    """

    def responseReceived(self, response: Response, tx: Any) -> None:
        pass

    def timeout(self, tx: Any) -> None:
        pass

    def transportError(self, tx: Any) -> None:
        pass


_IGNORE = IgnoreResponses()


@implementer(IClientTransactionUser)
class Branch:
    """
    One forked request: the client transaction's TU.

    @ivar final: the branch's final response (C{None} while pending).
    @ivar local: whether C{final} was made by the proxy (timeout,
        unreachable) rather than received.
    @ivar locations: the locations not tried yet (failover, RFC 3263 4.3).
    @ivar location: the location it was last sent to.
    @ivar decision: the decision it was sent for.
    """

    _log = Logger()

    def __init__(self, context: ResponseContext, target: Target) -> None:
        self.context = context
        self.target = target
        self.request: Request | None = None
        self.flow: IFlow | None = None
        self.address: tuple[str, int] | None = None
        self.tx: Any = None
        self.branchId = ""
        self.final: Response | None = None
        self.local = False
        self.locations: list[Location] = []
        self.location: Location | None = None
        self.decision: Decision | None = None
        self.provisional = False
        self.cancelStatus: int | None = None
        self.cancelSent = False
        self._timerC: IDelayedCall | None = None
        self._guard: IDelayedCall | None = None

    def __repr__(self) -> str:
        return "<Branch {} final={}>".format(
            self.request.uri if self.request is not None else None,
            self.final.status if self.final is not None else None)

    @property
    def done(self) -> bool:
        return self.final is not None

    # -- client transaction TU ---------------------------------------------

    def responseReceived(self, response: Response, tx: Any) -> None:
        self.context.branchResponse(self, response)

    def timeout(self, tx: Any) -> None:
        if not self.context.proxy.failover(self, "transaction timeout"):
            self.fail(408, "Request Timeout")

    def transportError(self, tx: Any) -> None:
        if not self.context.proxy.failover(self, "transport error"):
            self.fail(self.target.failStatus, self.target.failReason)

    # -- timers ---------------------------------------------------------------

    def startTimerC(self) -> None:
        self.stopTimers()
        proxy = self.context.proxy
        self._timerC = proxy.clock.callLater(proxy.policy.timerC, self._timerCFired)

    def _timerCFired(self) -> None:
        self._timerC = None
        if self.done:
            return
        self.context.proxy.stats["timerC"] += 1
        if self.provisional:
            self.cancel(408)
        else:
            # Behave as if the transaction had received a 408 (16.8).
            if self.tx is not None:
                self.tx.terminate()
            self.fail(408, "Request Timeout")

    def _guardFired(self) -> None:
        self._guard = None
        if self.done:
            return
        # The callee never answered the CANCEL with a final response.
        if self.tx is not None:
            self.tx.terminate()
        status = self.cancelStatus or 487
        self.fail(status, "Request Timeout" if status == 408 else "Request Terminated")

    def stopTimers(self) -> None:
        for call in (self._timerC, self._guard):
            if call is not None and call.active():
                call.cancel()
        self._timerC = self._guard = None

    # -- actions --------------------------------------------------------------

    def cancel(self, status: int) -> None:
        """
        Cancel this branch (an INVITE): send a CANCEL now if a provisional
        response came, else as soon as one comes (RFC 3261 9.1).
        """
        if self.done or self.cancelStatus is not None:
            return
        self.cancelStatus = status
        if self.provisional:
            self._sendCancel()

    def _sendCancel(self) -> None:
        if self.cancelSent or self.request is None or self.flow is None:
            return
        self.cancelSent = True
        proxy = self.context.proxy
        try:
            proxy.transactions.sendRequest(
                buildCancel(self.request), self.flow, self.address, _IGNORE)
        except ValueError:
            self._log.failure("could not send CANCEL for {branch!r}", branch=self)
        proxy.stats["cancelsSent"] += 1
        if self._timerC is not None and self._timerC.active():
            self._timerC.cancel()
        self._timerC = None
        self._guard = proxy.clock.callLater(
            proxy.transactions.timers.timeout, self._guardFired)

    def provisionalReceived(self, status: int) -> None:
        if status == 100:
            return
        self.provisional = True
        if self.cancelStatus is not None:
            self._sendCancel()
        elif self._timerC is not None:
            self.startTimerC()

    def fail(self, status: int, reason: str) -> None:
        """
        End the branch with a response made by the proxy.
        """
        if self.done:
            return
        response = Response.forRequest(self.context.request, status, reason, toTag=generateTag())
        self.context.branchFinal(self, response, local=True)


class ResponseContext:
    """
    The response context of one request (RFC 3261 16.7).
    """

    def __init__(self, proxy: Proxy, tx: Any) -> None:
        self.proxy = proxy
        self.tx = tx
        self.request: Request = tx.request
        self.isInvite = self.request.method == "INVITE"
        self.branches: list[Branch] = []
        self.finalSent = False
        self.cancelled = False
        self.starting = True
        self.finals: list[tuple[Response, bool]] = []
        # Serial targets not tried yet, and the decision they come from.
        self.waiting: list[Target] = []
        self.decision: Decision | None = None
        self.tried: set[str] = set()

    # -- upstream -------------------------------------------------------------

    def sendUpstream(self, response: Response) -> None:
        """
        Send a response to the caller through the server transaction; a
        2xx to INVITE the transaction no longer takes (it already sent a
        final response) goes statelessly over the same flow.
        """
        tx = self.tx
        if tx.state in (TRYING, PROCEEDING, ACCEPTED):
            tx.respond(response)
            return
        if self.isInvite and 200 <= response.status < 300:
            sendToSender(tx.flow, self.request, response.serialize())
            self.proxy.stats["lateSuccessForwarded"] += 1

    def respondLocally(self, status: int, reason: str,
                       headers: Iterable[tuple[str, str]] = ()) -> None:
        """
        Send a final response made by the proxy (if none was sent yet).
        """
        if self.finalSent:
            return
        self._final(status)
        self.proxy.core.respond(self.tx, status, reason, headers=headers, toTag=generateTag())
        self.proxy.forget(self)

    def _final(self, status: int) -> None:
        """
        The caller gets its final response, of C{status}: count it.
        """
        self.finalSent = True
        self.proxy.answered(self.request.method, status)

    # -- branches -----------------------------------------------------------------

    def start(self, targets: list[Target], decision: Decision) -> None:
        """
        Send a branch to each target (to the first only when the decision
        is serial: the others wait for its failure).
        """
        self.decision = decision
        if decision.serial:
            self.waiting = list(targets[1:])
            targets = targets[:1]
        for target in targets:
            self._send(target)
        self.starting = False
        self._maybeFinish()

    def _send(self, target: Target) -> None:
        assert self.decision is not None
        if target.uri is not None:
            self.tried.add(str(target.uri))
        branch = Branch(self, target)
        self.branches.append(branch)
        self.proxy.sendBranch(self, branch, self.decision)

    def _failover(self) -> bool:
        """
        Send the next serial target when the last branch failed with
        C{408} or a C{5xx} and the caller has not cancelled.

        @return: whether a branch was sent.
        """
        if not self.waiting or self.cancelled or self.finalSent or not self.finals:
            return False
        status = self.finals[-1][0].status
        if status != 408 and not 500 <= status < 600:
            return False
        self._send(self.waiting.pop(0))
        return True

    def _recurse(self, response: Response) -> bool:
        """
        Under C{redirects = recurse}, send a branch to each SIP Contact of
        a 3xx not tried yet, while the request has had fewer than
        C{maxBranches} branches.

        @return: whether a branch was sent (the 3xx is then not a candidate
            for the caller).
        """
        from sipcore.sip.proxy import RECURSE

        proxy = self.proxy
        if proxy.policy.redirects != RECURSE or self.cancelled or self.finalSent:
            return False
        try:
            contacts = response.contacts
        except SIPParseError:
            return False
        if contacts == "*":
            return False
        sent = False
        for contact in contacts:
            uri = contact.uri
            if not uri.isSIP or str(uri) in self.tried:
                continue
            if len(self.branches) >= proxy.policy.maxBranches:
                proxy.stats["redirectsCapped"] += 1
                break
            proxy.stats["redirectsFollowed"] += 1
            self._send(proxy.targetOf(uri))
            sent = True
        return sent

    def branchResponse(self, branch: Branch, response: Response) -> None:
        if response.headers.removeFirst("Via") is None or not response.headers.lines("Via"):
            # Nothing left to send it to.
            self.proxy.stats["responsesWithoutVia"] += 1
            return
        status = response.status
        if status < 200:
            branch.provisionalReceived(status)
            if status != 100 and not self.finalSent and not self.cancelled:
                self.sendUpstream(response)
            return
        if 200 <= status < 300:
            if branch.final is None:
                branch.final = response
                branch.stopTimers()
                self.proxy.branchEnded(branch)
            if self.isInvite:
                self.sendUpstream(response)
                if not self.finalSent:
                    self._final(status)
                    self.proxy.forget(self)
                self.cancelOthers(branch, 200)
            elif not self.finalSent:
                self._final(status)
                self.sendUpstream(response)
                self.proxy.forget(self)
            self._maybeFinish()
            return
        if branch.done:
            return
        if status == 503 and self.proxy.failover(branch, "503 response"):
            return
        local = False
        if status == 430 and branch.target.node is not None:
            # The member holding the connection says it is gone (RFC 5626
            # section 5.3): the caller learns what it would have, had the
            # connection been this node's.
            target = branch.target
            response = Response.forRequest(self.request, target.failStatus, target.failReason,
                                           toTag=generateTag())
            local = True
        elif status == 487 and branch.cancelStatus == 408:
            # Cancelled by timer C: the caller learns of a timeout.
            response = Response.forRequest(self.request, 408, "Request Timeout",
                                           toTag=generateTag())
            local = True
        self.branchFinal(branch, response, local=local)

    def branchFinal(self, branch: Branch, response: Response, local: bool) -> None:
        if branch.done:
            return
        branch.final = response
        branch.local = local
        branch.stopTimers()
        self.proxy.branchEnded(branch)
        if not local and 300 <= response.status < 400 and self._recurse(response):
            self._maybeFinish()
            return
        self.finals.append((response, local))
        if self.isInvite and response.status >= 600:
            self.cancelOthers(branch, 600)
        self._maybeFinish()

    def cancelOthers(self, winner: Branch | None, status: int) -> None:
        for other in self.branches:
            if other is not winner and not other.done and other.request is not None:
                if other.request.method == "INVITE":
                    other.cancel(status)

    def cancel(self) -> None:
        """
        The caller sent CANCEL: answer the INVITE with 487 and cancel every
        pending branch.
        """
        if self.cancelled:
            return
        self.cancelled = True
        self.respondLocally(487, "Request Terminated")
        self.cancelOthers(None, 487)
        self._maybeFinish()

    def _maybeFinish(self) -> None:
        if self.starting:
            return
        pending = [branch for branch in self.branches if not branch.done]
        if pending:
            return
        if self._failover():
            return
        if not self.finalSent:
            if self.finals:
                best = chooseBest(self.finals)
                self._final(best.status)
                self.sendUpstream(best)
            else:
                self._final(480)
                self.proxy.core.respond(self.tx, 480, "Temporarily Unavailable",
                                        toTag=generateTag())
        self.proxy.finished(self)

    def stop(self) -> None:
        for branch in self.branches:
            branch.stopTimers()
