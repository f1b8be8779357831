# -*- test-case-name: tests.test_tap,tests.test_cleanup_faults -*-
"""
The running server as one Twisted service, with an ordered start and an
ordered shutdown.

Start: open the store (and create the schema when asked), purge this node's
connection-bound rows, start the handlers and their job queues, start the
periodic expiry, then listen.

Stop: stop listening, close the live connections (their
close events fire as usual), let the bus deliver what is in flight, drain
the job queues within a deadline, stop the handlers, then close the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sipcore.interfaces import IEventBus, ILocationStore
from sipcore.plugin import EnabledHandler


class SIPCoreService(Service):
    """
    The whole server.

    @ivar listeners: the listener services, started last and stopped first.
    @ivar handlers: the L{EnabledHandler}s, in order.
    @ivar queues: the job queues the handlers made.
    @ivar startFailure: the L{Failure} that stopped the start, if any (it
        is logged, and the reactor is stopped when running).
    @ivar proxy: the proxy, when the composition root sets one; stopped
        (its timers cancelled) after the connections closed.
    @ivar metricsService: the service answering C{GET /metrics}, or C{None}.
    @ivar registrar: the registrar, when the composition root sets one.
    @ivar authenticator: the L{sipcore.sip.auth.DigestAuthenticator}
        guarding the core, or C{None} (its counts are in the metrics).
    @ivar writes: the L{sipcore.location.ordering.PendingWrites} tracker.
    """

    registrar: Any = None
    writes: Any = None
    startFailure: Any = None
    #: When this service started: bindings older than this and bound to a
    #: connection are purged (connection ids do not survive a restart).
    startTime = 0.0
    metricsService: Any = None
    proxy: Any = None
    lagProbe: Any = None

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        serverId: int,
        store: ILocationStore,
        bus: IEventBus,
        table: Any,
        core: Any,
        listeners: Sequence[Service],
        handlers: Sequence[EnabledHandler],
        queues: Iterable[Any],
        initSchema: Callable[[], defer.Deferred[Any]] | None = None,
        expiryInterval: float = 60.0,
        drainDeadline: float = 10.0,
        authenticator: Any = None,
    ) -> None:
        self.reactor = reactor
        self.serverId = serverId
        self.store = store
        self.bus = bus
        self.table = table
        self.core = core
        self.listeners = list(listeners)
        self.handlers = list(handlers)
        self.queues = queues
        self._initSchema = initSchema
        self.expiryInterval = expiryInterval
        self.drainDeadline = drainDeadline
        self.authenticator = authenticator
        self._expiry: task.LoopingCall | None = None
        self._started: list[EnabledHandler] = []
        self.ready: defer.Deferred[None] | None = None

    # -- start ---------------------------------------------------------------

    def startService(self) -> defer.Deferred[None]:  # type: ignore[override]
        Service.startService(self)
        self.startTime = self.reactor.seconds()
        self.ready = defer.Deferred.fromCoroutine(self._start())
        self.ready.addErrback(self._startFailed)
        return self.ready

    def _startFailed(self, failure: Any) -> None:
        self.startFailure = failure
        self._log.failure("sipcore failed to start", failure)
        stop = getattr(self.reactor, "stop", None)
        if stop is not None and getattr(self.reactor, "running", False):
            stop()

    async def _start(self) -> None:
        from sipcore.compiled import isCompiled

        self._log.info("SIP message layer: {build}",
                       build="compiled (mypyc)" if isCompiled() else "Python source")
        await self.store.start()
        await self._prepareStore()
        for handler in self.handlers:
            await defer.maybeDeferred(handler.start)
            self._started.append(handler)
            self.bus.subscribe(handler)
            self._log.info("handler {name} enabled for {events}",
                           name=handler.name, events=", ".join(handler.events))
        for queue in self.queues:
            queue.start()
        if self.expiryInterval > 0:
            self._expiry = task.LoopingCall(self.expireBindings)
            self._expiry.clock = self.reactor
            self._expiry.start(self.expiryInterval, now=False).addErrback(
                lambda f: self._log.failure("expiry timer stopped", f))
        for listener in self.listeners:
            await defer.maybeDeferred(listener.startService)
        if self.lagProbe is not None:
            self.lagProbe.start()
        if self.metricsService is not None:
            await defer.maybeDeferred(self.metricsService.startService)

    async def _prepareStore(self) -> None:
        """
        Create the schema when asked, then purge this node's
        connection-bound rows (connection ids do not survive a restart).

        A database that is away does not stop the start: the step is
        retried every L{backstopRetryInterval} seconds until it succeeds.
        A schema of another version does stop it.
        """
        from sipcore.location.dbinit import SchemaVersionMismatch

        try:
            if self._initSchema is not None and not self._schemaReady:
                created = await self._initSchema()
                self._schemaReady = True
                self._log.info("location schema {what}",
                               what="created" if created else "already present")
            count = await self.store.purgeServer(self.serverId, self.startTime)
        except SchemaVersionMismatch:
            raise
        except Exception as e:
            if not self._backstopPending:
                self._log.warn(
                    "could not prepare the location store ({error}); retrying every "
                    "{interval} s", error=str(e) or type(e).__name__,
                    interval=self.backstopRetryInterval)
            self._backstopPending = True
            if self._backstopRetry is None:
                self._backstopRetry = task.LoopingCall(self._retryPrepare)
                self._backstopRetry.clock = self.reactor
                self._backstopRetry.start(self.backstopRetryInterval, now=False)
            return
        self._backstopPending = False
        if self._backstopRetry is not None and self._backstopRetry.running:
            self._backstopRetry.stop()
        self._backstopRetry = None
        self._log.info(
            "purged {count} connection-bound bindings of server_id {serverId} at start",
            count=count, serverId=self.serverId)

    def _retryPrepare(self) -> defer.Deferred[None]:
        d = defer.Deferred.fromCoroutine(self._prepareStore())
        d.addErrback(self._startFailed)
        return d

    _backstopPending = False
    _expiryFailing = False
    _backstopRetry: task.LoopingCall | None = None
    _schemaReady = False
    #: Seconds between attempts to prepare a store that was away at start.
    backstopRetryInterval = 5.0

    async def _expire(self) -> None:
        try:
            count = await self.store.removeExpired(self.reactor.seconds())
        except Exception as e:
            if not self._expiryFailing:
                self._log.warn("expiry of bindings failed ({error}); will retry",
                               error=str(e) or type(e).__name__)
            self._expiryFailing = True
            return
        if self._expiryFailing:
            self._log.info("expiry of bindings works again")
            self._expiryFailing = False
        if count:
            self._log.info("removed {count} expired bindings", count=count)

    def expireBindings(self) -> defer.Deferred[None]:
        """
        Remove expired bindings now (the periodic backstop).

        @return: a L{Deferred} that fires when done; it never fails.
        """
        return defer.Deferred.fromCoroutine(self._expire())

    def privilegedStartService(self) -> None:
        """
        Nothing binds before L{startService}: sipcore listens only once its
        store is ready and its handlers run.  Ports below 1024 (WebSocket on
        80 or 443) need C{CAP_NET_BIND_SERVICE} or a proxy in front rather
        than C{twistd --uid}.
        """
        Service.privilegedStartService(self)

    # -- stop ----------------------------------------------------------------

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        Service.stopService(self)
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.ready is not None and not self.ready.called:
            self.ready.cancel()
        if self.metricsService is not None and self.metricsService.running:
            await self._safely("stop metrics", self.metricsService.stopService)
        if self.lagProbe is not None:
            await self._safely("stop the lag probe", self.lagProbe.stop)
        for listener in reversed(self.listeners):
            if listener.running:
                await self._safely("stop listener", listener.stopService)
        await self._safely("close connections", self.table.closeAll)
        if self.proxy is not None:
            await self._safely("stop the proxy", self.proxy.stop)
        transactions = getattr(self.core, "transactions", None)
        if transactions is not None:
            await self._safely("end transactions", transactions.terminateAll)
        if self._expiry is not None and self._expiry.running:
            self._expiry.stop()
        if self._backstopRetry is not None and self._backstopRetry.running:
            self._backstopRetry.stop()
        # One deadline covers both: the events still being delivered (they
        # put work into the queues) and the queues draining, together.
        end = self.reactor.seconds() + self.drainDeadline
        delivering = self.bus.drain()
        delivering.addTimeout(self.drainDeadline, self.reactor)
        try:
            await delivering
        except defer.CancelledError:
            self._log.warn("shutdown deadline passed with events still being delivered")
        except Exception:
            self._log.failure("shutdown step failed: deliver pending events")
        remaining = max(0.0, end - self.reactor.seconds())
        counts = await defer.gatherResults([
            defer.Deferred.fromCoroutine(
                self._safely("drain job queue " + queue.name, queue.stop, remaining))
            for queue in self.queues
        ])
        left = sum(count or 0 for count in counts)
        for handler in reversed(self._started):
            self.bus.unsubscribe(handler)
            await self._safely("stop handler " + handler.name, handler.stop)
        await self._safely("close the store", self.store.close)
        if left:
            self._log.warn("stopped with {left} queued jobs not done", left=left)
        else:
            self._log.info("stopped cleanly")

    async def _safely(self, what: str, f: Callable[..., Any], *args: Any) -> Any:
        try:
            return await defer.maybeDeferred(f, *args)
        except Exception:
            self._log.failure("shutdown step failed: {what}", what=what)
            return None
