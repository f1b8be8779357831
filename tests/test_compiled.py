"""
The compiled build (C{setup.py}, L{sipcore.compiled}): a wheel with the hot
modules compiled by mypyc behaves as the Python source does, a machine
without a C compiler gets the Python source, an editable install stays the
Python source, and compiled modules that were not built from the source
beside them are found.

CI also runs the whole suite on an installed compiled wheel (C{.ci/run},
with C{SIPCORE_REQUIRE_COMPILED=1}).  The builds here run from a copy of
the checkout, as C{pip} runs them for a user, with C{pip}'s build isolation.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from contextlib import redirect_stdout
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from sipcore import compiled
from sipcore.message import parseMessage
from sipcore.message.errors import SIPParseError

ROOT = Path(__file__).resolve().parent.parent
TORTURE = Path(__file__).resolve().parent / "torture"
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]

#: Run in a child: which modules are compiled and from where, which are
#: stale, and what the parser makes of each torture message.
_PROBE = """
import importlib, json, sys
from pathlib import Path
from sipcore import compiled
sys.path.insert(0, {tests!r})
from test_compiled import summary
out = {{"compiled": compiled.isCompiled(), "stale": compiled.staleModules(),
        "files": {{name: importlib.import_module(name).__file__
                   for name in compiled.MODULES}},
        "messages": {{}}}}
for path in sorted(Path({torture!r}).glob("*.dat")):
    out["messages"][path.name] = summary(path.read_bytes())
