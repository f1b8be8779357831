# -*- test-case-name: tests.test_routes_hook -*-
"""
Routing of initial requests that are not for a registered local user: the
routing hook's values (L{sipcore.routes.hook}), the built-in routes
(L{sipcore.routes.table}, L{sipcore.routes.static}) and dispatcher sets
with health checks (L{sipcore.routes.dispatcher}).
"""

from sipcore.routes.hook import (
    DEFAULT_ROUTING_TIMEOUT,
    PEER,
    USER,
    Caller,
    RouteAnswer,
    RouteTarget,
    RouteTargets,
    RoutingChain,
    RoutingRequest,
)

__all__ = [
    "DEFAULT_ROUTING_TIMEOUT",
    "PEER",
    "USER",
    "Caller",
    "RouteAnswer",
    "RouteTarget",
    "RouteTargets",
    "RoutingChain",
    "RoutingRequest",
]
