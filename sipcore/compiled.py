# -*- test-case-name: tests.test_compiled -*-
"""
Which build of sipcore's hot path this process runs.

The SIP parser and message classes (L{sipcore.message}), the transaction
layer and its timers, the registrar and the UDP transport (L{MODULES}) are
plain, fully annotated Python.  When a wheel of sipcore is built
(C{pip install .}, C{python -m build}), C{setup.py} compiles them with
mypyc into C extension modules, which CPython imports in place of the
C{.py} files beside them; where it cannot, the wheel holds the Python
source only.  C{SIPCORE_MYPYC} chooses (see docs/compiled.rst).

A compiled build records the SHA-256 of each source it compiled in
C{sipcore/_compiled.json}.  L{staleModules} names the extension modules
that were not built from the source beside them (a checkout edited after
C{SIPCORE_MYPYC=1 pip install -e .}, a module left from another build);
the server warns of them at start, because Python imports them all the
same.

    python -m sipcore.compiled     # which build runs, and any stale module

This module uses the standard library only: C{setup.py} loads it by path
to know what to compile.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import json
import os
import sys
from collections.abc import Sequence

__all__ = ["DIGESTS", "GROUP", "MODULES", "buildName", "extensionFiles", "isCompiled", "main",
           "sourceDigests", "staleModules"]

#: The modules compiled: the message layer, the transaction layer and its
#: timers, the registrar and the UDP transport.
MODULES = tuple("sipcore.message." + name for name in (
    "_random", "_syntax", "address", "errors", "framing", "headers", "messages", "parser",
    "uri", "via")) + (
    "sipcore.sip.machine", "sipcore.sip.clienttransaction", "sipcore.sip.servertransaction",
    "sipcore.sip.transaction", "sipcore.timers", "sipcore.sip.registrar", "sipcore.transport.udp")

#: mypyc's name for the shared library of the group (its runtime and the
#: modules' code), placed in the package as C{_compiled__mypyc}.
GROUP = "sipcore._compiled"

#: The file, in the package directory, that maps each compiled module's
#: name to the SHA-256 of the source it was compiled from.
DIGESTS = "_compiled.json"

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _sourcePath(name: str, package: str) -> str:
    return os.path.join(package, *name.split(".")[1:]) + ".py"


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def sourceDigests(package: str = _PACKAGE) -> dict[str, str]:
    """
    The SHA-256 of the source of each of L{MODULES}.

    @param package: the directory of the C{sipcore} package.
    @return: a module name to hexadecimal digest mapping.
    """
    return {name: _digest(_sourcePath(name, package)) for name in MODULES}


def extensionFiles(package: str) -> list[str]:
    """
    The extension module files under the package directory C{package}.

    @return: their paths, sorted.
    """
    found = []
    for directory, _, files in os.walk(package):
        for file in files:
            if file.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
                found.append(os.path.join(directory, file))
    return sorted(found)


def _extensionModules(package: str) -> list[str]:
    """
    The names of the extension modules in the C{sipcore} package directory
    C{package}, but for mypyc's shared library.
    """
    found = set()
    for path in extensionFiles(package):
        base = os.path.basename(path)
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if base.endswith(suffix):
                relative = os.path.relpath(path[:-len(suffix)], package)
                found.add(".".join(["sipcore", *relative.split(os.sep)]))
                break
    found.discard(GROUP + "__mypyc")
    return sorted(found)


def staleModules(package: str = _PACKAGE) -> list[str]:
    """
    The extension modules in C{package} that Python imports in place of a
    source they were not built from: their source beside them differs from
    the one recorded in L{DIGESTS} when they were built, or nothing was
    recorded for them.

    @param package: the directory of the C{sipcore} package (by default
        the one this module belongs to).
    @return: their module names, sorted.
    """
    try:
        with open(os.path.join(package, DIGESTS)) as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        recorded = {}
    if not isinstance(recorded, dict):
        recorded = {}
    stale = []
    for name in _extensionModules(package):
        try:
            digest = _digest(_sourcePath(name, package))
        except OSError:
            digest = None
        if name not in recorded or (digest is not None and recorded[name] != digest):
            stale.append(name)
    return stale


def isCompiled() -> bool:
    """
    C{True} if the SIP parser in use is the compiled one.
    """
    import sipcore.message.parser as parser

    return not (parser.__file__ or "").endswith(".py")


def buildName() -> str:
    """
    Which build of the hot path runs: C{"compiled (mypyc)"} or
    C{"Python source"}.
    """
    return "compiled (mypyc)" if isCompiled() else "Python source"


def main(argv: Sequence[str] | None = None) -> int:
    """
    Print which build runs, and the stale extension modules if there are
    any.

    @return: the exit status: 1 if some module is stale, else 0.
    """
    parser = argparse.ArgumentParser(
        prog="python -m sipcore.compiled",
        description="Say whether sipcore's hot path runs compiled (mypyc) or as Python "
                    "source, and name the compiled modules not built from the source beside "
                    "them.")
    parser.parse_args(argv)
    print(buildName())
    stale = staleModules()
    for name in stale:
        print("stale:", name, "(not built from the source beside it)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
