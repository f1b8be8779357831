# -*- test-case-name: tests.test_plugins -*-
"""
Tests for L{sipcore.events.discovery} (finding and choosing handler
plugins) and L{sipcore.plugin} (the plugin descriptor, the context and the
options).
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
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipcore.events import TCP_CLOSED, ConnectionEvent
from sipcore.events.discovery import (
    FoundHandlers,
    PluginProblem,
    discoverHandlers,
    findHandlers,
    selectHandlers,
)
from sipcore.interfaces import IEventHandler, IHandlerContext, IHandlerPlugin
from sipcore.jobs import JobQueue
from sipcore.plugin import (
    HANDLER_API_VERSION,
    EnabledHandler,
    Handler,
    HandlerConfigError,
    HandlerContext,
    HandlerImportError,
    HandlerPlugin,
    OptionError,
    boolean,
    integer,
    number,
    parseOptions,
)

_counter = itertools.count()


class FakeImplementation:
    """
    A handler implementation for L{HandlerPlugin} tests that is not a
    L{sipcore.plugin.Handler}.
    """

    instances: list[FakeImplementation] = []

    class Options(usage.Options):
        optParameters = [["size", None, 10, "how many", integer(minimum=1)]]
        optFlags = [["strict", None, "refuse more"]]

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
from sipcore.plugin import HandlerPlugin
good = HandlerPlugin(
    "good", "a good handler", ("tcp:closed",),
    implementation="tests.test_plugins.FakeImplementation",
)
"""

SECOND = """
from sipcore.plugin import HandlerPlugin
second = HandlerPlugin(
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
from sipcore.interfaces import IHandlerPlugin

@implementer(IPlugin, IHandlerPlugin)
class Incomplete:
    name = "incomplete"
    description = "lacks makeHandler()"
    events = ("tcp:closed",)
    priority = 1
    apiVersion = 2
    implementation = "x.Y"
    timeout = concurrency = backlog = None

    def makeOptions(self):
        pass

incomplete = Incomplete()
"""

DUP1 = """
from sipcore.plugin import HandlerPlugin
one = HandlerPlugin("dup", "first", ("tcp:closed",), implementation="x.One")
"""

DUP2 = """
from sipcore.plugin import HandlerPlugin
two = HandlerPlugin("dup", "second", ("tcp:closed",), implementation="x.Two")
"""

NEWAPI = """
from sipcore.plugin import HandlerPlugin
future = HandlerPlugin("future", "from the future", ("tcp:closed",),
                     implementation="x.Y", apiVersion=99)
"""

