# -*- test-case-name: tests.test_admin -*-
"""
The admin listener and the systemd readiness notice, as services of the
server's tree (the last children of L{sipcore.service.SIPCoreService}).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sdnotify
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Site

from sipcore.admin.api import AdminAPI, ReadyCheck

__all__ = ["AdminService", "SystemdNotify", "readyChecks"]


class _QuietSite(Site):
    """
    A L{Site} that writes no access log line per request.
    """

    def log(self, request: Any) -> None:
        pass


class AdminService(Service):
    """
    Serves the L{AdminAPI} on an endpoint while running.  It binds in
    C{privilegedStartService} (before twistd drops privileges).  When the
    endpoint cannot listen, a I{required} one makes the start fail (the
    server stops); otherwise (the default endpoint) one warning is logged
    and the server runs without the admin API.

    @ivar listeningPort: the listening port once it listens, else C{None}.
    @ivar description: the endpoint description, for the log.
    @ivar required: whether a failure to listen fails the start.
    """

    listeningPort: Any = None
    _log = Logger()

    def __init__(self, endpoint: IStreamServerEndpoint, api: AdminAPI, description: str,
                 required: bool = True) -> None:
        """
        @param endpoint: where to listen.
        @param api: what to serve; its recent closes subscribe to its bus
            while the service runs.
        @param description: the endpoint's description, for the log.
        @param required: fail the start when the endpoint cannot listen.
        """
        self._endpoint = endpoint
        site = _QuietSite(api.resource())
        site.noisy = False
        self._site: IProtocolFactory = site
        self.setName("admin")
        self._parts = api.parts
        self.description = description
        self.required = required
        self._listening: Deferred[Any] | None = None
        self._failure: Failure | None = None

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        if self._listening is None:
            listening: Deferred[Any] = maybeDeferred(self._endpoint.listen, self._site)
            listening.addCallbacks(self._listened, self._cannotListen)
            self._listening = listening

    def _listened(self, port: Any) -> None:
        self.listeningPort = port
        self._log.info("admin API on {address}", address=port.getHost())

    def _cannotListen(self, failure: Failure) -> None:
        if self.required:
            self._log.error("cannot listen on {spec} for the admin API: {error}",
                            spec=self.description, error=failure.getErrorMessage())
            self._failure = failure
        else:
            self._log.warn(
                "admin API off: cannot listen on its default {spec} ({error}); choose "
                "another endpoint with --admin-listen, or --admin-listen none",
                spec=self.description, error=failure.getErrorMessage())

    def startService(self) -> Deferred[None]:  # type: ignore[override]
        """
        Start serving (binding first unless L{privilegedStartService} did).

        @return: a L{Deferred} firing once it listens, or once it gave up on
            an endpoint that is not required; failing with the reason a
            required endpoint cannot listen.
        """
        Service.startService(self)
        self._parts.bus.subscribe(self._parts.closes)
        self.privilegedStartService()
        assert self._listening is not None
        return self._listening.addCallback(self._started)

    def _started(self, ignored: None) -> Failure | None:
        failure, self._failure = self._failure, None
        return failure

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        """
        Stop listening.

        @return: a L{Deferred} firing once the port is closed.
        """
        Service.stopService(self)
        self._parts.bus.unsubscribe(self._parts.closes)
        listening, self._listening = self._listening, None
        if listening is not None:
            listening.cancel()
        port, self.listeningPort = self.listeningPort, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)


class SystemdNotify(Service):
    """
    Tells systemd (C{Type=notify}) that the server is ready once every
    service before it started, and that it is stopping when the stop
    begins.  Without C{NOTIFY_SOCKET} in the environment it does nothing.
    """

    name = "systemd-notify"

    def __init__(self, notifier: sdnotify.SystemdNotifier | None = None) -> None:
        """
        @param notifier: where the notices go; the default reads
            C{NOTIFY_SOCKET} from the environment.
        """
        self._notifier = notifier if notifier is not None else sdnotify.SystemdNotifier()

    def startService(self) -> None:
        Service.startService(self)
        self._notifier.notify("READY=1")

    def stopService(self) -> None:  # type: ignore[override]
        Service.stopService(self)
        self._notifier.notify("STOPPING=1")


def readyChecks(listeners: Iterable[Any], storeAvailable: Any,
                queues: Iterable[Any], usesDatabase: bool) -> list[ReadyCheck]:
    """
    The checks of C{/health/ready}: every listener listens, the database
    answers (with C{--db}), no job queue is full.

    @param listeners: the L{sipcore.transport.listen.ListenerService}s.
    @param storeAvailable: returns whether the store's database is believed
        reachable.
    @param queues: the job queues.
    @param usesDatabase: whether the store is in a database.
    """
    listening = list(listeners)

    def listeningCheck() -> tuple[bool, str]:
        waiting = [listener.name for listener in listening if listener.port is None]
        if waiting:
            return False, "not listening: " + ", ".join(waiting)
        return True, "{} listeners".format(len(listening))

    def databaseCheck() -> tuple[bool, str]:
        if storeAvailable():
            return True, "reachable"
        return False, "unreachable"

    def queuesCheck() -> tuple[bool, str]:
        full = [m["name"] for m in (queue.metrics() for queue in queues) if m["full"]]
        if full:
            return False, "full: " + ", ".join(full)
        return True, "none full"

    checks: list[ReadyCheck] = [("listening", listeningCheck)]
    if usesDatabase:
        checks.append(("database", databaseCheck))
    checks.append(("queues", queuesCheck))
    return checks
