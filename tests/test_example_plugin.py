# -*- test-case-name: tests.test_example_plugin -*-
"""
Third-party handler plugins, end to end.

The example package in examples/sipcore-webhook is installed into a
temporary directory (with pip when it can build wheels here, else with
setuptools' own build, which uses the same package discovery), then:

  - a fresh C{twistd sipcore --list-handlers} finds it;
  - its own test suite passes from the installed copy;
  - in this process, C{findHandlers} finds it and C{--handler webhook}
    enables it in a real service on loopback, where it POSTs the
    C{tcp:closed} of a real TCP connection to a small HTTP server;
  - its failure (a URL nobody listens on), together with a handler that
    raises, does not stop location-cleanup.

It also checks that each broken plugin is refused with a clear message
through C{Options} and C{buildService}: one that does not provide the
interface, a duplicate name, a module that raises at import, a version
mismatch, an unknown name, an implementation that cannot be imported.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from psycopg2 import sql
from twisted.internet import defer, reactor, utils
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server
from zope.interface.verify import verifyObject

import twisted.plugins
from sipcore.events import TCP_CLOSED
from sipcore.events.discovery import findHandlers
from sipcore.interfaces import IHandlerPlugin
from sipcore.location import Binding
from sipcore.plugin import (
    HANDLER_API_VERSION,
    Handler,
    HandlerConfigError,
    HandlerContext,
    HandlerError,
    HandlerImportError,
    HandlerPlugin,
    handles,
)
from sipcore.tap import Options, buildService, makeService
from sipcore.testing import UDPMemoryReactor, connectionEvent
from tests.dbhelpers import createTestSchema
from tests.serverhelpers import (
    SIPCORE_PATH,
    connectTCP,
    connectWS,
    portOf,
    registerRequest,
    startServer,
    waitUntil,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "sipcore-webhook"

_counter = itertools.count()

# ---------------------------------------------------------------------------
# Installing the example package (once per test run)

_installed: dict[str, tuple[str, str]] = {}


async def _run(*args: str, cwd: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    out, err, code = await utils.getProcessOutputAndValue(
        sys.executable, list(args), env=env if env is not None else dict(os.environ),
        path=cwd, reactor=reactor,
    )
    return (out + err).decode("utf-8", "replace"), code


def _temporaryDirectory(prefix: str) -> str:
    base = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, base, True)
    return base


async def installPackage(source: Path) -> tuple[str, str]:
    """
    Install the project in C{source} into a temporary directory, once per
    test run, the way a user installs a third-party plugin.

    C{pip install --no-deps --target} needs to build a wheel; without the
    C{wheel} package (setuptools < 70.1) it cannot, offline, and the
    project is built with setuptools' C{build_py} instead, which finds the
    packages (C{find_namespace:}) and copies the same files.

    @return: the directory to put on C{sys.path}, and how it was made
        (C{"pip"} or C{"setuptools"}).
    """
    key = str(source)
    if key in _installed:
        return _installed[key]
    base = _temporaryDirectory("sipcore-plugin-")
    copy = os.path.join(base, "src")
    shutil.copytree(
        source,
        copy,
        ignore=shutil.ignore_patterns(
            "_trial_temp*", "build", "*.egg-info", "dropin.cache", "__pycache__"
        ),
    )
    target = os.path.join(base, "site")
    output, code = await _run(
        "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "--target", target, copy, cwd=base,
    )
    method = "pip"
    if code != 0:
        shutil.rmtree(target, ignore_errors=True)
        output, code = await _run(
            "-c", "import setuptools; setuptools.setup()",
            "build", "--build-base", os.path.join(base, "build"),
            "build_py", "--build-lib", target,
            cwd=copy,
        )
        method = "setuptools"
    if code != 0:
        raise AssertionError("cannot install {}:\n{}".format(source, output))
    _installed[key] = (target, method)
    return target, method


async def installExample() -> tuple[str, str]:
    """
    Install examples/sipcore-webhook (see L{installPackage}).
    """
    return await installPackage(EXAMPLE)


def useInstalled(testCase: TestCase, target: str) -> None:
    """
    Make an installed plugin package importable and discoverable in this
    process for the test: C{target} on C{sys.path}, and its
    C{twisted/plugins} in C{twisted.plugins.__path__} (computed when
    C{twisted.plugins} was first imported, so adding to C{sys.path} alone
    is not enough).  Its modules are forgotten at cleanup.
    """
    testCase.patch(sys, "path", [target] + sys.path)
    testCase.patch(
        twisted.plugins,
        "__path__",
        list(twisted.plugins.__path__) + [os.path.join(target, "twisted", "plugins")],
    )

    def forget() -> None:
        for name, module in list(sys.modules.items()):
            if (getattr(module, "__file__", None) or "").startswith(target):
                del sys.modules[name]

    testCase.addCleanup(forget)


def freshEnvironment(target: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [target, SIPCORE_PATH, env.get("PYTHONPATH", "")] if p
    )
    return env


# ---------------------------------------------------------------------------
# Plugin directories for the refusal tests


def addPluginDirectory(testCase: SynchronousTestCase, modules: dict[str, str]) -> dict[str, str]:
    """
    Add a directory of plugin modules to C{twisted.plugins.__path__} for
    the test (what installing a package with those modules does).

    @param modules: module name (a unique suffix is added) to source.
    @return: the given names mapped to the unique module names.
    """
    directory = os.path.join(testCase.mktemp(), "twisted", "plugins")
    os.makedirs(directory)
    unique = {}
    for name, source in modules.items():
        moduleName = "sipcore_test_{}_{}_{}".format(name, os.getpid(), next(_counter))
        unique[name] = moduleName
        with open(os.path.join(directory, moduleName + ".py"), "w") as f:
            f.write(textwrap.dedent(source))
    testCase.patch(twisted.plugins, "__path__", list(twisted.plugins.__path__) + [directory])

    def forget() -> None:
        for moduleName in unique.values():
            sys.modules.pop("twisted.plugins." + moduleName, None)

    testCase.addCleanup(forget)
    return unique


class Exploding(Handler):
    """
    A handler implementation that raises on every event.
    """

    def handle(self, event: Any) -> None:
        raise RuntimeError("exploding handler")


EXPLODE = """
from sipcore.plugin import HandlerPlugin
explode = HandlerPlugin(
    "explode", "raises on every close", ("tcp:closed", "tcp:reset", "tcp:timeout"),
    implementation="tests.test_example_plugin.Exploding", priority=0,
)
"""

NONPROVIDER = """
from twisted.plugin import IPlugin
from zope.interface import implementer
from sipcore.interfaces import IHandlerPlugin

