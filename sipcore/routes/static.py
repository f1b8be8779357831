# -*- test-case-name: tests.test_routes_static -*-
"""
The C{routes} handler: the built-in routes (L{sipcore.routes.table}) as a
router of the routing hook, with the dispatcher's health checks.

Options: C{default} (one SIP URI or several, comma-separated: the default
upstream), C{file} (a routes file), C{algorithm} and C{allow} (for the
default route), C{ping-interval} (seconds between OPTIONS health pings of
the targets of sets with several targets; 0: none) and C{ping-timeout}
(seconds a target has to answer).
"""

from __future__ import annotations

from twisted.python import usage
from zope.interface import implementer

from sipcore.interfaces import IHandlerContext, IRouter
from sipcore.plugin import Handler, HandlerError, number
from sipcore.routes.dispatcher import (
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    DispatcherSet,
    HealthChecks,
)
from sipcore.routes.hook import RouteAnswer, RouteTarget, RouteTargets, RoutingRequest
from sipcore.routes.table import (
    DEFAULT,
    PREFIX,
    Route,
    RoutesError,
    RouteTable,
    makeRoute,
    parseRoutes,
    parseTargets,
)

__all__ = ["StaticRoutes"]


@implementer(IRouter)
class StaticRoutes(Handler):
    """
    Routes by the route table; callers a route does not allow get C{403}.

    @ivar table: the L{RouteTable}.
    @ivar sets: one L{DispatcherSet} per route, by route.
    """

    class Options(usage.Options):
        optParameters = [
            ["default", None, "",
             "default upstream: a SIP URI, or several comma-separated (a dispatcher set)"],
            ["file", None, "", "routes file (see docs/routing.rst, 'Routes')"],
            ["algorithm", None, "priority",
             "how the default route picks a target: priority, round-robin or weighted"],
            ["allow", None, "users",
             "who may use the default route: users, peers or users,peers"],
            ["ping-interval", None, DEFAULT_PING_INTERVAL,
             "seconds between OPTIONS pings of each target of a set (0: none)", number(0)],
            ["ping-timeout", None, DEFAULT_PING_TIMEOUT,
             "seconds a target has to answer a ping", number(0.001)],
        ]

    def __init__(self, context: IHandlerContext) -> None:
        """
        @raise HandlerError: for a malformed route or routes file, a
            default route both in the options and the file, or no route.
        """
        super().__init__(context)
        options = self.options
        try:
            routes: list[Route] = []
            if options["file"]:
                try:
                    with open(options["file"], encoding="utf-8") as f:
                        text = f.read()
                except OSError as e:
                    raise RoutesError("cannot read the routes file {}: {}".format(
                        options["file"], e.strerror)) from None
                routes.extend(parseRoutes(text, options["file"]))
            if options["default"]:
                if any(route.kind == DEFAULT for route in routes):
                    raise RoutesError("a default route both in the options and in {}".format(
                        options["file"]))
                where = "option default"
                targets = parseTargets(
                    [w.strip() for w in options["default"].split(",") if w.strip()], where)
                routes.append(makeRoute(DEFAULT, "", targets, {
                    "algorithm": options["algorithm"], "allow": options["allow"]}, where))
        except RoutesError as e:
            raise HandlerError("handler {!r}: {}".format(self.name, e)) from None
        if not routes:
            raise HandlerError("handler {!r}: no route: give default=URI or file=PATH".format(
                self.name))
        self.table = RouteTable(routes)
        self.sets = {route: DispatcherSet(route) for route in routes}
        self.health = HealthChecks(list(self.sets.values()), context.pinger, context.reactor,
                                   options["ping-interval"], options["ping-timeout"])

    def start(self) -> None:
        self.health.start()

    def stop(self) -> None:
        self.health.stop()

    def route(self, request: RoutingRequest) -> RouteTargets | RouteAnswer | None:
        """
        See L{IRouter.route}: the targets of the request's route in the
        order its set gives, C{403} for a caller the route does not allow,
        C{None} without a matching route.
        """
        route = self.table.find(request.uri)
        if route is None:
            return None
        if request.caller.kind not in route.allow:
            return RouteAnswer(403, "Forbidden (route not allowed for this caller)")
        uri = None
        if route.kind == PREFIX and route.strip:
            uri = request.uri.copy(user=request.user[route.strip:] or None)
        order = self.sets[route].order()
        return RouteTargets(tuple(RouteTarget(uri=uri, nextHop=target) for target in order))
