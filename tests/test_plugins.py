# -*- test-case-name: tests.test_plugins -*-
"""
Tests for L{sipcore.events.plugins} (finding and choosing handler plugins)
and L{sipcore.plugin} (helpers for plugin authors).
"""

from __future__ import annotations

import importlib
import itertools
import os
import sys
import textwrap
import types
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipcore.events import TCP_CLOSED, ConnectionEvent
from sipcore.events.plugins import (
    HANDLER_API_VERSION,
    FoundHandlers,
    HandlerConfigError,
    discoverHandlers,
    findHandlers,
    selectHandlers,
)
from sipcore.interfaces import IEventHandler, IHandlerContext
from sipcore.jobs import JobQueue
from sipcore.plugin import HandlerContext, HandlerImportError, HandlerNotStarted, LazyHandler

_counter = itertools.count()


class FakeImplementation:
    """
    A handler implementation for L{LazyHandler} tests.
    """

    instances: list[FakeImplementation] = []

    def __init__(self, context: Any) -> None:
        self.context = context
        self.events: list[Any] = []
        self.started = False
        self.stopped = False
        FakeImplementation.instances.append(self)

    def start(self) -> Deferred[None]:
        self.started = True
        return succeed(None)

    def handle(self, event: Any) -> str:
        self.events.append(event)
        return "handled"

    def stop(self) -> str:
        self.stopped = True
        return "stopped"


GOOD = """
from sipcore.plugin import LazyHandler
good = LazyHandler(
    "good", "a good handler", ("tcp:closed",),
    implementation="tests.test_plugins.FakeImplementation",
)
"""

SECOND = """
from sipcore.plugin import LazyHandler
second = LazyHandler(
    "second", "another good handler", ("tcp:closed", "websocket:closed"),
    implementation="tests.test_plugins.FakeImplementation", priority=5,
)
"""

BROKEN = """
raise RuntimeError("this plugin module is broken")
"""

SYNTAX = """
def (:
"""

NONPROVIDER = """
from twisted.plugin import IPlugin
from zope.interface import implementer
from sipcore.interfaces import IEventHandler

@implementer(IPlugin, IEventHandler)
class Incomplete:
    name = "incomplete"
    description = "lacks handle()"
    events = ("tcp:closed",)
    priority = 1
    apiVersion = 1

    def start(self, context):
        pass

    def stop(self):
        pass

incomplete = Incomplete()
"""

DUP1 = """
from sipcore.plugin import LazyHandler
one = LazyHandler("dup", "first", ("tcp:closed",), implementation="x.One")
"""

DUP2 = """
from sipcore.plugin import LazyHandler
two = LazyHandler("dup", "second", ("tcp:closed",), implementation="x.Two")
"""

NEWAPI = """
from sipcore.plugin import LazyHandler
future = LazyHandler("future", "from the future", ("tcp:closed",),
                     implementation="x.Y", apiVersion=99)
"""

BADEVENT = """
from sipcore.plugin import LazyHandler
typo = LazyHandler("typo", "misspelt event", ("tcp:close",), implementation="x.Y")
"""

OTHERPLUGIN = """
from twisted.plugin import IPlugin
from zope.interface import Interface, implementer

class IOther(Interface):
    pass

@implementer(IPlugin, IOther)
class Other:
    pass

other = Other()
"""


class PluginPackageMixin:
    """
    Builds a plugin package in a temporary directory on C{sys.path}.
    """

    def makePackage(self, modules: dict[str, str]) -> types.ModuleType:
        """
        Create a regular package with a unique name holding C{modules}
        (name to source) and import it.
        """
        case: SynchronousTestCase = self  # type: ignore[assignment]
        base = case.mktemp()
        name = "sipcore_test_plugins_{}_{}".format(os.getpid(), next(_counter))
        directory = os.path.join(base, name)
        os.makedirs(directory)
        with open(os.path.join(directory, "__init__.py"), "w") as f:
            f.write("")
        for module, source in modules.items():
            self.writeModule(directory, module, source)
        sys.path.insert(0, os.path.abspath(base))
        importlib.invalidate_caches()

        def cleanup() -> None:
            sys.path.remove(os.path.abspath(base))
            for key in list(sys.modules):
                if key == name or key.startswith(name + "."):
                    del sys.modules[key]

        case.addCleanup(cleanup)
        self.directory = directory
        return importlib.import_module(name)

    def writeModule(self, directory: str, module: str, source: str) -> None:
        with open(os.path.join(directory, module + ".py"), "w") as f:
            f.write(textwrap.dedent(source))


