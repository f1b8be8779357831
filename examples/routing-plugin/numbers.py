"""
A routing plugin: numbers dialled by local users are translated with a
PostgreSQL table, and the call goes to the translated URI.

    CREATE TABLE number_translation (
        prefix TEXT PRIMARY KEY,   -- the start of the dialled number
        target TEXT NOT NULL       -- a SIP URI; {rest} is the rest of the number
    );

The longest matching prefix wins; a number no row matches is left to the
next router.  This module is the tutorial of docs/plugins.rst, and the
tests run it.
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage
from zope.interface import implementer

from sipcore.interfaces import IHandlerContext, IRouter
from sipcore.message import SIPParseError, parseURI
from sipcore.plugin import Handler
from sipcore.routes import USER, RouteAnswer, RouteTarget, RouteTargets, RoutingRequest

# The longest prefix of the number, found with one parameterized query.
LOOKUP = (
    "SELECT prefix, target FROM number_translation"
    " WHERE left(%s, length(prefix)) = prefix"
    " ORDER BY length(prefix) DESC LIMIT 1"
)


@implementer(IRouter)
class NumberTranslation(Handler):
    """
    Route numbers dialled by local users by the C{number_translation}
    table.
    """

    class Options(usage.Options):
        optParameters = [
            ["next-hop", None, "",
             "send translated calls to this SIP URI (default: where the target points)"],
        ]

    def __init__(self, context: IHandlerContext) -> None:
        super().__init__(context)
        # No database: refuse to start, with a message naming the handler.
        self.pool = self.requireDatabase()
        self.nextHop = parseURI(self.options["next-hop"]) if self.options["next-hop"] else None

    async def _route(self, request: RoutingRequest) -> Any:
        number = request.user
        if request.caller.kind != USER or not number:
            return None  # only local users dial numbers
        rows = await self.pool.runQuery(LOOKUP, (number,))
        if not rows:
            return None  # not a number we know: the next router decides
        prefix, target = rows[0]
        try:
            uri = parseURI(target.replace("{rest}", number[len(prefix):]))
        except SIPParseError:
            return RouteAnswer(500, "Server Internal Error (bad number_translation row)")
        return RouteTargets((RouteTarget(uri=uri, nextHop=self.nextHop),))

    def route(self, request: RoutingRequest) -> Any:
        """
        See L{IRouter.route}: a Deferred firing with the translated target,
        or C{None}.
        """
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(self._route(request))