print(json.dumps(out))
"""

#: What a copy of the checkout leaves out.
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv*", ".tox", "build", "dist", "*.egg-info", "_trial_temp*", "__pycache__",
    "node_modules", "results", "_build", ".hypothesis", "*" + SUFFIX, compiled.DIGESTS)


def requireCompiler() -> None:
    """
    Skip unless a C compiler and CPython's headers are here; with
    C{SIPCORE_REQUIRE_COMPILER=1} (as in CI), fail instead.
    """
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    missing = [what for what, present in (
        ("a C compiler (cc)", shutil.which(sysconfig.get_config_var("CC").split()[0] or "cc")),
        ("CPython's headers (Python.h)", os.path.exists(headers))) if not present]
    if missing:
        reason = "compiling needs " + " and ".join(missing)
        if os.environ.get("SIPCORE_REQUIRE_COMPILER") == "1":
            raise AssertionError(reason + " (SIPCORE_REQUIRE_COMPILER=1)")
        raise SkipTest(reason)


def summary(data: bytes) -> list[object]:
    """
    What the parser makes of C{data}, as plain values to compare.
    """
    try:
        message = parseMessage(data)
    except SIPParseError as e:
        return ["error", e.status, e.reason]
    head = [message.callId, list(message.cseq), [str(v) for v in message.vias],
            str(message.fromAddr), str(message.toAddr)]
    contacts = message.contacts
    head.append(contacts if contacts == "*" else [str(c) for c in contacts])
    return ["ok", head, message.serialize().decode("utf-8", "surrogateescape")]


def copyCheckout(testCase: SynchronousTestCase) -> Path:
    """
    A copy of the checkout's sources (no build products, no compiled
    modules) in a temporary directory.
    """
    copy = Path(testCase.mktemp()).resolve() / "sipcore-src"
    shutil.copytree(ROOT, copy, ignore=_NOT_COPIED, symlinks=True)
    return copy


def pip(testCase: SynchronousTestCase, args: list[str], **environ: str | None
        ) -> tuple[int, str]:
    """
    Run C{pip} with C{args} (verbose, so that the build's own lines are in
    its output) and the environment changed by C{environ} (C{None}
    removes a variable).

    @return: its exit status and output.
    @raise SkipTest: pip could not get the build requirements, unless
        C{SIPCORE_REQUIRE_COMPILER=1}.
    """
    env = dict(os.environ)
    env.pop("SIPCORE_MYPYC", None)
    for name, value in environ.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-v", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    if result.returncode != 0 and "No matching distribution found" in result.stdout \
            and os.environ.get("SIPCORE_REQUIRE_COMPILER") != "1":
        raise SkipTest("pip cannot install the build requirements here")
    return result.returncode, result.stdout


def buildWheel(testCase: SynchronousTestCase, source: Path, **environ: str | None
               ) -> tuple[Path, str]:
    """
    Build a wheel of C{source} as C{pip install} does.

    @return: the wheel, and pip's output.
    """
    wheels = Path(testCase.mktemp()).resolve()
    code, output = pip(testCase, ["wheel", "--no-deps", "-w", str(wheels), str(source)],
                       **environ)
    testCase.assertEqual(code, 0, output[-4000:])
    [wheel] = wheels.glob("sipcore-*.whl")
    return wheel, output


def compiledFiles(names: list[str]) -> list[str]:
    """
    The compiled build's files among the names of a wheel's members.
    """
    return sorted(name for name in names
                  if name.endswith(SUFFIX) or name.endswith(compiled.DIGESTS))


class CompiledWheelTests(TestCase):
    """
    C{SIPCORE_MYPYC=1 pip wheel .}: the compiled wheel.
    """

    timeout = 600

    def probe(self, path: Path) -> dict[str, object]:
        env = dict(os.environ, PYTHONPATH=str(path))
        result = subprocess.run(
            [sys.executable, "-c", _PROBE.format(tests=str(ROOT / "tests"),
                                                 torture=str(TORTURE))],
            cwd=str(path), env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def test_parsesAsTheSource(self) -> None:
        """
        The compiled wheel holds an extension module for every module of
        L{compiled.MODULES} and the record of their sources; installed, it
        imports each of them compiled, none of them stale, and parses
        every torture message (accepted or refused, with the same status
        and reason, the same fields and the same bytes out) exactly as the
        Python source does.  Once a source beside them changes, that
        module is stale.
        """
        requireCompiler()
        source = copyCheckout(self)
        wheel, output = buildWheel(self, source, SIPCORE_MYPYC="1")
        self.assertIn("sipcore build: compiled {} modules with mypyc".format(
            len(compiled.MODULES)), output)
        self.assertNotIn("-py3-none-any", wheel.name)

        target = Path(self.mktemp()).resolve()
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            archive.extractall(target)
        expectedFiles = sorted(
            [os.path.join(*name.split(".")) + SUFFIX for name in compiled.MODULES]
            + [compiled.GROUP.replace(".", "/") + "__mypyc" + SUFFIX,
               "sipcore/" + compiled.DIGESTS])
        self.assertEqual(compiledFiles(names), expectedFiles)

        found = self.probe(target)
        self.assertIs(found["compiled"], True)
        self.assertEqual(found["stale"], [])
        files = found["files"]
        assert isinstance(files, dict)
        self.assertEqual(sorted(files), sorted(compiled.MODULES))
        for name, path in files.items():
            self.assertTrue(path.endswith(SUFFIX), (name, path))
            self.assertTrue(path.startswith(str(target)), (name, path))

        fromSource = self.probe(source)
        self.assertIs(fromSource["compiled"], False)
        self.assertGreater(len(found["messages"]), 40)  # type: ignore[arg-type]
        self.assertEqual(found["messages"], fromSource["messages"])

        package = str(target / "sipcore")
        with open(os.path.join(package, "message", "uri.py"), "a") as f:
            f.write("\n# changed after the build\n")
        self.assertEqual(compiled.staleModules(package), ["sipcore.message.uri"])


class SourceBuildTests(TestCase):
    """
    When the build is the Python source.
    """

    timeout = 300

    def test_noCompiler(self) -> None:
        """
        Without a C compiler, C{pip wheel .} builds a pure wheel and says
        why; with C{SIPCORE_MYPYC=1} it fails, saying why.
        """
        source = copyCheckout(self)
        wheel, output = buildWheel(self, source, CC="sipcore-no-such-compiler")
        self.assertTrue(wheel.name.endswith("-py3-none-any.whl"), wheel.name)
        self.assertIn("sipcore build: Python source, not compiled: no C compiler", output)
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
        self.assertIn("sipcore/message/parser.py", names)
        self.assertEqual(compiledFiles(names), [])

        code, output = pip(self, ["wheel", "--no-deps", "-w", self.mktemp(), str(source)],
                           CC="sipcore-no-such-compiler", SIPCORE_MYPYC="1")
        self.assertNotEqual(code, 0)
        self.assertIn("cannot compile (SIPCORE_MYPYC=1): no C compiler", output)

    def test_editable(self) -> None:
        """
        An editable install is the Python source: it removes the compiled
        modules of an earlier build from beside the sources, and says so.
        """
        source = copyCheckout(self)
        parser = source / "sipcore" / "message" / ("parser" + SUFFIX)
        parser.write_bytes(b"not a module")
        (source / "sipcore" / compiled.DIGESTS).write_text("{}")
        # Into a venv of its own: pip would otherwise remove the sipcore
        # installed where these tests run.
        venv = Path(self.mktemp()).resolve()
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                       timeout=120)
        code, output = pip(self, ["--python", str(venv / "bin" / "python"), "install",
                                  "--no-deps", "--editable", str(source)])
        self.assertEqual(code, 0, output[-4000:])
        self.assertIn("sipcore build: Python source, not compiled: an editable install",
                      output)
        self.assertFalse(parser.exists())
        self.assertFalse((source / "sipcore" / compiled.DIGESTS).exists())


class StaleModulesTests(SynchronousTestCase):
    """
    L{compiled.staleModules} on a package directory.
    """

    def setUp(self) -> None:
        self.package = Path(self.mktemp()) / "sipcore"
        (self.package / "message").mkdir(parents=True)
        self.source = self.package / "message" / "uri.py"
        self.source.write_text("X = 1\n")
        (self.package / "message" / ("uri" + SUFFIX)).write_bytes(b"")
        (self.package / ("_compiled__mypyc" + SUFFIX)).write_bytes(b"")

    def record(self, digests: dict[str, str]) -> None:
        (self.package / compiled.DIGESTS).write_text(json.dumps(digests))

    def test_builtFromTheSource(self) -> None:
        """
        An extension module recorded with its source's digest is not stale;
        mypyc's shared library has no source and is never stale.
        """
        self.record({"sipcore.message.uri": hashlib.sha256(b"X = 1\n").hexdigest()})
        self.assertEqual(compiled.staleModules(str(self.package)), [])

    def test_sourceChanged(self) -> None:
        """
        An extension module whose source changed after the build is stale.
        """
        self.record({"sipcore.message.uri": hashlib.sha256(b"X = 1\n").hexdigest()})
        self.source.write_text("X = 2\n")
        self.assertEqual(compiled.staleModules(str(self.package)), ["sipcore.message.uri"])

    def test_notRecorded(self) -> None:
        """
        An extension module that no build recorded (none at all, or the
        record unreadable) is stale.
        """
        self.assertEqual(compiled.staleModules(str(self.package)), ["sipcore.message.uri"])
        (self.package / compiled.DIGESTS).write_text("not json")
        self.assertEqual(compiled.staleModules(str(self.package)), ["sipcore.message.uri"])
        self.record({})
        self.assertEqual(compiled.staleModules(str(self.package)), ["sipcore.message.uri"])

    def test_sourceDigests(self) -> None:
        """
        L{compiled.sourceDigests} gives the SHA-256 of the source of each of
        L{compiled.MODULES}.
        """
        digests = compiled.sourceDigests()
        self.assertEqual(sorted(digests), sorted(compiled.MODULES))
        path = Path(compiled.__file__).parent / "message" / "parser.py"
        self.assertEqual(digests["sipcore.message.parser"],
                         hashlib.sha256(path.read_bytes()).hexdigest())


class ThisBuildTests(SynchronousTestCase):
    """
    The sipcore these tests import.
    """

    def test_noStaleModules(self) -> None:
        """
        No compiled module of the sipcore under test shadows a source it was
        not built from (a checkout keeps no compiled modules: an editable
        install removes them).
        """
        self.assertEqual(compiled.staleModules(), [])

    def test_requiredBuild(self) -> None:
        """
        The modules of L{compiled.MODULES} come from one build: all from
        extension modules or all from Python source.
        C{SIPCORE_REQUIRE_COMPILED=1} (CI's run on the installed compiled
        wheel) requires the first, C{SIPCORE_REQUIRE_COMPILED=0} (CI's run
        on the checkout) the second.
        """
        import importlib
        import types

        compiledModules = []
        for name in compiled.MODULES:
            module = importlib.import_module(name)
            path = module.__file__ or ""
            if path.endswith(SUFFIX):
                self.assertEqual([key for key, value in vars(module).items()
                                  if isinstance(value, types.FunctionType)
                                  and value.__module__ == name], [], name)
                compiledModules.append(name)
        required = os.environ.get("SIPCORE_REQUIRE_COMPILED")
        if required == "1" or (required is None and compiledModules):
            self.assertEqual(compiledModules, list(compiled.MODULES))
        else:
            self.assertEqual(compiledModules, [])
        self.assertEqual(compiled.isCompiled(), bool(compiledModules))

    def test_status(self) -> None:
        """
        C{python -m sipcore.compiled} says which build this process runs.
        """
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(compiled.main([]), 0)
        self.assertEqual(out.getvalue().strip(), compiled.buildName())
        self.assertIn(compiled.buildName(), ("compiled (mypyc)", "Python source"))
