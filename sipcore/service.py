# -*- test-case-name: tests.test_tap,tests.test_cleanup_faults -*-
"""
The running server as a tree of Twisted services.

Each level of the tree is an L{OrderedServices}: it starts its children one
after another in the order they were added, each once the one before has
started, and stops them in the reverse order, each once the one after has
stopped.  L{sipcore.tap.buildService} builds this tree::

    SIPCoreService                       the root (an OrderedServices)
      Database                           with --db: open the pool / close it
      ClusterService                     with --db: join the node table, heartbeat,
                                         take over dead nodes / leave it
      StoreService                       open the store (the schema on --db-init),
                                         purge this node's connection-bound rows,
                                         expire bindings on a timer / close the store
      HandlerService                     start the handlers and their job queues /
                                         deliver the pending events and drain the
                                         queues within the deadline, stop the handlers
      CoreService                        (the core answers once listeners deliver) /
                                         close the live connections, stop the proxy,
                                         end the transactions
      OrderedServices "listeners"        one ListenerService per --listen / stop listening
      LagProbe                           with SIPCORE_LAG_PROBE=1
      StreamServerEndpointService        GET /metrics, with --metrics-listen
      ReloadService                      reloads credentials and TLS certificates
                                         on SIGHUP (twistd) / puts the handler back
      AdminService                       the admin API (unless --admin-listen none)
      SystemdNotify                      READY=1 to systemd once all above started

So the start opens the store before anything can write to it and listens
last, and the stop goes the other way: stop listening, close the live
connections (their close events fire as usual), drain the job queues within
a deadline, then close the store and the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from sipcore.events import REGISTRATION_EXPIRED, RegistrationEvent
from sipcore.interfaces import IEventBus, ILocationStore
from sipcore.jobs import JobQueueCollector
from sipcore.metrics import (
    CollectorRegistry,
    Metric,
    counterFamily,
    gaugeFamily,
    labelled,
    register,
)
from sipcore.plugin import EnabledHandler

if TYPE_CHECKING:
    from sipcore.cluster.nodes import ClusterService
    from sipcore.jobs import JobQueue
    from sipcore.location.ordering import PendingWrites
    from sipcore.reload import ReloadService
    from sipcore.sip.auth import DigestAuthenticator
    from sipcore.sip.core import SIPCore
    from sipcore.sip.proxy import Proxy
    from sipcore.sip.registrar import Registrar
    from sipcore.transport.connections import ConnectionTable
    from sipcore.transport.listen import ListenerService

__all__ = ["CoreService", "HandlerService", "OrderedServices", "SIPCoreService", "StoreService",
           "describeReactor"]


def describeReactor(reactor: object) -> str:
    """
    The reactor's class and whether it is sipcore's fair reactor (see
    docs/transports.rst), for the line logged at start.
    """
    name = "{}.{}".format(type(reactor).__module__, type(reactor).__qualname__)
    try:
        from sipcore.reactor import FairEPollReactor
    except ImportError:
        return name + " (sipcore's fair reactor needs epoll, which this system lacks)"
    if isinstance(reactor, FairEPollReactor):
        return name + (" (listeners, UDP and database connections served before each chunk "
                       "of stream connection events)")
    return name + (" (not sipcore's fair reactor: a burst of stream connection events "
                   "delays UDP, new connections and the database; see docs/transports.rst)")

_log = Logger(namespace="sipcore.service")


async def _safely(what: str, f: Callable[..., Any], *args: Any) -> Any:
    """
    Run one shutdown step; a failure is logged and the shutdown goes on.

    @return: what the step returned, or C{None} when it failed.
    """
    try:
        return await defer.maybeDeferred(f, *args)
    except Exception:
        _log.failure("shutdown step failed: {what}", what=what)
        return None


class OrderedServices(MultiService):
    """
    A L{MultiService} that waits for each child: its children start in the
    order they were added, each once the L{Deferred} returned by the
    previous one's C{startService} has fired, and stop in the reverse order,
    each once the next one's C{stopService} has fired.

    Twisted's L{MultiService} starts its children at once and stops them
    together; a server whose store must be open before its handlers run,
    and whose listeners must be closed before its connections are, needs
    the order kept.  C{privilegedStartService} reaches every child in order,
    as in L{MultiService} (listeners bind there).

    A stop while the start is still under way cancels the child's start in
    progress, starts no other child, and stops the children that started.
    """

    _current: defer.Deferred[Any] | None = None

    def startService(self) -> defer.Deferred[None]:  # type: ignore[override]
        """
        Start the children in order.

        @return: a L{Deferred} firing with C{None} once the last child has
            started, or failing with the first child's failure (the
            children after it are not started).
        """
        Service.startService(self)
        return defer.Deferred.fromCoroutine(self._startChildren())

    async def _startChildren(self) -> None:
        for child in list(self):
            if not self.running:
                return
            self._current = defer.maybeDeferred(child.startService)
            try:
                await self._current
            except defer.CancelledError:
                if not self.running:
                    return
                raise
            finally:
                self._current = None

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        """
        Stop the children that started, last first.  A child's failure to
        stop is logged and the others still stop.

        @return: a L{Deferred} firing with C{None} once the first child has
            stopped; it never fails.
        """
        Service.stopService(self)
        if self._current is not None:
            self._current.cancel()
        return defer.Deferred.fromCoroutine(self._stopChildren())

    async def _stopChildren(self) -> None:
        for child in reversed(list(self)):
            if child.running:
                await _safely("stop " + (child.name or type(child).__name__), child.stopService)


class StoreService(Service):
    """
    The location store while the server runs.

    Start: open the store, create the schema when asked, purge this node's
    connection-bound rows (connection ids do not survive a restart), then
    remove expired bindings every C{expiryInterval} seconds.  A database
    that is away does not stop the start: the schema and purge step is
    retried every L{backstopRetryInterval} seconds until it succeeds (the
    registrar answers C{503} meanwhile).  A schema of another version does
    stop it.

    Stop: stop the timers and close the store.

    @ivar startTime: when the service started: bindings older than this and
        bound to a connection are purged.
    @ivar purgePending: C{True} while the start purge has not succeeded yet.
    """

    name = "store"
    startTime = 0.0
    purgePending = False
    _purgeWhen = "at start"
    #: Seconds between attempts to prepare a store that was away at start.
    backstopRetryInterval = 5.0

    _log = Logger()

    def __init__(
        self,
        store: ILocationStore,
        reactor: IReactorTime,
        serverId: int,
        initSchema: Callable[[], defer.Deferred[Any]] | None = None,
        expiryInterval: float = 60.0,
        announce: Callable[[RegistrationEvent], object] | None = None,
        metrics: CollectorRegistry | None = None,
        available: Callable[[], bool] = lambda: True,
        statements: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        """
        @param store: the store to open and close.
        @param reactor: the clock of the timers; a failure of a retried
            purge that must stop the server stops it (when it provides
            L{IReactorCore} and runs).
        @param serverId: this node's C{server_id}.
        @param initSchema: creates the schema when missing (C{--db-init}):
            returns a L{Deferred} firing with C{True} when it created it, or
            C{None}: the schema is not created.
        @param expiryInterval: seconds between removals of expired bindings
            (C{0}: never).
        @param announce: called with a C{registration:expired}
            L{RegistrationEvent} for each binding the expiry removed (the
            composition root passes the bus's C{fire}); C{None}: no events.
        @param metrics: the registry the store's figures are served from,
            or C{None}.
        @param available: returns C{True} while the store can reach its
            database (a memory store always can).
        @param statements: returns the statements sent to the store so
            far, by kind.
        """
        self.store = store
        self._announce = announce
        self._reactor = reactor
        self.serverId = serverId
        self._initSchema = initSchema
        self.expiryInterval = expiryInterval
        self._schemaReady = False
        self._expiryFailing = False
        self._expiry: task.LoopingCall | None = None
        self._retry: task.LoopingCall | None = None
        register(metrics, _StoreCollector(available, statements))

    def startService(self) -> defer.Deferred[None]:  # type: ignore[override]
        """
        @return: a L{Deferred} firing once the store is open (the purge done
            or retrying), failing when it cannot be opened.
        """
        Service.startService(self)
        self.startTime = self._reactor.seconds()
        return defer.Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        await self.store.start()
        await self._prepare()
        if self.expiryInterval > 0:
            self._expiry = task.LoopingCall(self.expireBindings)
            self._expiry.clock = self._reactor
            self._expiry.start(self.expiryInterval, now=False).addErrback(
                lambda f: self._log.failure("expiry timer stopped", f))

    async def _prepare(self) -> None:
        from sipcore.db.location import SchemaVersionMismatch

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
            if not self.purgePending:
                self._log.warn(
                    "could not prepare the location store ({error}); retrying every "
                    "{interval} s", error=str(e) or type(e).__name__,
                    interval=self.backstopRetryInterval)
            self.purgePending = True
            if self._retry is None:
                self._retry = task.LoopingCall(self._retryPrepare)
                self._retry.clock = self._reactor
                self._retry.start(self.backstopRetryInterval, now=False)
            return
        self.purgePending = False
        self._stopRetry()
        self._log.info(
            "purged {count} connection-bound bindings of server_id {serverId} {when}",
            count=count, serverId=self.serverId, when=self._purgeWhen)

    def purgeAgain(self) -> defer.Deferred[None]:
        """
        Run the start purge again, as of now: this node's connection-bound
        bindings last modified before now are removed (the cluster calls
        this when the node rejoins after the others declared it dead).  A
        database that is away is retried as at start.

        @return: a L{Deferred} firing once the purge ran or its retry is
            scheduled; it never fails.
        """
        self.startTime = self._reactor.seconds()
        self._purgeWhen = "on rejoining the cluster"
        d = defer.Deferred.fromCoroutine(self._prepare())
        d.addErrback(lambda f: self._log.failure("purge on rejoining failed", f))
        return d

    def _retryPrepare(self) -> defer.Deferred[None]:
        d = defer.Deferred.fromCoroutine(self._prepare())
        d.addErrback(self._retryFailed)
        return d

    def _retryFailed(self, failure: Failure) -> None:
        self._stopRetry()
        self._log.failure("sipcore failed to start", failure)
        reactor = self._reactor
        if IReactorCore.providedBy(reactor):
            if reactor.running:
                reactor.stop()
            else:
                # twistd starts the services before it runs the reactor.
                reactor.callWhenRunning(reactor.stop)

    def _stopRetry(self) -> None:
        if self._retry is not None and self._retry.running:
            self._retry.stop()
        self._retry = None

    async def _expire(self) -> None:
        try:
            now = self._reactor.seconds()
            expired = await self.store.removeExpired(now)
        except Exception as e:
            if not self._expiryFailing:
                self._log.warn("expiry of bindings failed ({error}); will retry",
                               error=str(e) or type(e).__name__)
            self._expiryFailing = True
            return
        if self._expiryFailing:
            self._log.info("expiry of bindings works again")
            self._expiryFailing = False
        if expired:
            self._log.info("removed {count} expired bindings", count=len(expired))
        if self._announce is not None:
            for binding in expired:
                self._announce(RegistrationEvent.of(REGISTRATION_EXPIRED, binding, now,
                                                    self.serverId))

    def expireBindings(self) -> defer.Deferred[None]:
        """
        Remove expired bindings now (the periodic backstop).

        @return: a L{Deferred} that fires when done; it never fails.
        """
        return defer.Deferred.fromCoroutine(self._expire())

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        """
        @return: a L{Deferred} firing once the store is closed; it never
            fails.
        """
        Service.stopService(self)
        if self._expiry is not None and self._expiry.running:
            self._expiry.stop()
        self._stopRetry()
        return defer.Deferred.fromCoroutine(_safely("close the store", self.store.close))


class HandlerService(Service):
    """
    The event handlers and their job queues while the server runs.

    Start: start each handler in order and subscribe it to the bus, then
    start the job queues.

    Stop: within one C{drainDeadline}, let the bus deliver the events in
    flight (they put work into the queues) and drain the queues together;
    then unsubscribe and stop the handlers, last first.

    @ivar handlers: the L{EnabledHandler}s, in order.
    @ivar queues: the job queues the handlers made, in the order they were
        made.
    @ivar left: after a stop, the jobs the queues had not done by the
        deadline.
    """

    name = "handlers"
    left = 0

    _log = Logger()

    def __init__(
        self,
        bus: IEventBus,
        handlers: Sequence[EnabledHandler],
        queues: Iterable[JobQueue],
        reactor: IReactorTime,
        drainDeadline: float = 10.0,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        """
        @param bus: the bus the handlers subscribe to.
        @param handlers: the handlers, in order.
        @param queues: the handlers' job queues (read at start and stop:
            the handlers make theirs when they are made).
        @param reactor: the clock of the deadline.
        @param drainDeadline: seconds the stop may take to deliver the
            pending events and drain the queues.
        @param metrics: the registry the handlers' and queues' figures are
            served from, or C{None}.
        """
        self.bus = bus
        self.handlers = list(handlers)
        self.queues = queues
        self._reactor = reactor
        self.drainDeadline = drainDeadline
        self._started: list[EnabledHandler] = []
        register(metrics, _HandlerCollector(bus))
        register(metrics, JobQueueCollector(queues))

    def startService(self) -> defer.Deferred[None]:  # type: ignore[override]
        """
        @return: a L{Deferred} firing once every handler and queue runs, or
            failing with the first handler's failure to start.
        """
        Service.startService(self)
        return defer.Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        for handler in self.handlers:
            await defer.maybeDeferred(handler.start)
            self._started.append(handler)
            self.bus.subscribe(handler)
            self._log.info("handler {name} enabled for {events}",
                           name=handler.name, events=", ".join(handler.events))
        for queue in self.queues:
            queue.start()

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        """
        @return: a L{Deferred} firing once the handlers stopped; it never
            fails.
        """
        Service.stopService(self)
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        # One deadline covers both: the events still being delivered and the
        # queues draining, together.
        end = self._reactor.seconds() + self.drainDeadline
        delivering = self.bus.drain()
        delivering.addTimeout(self.drainDeadline, self._reactor)
        try:
            await delivering
        except defer.CancelledError:
            self._log.warn("shutdown deadline passed with events still being delivered")
        except Exception:
            self._log.failure("shutdown step failed: deliver pending events")
        remaining = max(0.0, end - self._reactor.seconds())
        counts = await defer.gatherResults([
            defer.Deferred.fromCoroutine(
                _safely("drain job queue " + queue.name, queue.stop, remaining))
            for queue in self.queues
        ])
        self.left = sum(count or 0 for count in counts)
        started, self._started = self._started, []
        for handler in reversed(started):
            self.bus.unsubscribe(handler)
            await _safely("stop handler " + handler.name, handler.stop)


class CoreService(Service):
    """
    The SIP core while the server runs.  It has nothing to start: it
    answers what the listeners deliver.  Stop (after the listeners stopped):
    close the live connections (their close events fire as usual), stop
    the proxy's timers, end the transactions.
    """

    name = "core"

    def __init__(self, table: ConnectionTable, core: SIPCore, proxy: Proxy) -> None:
        """
        @param table: the L{sipcore.transport.connections.ConnectionTable}.
        @param core: the L{sipcore.sip.core.SIPCore}.
        @param proxy: the L{sipcore.sip.proxy.Proxy}.
        """
        self.table = table
        self.core = core
        self.proxy = proxy

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        """
        @return: a L{Deferred} firing once the connections closed and the
            transactions ended; it never fails.
        """
        Service.stopService(self)
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await _safely("close connections", self.table.closeAll)
        await _safely("stop the proxy", self.proxy.stop)
        await _safely("end transactions", self.core.transactions.terminateAll)


class SIPCoreService(OrderedServices):
    """
    The whole server: the root of the service tree (see the module
    docstring), and the parts it was built from, for tests and tools to
    read.

    Its L{startService} returns a L{Deferred} firing once the last child
    started (twistd ignores it; tests wait on it).  A failure to start is
    logged, kept in L{startFailure}, and stops the reactor (once it runs,
    when the start failed before).

    @ivar store: the L{ILocationStore}.
    @ivar bus: the L{IEventBus}.
    @ivar table: the L{sipcore.transport.connections.ConnectionTable}.
    @ivar core: the L{sipcore.sip.core.SIPCore}.
    @ivar registrar: the L{sipcore.sip.registrar.Registrar}.
    @ivar proxy: the L{sipcore.sip.proxy.Proxy}.
    @ivar authenticator: the L{sipcore.sip.auth.DigestAuthenticator}
        guarding the core, or C{None}.
    @ivar writes: the L{sipcore.location.ordering.PendingWrites} tracker.
    @ivar listeners: the L{sipcore.transport.listen.ListenerService}s.
    @ivar handlers: the L{EnabledHandler}s, in order.
    @ivar queues: the job queues the handlers made.
    @ivar database: the L{sipcore.db.Database}, or C{None} without C{--db}.
    @ivar cluster: the L{sipcore.cluster.nodes.ClusterService}, or C{None}
        without C{--db}.
    @ivar storeService: the L{StoreService}.
    @ivar handlerService: the L{HandlerService}.
    @ivar metrics: the server's L{CollectorRegistry}: every figure of it.
    @ivar metricsService: the service answering C{GET /metrics}, or C{None}.
    @ivar reloader: the L{ReloadService} (what C{SIGHUP} reloads), or
        C{None}.
    @ivar startFailure: the L{Failure} that stopped the start, if any.
    """

    name = "sipcore"
    startFailure: Failure | None = None
    ready: defer.Deferred[None] | None = None

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        store: ILocationStore,
        bus: IEventBus,
        table: ConnectionTable,
        core: SIPCore,
        registrar: Registrar,
        proxy: Proxy,
        authenticator: DigestAuthenticator | None,
        writes: PendingWrites,
        storeService: StoreService,
        handlerService: HandlerService,
        listeners: Sequence[ListenerService],
        metrics: CollectorRegistry,
        lagProbe: IService | None = None,
        metricsService: IService | None = None,
        database: IService | None = None,
        cluster: ClusterService | None = None,
        reloader: ReloadService | None = None,
        operations: Callable[[SIPCoreService], Iterable[IService]] | None = None,
        capture: Sequence[IService] = (),
    ) -> None:
        """
        Build the tree: the database when given, the store, the handlers,
        the core, the listeners, then the lag probe and the metrics service
        when given.

        @param reactor: the reactor; stopped when the start fails while it
            runs (when it provides L{IReactorCore}).
        @param metrics: the registry every part registered its figures
            with.
        @param database: the L{sipcore.db.Database} (with C{--db}), or
            C{None}.
        @param cluster: the L{sipcore.cluster.nodes.ClusterService} (with
            C{--db}), started after the database and before the store, or
            C{None}.
        @param reloader: the L{ReloadService} (C{SIGHUP} and the admin
            API's reload), started after the metrics service, or C{None}.
        @param capture: the SIP capture services (L{sipcore.capture}),
            started before the listeners and stopped after them.
        @param operations: called with this service once its other children
            are added; the services it returns (the admin API, the
            systemd notice) are added last, so they start once everything
            else has.
        """
        super().__init__()
        self._reactor = reactor
        self.store = store
        self.bus = bus
        self.table = table
        self.core = core
        self.registrar = registrar
        self.proxy = proxy
        self.authenticator = authenticator
        self.writes = writes
        self.storeService = storeService
        self.handlerService = handlerService
        self.listeners = list(listeners)
        self.metricsService = metricsService
        self.metrics = metrics
        self.database = database
        if database is not None:
            database.setServiceParent(self)
        self.cluster = cluster
        if cluster is not None:
            cluster.setServiceParent(self)
        storeService.setServiceParent(self)
        handlerService.setServiceParent(self)
        CoreService(table, core, proxy).setServiceParent(self)
        for service in capture:
            service.setServiceParent(self)
        listening = OrderedServices()
        listening.setName("listeners")
        for listener in self.listeners:
            listener.setServiceParent(listening)
        listening.setServiceParent(self)
        if lagProbe is not None:
            lagProbe.setServiceParent(self)
        if metricsService is not None:
            metricsService.setServiceParent(self)
        self.reloader = reloader
        if reloader is not None:
            reloader.setServiceParent(self)
        if operations is not None:
            for service in operations(self):
                service.setServiceParent(self)

    @property
    def handlers(self) -> list[EnabledHandler]:
        return self.handlerService.handlers

    @property
    def queues(self) -> Iterable[JobQueue]:
        return self.handlerService.queues

    def startService(self) -> defer.Deferred[None]:  # type: ignore[override]
        from sipcore.compiled import buildName, staleModules

        self._log.info("build: {build}", build=buildName())
        self._log.info("reactor: {reactor}", reactor=describeReactor(self._reactor))
        stale = staleModules()
        if stale:
            self._log.warn("compiled modules not built from the source beside them, imported "
                           "all the same: {modules}; reinstall sipcore or delete their .so files",
                           modules=", ".join(stale))
        self.ready = OrderedServices.startService(self)
        self.ready.addErrback(self._startFailed)
        return self.ready

    def _startFailed(self, failure: Failure) -> None:
        from sipcore.cluster.nodes import NodeIdInUse

        self.startFailure = failure
        if failure.check(NodeIdInUse):
            # A refusal with its reason, not a bug: no traceback.
            self._log.error("sipcore failed to start: {reason}", reason=str(failure.value))
        else:
            self._log.failure("sipcore failed to start", failure)
        reactor = self._reactor
        if IReactorCore.providedBy(reactor):
            if reactor.running:
                reactor.stop()
            else:
                # twistd starts the services before it runs the reactor.
                reactor.callWhenRunning(reactor.stop)

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        d = OrderedServices.stopService(self)
        d.addCallback(self._stopped)
        return d

    def _stopped(self, ignored: None) -> None:
        left = self.handlerService.left
        if left:
            self._log.warn("stopped with {left} queued jobs not done", left=left)
        else:
            self._log.info("stopped cleanly")


class _StoreCollector:
    """
    Whether the location store reaches its database, and the statements
    sent to it.
    """

    def __init__(self, available: Callable[[], bool],
                 statements: Callable[[], Mapping[str, int]]) -> None:
        self._available = available
        self._statements = statements

    def collect(self) -> list[Metric]:
        return [
            gaugeFamily("sipcore_store_available",
                        "1 when the location store can reach its database.",
                        values=[((), 1.0 if self._available() else 0.0)]),
            counterFamily("sipcore_store_statements_total",
                          "Statements sent to the location store, by kind.",
                          ["kind"], labelled(self._statements())),
        ]


#: The outcomes of a handler invocation served as C{sipcore_handler_events_total}.
_HANDLER_OUTCOMES = ("fired", "succeeded", "failed", "timedOut", "queued", "dropped")


class _HandlerCollector:
    """
    The event bus's per-handler invocation counts and in-flight gauges.
    """

    def __init__(self, bus: Any) -> None:
        """
        @param bus: the L{sipcore.events.bus.EventBus} (its C{metrics()}).
        """
        self._bus = bus

    def collect(self) -> list[Metric]:
        handlers = sorted(self._bus.metrics().items())
        return [
            counterFamily("sipcore_handler_events_total",
                          "Event handler invocations, by handler and outcome.",
                          ["handler", "outcome"],
                          [([handler, outcome], stats.get(outcome, 0))
                           for handler, stats in handlers for outcome in _HANDLER_OUTCOMES]),
            gaugeFamily("sipcore_handler_inflight",
                        "Event handler invocations running or waiting now.",
                        ["handler", "state"],
                        [([handler, state], stats.get(state, 0))
                         for handler, stats in handlers for state in ("running", "waiting")]),
        ]