class DiscoveryTests(PluginPackageMixin, SynchronousTestCase):
    """
    L{findHandlers} and L{discoverHandlers} with real C{getPlugins}.
    """

    def test_findsGoodPlugins(self) -> None:
        """
        Every valid handler plugin is found by name and provides
        L{IEventHandler}; other plugin kinds are ignored silently.
        """
        package = self.makePackage({"good": GOOD, "second": SECOND, "other": OTHERPLUGIN})
        found = findHandlers(package)
        self.assertIsInstance(found, FoundHandlers)
        self.assertEqual(sorted(found), ["good", "second"])
        for provider in found.values():
            self.assertTrue(verifyObject(IEventHandler, provider))
        self.assertEqual(found.problems, [])

    def test_moduleRaisingAtImport(self) -> None:
        """
        A plugin module that raises at import is reported by module name
        with its exception; the other plugins are still found.
        """
        package = self.makePackage({"good": GOOD, "broken": BROKEN})
        found = discoverHandlers(package)
        self.assertEqual(list(found), ["good"])
        (problem,) = found.problems
        self.assertEqual(problem.plugin, package.__name__ + ".broken")
        self.assertIn("RuntimeError", problem.message)
        self.assertIn("this plugin module is broken", problem.message)
        self.flushLoggedErrors(RuntimeError)

    def test_moduleRaisingReportedEveryTime(self) -> None:
        """
        The import failure is reported again on the next search, after the
        dropin cache was written.
        """
        package = self.makePackage({"good": GOOD, "broken": BROKEN})
        discoverHandlers(package)
        self.assertTrue(os.path.exists(os.path.join(self.directory, "dropin.cache")))
        found = discoverHandlers(package)
        self.assertEqual([p.plugin for p in found.problems], [package.__name__ + ".broken"])
        self.flushLoggedErrors(RuntimeError)

    def test_moduleBrokenAfterCaching(self) -> None:
        """
        A plugin module that was cached while good and then breaks is
        reported, and its stale cached handler is not returned.
        """
        package = self.makePackage({"good": GOOD, "second": SECOND})
        self.assertEqual(sorted(discoverHandlers(package)), ["good", "second"])
        sys.modules.pop(package.__name__ + ".second", None)
        self.writeModule(self.directory, "second", BROKEN)
        path = os.path.join(self.directory, "second.py")
        stat = os.stat(path)
        os.utime(path, (stat.st_atime, stat.st_mtime + 10))
        importlib.invalidate_caches()
        found = discoverHandlers(package)
        self.assertEqual(list(found), ["good"])
        self.assertEqual({p.plugin for p in found.problems}, {package.__name__ + ".second"})
        self.flushLoggedErrors(RuntimeError)

    def test_syntaxError(self) -> None:
        """
        A plugin module with a syntax error is reported by module name.
        """
        package = self.makePackage({"syntax": SYNTAX})
        found = discoverHandlers(package)
        (problem,) = found.problems
        self.assertEqual(problem.plugin, package.__name__ + ".syntax")
        self.assertIn("SyntaxError", problem.message)
        self.flushLoggedErrors(SyntaxError)

    def test_nonProvider(self) -> None:
        """
        An object that declares L{IEventHandler} but lacks part of it is
        reported by name with what is missing, and not returned.
        """
        package = self.makePackage({"incomplete": NONPROVIDER, "good": GOOD})
        found = discoverHandlers(package)
        self.assertEqual(list(found), ["good"])
        (problem,) = found.problems
        self.assertEqual(problem.plugin, "incomplete")
        self.assertIn("does not provide IEventHandler", problem.message)
        self.assertIn("handle", problem.message)

    def test_duplicates(self) -> None:
        """
        Two plugins with the same name are both left out and reported
        together, naming their modules.
        """
        package = self.makePackage({"dup1": DUP1, "dup2": DUP2, "good": GOOD})
        found = discoverHandlers(package)
        self.assertEqual(list(found), ["good"])
        (problem,) = found.problems
        self.assertEqual(problem.plugin, "dup")
        self.assertIn(package.__name__ + ".dup1", problem.message)
        self.assertIn(package.__name__ + ".dup2", problem.message)

    def test_apiVersionMismatch(self) -> None:
        """
        A plugin written for an API version this sipcore does not implement
        is reported with both versions and left out.
        """
        package = self.makePackage({"newapi": NEWAPI})
        found = discoverHandlers(package)
        self.assertEqual(dict(found), {})
        (problem,) = found.problems
        self.assertEqual(problem.plugin, "future")
        self.assertIn("99", problem.message)
        self.assertIn(str(HANDLER_API_VERSION), problem.message)

    def test_unknownEventName(self) -> None:
        """
        A plugin subscribing to an event sipcore never fires is reported.
        """
        package = self.makePackage({"badevent": BADEVENT})
        found = discoverHandlers(package)
        (problem,) = found.problems
        self.assertEqual(problem.plugin, "typo")
        self.assertIn("tcp:close", problem.message)

    def test_findHandlersLogsProblems(self) -> None:
        """
        L{findHandlers} logs one error per problem, naming the plugin.
        """
        from twisted.logger import LogLevel, globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        package = self.makePackage({"dup1": DUP1, "dup2": DUP2, "newapi": NEWAPI})
        findHandlers(package)
        errors = [
            e
            for e in events
            if e.get("log_level") == LogLevel.error
            and e.get("log_namespace") == "sipcore.events.plugins"
        ]
        self.assertEqual(sorted(e["plugin"] for e in errors), ["dup", "future"])

    def test_unsearchablePackage(self) -> None:
        """
        A package C{getPlugins} cannot search is a L{HandlerConfigError}.
        """
        package = types.ModuleType("sipcore_test_not_a_real_package")
        self.assertRaises(HandlerConfigError, findHandlers, package)

    def test_defaultPackage(self) -> None:
        """
        Without a package, C{twisted.plugins} is searched.
        """
        found = discoverHandlers()
        self.assertIsInstance(found, FoundHandlers)
        self.flushLoggedErrors()