BADEVENT = """
from sipcore.plugin import HandlerPlugin
typo = HandlerPlugin("typo", "misspelt event", ("tcp:close",), implementation="x.Y")
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
        L{IHandlerPlugin}; other plugin kinds are ignored silently.
        """
        package = self.makePackage({"good": GOOD, "second": SECOND, "other": OTHERPLUGIN})
        found = findHandlers(package)
        self.assertIsInstance(found, FoundHandlers)
        self.assertEqual(sorted(found), ["good", "second"])
        for provider in found.values():
            self.assertTrue(verifyObject(IHandlerPlugin, provider))
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
        An object that declares L{IHandlerPlugin} but lacks part of it is
        reported by name with what is missing, and not returned.
        """
        package = self.makePackage({"incomplete": NONPROVIDER, "good": GOOD})
        found = discoverHandlers(package)
        self.assertEqual(list(found), ["good"])
        (problem,) = found.problems
        self.assertEqual(problem.plugin, "incomplete")
        self.assertIn("does not provide IHandlerPlugin", problem.message)
        self.assertIn("makeHandler", problem.message)
        self.assertIn("(plugin {}.incomplete.incomplete)".format(package.__name__), problem.message)

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
        from twisted.logger import LogLevel

        from sipcore.testing import LogCapture

        logged = LogCapture(self, "sipcore.events.discovery")
        package = self.makePackage({"dup1": DUP1, "dup2": DUP2, "newapi": NEWAPI})
        findHandlers(package)
        errors = logged.at(LogLevel.error)
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
        self.a = HandlerPlugin("a", "A", (TCP_CLOSED,), implementation="x.A")
        self.b = HandlerPlugin("b", "B", (TCP_CLOSED,), implementation="x.B")

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


class HandlerPluginTests(PluginPackageMixin, SynchronousTestCase):
    """
    L{HandlerPlugin}.
    """

    def setUp(self) -> None:
        FakeImplementation.instances = []

    def makePlugin(self, **kwargs: Any) -> HandlerPlugin:
        return HandlerPlugin(
            "fake",
            "a fake handler",
            (TCP_CLOSED,),
            implementation="tests.test_plugins.FakeImplementation",
            **kwargs,
        )

    def test_verifyObject(self) -> None:
        """
        L{HandlerPlugin} provides L{IHandlerPlugin}.
        """
        self.assertTrue(verifyObject(IHandlerPlugin, self.makePlugin()))

    def test_defaults(self) -> None:
        """
        Defaults: priority 100, the current API version, bus defaults for
        timeout, concurrency and backlog.
        """
        plugin = self.makePlugin()
        self.assertEqual(plugin.priority, 100)
        self.assertEqual(plugin.apiVersion, HANDLER_API_VERSION)
        self.assertIsNone(plugin.timeout)
        self.assertIsNone(plugin.concurrency)
        self.assertIsNone(plugin.backlog)

    def test_immutable(self) -> None:
        """
        A plugin's attributes cannot be changed.
        """
        plugin = self.makePlugin()
        self.assertRaises(AttributeError, setattr, plugin, "priority", 1)

    def test_eventsNotTuple(self) -> None:
        """
        C{events} that is not a tuple (a single string, a list) is refused.
        """
        self.assertRaises(TypeError, HandlerPlugin, "x", "x", TCP_CLOSED, implementation="x.Y")
        self.assertRaises(TypeError, HandlerPlugin, "x", "x", [TCP_CLOSED], implementation="x.Y")

    def test_freshHandlers(self) -> None:
        """
        Each L{HandlerPlugin.makeHandler} call builds a new handler with the
        context it is given.
        """
        plugin = self.makePlugin()
        one, two = object(), object()
        first = plugin.makeHandler(one)  # type: ignore[arg-type]
        second = plugin.makeHandler(two)  # type: ignore[arg-type]
        self.assertIsNot(first, second)
        self.assertEqual([i.context for i in FakeImplementation.instances], [one, two])

    def test_importedOnlyWhenUsed(self) -> None:
        """
        The implementation module is not imported by building the plugin,
        only by making its options or a handler.
        """
        package = self.makePackage(
            {
                "impl": """
                from twisted.python import usage

                class Impl:
                    Options = usage.Options

                    def __init__(self, context):
                        self.context = context

                    def handle(self, event):
                        return event
                """
            }
        )
        moduleName = package.__name__ + ".impl"
        plugin = HandlerPlugin("lazy", "lazy", (TCP_CLOSED,), implementation=moduleName + ".Impl")
        self.assertNotIn(moduleName, sys.modules)
        self.assertIsInstance(plugin.makeOptions(), usage.Options)
        self.assertIn(moduleName, sys.modules)
        self.assertEqual(plugin.makeHandler(object()).handle("e"), "e")  # type: ignore[arg-type]

    def test_missingImplementation(self) -> None:
        """
        An implementation that cannot be imported makes C{makeOptions} and
        C{makeHandler} raise L{HandlerImportError} naming the handler and
        the implementation.
        """
        plugin = HandlerPlugin(
            "missing", "m", (TCP_CLOSED,), implementation="sipcore_no_such_module_xyz.Impl"
        )
        for make in (plugin.makeOptions, lambda: plugin.makeHandler(object())):  # type: ignore
            e = self.assertRaises(HandlerImportError, make)
            self.assertIn("'missing'", str(e))
            self.assertIn("sipcore_no_such_module_xyz.Impl", str(e))

    def test_noOptionsClass(self) -> None:
        """
        An implementation without C{Options} is refused by C{makeOptions}.
        """
        plugin = HandlerPlugin("bare", "b", (TCP_CLOSED,), implementation="tests.test_plugins.Bare")
        e = self.assertRaises(HandlerImportError, plugin.makeOptions)
        self.assertEqual(
            str(e), "handler 'bare': its implementation tests.test_plugins.Bare has no Options class"
        )

    def test_enabledOnTheBus(self) -> None:
        """
        An L{EnabledHandler} carries the plugin's name, events, priority and
        limits to the L{EventBus}, which delivers to the handler and
        honours its timeout.
        """
        from sipcore.events.bus import EventBus

        clock = Clock()
        bus = EventBus(clock)
        enabled = EnabledHandler.make(self.makePlugin(timeout=3.0), object())  # type: ignore
        self.assertTrue(verifyObject(IEventHandler, enabled))
        self.assertEqual((enabled.name, enabled.events, enabled.timeout), ("fake", (TCP_CLOSED,), 3.0))
        self.successResultOf(enabled.start())
        bus.subscribe(enabled)
        event = ConnectionEvent(TCP_CLOSED, 1, "tcp", ("127.0.0.1", 1), ("127.0.0.1", 2), 0.0)
        self.successResultOf(bus.fire(event))
        (impl,) = FakeImplementation.instances
        self.assertEqual(impl.events, [event])
        self.assertEqual(enabled.stop(), "stopped")
        self.assertTrue(impl.stopped)


class Bare:
    """
    An implementation without C{Options}.
    """


class HandlerBaseTests(SynchronousTestCase):
    """
    L{Handler}, the base class of implementations.
    """

    def test_verifyObject(self) -> None:
        """
        A L{Handler} provides L{IEventHandler}, with its name and options
        from the context.
        """
        options = {"size": 3}
        handler = Handler(HandlerContext(0, Clock(), None, options=options, handlerName="h"))
        self.assertTrue(verifyObject(IEventHandler, handler))
        self.assertEqual(handler.name, "h")
        self.assertIs(handler.options, options)


class OptionsTests(SynchronousTestCase):
    """
    L{parseOptions} and the coercions.
    """

    plugin = HandlerPlugin(
        "fake", "a fake handler", (TCP_CLOSED,),
        implementation="tests.test_plugins.FakeImplementation",
    )

    def test_defaults(self) -> None:
        """
        Without options, the C{Options} defaults.
        """
        options = parseOptions(self.plugin, {})
        self.assertIsInstance(options, FakeImplementation.Options)
        self.assertEqual((options["size"], options["strict"]), (10, 0))

    def test_parsed(self) -> None:
        """
        C{key=value} text is parsed by the C{Options}: coerced parameters,
        and flags set by a yes value.
        """
        options = parseOptions(self.plugin, {"size": " 42 ", "strict": "yes"})
        self.assertEqual((options["size"], options["strict"]), (42, 1))
        self.assertEqual(parseOptions(self.plugin, {"strict": "off"})["strict"], 0)

    def test_unknown(self) -> None:
        """
        Unknown options, even prefixes of known ones, are refused together,
        with the known ones.
        """
        e = self.assertRaises(OptionError, parseOptions, self.plugin, {"siz": "1", "b": "2"})
        self.assertEqual(
            str(e), "handler 'fake': unknown options 'b', 'siz'; known options: size, strict"
        )
        self.assertIsInstance(e, ValueError)
        e = self.assertRaises(OptionError, parseOptions, self.plugin, {"help": ""})
        self.assertIn("unknown option 'help'", str(e))

    def test_invalid(self) -> None:
        """
        A value the coercion refuses is refused with the reason and the
        value; so is a flag that is not yes or no.
        """
        e = self.assertRaises(OptionError, parseOptions, self.plugin, {"size": "0"})
        self.assertEqual(
            str(e), "handler 'fake': Parameter type enforcement failed: must be at least 1, not 0"
        )
        e = self.assertRaises(OptionError, parseOptions, self.plugin, {"strict": "maybe"})
        self.assertEqual(
            str(e),
            "handler 'fake': option strict: must be yes or no (true/false, on/off, 1/0), "
            "not 'maybe'",
        )

    def test_coercions(self) -> None:
        """
        L{integer}, L{number} and L{boolean} convert text and refuse what
        is out of range or not of their kind, naming the value.
        """
        self.assertEqual(integer(maximum=10)("10"), 10)
        self.assertEqual(number(minimum=0.0)("2.5"), 2.5)
        self.assertEqual([boolean(w) for w in ("Yes", "on", "1", "FALSE", "no", "0")],
                         [True, True, True, False, False, False])
        cases = [
            (integer(), "x", "must be an integer, not 'x'"),
            (integer(maximum=10), "11", "must be at most 10, not 11"),
            (number(), "nan", "must be a finite number, not 'nan'"),
            (number(), "a", "must be a number, not 'a'"),
            (number(minimum=0.0), "-1", "must be at least 0.0, not -1.0"),
        ]
        for coerce, value, message in cases:
            e = self.assertRaises(ValueError, coerce, value)
            self.assertEqual(str(e), message)


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
        self.assertIsNone(context.options)
        self.assertIsNone(context.dbPool)

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
        def runner(items: list[Any]) -> None:
            pass

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
