# -*- test-case-name: tests.test_reactor -*-
"""
sipcore's reactor: an epoll reactor that serves the listening sockets, the
UDP sockets and the database connections before every bounded chunk of
stream connection events.

Twisted's epoll reactor asks the kernel for as many ready events as it has
file descriptors and handles them all in one turn, in the order the kernel
reports them.  When 10,000 stream connections close at once, a datagram
that arrives meanwhile waits behind 10,000 C{connectionLost} calls: about a
second for a client that sent an OPTIONS over UDP.

L{FairEPollReactor} keeps two epoll sets:

  - the I{priority} set holds every selectable providing
    L{IListeningPort} (TCP, UNIX and WebSocket listeners, UDP ports: each
    bounds its own work per read) and every C{txpostgres} connection and
    cursor;
  - the I{stream} set holds everything else (stream connections, the
    reactor's waker, pipes), and the priority set's own epoll descriptor,
    so that a wait for events wakes up for either.

Each turn polls the priority set without waiting and handles what is
ready, then takes at most L{MAX_EVENTS} events from the stream set and
handles them (the others stay ready in the kernel, level-triggered, for
the next turn), then the priority set again if it became ready meanwhile.
Timers run between turns.  A datagram, a new connection or a database
answer therefore waits for at most one chunk of stream events, not for
every stream event that became ready before it.

It also dispatches a plain read event of a stream connection (readable,
nothing else: nearly every event a busy server sees) without Twisted's
per-event logging context (C{log.callWithLogger}, which copies a context
dictionary for every event): the selectable's C{doRead} is called
directly; an exception it raises is logged with the selectable's log
prefix as Twisted logs it, and a reason it returns disconnects it as
Twisted does.  Every other event takes Twisted's own path.

C{twistd -n sipcore} installs it when no C{--reactor} is given (see
L{sipcore.tap.Options.postOptions}); C{twistd --reactor sipcore-epoll}
names it explicitly.  Elsewhere, install it before anything imports the
global reactor::

    import sipcore.reactor; sipcore.reactor.install()

Twisted has no public API for a second epoll set, so this module is the one
place where sipcore relies on the epoll reactor's internals: its
C{_poller} (of which Twisted calls only C{register}, C{modify} and
C{unregister} outside C{doPoll}), C{_selectables}, C{_doReadOrWrite} and
C{_disconnectSelectable}.  C{tests.test_reactor.EPollInternalsTests} fails
when Twisted changes them, and C{setup.cfg} bounds Twisted's version.
"""

from __future__ import annotations

import errno
import select
import sys
from select import EPOLLIN

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionFdescWentAway
from twisted.internet.interfaces import IListeningPort, IReadDescriptor, IWriteDescriptor
from twisted.python import log
from twisted.python.failure import Failure
from txpostgres import txpostgres

__all__ = ["MAX_EVENTS", "FairEPollReactor", "install", "isPriority"]

#: Most stream connection events handled in one reactor turn.
MAX_EVENTS = 64

_Selectable = IReadDescriptor | IWriteDescriptor


def isPriority(selectable: object) -> bool:
    """
    Whether L{FairEPollReactor} serves C{selectable} in its priority set: a
    listening port (TCP, UNIX, UDP) or a C{txpostgres} connection or
    cursor.
    """
    return IListeningPort.providedBy(selectable) or isinstance(
        selectable, (txpostgres.Connection, txpostgres.Cursor))


class _TwoSets:
    """
    The C{_poller} of L{FairEPollReactor}: Twisted's epoll reactor
    registers, modifies and unregisters descriptors through it, and it
    puts each in the priority or the stream C{epoll} set.

    @ivar stream: the stream set; it also holds C{priority}'s descriptor.
    @ivar priority: the priority set.
    @ivar priorityFds: the descriptors of the priority set, and of
        selectables marked for it (L{mark}) and not registered yet.
    """

    def __init__(self) -> None:
        self.stream = select.epoll()
        self.priority = select.epoll()
        self.priorityFds: set[int] = set()
        self.stream.register(self.priority.fileno(), EPOLLIN)

    def mark(self, fd: int) -> None:
        """
        Put C{fd} in the priority set when it is registered.
        """
        self.priorityFds.add(fd)

    def _set(self, fd: int) -> select.epoll:
        return self.priority if fd in self.priorityFds else self.stream

    def register(self, fd: int, flags: int) -> None:
        self._set(fd).register(fd, flags)

    def modify(self, fd: int, flags: int) -> None:
        self._set(fd).modify(fd, flags)

    def unregister(self, fd: int) -> None:
        self._set(fd).unregister(fd)
        self.priorityFds.discard(fd)

    def close(self) -> None:
        self.priority.close()
        self.stream.close()


