# -*- test-case-name: tests.test_admin -*-
"""
The admin listener and the systemd readiness notice, as services of the
server's tree (the last children of L{sipcore.service.SIPCoreService}).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sdnotify
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.web.server import Site

from sipcore.admin.api import AdminAPI, ReadyCheck

__all__ = ["AdminService", "SystemdNotify", "readyChecks"]


class _QuietSite(Site):
    """
    A L{Site} that writes no access log line per request.
    """

    def log(self, request: Any) -> None:
        pass


class AdminService(StreamServerEndpointService):
    """
    Serves the L{AdminAPI} on an endpoint while running (it binds in
    C{privilegedStartService}; a failure to bind stops the start).

    @ivar listeningPort: the listening port once it listens, else C{None}.
    """

    listeningPort: Any = None
    _log = Logger()

    def __init__(self, endpoint: IStreamServerEndpoint, api: AdminAPI) -> None:
        """
        @param endpoint: where to listen.
        @param api: what to serve; its recent closes subscribe to its bus
            while the service runs.
        """
        site = _QuietSite(api.resource())
        site.noisy = False
        StreamServerEndpointService.__init__(self, _RecordingEndpoint(endpoint, self), site)
        self.setName("admin")
        self._parts = api.parts

    def startService(self) -> None:
        self._parts.bus.subscribe(self._parts.closes)
        StreamServerEndpointService.startService(self)

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        self._parts.bus.unsubscribe(self._parts.closes)
        return StreamServerEndpointService.stopService(self)  # type: ignore[no-any-return]


class _RecordingEndpoint:
    """
    An endpoint that records the port it listens on in its L{AdminService}.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, service: AdminService) -> None:
        self._endpoint = endpoint
        self._service = service

    def listen(self, factory: Any) -> Deferred[Any]:
        def listening(port: Any) -> Any:
            self._service.listeningPort = port
            self._service._log.info("admin API on {address}", address=port.getHost())
            return port

        return self._endpoint.listen(factory).addCallback(listening)


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