class SelectTests(SynchronousTestCase):
    """
    L{selectHandlers}.
    """

    def setUp(self) -> None:
        self.a = LazyHandler("a", "A", (TCP_CLOSED,), implementation="x.A")
        self.b = LazyHandler("b", "B", (TCP_CLOSED,), implementation="x.B")

    def test_configuredOrder(self) -> None:
        """
        The providers come back in the configured order; a name given twice
        is used once.
        """
        available = {"a": self.a, "b": self.b}
        self.assertEqual(selectHandlers(available, ["b", "a", "b"]), [self.b, self.a])
        self.assertEqual(selectHandlers(available, []), [])

    def test_unknownName(self) -> None:
        """
        An unknown name raises L{HandlerConfigError} naming it and listing
        the known names.
        """
        e = self.assertRaises(
            HandlerConfigError, selectHandlers, {"a": self.a, "b": self.b}, ["a", "nope"]
        )
        self.assertIn("'nope'", str(e))
        self.assertIn("known handlers: a, b", str(e))

    def test_unknownNameExplainedByProblem(self) -> None:
        """
        When the unknown name was left out because of a plugin problem, or a
        plugin module failed to import, the error says so.
        """
        from twisted.python.failure import Failure

        from sipcore.events.plugins import PluginProblem

        try:
            raise ImportError("no module named txfoo")
        except ImportError:
            failure = Failure()
        available = FoundHandlers(
            {"a": self.a},
            [
                PluginProblem("dup", "2 plugins use this name"),
                PluginProblem("pkg.broken", "failed to load: ImportError", failure),
                PluginProblem("unrelated", "api version"),
            ],
        )
        e = self.assertRaises(HandlerConfigError, selectHandlers, available, ["dup"])
        self.assertIn("dup: 2 plugins use this name", str(e))
        self.assertIn("pkg.broken: failed to load", str(e))
        self.assertNotIn("unrelated", str(e))


