# -*- test-case-name: tests.test_routes_static -*-
"""
The C{routes} handler: the built-in routes (L{sipcore.routes.table}) as a
router of the routing hook, with the dispatcher's health checks.

Options: C{default} (one SIP URI or several, comma-separated: the default
upstream), C{file} (a routes file), C{algorithm} and C{allow} (for the
default route), C{ping-interval} (seconds between OPTIONS health pings of
the targets of sets with several targets; 0: none) and C{ping-timeout}
(seconds a target has to answer).  A reload (C{SIGHUP}) reads the
routes file again; a bad file keeps the routes in use.
"""

from __future__ import annotations

from twisted.python import usage
from zope.interface import implementer

from sipcore.interfaces import IHandlerContext, IReloadable, IRouter
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


@implementer(IRouter, IReloadable)
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
        try:
            routes = self._readRoutes()
        except RoutesError as e:
            raise HandlerError("handler {!r}: {}".format(self.name, e)) from None
        self._running = False
        self._use(routes, {})

    def _readRoutes(self) -> list[Route]:
        """
        The routes of the options and of the routes file, read now.

        @raise RoutesError: for a malformed route or file, an unreadable
            file, a default route both in the options and the file, or no
            route.
        """
        options = self.options
        routes: list[Route] = []
        if options["file"]:
            try:
                with open(options["file"], encoding="utf-8") as f:
                    text = f.read()
            except OSError as e:
                raise RoutesError("cannot read the routes file {}: {}".format(
                    options["file"], e.strerror)) from None
            except UnicodeDecodeError:
                raise RoutesError("cannot read the routes file {}: not UTF-8".format(
                    options["file"])) from None
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
        if not routes:
            raise RoutesError("no route: give default=URI or file=PATH")
        return routes

    def _use(self, routes: list[Route], previous: dict[Route, DispatcherSet]) -> None:
        """
        Route by C{routes} from now on; a route also in C{previous} keeps
        its set (which targets answer, the round-robin position).
        """
        self.table = RouteTable(routes)
        self.sets = {route: previous.get(route) or DispatcherSet(route) for route in routes}
        self.health = HealthChecks(list(self.sets.values()), self.context.pinger,
                                   self.context.reactor, self.options["ping-interval"],
                                   self.options["ping-timeout"])

    def start(self) -> None:
        self._running = True
        self.health.start()

    def stop(self) -> None:
        self._running = False
        self.health.stop()

    def reload(self) -> str:
        """
        See L{IReloadable.reload}: read the routes file again; the routes
        that did not change keep their sets, and the health checks start
        over with the new sets (pinging at once).

        @raise RoutesError: as at start; the routes in use stay.
        """
        routes = self._readRoutes()
        self.health.stop()
        self._use(routes, self.sets)
        if self._running:
            self.health.start()
        return "({} route{}{})".format(len(routes), "" if len(routes) == 1 else "s",
                                       " from " + self.options["file"]
                                       if self.options["file"] else "")

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
