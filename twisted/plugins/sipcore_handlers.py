# -*- test-case-name: tests.test_packaging -*-
"""
sipcore's built-in handler plugins.  Each is a light descriptor; its
implementation is imported only when its options are read or the handler
is made.
"""

from sipcore.events import CLOSE_EVENTS, CONNECTION_EVENTS, REGISTRATION_EVENTS
from sipcore.plugin import HandlerPlugin

locationCleanup = HandlerPlugin(
    "location-cleanup",
    "Remove the bindings of a closed stream connection from the location store",
    CLOSE_EVENTS,
    implementation="sipcore.handlers.cleanup.LocationCleanup",
    priority=10,
)

connectionAudit = HandlerPlugin(
    "connection-audit",
    "Record every connection open and close in the connection_events PostgreSQL table",
    CONNECTION_EVENTS,
    implementation="sipcore.handlers.audit.ConnectionAudit",
    priority=50,
)

eventLog = HandlerPlugin(
    "event-log",
    "Log one line per registration change and per stream connection close (--log-events)",
    REGISTRATION_EVENTS + CLOSE_EVENTS,
    implementation="sipcore.handlers.eventlog.EventLog",
    priority=90,
)

routes = HandlerPlugin(
    "routes",
    "Built-in routes: a default upstream, per-domain and per-prefix routes, dispatcher sets "
    "with OPTIONS health checks (a router: name it in --router)",
    (),
    implementation="sipcore.routes.static.StaticRoutes",
)
