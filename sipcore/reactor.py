# -*- test-case-name: tests.test_lag -*-
"""
An epoll reactor that handles a bounded number of I/O events per turn.

Twisted's epoll reactor asks the kernel for as many ready events as it has
file descriptors, and handles them all before it runs any timer.  When
10,000 connections close at once, that is one turn of 10,000
C{connectionLost} calls: the reactor stalls for a second, and every timer
(transaction retransmissions, keepalives, the job queues' batches) waits.
L{BoundedEPollReactor} takes at most L{MAX_EVENTS} events per turn (the
others stay ready in the kernel, level-triggered, for the next turn), so
timers run between bursts and the stall is bounded by C{MAX_EVENTS} times
the cost of one event.  (The UDP sockets bound their reads per turn
themselves, on any reactor: L{sipcore.transport.udp}.)

It also dispatches a plain read event (readable, nothing else: nearly
every event a busy server sees) without Twisted's per-event logging context
(C{log.callWithLogger}, which copies a context dictionary for every event):
the selectable's C{doRead} is called directly; an exception it raises is
logged with the selectable's log prefix as Twisted logs it, and a reason it
returns disconnects it as Twisted does.  Every other event (writable, hung
up, an error) takes Twisted's own path.

Install it before anything imports the global reactor::

    import sipcore.reactor; sipcore.reactor.install()

(C{bench/run.py} starts twistd that way.)

Twisted has no public API for either change, so this module is the one
place where sipcore relies on the epoll reactor's internals: its
C{_poller}, C{_selectables}, C{_doReadOrWrite} and
C{_disconnectSelectable}.  C{tests.test_lag.EPollInternalsTests} fails
when Twisted changes them, and C{setup.cfg} bounds Twisted's version.
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLIN
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionFdescWentAway
from twisted.python import log

__all__ = ["MAX_EVENTS", "BoundedEPollReactor", "install"]

#: Most I/O events handled in one reactor turn.
MAX_EVENTS = 64


class _CappedPoller:
    """
    An C{epoll} object whose C{poll} returns at most C{cap} events.
    """

    def __init__(self, poller: Any, cap: int) -> None:
        self._poller = poller
        self._cap = cap

    def poll(self, timeout: float = -1, maxevents: int = -1) -> Any:
        if maxevents <= 0 or maxevents > self._cap:
            maxevents = self._cap
        return self._poller.poll(timeout, maxevents)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._poller, name)


class BoundedEPollReactor(EPollReactor):
    """
    L{EPollReactor} handling at most C{maxEvents} I/O events per turn.
    """

    def __init__(self, maxEvents: int = MAX_EVENTS) -> None:
        """
        @raise ValueError: if C{maxEvents} is less than 1.
        """
        if maxEvents < 1:
            raise ValueError("maxEvents must be at least 1")
        EPollReactor.__init__(self)
        self._poller = _CappedPoller(self._poller, maxEvents)  # type: ignore[assignment]

    def doPoll(self, timeout: float | None) -> None:
        """
        Wait at most C{timeout} seconds (C{None}: until an event) for I/O
        events and handle them; see the module docstring.
        """
        try:
            events = self._poller.poll(-1 if timeout is None else timeout,
                                       len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event == EPOLLIN:
                self._read(selectable)
            else:
                log.callWithLogger(selectable, self._doReadOrWrite, selectable, fd, event)

    doIteration = doPoll

    def _read(self, selectable: Any) -> None:
        """
        Handle a plain read event of C{selectable} as Twisted's
        C{_doReadOrWrite} would, without a logging context around it.
        """
        inRead = False
        try:
            if selectable.fileno() == -1:
                why: Any = ConnectionFdescWentAway("File descriptor lost")
            else:
                why = selectable.doRead()
                inRead = True
        except BaseException:
            why = sys.exc_info()[1]
            log.err(system=_logPrefix(selectable))
        if why:
            log.callWithLogger(selectable, self._disconnectSelectable, selectable, why, inRead)


def _logPrefix(selectable: Any) -> str:
    """
    The log prefix Twisted gives the events of C{selectable}.
    """
    try:
        return str(selectable.logPrefix())
    except Exception:
        return "(buggy logPrefix method)"


def install(maxEvents: int = MAX_EVENTS) -> BoundedEPollReactor:
    """
    Install L{BoundedEPollReactor} as the global reactor.

    @raise twisted.internet.error.ReactorAlreadyInstalledError: if a
        reactor is installed already.
    """
    from twisted.internet.main import installReactor

    reactor = BoundedEPollReactor(maxEvents)
    installReactor(reactor)
    return reactor
