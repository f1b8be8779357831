"""
Packaging: the plugins are found, from the checkout and from a built wheel
installed outside it.  These fail silently when they break, so they are
tested.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from twisted.application.service import IServiceMaker, ServiceMaker
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface.verify import verifyObject

from sipcore.interfaces import IHandlerPlugin

ROOT = Path(__file__).resolve().parent.parent


class PluginLayoutTests(TestCase):
    """
    The drop-in plugin directory follows Twisted's rules.
    """

    def test_noPackageInitFiles(self) -> None:
        """
        Neither C{twisted/} nor C{twisted/plugins/} is a package of ours: an
        C{__init__.py} there would shadow Twisted itself.
        """
        self.assertFalse((ROOT / "twisted" / "__init__.py").exists())
        self.assertFalse((ROOT / "twisted" / "plugins" / "__init__.py").exists())

    def test_serviceMakerFound(self) -> None:
        """
        C{twistd} finds the C{sipcore} service maker, which names
        L{sipcore.tap}.
        """
        [maker] = [p for p in getPlugins(IServiceMaker) if p.tapname == "sipcore"]
        self.assertTrue(verifyObject(IServiceMaker, maker))
        assert isinstance(maker, ServiceMaker)
        self.assertEqual(maker.module, "sipcore.tap")

    def test_handlerPluginsFound(self) -> None:
        """
        The built-in handler plugins are found and provide the interfaces.
        """
        found = {p.name: p for p in getPlugins(IHandlerPlugin)}
        self.assertIn("location-cleanup", found)
        for plugin in found.values():
            self.assertTrue(verifyObject(IHandlerPlugin, plugin))
            self.assertTrue(IPlugin.providedBy(plugin))


class ReactorPluginTests(TestCase):
    """
    C{twistd --reactor sipcore-epoll} finds sipcore's reactor.
    """

    def test_found(self) -> None:
        """
        The reactor plugin is found and names L{sipcore.reactor}.
        """
        from twisted.application.reactors import IReactorInstaller, Reactor

        [plugin] = [p for p in getPlugins(IReactorInstaller) if p.shortName == "sipcore-epoll"]
        assert isinstance(plugin, Reactor)
        self.assertEqual(plugin.moduleName, "sipcore.reactor")


class WheelTests(TestCase):
    """
    A wheel built from the checkout carries the plugin modules and data
    files, and once installed outside the checkout C{twistd} finds both
    plugin kinds from it.
    """

    timeout = 300

    def setUp(self) -> None:
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir()
        wheels = self.work / "wheels"
        # The Python source build: tests/test_compiled.py builds the
        # compiled one.
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
             str(ROOT)],
            capture_output=True, text=True, timeout=240,
            env=dict(os.environ, SIPCORE_MYPYC="0"),
        )
        if result.returncode != 0:
            if os.environ.get("SIPCORE_REQUIRE_DB") == "1":
                self.fail("pip wheel failed: " + result.stderr[-2000:])
            raise SkipTest("cannot build a wheel here: " + result.stderr[-500:])
        [self.wheel] = wheels.glob("sipcore-*.whl")

    def test_wheelContents(self) -> None:
        """
        The wheel holds both plugin modules, the schema, C{py.typed}, and no
        C{dropin.cache} or C{twisted/__init__.py}.
        """
        names = set(zipfile.ZipFile(self.wheel).namelist())
        for required in ("twisted/plugins/sipcore_server.py",
                         "twisted/plugins/sipcore_handlers.py",
                         "twisted/plugins/sipcore_reactor.py",
                         "sipcore/db/location.sql",
                         "sipcore/db/subscriber.sql",
                         "sipcore/db/audit.sql",
                         "sipcore/py.typed"):
            self.assertIn(required, names)
        self.assertFalse([n for n in names if n.endswith("dropin.cache")])
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)

    def test_installedOutsideCheckout(self) -> None:
        """
        Installed into a directory of its own and run from elsewhere, the
        package's plugins are found from the installed files and
        C{twistd --help} lists C{sipcore}.
        """
        target = self.work / "site"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
             str(target), str(self.wheel)],
            check=True, capture_output=True, timeout=120,
        )
        env = dict(os.environ, PYTHONPATH=str(target))
        probe = (
            "import sys, sipcore\n"
            "from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IServiceMaker\n"
            "from sipcore.interfaces import IHandlerPlugin\n"
            "print(sipcore.__file__)\n"
            "print([p.tapname for p in getPlugins(IServiceMaker)])\n"
            "print([p.name for p in getPlugins(IHandlerPlugin)])\n"
            "print(sys.modules['twisted.plugins.sipcore_server'].__file__)\n"
        )
        out = subprocess.run([sys.executable, "-c", probe], cwd=str(self.work), env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith(str(target)), lines[0])
        self.assertIn("'sipcore'", lines[1])
        self.assertIn("'location-cleanup'", lines[2])
        # Twisted's own plugin directory comes first on its plugin path:
        # where sipcore is installed beside Twisted (a venv with the wheel
        # installed), its plugin modules load from there.
        import twisted.plugins

        if not os.path.exists(os.path.join(os.path.dirname(twisted.plugins.__file__),
                                           "sipcore_server.py")):
            self.assertTrue(lines[3].startswith(str(target)), lines[3])
        helpText = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--help"],
            cwd=str(self.work), env=env, capture_output=True, text=True, timeout=60).stdout
        self.assertIn("sipcore", helpText)
