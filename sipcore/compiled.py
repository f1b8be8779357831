# -*- test-case-name: tests.test_compiled -*-
"""
sipcore's hot path compiled to C extension modules with mypyc.

The SIP parser and message classes (L{sipcore.message}), the transaction
layer and its timers, the registrar and the UDP transport are plain, fully
annotated Python.  mypyc (part of the mypy project) compiles such modules
to C extensions that CPython imports in place of the C{.py} files: the
same code, with about 40% fewer instructions per REGISTER.  Nothing else
changes, and without the compiled modules sipcore runs the Python source.

    pip install mypy mypy-zope
    python -m sipcore.compiled build     # compile next to the installed sources
    python -m sipcore.compiled status    # compiled, or Python source
    python -m sipcore.compiled clean     # remove the compiled modules
    python -m sipcore.compiled build --target DIR   # a compiled copy in DIR

C{build} needs a C compiler and CPython's headers (Debian: C{gcc} and
C{python3-dev}) and takes about half a minute.  A compiled module is built
from the sources as they are: after changing one of L{MODULES}, build
again or clean, or the old compiled code keeps being imported.  The server
logs at start which of the two it runs.
"""

from __future__ import annotations

import argparse
import glob
import importlib.machinery
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

__all__ = ["MODULES", "build", "clean", "isCompiled", "main"]

#: The modules compiled: the message layer, the transaction layer and its
#: timers, the registrar and the UDP transport.
MODULES = tuple("sipcore.message." + name for name in (
    "_random", "_syntax", "address", "errors", "framing", "headers", "messages", "parser",
    "uri", "via")) + ("sipcore.sip.transaction", "sipcore.timers", "sipcore.sip.registrar",
                      "sipcore.transport.udp")

#: mypyc's name for the shared library of the group (its runtime and the
#: modules' code), placed in the package as C{_compiled__mypyc}.
GROUP = "sipcore._compiled"

_PACKAGE = os.path.dirname(os.path.abspath(__file__))

_SETUP = """\
from setuptools import setup
from mypyc.build import mypycify
setup(name="sipcore-compiled", script_args=["build_ext", "--inplace"],
      ext_modules=mypycify({paths!r}, group_name={group!r}, opt_level="3"))
"""


_MYPY_CONFIG = """\
[mypy]
plugins = mypy_zope:plugin
python_version = 3.11
check_untyped_defs = True
ignore_missing_imports = True
"""


def _extensions(package: str) -> list[str]:
    """
    The compiled extension modules under the package directory C{package}.
    """
    found: list[str] = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        found.extend(glob.glob(os.path.join(package, "**", "*" + suffix), recursive=True))
    return sorted(set(found))


def isCompiled() -> bool:
    """
    C{True} if the SIP parser in use is the compiled one.
    """
    import sipcore.message.parser as parser

    return not (parser.__file__ or "").endswith(".py")


def build(target: str | None = None, quiet: bool = True) -> list[str]:
    """
    Compile L{MODULES}.

    @param target: a directory to hold a copy of the C{sipcore} package with
        the compiled modules (put it first on C{PYTHONPATH}); by default
        the compiled modules go next to this package's own sources.
    @return: the paths of the extension modules written.
    @raise RuntimeError: mypy or mypy-zope is not installed, or the
        compilation failed (its output is in the message).
    """
    try:
        import mypy_zope  # noqa: F401
        import mypyc.build  # noqa: F401
    except ImportError:
        raise RuntimeError("compiling needs mypy and mypy-zope: "
                           "pip install mypy mypy-zope") from None
    ignore = shutil.ignore_patterns(
        "__pycache__", *("*" + suffix for suffix in importlib.machinery.EXTENSION_SUFFIXES))
    if target is None:
        destination = _PACKAGE
    else:
        destination = os.path.join(os.path.abspath(target), "sipcore")
        if os.path.exists(destination):
            shutil.rmtree(destination)
        shutil.copytree(_PACKAGE, destination, ignore=ignore)
    with tempfile.TemporaryDirectory(prefix="sipcore-compile-") as work:
        # Compile a copy of the sources: mypyc writes its build directory
        # and the modules in place.  The whole package is there for the type
        # analysis; only MODULES are compiled.
        shutil.copytree(_PACKAGE, os.path.join(work, "sipcore"), ignore=ignore)
        with open(os.path.join(work, "mypy.ini"), "w") as f:
            f.write(_MYPY_CONFIG)
        paths = [os.path.join(*name.split(".")) + ".py" for name in MODULES]
        result = subprocess.run(
            [sys.executable, "-c", _SETUP.format(paths=paths, group=GROUP)],
            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            raise RuntimeError("mypyc failed:\n" + result.stdout[-4000:])
        if not quiet:
            sys.stdout.write(result.stdout)
        built = os.path.join(work, "sipcore")
        written = []
        for path in _extensions(built):
            copied = os.path.join(destination, os.path.relpath(path, built))
            shutil.copyfile(path, copied)
            written.append(copied)
    return written


def clean(target: str | None = None) -> list[str]:
    """
    Remove the compiled modules (from this package, or from the copy in
    C{target}).

    @return: the paths removed.
    """
    package = _PACKAGE if target is None else os.path.join(os.path.abspath(target), "sipcore")
    removed = _extensions(package)
    for path in removed:
        os.remove(path)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sipcore.compiled",
        description="Compile sipcore's hot path with mypyc, or remove it.")
    parser.add_argument("action", choices=("build", "clean", "status"))
    parser.add_argument("--target", default=None,
                        help="a directory for a compiled copy of the package "
                             "(default: compile in place)")
    parser.add_argument("--verbose", action="store_true", help="show mypyc's output")
    args = parser.parse_args(argv)
    if args.action == "status":
        print("compiled (mypyc)" if isCompiled() else "Python source")
        return 0
    if args.action == "clean":
        for path in clean(args.target):
            print("removed", path)
        return 0
    try:
        written = build(args.target, quiet=not args.verbose)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    for path in written:
        print("built", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