class LazyHandlerTests(PluginPackageMixin, SynchronousTestCase):
    """
    L{LazyHandler}.
    """

    def setUp(self) -> None:
        FakeImplementation.instances = []

    def makeHandler(self, **kwargs: Any) -> LazyHandler:
        return LazyHandler(
            "fake",
            "a fake handler",
            [TCP_CLOSED],
            implementation="tests.test_plugins.FakeImplementation",
            **kwargs,
        )

    def test_verifyObject(self) -> None:
        """
        L{LazyHandler} provides L{IEventHandler}.
        """
        self.assertTrue(verifyObject(IEventHandler, self.makeHandler()))

    def test_defaults(self) -> None:
        """
        Defaults: priority 100, the current API version, bus defaults for
        timeout, concurrency and backlog; C{events} becomes a tuple.
        """
        handler = self.makeHandler()
        self.assertEqual(handler.priority, 100)
        self.assertEqual(handler.apiVersion, HANDLER_API_VERSION)
        self.assertEqual(handler.events, (TCP_CLOSED,))
        self.assertIsNone(handler.timeout)
        self.assertIsNone(handler.concurrency)
        self.assertIsNone(handler.backlog)

    def test_eventsString(self) -> None:
        """
        A single string for C{events} is refused.
        """
        self.assertRaises(TypeError, LazyHandler, "x", "x", TCP_CLOSED, implementation="x.Y")

    def test_handleBeforeStart(self) -> None:
        """
        L{LazyHandler.handle} before start raises a clear error naming the
        handler.
        """
        e = self.assertRaises(HandlerNotStarted, self.makeHandler().handle, object())
        self.assertIn("'fake'", str(e))
        self.assertIn("start", str(e))

    def test_startDelegates(self) -> None:
        """
        Start imports the implementation, builds it with the context and
        starts it; handle and stop are delegated; after stop, handle raises
        again.
        """
        handler = self.makeHandler()
        context = object()
        self.successResultOf(handler.start(context))
        (impl,) = FakeImplementation.instances
        self.assertIs(impl.context, context)
        self.assertTrue(impl.started)
        event = object()
        self.assertEqual(handler.handle(event), "handled")
        self.assertEqual(impl.events, [event])
        self.assertEqual(handler.stop(), "stopped")
        self.assertTrue(impl.stopped)
        self.assertRaises(HandlerNotStarted, handler.handle, event)

    def test_startTwice(self) -> None:
        """
        Starting a started handler raises L{RuntimeError}.
        """
        handler = self.makeHandler()
        handler.start(object())
        self.assertRaises(RuntimeError, handler.start, object())

    def test_stopBeforeStart(self) -> None:
        """
        Stopping an unstarted handler does nothing.
        """
        self.assertIsNone(self.makeHandler().stop())

    def test_importedOnlyOnStart(self) -> None:
        """
        The implementation module is not imported by building the handler,
        only by starting it; an implementation without start/stop methods
        works.
        """
        package = self.makePackage(
            {
                "impl": """
                class Impl:
                    def __init__(self, context):
                        self.context = context
                    def handle(self, event):
                        return event
                """
            }
        )
        moduleName = package.__name__ + ".impl"
        handler = LazyHandler("lazy", "lazy", [TCP_CLOSED], implementation=moduleName + ".Impl")
        self.assertNotIn(moduleName, sys.modules)
        self.assertIsNone(handler.start(object()))
        self.assertIn(moduleName, sys.modules)
        self.assertEqual(handler.handle("e"), "e")
        self.assertIsNone(handler.stop())

    def test_missingImplementation(self) -> None:
        """
        An implementation that cannot be imported makes start raise, and
        the handler stays unstarted.
        """
        handler = LazyHandler(
            "missing", "m", [TCP_CLOSED], implementation="sipcore_no_such_module_xyz.Impl"
        )
        e = self.assertRaises(HandlerImportError, handler.start, object())
        self.assertIn("'missing'", str(e))
        self.assertIn("sipcore_no_such_module_xyz.Impl", str(e))
        self.assertRaises(HandlerNotStarted, handler.handle, object())

    def test_worksOnTheBus(self) -> None:
        """
        A started L{LazyHandler} receives events from the L{EventBus}, which
        honours its C{timeout}.
        """
        from sipcore.events.bus import EventBus

        clock = Clock()
        bus = EventBus(clock)
        handler = self.makeHandler(timeout=3.0)
        handler.start(object())
        bus.subscribe(handler)
        event = ConnectionEvent(TCP_CLOSED, 1, "tcp", ("127.0.0.1", 1), ("127.0.0.1", 2), 0.0)
        self.successResultOf(bus.fire(event))
        self.assertEqual(FakeImplementation.instances[0].events, [event])


