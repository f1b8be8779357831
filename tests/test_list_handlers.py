# -*- test-case-name: tests.test_list_handlers -*-
"""
Tests for C{twistd sipcore --list-handlers} (L{sipcore.tap.listHandlers}
and L{sipcore.events.discovery.describeHandler}).
"""

from __future__ import annotations

import io
import sys

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sipcore.plugin import HANDLER_API_VERSION, Handler, boolean, handles, integer
from sipcore.tap import Options, listHandlers, makeService
from tests.test_plugins import BROKEN, PluginPackageMixin

GOOD = """
from sipcore.plugin import HandlerPlugin
good = HandlerPlugin(
    "good", "a good handler", ("tcp:closed", "websocket:closed"),
    implementation="tests.test_list_handlers.GoodHandler",
    priority=5, timeout=2.5, concurrency=3,
)
"""

PLAIN = """
from sipcore.plugin import HandlerPlugin
plain = HandlerPlugin(
    "plain", "an implementation without declared options", ("tcp:reset",),
    implementation="tests.test_list_handlers.NoOptions",
)
"""

MISSING = """
from sipcore.plugin import HandlerPlugin
missing = HandlerPlugin(
    "missing", "not installed", ("tcp:closed",),
    implementation="tests.test_list_handlers.NoSuchHandler",
)
"""

FUTURE = """
from sipcore.plugin import HandlerPlugin
future = HandlerPlugin("future", "from the future", ("tcp:closed",),
                     implementation="x.Y", apiVersion=1)
"""


class GoodHandler(Handler):
    """
    A handler with declared options.
    """

    class Options(usage.Options):
        optParameters = [
            ["size", None, 10, "how many", integer(minimum=1)],
            ["url", None, "", "where"],
            ["strict", None, False, None, boolean],
        ]
        optFlags = [["verbose", None, "say more"]]

    @handles("tcp:closed", "websocket:closed")
    def closed(self, event: object) -> None:
        pass


class NoOptions(Handler):
    """
    A handler with no options of its own.
    """


class ListTests(PluginPackageMixin, SynchronousTestCase):
    """
    The listing describes every handler and every problem.
    """

    def test_describesEachHandler(self) -> None:
        """
        Each handler is listed with whether it is on by default, its
        description, events, priority, API version, limits,
        implementation and declared options with their defaults; handlers
        come in name order.
        """
        package = self.makePackage({"good": GOOD, "plain": PLAIN})
        out = io.StringIO()
        text = listHandlers(out, package)
        self.assertEqual(out.getvalue(), text)
        self.assertEqual(
            text,
            "Handler plugins (this sipcore implements handler API version {}):\n"
            "\n"
            "good  [off by default; enable with --handler good]\n"
            "    a good handler\n"
            "    events:         tcp:closed, websocket:closed\n"
            "    priority:       5\n"
            "    API version:    2\n"
            "    limits:         timeout 2.5, concurrency 3, backlog (bus default)\n"
            "    implementation: tests.test_list_handlers.GoodHandler\n"
            "    options:\n"
            "      size = 10      how many\n"
            "      strict = no\n"
            "      url = (empty)  where\n"
            "      verbose = no   say more\n"
            "\n"
            "plain  [off by default; enable with --handler plain]\n"
            "    an implementation without declared options\n"
            "    events:         tcp:reset\n"
            "    priority:       100\n"
            "    API version:    2\n"
            "    limits:         timeout (bus default), concurrency (bus default), "
            "backlog (bus default)\n"
            "    implementation: tests.test_list_handlers.NoOptions\n"
            "    options:        (none)\n".format(
                HANDLER_API_VERSION
            ),
        )

    def test_problems(self) -> None:
        """
        A module that fails to import, a plugin for another API version and
        an implementation that cannot be imported are listed as problems,
        after the usable handlers.
        """
        package = self.makePackage({"broken": BROKEN, "future": FUTURE, "missing": MISSING})
        text = listHandlers(io.StringIO(), package)
        self.assertIn(
            "\nmissing  [off by default; enable with --handler missing]\n"
            "    not installed\n",
            text,
        )
        self.assertIn(
            "    implementation: tests.test_list_handlers.NoSuchHandler (CANNOT IMPORT: ",
            text,
        )
        head, problems = text.split("\nProblems:\n")
        lines = problems.splitlines()
        self.assertEqual(len(lines), 3, problems)
        self.assertTrue(lines[0].startswith(
            "    {}.broken: failed to load: RuntimeError: this plugin module is broken".format(
                package.__name__)), lines[0])
        self.assertTrue(lines[1].startswith("    future: "), lines[1])
        self.assertIn("written for handler API version 1, but this sipcore implements", lines[1])
        self.assertTrue(lines[2].startswith(
            "    handler 'missing': cannot import its implementation 'tests.test_list_handlers."
            "NoSuchHandler': "), lines[2])
        self.assertNotIn("\nfuture  [", head)
        self.flushLoggedErrors(RuntimeError)

    def test_nothingFound(self) -> None:
        """
        A package without handler plugins says so.
        """
        package = self.makePackage({})
        text = listHandlers(io.StringIO(), package)
        self.assertTrue(text.endswith("\n\nno handler plugins found\n"), text)

    def test_builtins(self) -> None:
        """
        The built-in handlers are listed: location-cleanup on by default,
        connection-audit off, with its options.
        """
        text = listHandlers(io.StringIO())
        self.assertIn(
            "\nlocation-cleanup  [on by default; disable with --disable-handler "
            "location-cleanup]\n"
            "    Remove the bindings of a closed stream connection from the location store\n"
            "    events:         tcp:closed, tcp:reset, tcp:timeout\n"
            "    priority:       10\n",
            text,
        )
        self.assertIn(
            "\nconnection-audit  [off by default; enable with --handler connection-audit]\n",
            text,
        )
        self.assertIn("      create-table = yes  ", text)
        self.assertNotIn("Problems:", text)

    def test_twistdOption(self) -> None:
        """
        C{--list-handlers} makes C{makeService} print the listing and exit
        with status 0, whatever else is wrong with the configuration.
        """
        options = Options()
        options.parseOptions(["--list-handlers", "--handler", "no-such-handler"])
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        exit = self.assertRaises(SystemExit, makeService, options)
        self.assertEqual(exit.code, 0)
        self.assertIn("\nlocation-cleanup  [on by default", out.getvalue())