@implementer(IPlugin, IHandlerPlugin)
class NoMaker:
    name = "nomaker"
    description = "lacks makeHandler()"
    events = ("tcp:closed",)
    priority = 1
    apiVersion = 2
    implementation = "x.Y"
    timeout = concurrency = backlog = None

    def makeOptions(self):
        pass

nomaker = NoMaker()
"""

DUPLICATE = """
from sipcore.plugin import HandlerPlugin
again = HandlerPlugin("location-cleanup", "a second location-cleanup", ("tcp:closed",),
                    implementation="x.Y")
"""

BROKEN = """
from sipcore.plugin import HandlerPlugin
broken = HandlerPlugin("broken", "never seen", ("tcp:closed",), implementation="x.Y")
raise RuntimeError("this plugin module is broken")
"""

FUTURE = """
from sipcore.plugin import HandlerPlugin
future = HandlerPlugin("future", "from the future", ("tcp:closed",),
                     implementation="x.Y", apiVersion=99)
"""

MISSING = """
from sipcore.plugin import HandlerPlugin
missing = HandlerPlugin("missing", "its implementation is not installed", ("tcp:closed",),
                      implementation="sipcore_no_such_package.handler.Missing")
"""


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(["--listen", "tcp:0", *args])
    return options


class RefusalTests(SynchronousTestCase):
    """
    A configured handler that cannot be used stops sipcore before anything
    starts, with a message naming the plugin and what is wrong.
    """

    def build(self, *args: str) -> Any:
        return buildService(parse(*args), UDPMemoryReactor())

    def test_doesNotProvideInterface(self) -> None:
        """
        A plugin that declares L{IHandlerPlugin} but lacks C{makeHandler}
        is refused when configured, saying what is missing.
        """
        names = addPluginDirectory(self, {"nomaker": NONPROVIDER})
        e = self.assertRaises(HandlerConfigError, self.build, "--handler", "nomaker")
        message = str(e)
        self.assertTrue(message.startswith("handler not available: 'nomaker'; known handlers: "))
        self.assertIn(
            "plugin problems: nomaker: <twisted.plugins.{0}.NoMaker object".format(
                names["nomaker"]
            ),
            message,
        )
        self.assertIn("(plugin twisted.plugins.{}.nomaker)".format(names["nomaker"]), message)
        self.assertIn("does not provide IHandlerPlugin: ", message)
        self.assertIn("The sipcore.interfaces.IHandlerPlugin.makeHandler(context) attribute was "
                      "not provided.", message)

    def test_duplicateName(self) -> None:
        """
        Two plugins named location-cleanup: neither is used, so the default
        configuration refuses to start, naming both.
        """
        names = addPluginDirectory(self, {"dup": DUPLICATE})
        e = self.assertRaises(HandlerConfigError, self.build)
        message = str(e)
        self.assertTrue(message.startswith("handler not available: 'location-cleanup'"), message)
        self.assertIn("location-cleanup: 2 plugins use this name, so none is used: ", message)
        self.assertIn("(plugin twisted.plugins.sipcore_handlers.locationCleanup)", message)
        self.assertIn("(plugin twisted.plugins.{}.again)".format(names["dup"]), message)

    def test_importError(self) -> None:
        """
        A plugin module that raises at import is named in the refusal of
        a handler it would have provided.
        """
        names = addPluginDirectory(self, {"broken": BROKEN})
        e = self.assertRaises(HandlerConfigError, self.build, "--handler", "broken")
        self.assertEqual(
            str(e).split("; plugin problems: ")[1],
            "twisted.plugins.{}: failed to load: RuntimeError: this plugin module is "
            "broken".format(names["broken"]),
        )
        self.flushLoggedErrors(RuntimeError)

    def test_versionMismatch(self) -> None:
        """
        A plugin written for another handler API version is refused,
        saying which versions this sipcore implements.
        """
        addPluginDirectory(self, {"future": FUTURE})
        e = self.assertRaises(HandlerConfigError, self.build, "--handler", "future")
        self.assertIn(
            "written for handler API version 99, but this sipcore implements "
            "version(s) {}".format(HANDLER_API_VERSION),
            str(e),
        )

    def test_unknownName(self) -> None:
        """
        A name no plugin has is refused, listing the known handlers;
        C{makeService} turns it into an exit with the message.
        """
        e = self.assertRaises(HandlerConfigError, self.build, "--handler", "nope")
        self.assertTrue(
            str(e).startswith(
                "handler not available: 'nope'; known handlers: connection-audit, event-log, "
                "location-cleanup"
            ),
            str(e),
        )
        exit = self.assertRaises(SystemExit, makeService, parse("--handler", "nope"))
        self.assertTrue(str(exit.code).startswith("sipcore: handler not available: 'nope'"))

    def test_implementationMissing(self) -> None:
        """
        A plugin whose implementation cannot be imported is found (its
        module is light) but stops the build of the service with
        L{HandlerImportError} naming the handler; C{makeService} exits with
        the message.
        """
        addPluginDirectory(self, {"missing": MISSING})
        reactor = UDPMemoryReactor()
        e = self.assertRaises(
            HandlerImportError, buildService, parse("--handler", "missing"), reactor)
        self.assertTrue(
            str(e).startswith(
                "handler 'missing': cannot import its implementation "
                "'sipcore_no_such_package.handler.Missing': ObjectNotFound"
            ),
            str(e),
        )
        self.assertEqual(reactor.tcpServers, [])
        exit = self.assertRaises(SystemExit, makeService, parse("--handler", "missing"))
        self.assertTrue(str(exit.code).startswith("sipcore: handler 'missing': cannot import"))


# ---------------------------------------------------------------------------
# The installed example


class WebhookReceiver(resource.Resource):
    """
    A tiny webhook endpoint that keeps the JSON documents POSTed to it.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[tuple[bytes | None, Any]] = []

    def render_POST(self, request: Any) -> bytes:
        self.posts.append((request.getHeader(b"content-type"), json.loads(request.content.read())))
        request.setResponseCode(204)
        return b""


