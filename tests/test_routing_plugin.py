"""
The routing plugin tutorial of docs/plugins.rst
(C{examples/routing-plugin/numbers.py}) against the real PostgreSQL: a
number-translation table decides where calls go, through the proxy.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from sipcore.interfaces import IRouter
from sipcore.message import Request, parseMessage, parseURI
from sipcore.plugin import HandlerContext, HandlerError
from sipcore.routes import PEER, USER, Caller, RouteTargets, RoutingChain, RoutingRequest
from sipcore.sip.auth import Identity
from sipcore.sip.proxy import Proxy
from sipcore.transport.hops import HopConnector
from tests.dbhelpers import createTestSchema, startDatabase
from tests.test_proxy import ProxyHarness, sipRequest

_PATH = os.path.join(os.path.dirname(__file__), "..", "examples", "routing-plugin", "numbers.py")


def loadTutorial() -> Any:
    """
    Import the tutorial's module from its file.
    """
    spec = importlib.util.spec_from_file_location("sipcore_tutorial_numbers", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def routingRequest(uri: str, kind: str = USER) -> RoutingRequest:
    request = parseMessage(sipRequest("INVITE", uri=uri))
    assert isinstance(request, Request)
    return RoutingRequest(request, request.uri, Caller(kind, "127.0.0.1", "alice@example.com"),
                          True)


class NumberTranslationTests(TestCase):
    """
    The tutorial's router runs its SQL on the shared pool.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        schema = await createTestSchema(self, withLocation=False)
        await schema.admin.runOperation(
            "CREATE TABLE {}.number_translation (prefix TEXT PRIMARY KEY, target TEXT NOT NULL)"
            .format(schema.name))
        await schema.admin.runOperation(
            "INSERT INTO {}.number_translation VALUES (%s, %s), (%s, %s)".format(schema.name),
            ("+49", "sip:0{rest}@127.0.0.1:6000", "+4930", "sip:berlin-{rest}@127.0.0.1:6001"))
        self.database = await startDatabase(self, schema.dsn)
        self.module = loadTutorial()

    def makeRouter(self, dbPool: Any = True) -> Any:
        return self.module.NumberTranslation(HandlerContext(
            serverId=0, reactor=reactor, store=None,
            dbPool=self.database.pool if dbPool is True else dbPool,
            handlerName="numbers"))

    async def test_translates(self) -> None:
        """
        The longest prefix wins and C{{rest}} takes the rest of the number;
        an unknown number, a peer and a URI without user go to the next
        router (C{None}).
        """
        router = self.makeRouter()
        self.assertTrue(verifyObject(IRouter, router))
        berlin = await router.route(routingRequest("sip:+49301234@example.com"))
        assert isinstance(berlin, RouteTargets)
        self.assertEqual(str(berlin.targets[0].uri), "sip:berlin-1234@127.0.0.1:6001")
        munich = await router.route(routingRequest("sip:+49891234@example.com"))
        self.assertEqual(str(munich.targets[0].uri), "sip:0891234@127.0.0.1:6000")
        self.assertIsNone(await router.route(routingRequest("sip:+331234@example.com")))
        self.assertIsNone(await router.route(routingRequest("sip:+49301234@x", kind=PEER)))

    def test_needsDatabase(self) -> None:
        """
        Without a database the handler refuses to be made.
        """
        self.assertRaises(HandlerError, self.makeRouter, None)

    async def test_throughTheProxy(self) -> None:
        """
        An authenticated user's INVITE to a number goes, after the query,
        to the translated URI.
        """
        h = ProxyHarness()
        h.proxy = Proxy(h.core, h.store, h.clock, HopConnector(h.table, h.listeners),
                        routers=RoutingChain([("numbers", self.makeRouter())], h.clock))
        h.proxy.install()

        def guard(tx: Any) -> defer.Deferred[bool]:
            tx.authenticated = Identity("alice", "example.com")
            return defer.succeed(True)

        h.core.addGuard(guard)
        h.send(sipRequest("INVITE", uri="sip:+49301234@example.com"))
        for _ in range(500):
            if h.udpSent():
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        [(invite, address)] = h.udpSent()
        self.assertEqual(address, ("127.0.0.1", 6001))
        self.assertEqual(invite.uri, parseURI("sip:berlin-1234@127.0.0.1:6001"))