class FairEPollReactor(EPollReactor):
    """
    L{EPollReactor} serving its priority set (L{isPriority}) before each
    chunk of at most C{maxEvents} stream connection events; see the module
    docstring.
    """

    def __init__(self, maxEvents: int = MAX_EVENTS) -> None:
        """
        @raise ValueError: if C{maxEvents} is less than 1.
        """
        if maxEvents < 1:
            raise ValueError("maxEvents must be at least 1")
        self._maxEvents = maxEvents
        self._sets = _TwoSets()
        EPollReactor.__init__(self)
        # Twisted's initialiser registered the waker with its own epoll
        # set: move whatever it registered into the two sets.
        readers, writers = self.getReaders(), self.getWriters()
        for reader in readers:
            self.removeReader(reader)
        for writer in writers:
            self.removeWriter(writer)
        self._poller.close()
        self._poller = self._sets  # type: ignore[assignment]
        for reader in readers:
            self.addReader(reader)
        for writer in writers:
            self.addWriter(writer)

    def addReader(self, reader: IReadDescriptor) -> None:
        if isPriority(reader):
            self._sets.mark(reader.fileno())
        EPollReactor.addReader(self, reader)

    def addWriter(self, writer: IWriteDescriptor) -> None:
        if isPriority(writer):
            self._sets.mark(writer.fileno())
        EPollReactor.addWriter(self, writer)

    def doPoll(self, timeout: float | None) -> None:
        """
        Serve the priority set, then wait at most C{timeout} seconds
        (C{None}: until an event; no wait when the priority set had events)
        for stream events and handle at most C{maxEvents} of them, then
        serve the priority set again if it became ready meanwhile.
        """
        if self._servePriority():
            timeout = 0
        try:
            events = self._sets.stream.poll(-1 if timeout is None else timeout,
                                            self._maxEvents)
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        priorityFd = self._sets.priority.fileno()
        selectables = self._selectables
        priorityReady = False
        for fd, event in events:
            if fd == priorityFd:
                priorityReady = True
                continue
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event == EPOLLIN:
                self._read(selectable)
            else:
                log.callWithLogger(selectable, self._doReadOrWrite, selectable, fd, event)
        if priorityReady:
            self._servePriority()

    doIteration = doPoll

    def _servePriority(self) -> bool:
        """
        Handle the ready events of the priority set, without waiting.

        @return: whether there were any.
        """
        try:
            events = self._sets.priority.poll(0, len(self._sets.priorityFds) + 1)
        except OSError as err:
            if err.errno == errno.EINTR:
                return False
            raise
        selectables = self._selectables
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                log.callWithLogger(selectable, self._doReadOrWrite, selectable, fd, event)
        return bool(events)

    def _read(self, selectable: _Selectable) -> None:
        """
        Handle a plain read event of C{selectable} as Twisted's
        C{_doReadOrWrite} would, without a logging context around it.
        """
        inRead = False
        why: BaseException | Failure | None
        try:
            if selectable.fileno() == -1:
                why = ConnectionFdescWentAway("File descriptor lost")
            else:
                why = selectable.doRead()  # type: ignore[union-attr]
                inRead = True
        except BaseException:
            why = sys.exc_info()[1]
            log.err(system=_logPrefix(selectable))
        if why:
            log.callWithLogger(selectable, self._disconnectSelectable, selectable, why, inRead)


def _logPrefix(selectable: _Selectable) -> str:
    """
    The log prefix Twisted gives the events of C{selectable}.
    """
    try:
        return str(selectable.logPrefix())  # type: ignore[union-attr]
    except Exception:
        return "(buggy logPrefix method)"


def install(maxEvents: int = MAX_EVENTS) -> FairEPollReactor:
    """
    Install L{FairEPollReactor} as the global reactor.

    @raise twisted.internet.error.ReactorAlreadyInstalledError: if a
        reactor is installed already.
    """
    from twisted.internet.main import installReactor

    reactor = FairEPollReactor(maxEvents)
    installReactor(reactor)
    return reactor