class InstalledExampleTests(TestCase):
    """
    The example package, installed like any third-party plugin.
    """

    # trial waits for the coroutine; unittest's stub says setUp returns None.
    async def setUp(self) -> None:  # type: ignore[override]
        self.target, self.method = await installExample()

    def test_installedLayout(self) -> None:
        """
        The plugin module is installed under twisted/plugins without any
        C{__init__.py} in twisted/ or twisted/plugins/, beside its package.
        """
        target = Path(self.target)
        self.assertTrue((target / "twisted" / "plugins" / "sipcore_webhook_plugin.py").is_file())
        self.assertFalse((target / "twisted" / "__init__.py").exists())
        self.assertFalse((target / "twisted" / "plugins" / "__init__.py").exists())
        self.assertTrue((target / "sipcore_webhook" / "handler.py").is_file())

    async def test_listedByFreshTwistd(self) -> None:
        """
        A fresh C{twistd sipcore --list-handlers}, run outside the checkout
        with the installed package on its path, lists the webhook handler
        and reports no problem.
        """
        outside = self.mktemp()
        os.makedirs(outside)
        output, code = await _run(
            "-c", "from twisted.scripts.twistd import run; run()",
            "sipcore", "--list-handlers",
            cwd=outside, env=freshEnvironment(self.target),
        )
        self.assertEqual(code, 0, output)
        self.assertIn("\nwebhook  [off by default; enable with --handler webhook]\n", output)
        self.assertIn("    implementation: sipcore_webhook.handler.Webhook\n", output)
        self.assertIn("      url = (empty)", output)
        self.assertNotIn("Problems:", output)

    async def test_ownTestsPass(self) -> None:
        """
        The package's own tests (written with L{sipcore.testing}) pass from
        the installed copy.
        """
        output, code = await _run(
            "-m", "twisted.trial", "sipcore_webhook",
            cwd=self.target, env=freshEnvironment(self.target),
        )
        self.assertEqual(code, 0, output)
        self.assertIn("PASSED", output)

    def test_discovered(self) -> None:
        """
        C{findHandlers} finds the installed plugin: a L{HandlerPlugin} that
        provides L{IHandlerPlugin}, defined in the installed module.
        """
        useInstalled(self, self.target)
        found = findHandlers()
        self.assertEqual(found.problems, [])
        webhook = found["webhook"]
        self.assertIsInstance(webhook, HandlerPlugin)
        self.assertTrue(verifyObject(IHandlerPlugin, webhook))
        module = sys.modules["twisted.plugins.sipcore_webhook_plugin"]
        self.assertTrue(str(module.__file__).startswith(self.target), module.__file__)

    async def test_postsCloseOfRealConnection(self) -> None:
        """
        Enabled by name, the webhook POSTs the C{tcp:closed} of a real
        loopback TCP connection as JSON.
        """
        useInstalled(self, self.target)
        receiver = WebhookReceiver()
        # Twisted's annotation asks for a ServerFactory of its own protocol type.
        http = reactor.listenTCP(0, server.Site(receiver),  # type: ignore[arg-type]
                                 interface="127.0.0.1")
        self.addCleanup(http.stopListening)
        service = await startServer(
            self,
            "--handler", "webhook",
            "--handler-option",
            "webhook:url=http://127.0.0.1:{}/sip-events".format(portOf(http)),
            transports=("tcp",),
        )
        self.assertEqual([h.name for h in service.handlers], ["location-cleanup", "webhook"])
        client = await connectTCP(service.ports["tcp"])
        clientPort = client.localPort
        client.transport.loseConnection()
        await waitUntil(lambda: service.bus.stats("webhook").succeeded == 1, what="the POST")
        [(contentType, document)] = receiver.posts
        self.assertEqual(contentType, b"application/json")
        self.assertEqual(document["event"], TCP_CLOSED)
        self.assertEqual(document["transport"], "tcp")
        self.assertEqual(document["remote"], ["127.0.0.1", clientPort])
        self.assertEqual(document["local"], ["127.0.0.1", service.ports["tcp"]])
        self.assertIsInstance(document["conid"], int)
        self.assertEqual(service.bus.stats("webhook").failed, 0)

    async def test_failureDoesNotStopCleanup(self) -> None:
        """
        With the webhook pointed at a port nobody listens on, and a handler
        that raises running before location-cleanup, a binding registered
        over TCP is still removed when the connection closes; both
        failures are logged and counted.
        """
        useInstalled(self, self.target)
        addPluginDirectory(self, {"explode": EXPLODE})
        closed = reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
        deadPort = portOf(closed)
        await defer.maybeDeferred(closed.stopListening)
        service = await startServer(
            self,
            "--handler", "webhook",
            "--handler", "explode",
            "--handler-option", "webhook:url=http://127.0.0.1:{}/".format(deadPort),
            transports=("tcp",),
        )
        client = await connectTCP(service.ports["tcp"])
        response = await client.request(
            registerRequest("tcp", "alice", localPort=client.localPort)
        )
        self.assertEqual(response.status, 200)

        def bindings() -> Any:
            return service.store.lookup("alice@example.com", reactor.seconds())

        self.assertEqual(len(await bindings()), 1)
        client.transport.loseConnection()
        await waitUntil(
            lambda: service.bus.stats("webhook").failed == 1
            and service.bus.stats("explode").failed == 1,
            what="both failures",
        )

        async def gone() -> bool:
            return await bindings() == []

        await waitUntil(gone, what="the binding to go")
        self.assertEqual(service.bus.stats("location-cleanup").failed, 0)
        self.assertEqual(service.bus.stats("location-cleanup").succeeded, 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(self.flushLoggedErrors()), 1)


