# -*- test-case-name: tests.test_plugins -*-
"""
Helpers for writing handler plugins.

A handler plugin module in C{twisted/plugins/} stays light: it exposes a
L{LazyHandler} that names the implementation, which is imported only when
the handler is enabled and started::

    # twisted/plugins/myhandlers.py
    from sipcore.plugin import LazyHandler

    audit = LazyHandler(
        "connection-audit",
        "Log every connection close",
        ("tcp:closed", "tcp:reset", "tcp:timeout"),
        implementation="myhandlers.audit.ConnectionAudit",
    )

The implementation class is called with the L{HandlerContext}; it must have
C{handle(event)} and may have C{start()} and C{stop()} (each returning
C{None} or a L{Deferred}).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from twisted.python.reflect import namedAny
from zope.interface import implementer

from sipcore.events.plugins import HANDLER_API_VERSION
from sipcore.interfaces import IEventHandler, IHandlerContext

__all__ = ["HandlerContext", "HandlerImportError", "HandlerNotStarted", "LazyHandler"]


class HandlerImportError(ImportError):
    """
    A L{LazyHandler}'s implementation could not be imported; the message
    names the handler and the implementation.
    """


class HandlerNotStarted(RuntimeError):
    """
    A L{LazyHandler} was asked to handle an event before L{LazyHandler.start}
    (or after L{LazyHandler.stop}).
    """


@implementer(IPlugin, IEventHandler)
class LazyHandler:
    """
    An L{IEventHandler} that imports its implementation only when started.

    @ivar implementation: the dotted name of the implementation class (or
        any callable taking the context).
    @ivar timeout: seconds the bus waits for one event, or C{None} for the
        bus default.
    @ivar concurrency: events handled at once, or C{None} for the bus
        default.
    @ivar backlog: events that may wait beyond C{concurrency}, or C{None}
        for the bus default.
    """

    def __init__(
        self,
        name: str,
        description: str,
        events: Iterable[str],
        implementation: str,
        priority: int = 100,
        apiVersion: int = HANDLER_API_VERSION,
        timeout: float | None = None,
        concurrency: int | None = None,
        backlog: int | None = None,
    ) -> None:
        """
        @raise TypeError: if C{events} is a single string.
        """
        if isinstance(events, str):
            raise TypeError(
                "events must be a tuple of event names, not the string {!r}".format(events)
            )
        self.name = name
        self.description = description
        self.events = tuple(events)
        self.implementation = implementation
        self.priority = priority
        self.apiVersion = apiVersion
        self.timeout = timeout
        self.concurrency = concurrency
        self.backlog = backlog
        self._impl: Any = None

    def __repr__(self) -> str:
        return "<LazyHandler {!r} -> {}>".format(self.name, self.implementation)

    def start(self, context: IHandlerContext) -> Deferred[Any] | None:
        """
        Import the implementation, call it with C{context} and start the
        result if it has a C{start} method.

        @return: what the implementation's C{start()} returns (C{None} or a
            L{Deferred}).
        @raise HandlerImportError: if the implementation cannot be imported.
        @raise Exception: whatever building or starting it raises.  The
            handler stays unstarted.
        """
        if self._impl is not None:
            raise RuntimeError("handler {!r} is already started".format(self.name))
        try:
            factory = namedAny(self.implementation)
        except Exception as e:
            raise HandlerImportError(
                "handler {!r}: cannot import its implementation {!r}: {}: {}".format(
                    self.name, self.implementation, type(e).__name__, e
                )
            ) from e
        impl = factory(context)
        self._impl = impl
        start = getattr(impl, "start", None)
        if start is None:
            return None
        try:
            result: Deferred[Any] | None = start()
        except BaseException:
            self._impl = None
            raise
        return result

    def handle(self, event: Any) -> Any:
        """
        Hand C{event} to the implementation.

        @raise HandlerNotStarted: before L{start} or after L{stop}.
        """
        impl = self._impl
        if impl is None:
            raise HandlerNotStarted(
                "handler {!r} is not started: call start(context) before handle()".format(self.name)
            )
        return impl.handle(event)

    def stop(self) -> Deferred[Any] | None:
        """
        Stop the implementation (if started and it has a C{stop} method) and
        forget it.

        @return: what the implementation's C{stop()} returns.
        """
        impl, self._impl = self._impl, None
        stop = getattr(impl, "stop", None)
        if stop is None:
            return None
        result: Deferred[Any] | None = stop()
        return result


#: Builds a job queue: C{factory(name, runner, **kwargs)}.
JobQueueFactory = Callable[..., Any]


@implementer(IHandlerContext)
class HandlerContext:
    """
    What sipcore gives a handler when it starts.

    @ivar jobQueues: C{dict} of name to the job queues built through
        L{makeJobQueue}, for the service to start, drain and report.  Several
        contexts may share one C{dict}, which makes queue names unique
        across them.
    """

    def __init__(
        self,
        serverId: int,
        reactor: Any,
        store: Any,
        dbPool: Any = None,
        options: dict[str, str] | None = None,
        writes: Any = None,
        jobQueueFactory: JobQueueFactory | None = None,
        jobQueues: dict[str, Any] | None = None,
        apiVersion: int = HANDLER_API_VERSION,
    ) -> None:
        """
        @param serverId: this node's C{server_id}.
        @param reactor: provides C{IReactorTime} at least.
        @param store: the L{sipcore.interfaces.ILocationStore}.
        @param dbPool: the shared C{txpostgres} pool, or C{None}.
        @param options: the handler's own options.
        @param writes: the pending-writes tracker.
        @param jobQueueFactory: called as C{factory(name, runner, **kwargs)}
            to build a queue; default: L{sipcore.jobs.JobQueue} on
            C{reactor}.
        @param jobQueues: where built queues are recorded (a new C{dict} by
            default).
        """
        self.apiVersion = apiVersion
        self.serverId = serverId
        self.reactor = reactor
        self.store = store
        self.dbPool = dbPool
        self.options: dict[str, str] = dict(options or {})
        self.writes = writes
        self._jobQueueFactory = jobQueueFactory
        self.jobQueues: dict[str, Any] = jobQueues if jobQueues is not None else {}

    def makeJobQueue(self, name: str, runner: Callable[[list[Any]], Any], **kwargs: Any) -> Any:
        """
        Build and record a job queue.

        @param name: unique among the recorded queues.
        @param runner: called with a C{list} of items; returns a L{Deferred}.
        @param kwargs: L{sipcore.jobs.JobQueue} options.
        @return: the queue.
        @raise ValueError: if a queue of that name was already made.
        """
        if name in self.jobQueues:
            raise ValueError("a job queue named {!r} already exists".format(name))
        factory = self._jobQueueFactory
        if factory is None:
            from sipcore.jobs import JobQueue

            queue = JobQueue(name, runner, self.reactor, **kwargs)
        else:
            queue = factory(name, runner, **kwargs)
        self.jobQueues[name] = queue
        return queue