class HandlerContextTests(SynchronousTestCase):
    """
    L{HandlerContext}.
    """

    def test_verifyObject(self) -> None:
        """
        L{HandlerContext} provides L{IHandlerContext}.
        """
        context = HandlerContext(serverId=1, reactor=Clock(), store=object())
        self.assertTrue(verifyObject(IHandlerContext, context))
        self.assertEqual(context.apiVersion, HANDLER_API_VERSION)
        self.assertEqual(context.options, {})
        self.assertIsNone(context.dbPool)

    def test_optionsCopied(self) -> None:
        """
        The context holds its own copy of the options.
        """
        options = {"batch": "10"}
        context = HandlerContext(1, Clock(), object(), options=options)
        options["batch"] = "20"
        self.assertEqual(context.options, {"batch": "10"})

    def test_makeJobQueueWithFactory(self) -> None:
        """
        L{HandlerContext.makeJobQueue} builds the queue with the given
        factory and records it by name.
        """
        calls: list[tuple[str, Any, dict[str, Any]]] = []

        def factory(name: str, runner: Any, **kwargs: Any) -> str:
            calls.append((name, runner, kwargs))
            return "queue:" + name

        shared: dict[str, Any] = {}
        context = HandlerContext(1, Clock(), object(), jobQueueFactory=factory, jobQueues=shared)
        runner = object()
        self.assertEqual(context.makeJobQueue("cleanup", runner, batchSize=5), "queue:cleanup")
        self.assertEqual(calls, [("cleanup", runner, {"batchSize": 5})])
        self.assertEqual(shared, {"cleanup": "queue:cleanup"})

    def test_makeJobQueueUniqueAcrossContexts(self) -> None:
        """
        Contexts sharing a registry refuse a queue name already used.
        """
        shared: dict[str, Any] = {}
        one = HandlerContext(1, Clock(), object(), jobQueues=shared)
        two = HandlerContext(1, Clock(), object(), jobQueues=shared)
        one.makeJobQueue("q", lambda items: None)
        self.assertRaises(ValueError, two.makeJobQueue, "q", lambda items: None)

    def test_makeJobQueueDefault(self) -> None:
        """
        Without a factory, a L{JobQueue} on the context's reactor is built.
        """
        clock = Clock()
        context = HandlerContext(1, clock, object())
        done: list[list[Any]] = []
        queue = context.makeJobQueue("q", done.append, batchDelay=2.0)
        self.assertIsInstance(queue, JobQueue)
        self.assertIs(context.jobQueues["q"], queue)
        queue.start()
        queue.put(1)
        clock.advance(2)
        self.assertEqual(done, [[1]])