# ---------------------------------------------------------------------------
# The plugin author's API (sipcore.plugin)


class SlowHandler(Handler):
    """
    A handler implementation whose Deferreds never fire by themselves.
    """

    def __init__(self, context: Any) -> None:
        self.pending: list[defer.Deferred[None]] = []
        super().__init__(context)

    def handle(self, event: Any) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self.pending.append(d)
        return d


SLOW = """
from sipcore.plugin import HandlerPlugin
slow = HandlerPlugin(
    "slow", "never answers", ("tcp:closed",),
    implementation="tests.test_example_plugin.SlowHandler",
    priority=0, timeout=5.0, concurrency=1, backlog=1,
)
"""


class ServiceIsolationTests(SynchronousTestCase):
    """
    In a whole service, a slow plugin that runs before location-cleanup
    does not delay it: its timeout, concurrency and backlog apply to it
    alone.
    """

    def test_slowPluginIsolated(self) -> None:
        """
        Three close events: location-cleanup removes all three
        connections' bindings at once, while the slow handler runs one,
        queues one and drops one; its timeout frees the slot for the
        queued one.
        """
        addPluginDirectory(self, {"slow": SLOW})
        clock = UDPMemoryReactor()
        service = buildService(parse("--handler", "slow", "--server-id", "2"), clock)
        self.successResultOf(service.startService())
        now = clock.seconds()
        store = service.store
        self.successResultOf(store.save([
            Binding(ruid=str(conid), username="u", domain="example.com",
                    contact="sip:u@192.0.2.1:{}".format(conid), expires=now + 600,
                    serverId=2, connectionId=conid)
            for conid in (1, 2, 3)]))
        for conid in (1, 2, 3):
            service.bus.fire(connectionEvent(TCP_CLOSED, conid=conid))
        clock.advance(0.1)
        self.assertEqual(store.allBindings(), [])
        slow = service.bus.stats("slow")
        self.assertEqual((slow.running, slow.waiting, slow.dropped), (1, 1, 1))
        self.assertEqual(service.bus.stats("location-cleanup").succeeded, 3)
        clock.advance(5.0)
        self.assertEqual((slow.timedOut, slow.running, slow.waiting), (1, 1, 0))
        clock.advance(5.0)
        self.assertEqual((slow.timedOut, slow.running, slow.fired), (2, 0, 2))
        self.successResultOf(service.stopService())


