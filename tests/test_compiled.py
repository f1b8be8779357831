"""
L{sipcore.compiled}: the hot modules compiled with mypyc behave as their
Python source does.

The whole suite runs a second time on the compiled modules in CI
(C{.ci/run}); here a compiled copy of the package is built in a temporary
directory and compared with the Python source in a child process.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from contextlib import redirect_stdout
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from sipcore import compiled
from sipcore.message import parseMessage
from sipcore.message.errors import SIPParseError

ROOT = Path(__file__).resolve().parent.parent
TORTURE = Path(__file__).resolve().parent / "torture"

#: Run in a child: which modules are compiled, and what the parser makes of
#: each torture message (status and reason of the error, or the fields the
#: core relies on).
_PROBE = """
import importlib, json, sys
from pathlib import Path
from sipcore import compiled
from sipcore.message import parseMessage
from sipcore.message.errors import SIPParseError
sys.path.insert(0, {tests!r})
from test_compiled import summary
out = {{"compiled": compiled.isCompiled(),
        "files": {{name: importlib.import_module(name).__file__
                   for name in compiled.MODULES}},
        "messages": {{}}}}
for path in sorted(Path({torture!r}).glob("*.dat")):
    out["messages"][path.name] = summary(path.read_bytes())
print(json.dumps(out))
"""


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


class CompiledBuildTests(TestCase):
    """
    C{build} into a target directory, C{clean}, C{status}.
    """

    timeout = 240

    def probe(self, target: str) -> dict[str, object]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([target, str(ROOT)]))
        result = subprocess.run(
            [sys.executable, "-c", _PROBE.format(tests=str(ROOT / "tests"),
                                                 torture=str(TORTURE))],
            cwd=target, env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def test_buildParsesAsTheSource(self) -> None:
        """
        A compiled copy imports every module of L{compiled.MODULES} from an
        extension module, and parses every torture message (accepted or
        refused, with the same status and reason, the same fields and the
        same bytes out) exactly as the Python source does.
        """
        requireCompiler()
        target = self.mktemp()
        written = compiled.build(target)
        names = {os.path.basename(path).split(".")[0] for path in written}
        self.assertTrue({name.rsplit(".", 1)[-1] for name in compiled.MODULES} <= names, names)

        found = self.probe(target)
        self.assertIs(found["compiled"], True)
        files = found["files"]
        assert isinstance(files, dict)
        self.assertEqual(sorted(files), sorted(compiled.MODULES))
        for name, path in files.items():
            self.assertFalse(path.endswith(".py"), (name, path))
            self.assertTrue(path.startswith(os.path.abspath(target)), (name, path))

        expected = {path.name: summary(path.read_bytes())
                    for path in sorted(TORTURE.glob("*.dat"))}
        self.assertGreater(len(expected), 40)
        # JSON turns tuples into lists: compare in the same form.
        self.assertEqual(found["messages"], json.loads(json.dumps(expected)))

        removed = compiled.clean(target)
        self.assertEqual(sorted(removed), sorted(written))
        self.assertIs(self.probe(target)["compiled"], False)

    def test_needsMypy(self) -> None:
        """
        Without mypyc, C{build} fails with a message saying what to install,
        and writes nothing.
        """
        saved = sys.modules.get("mypyc.build")

        def restore() -> None:
            if saved is None:
                del sys.modules["mypyc.build"]
            else:
                sys.modules["mypyc.build"] = saved

        sys.modules["mypyc.build"] = None  # type: ignore[assignment]
        self.addCleanup(restore)
        target = self.mktemp()
        with self.assertRaises(RuntimeError) as raised:
            compiled.build(target)
        self.assertIn("pip install mypy mypy-zope", str(raised.exception))
        self.assertFalse(os.path.exists(target))

    def test_status(self) -> None:
        """
        C{python -m sipcore.compiled status} says which parser this process
        runs.
        """
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(compiled.main(["status"]), 0)
        self.assertEqual(out.getvalue().strip(),
                         "compiled (mypyc)" if compiled.isCompiled() else "Python source")