class HandlesTests(SynchronousTestCase):
    """
    L{handles} and L{Handler}'s dispatch.
    """

    def test_unknownEvent(self) -> None:
        """
        A misspelt event name is refused when the class is defined.
        """
        e = self.assertRaises(ValueError, handles, "tcp:close")
        self.assertIn("unknown event name(s) 'tcp:close'", str(e))
        self.assertRaises(ValueError, handles)

    def test_twoMethodsForOneEvent(self) -> None:
        """
        Two methods of one class for the same event are refused.
        """

        def define() -> None:
            class Twice(Handler):
                @handles("tcp:closed")
                def one(self, event: Any) -> None:
                    pass

                @handles("tcp:closed", "tcp:reset")
                def two(self, event: Any) -> None:
                    pass

        e = self.assertRaises(TypeError, define)
        self.assertEqual(str(e), "Twice: both one() and two() handle 'tcp:closed'")

    def test_dispatchAndInheritance(self) -> None:
        """
        C{handle} calls the method for the event's name (a subclass may
        replace one); other events return C{None}.
        """

        class Base(Handler):
            @handles("tcp:closed", "tcp:reset")
            def closed(self, event: Any) -> str:
                return "base " + event.name

        class Child(Base):
            @handles("tcp:reset")
            def reset(self, event: Any) -> str:
                return "child " + event.name

        handler = Child(HandlerContext(0, Clock(), None, handlerName="child"))
        self.assertEqual(handler.name, "child")
        self.assertEqual(handler.handle(connectionEvent(TCP_CLOSED)), "base tcp:closed")
        self.assertEqual(handler.handle(connectionEvent("tcp:reset")), "child tcp:reset")
        self.assertIsNone(handler.handle(connectionEvent("tcp:connected")))
        self.assertEqual(Child.handledEvents(), ("tcp:closed", "tcp:reset"))
        self.assertIsNone(handler.start())
        self.assertIsNone(handler.stop())

    def test_requireDatabase(self) -> None:
        """
        C{requireDatabase} returns the pool, or refuses without one.
        """

        class NeedsDb(Handler):
            pass

        pool = object()
        self.assertIs(NeedsDb(HandlerContext(0, Clock(), None, dbPool=pool)).requireDatabase(),
                      pool)
        handler = NeedsDb(HandlerContext(0, Clock(), None, handlerName="needs-db"))
        e = self.assertRaises(HandlerError, handler.requireDatabase)
        self.assertIn("handler 'needs-db' needs a PostgreSQL database", str(e))

    def test_pluginChecksEvents(self) -> None:
        """
        A plugin subscribing to an event its L{Handler} has no method for
        refuses to make the handler.
        """
        partial = HandlerPlugin(
            "partial", "closes only", ("tcp:closed", "tcp:timeout"),
            implementation="tests.test_example_plugin.ClosedOnly",
        )
        e = self.assertRaises(
            HandlerError, partial.makeHandler, HandlerContext(0, Clock(), None))
        self.assertEqual(
            str(e),
            "handler 'partial' subscribes to tcp:timeout but its implementation "
            "tests.test_example_plugin.ClosedOnly has no @handles method for it",
        )
        good = HandlerPlugin("closed-only", "closes only", ("tcp:closed",),
                             implementation="tests.test_example_plugin.ClosedOnly")
        handler = good.makeHandler(HandlerContext(0, Clock(), None, handlerName="closed-only"))
        self.assertIsNone(handler.start())
        self.assertEqual(handler.handle(connectionEvent(TCP_CLOSED)), "closed-only")

    def test_optionDefaults(self) -> None:
        """
        A context without options gives a L{Handler} its C{Options}
        defaults.
        """
        handler = Sized(HandlerContext(0, Clock(), None))
        self.assertEqual(handler.options["size"], 3)


class Sized(Handler):
    """
    Has one option.
    """

    class Options(usage.Options):
        optParameters = [["size", None, 3, "how many", int]]


class ClosedOnly(Handler):
    """
    Handles C{tcp:closed} only.
    """

    @handles("tcp:closed")
    def closed(self, event: Any) -> str:
        return self.name


# ---------------------------------------------------------------------------
# The tutorial in docs/plugins.rst

PLUGINS_DOC = ROOT / "docs" / "plugins.rst"

_FILE_COMMENT = re.compile(r"^# ([A-Za-z0-9_./-]+\.[A-Za-z]+|MANIFEST\.in)$")


def tutorialFiles(text: str) -> dict[str, str]:
    """
    The files of the tutorial: every C{code-block} whose first line is a
    comment naming a relative path (C{# sipcore_wslog/handler.py}).

    @return: path to content (the comment line included).
    """
    files: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if not lines[index].startswith(".. code-block::"):
            index += 1
            continue
        index += 1
        block: list[str] = []
        while index < len(lines) and (not lines[index].strip() or lines[index].startswith("   ")):
            block.append(lines[index])
            index += 1
        body = textwrap.dedent("\n".join(block)).strip("\n") + "\n"
        match = _FILE_COMMENT.match(body.splitlines()[0])
        if match is not None:
            files[match.group(1)] = body
    return files


_tutorial: dict[str, Path] = {}


def writeTutorial() -> Path:
    """
    Write the tutorial's project into a temporary directory, once.
    """
    if "source" not in _tutorial:
        source = Path(_temporaryDirectory("sipcore-wslog-")) / "sipcore-wslog"
        for path, content in tutorialFiles(PLUGINS_DOC.read_text(encoding="utf-8")).items():
            destination = source / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(content, encoding="utf-8")
        _tutorial["source"] = source
    return _tutorial["source"]


class TutorialTests(TestCase):
    """
    The tutorial's plugin, extracted from docs/plugins.rst, installed and
    run: what a reader following it ends up with works.
    """

    # trial waits for the coroutine; unittest's stub says setUp returns None.
    async def setUp(self) -> None:  # type: ignore[override]
        self.source = writeTutorial()
        self.target, self.method = await installPackage(self.source)

    def test_files(self) -> None:
        """
        The tutorial gives every file of the project it describes, and no
        C{__init__.py} in twisted/ or twisted/plugins/.
        """
        found = sorted(
            str(path.relative_to(self.source)) for path in self.source.rglob("*")
            if path.is_file()
        )
        self.assertEqual(
            found,
            [
                "MANIFEST.in",
                "pyproject.toml",
                "setup.cfg",
                "sipcore_wslog/__init__.py",
                "sipcore_wslog/handler.py",
                "sipcore_wslog/test/__init__.py",
                "sipcore_wslog/test/test_handler.py",
                "twisted/plugins/sipcore_wslog_plugin.py",
            ],
        )
        self.assertTrue(
            (Path(self.target) / "twisted" / "plugins" / "sipcore_wslog_plugin.py").is_file()
        )
        self.assertFalse((Path(self.target) / "twisted" / "__init__.py").exists())

    async def test_ownTestsPass(self) -> None:
        """
        The tutorial's tests (Step 7) pass against the installed package.
        """
        output, code = await _run(
            "-m", "twisted.trial", "sipcore_wslog",
            cwd=self.target, env=freshEnvironment(self.target),
        )
        self.assertEqual(code, 0, output)
        self.assertIn("PASSED (successes=5)", output)

    async def test_listed(self) -> None:
        """
        C{--list-handlers} shows the handler as the tutorial says it does.
        """
        outside = self.mktemp()
        os.makedirs(outside)
        output, code = await _run(
            "-c", "from twisted.scripts.twistd import run; run()",
            "sipcore", "--list-handlers",
            cwd=outside, env=freshEnvironment(self.target),
        )
        self.assertEqual(code, 0, output)
        expected = output[output.index("\nwslog  [") + 1 :].split("\n\n")[0]
        self.assertIn(
            "\n".join("    " + line for line in expected.splitlines()),
            PLUGINS_DOC.read_text(encoding="utf-8"),
        )

    async def test_writesRowOnWebSocketClose(self) -> None:
        """
        In a live sipcore with PostgreSQL, a WebSocket session that ends
        with a close frame leaves one row in ws_sessions with its conid,
        peer, duration and close code and reason.
        """
        schema = await createTestSchema(self)
        useInstalled(self, self.target)
        service = await startServer(
            self, "--db", schema.dsn, "--server-id", "4", "--handler", "wslog",
            transports=("ws",),
        )
        client = await connectWS(service.ports["ws"])
        clientPort = client.localPort
        client.sendClose(code=1000, reason="bye")
        await client.waiters.lost
        query = sql.SQL(
            "SELECT server_id, connection_id, remote_host, remote_port, duration,"
            " close_code, close_reason FROM {}.ws_sessions"
        ).format(sql.Identifier(schema.name))
        await waitUntil(
            lambda: service.bus.stats("wslog").succeeded == 1, what="the INSERT"
        )
        [row] = await schema.admin.runQuery(query)
        self.assertEqual(row[0], 4)
        self.assertIsInstance(row[1], int)
        self.assertEqual((row[2], row[3]), ("127.0.0.1", clientPort))
        self.assertGreaterEqual(row[4], 0.0)
        self.assertEqual((row[5], row[6]), (1000, "bye"))
