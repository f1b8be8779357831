"""
Build sipcore.  The metadata is in setup.cfg; this file adds the hot path
(C{sipcore.compiled.MODULES}) compiled by mypyc into C extension modules,
with the mypy configuration of setup.cfg ([mypy]), the same one that type
checks the project.

C{SIPCORE_MYPYC} chooses the build:

  - unset: a wheel (C{pip install .}, C{python -m build}) is compiled when
    mypyc, a C compiler and CPython's headers are there; without them, or
    if compiling fails, the wheel holds the Python source only, and the
    build output says why.  An editable install (C{pip install -e .}) is
    the Python source: compiled modules beside the sources would be
    imported in place of every later edit.
  - C{1}: compiled, wheels and editable installs alike; the build fails if
    it cannot compile.
  - C{0}: the Python source only.

Whichever it is, the server logs at start which build runs.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _loadCompiled() -> Any:
    """
    L{sipcore.compiled}, loaded by path: the build environment does not
    have sipcore's dependencies, and the module needs none.
    """
    spec = importlib.util.spec_from_file_location(
        "_sipcore_compiled", os.path.join(HERE, "sipcore", "compiled.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compiled = _loadCompiled()

MODE = os.environ.get("SIPCORE_MYPYC", "").strip()
if MODE not in ("", "0", "1"):
    sys.exit("SIPCORE_MYPYC is {!r}: it is 1 (compile), 0 (Python source) or unset "
             "(compile where possible)".format(MODE))
REQUIRED = MODE == "1"


def say(message: str) -> None:
    """
    Write one line about the build's choice to the build output.
    """
    print("sipcore build: " + message, file=sys.stderr, flush=True)


def cannotCompile() -> str | None:
    """
    What is missing to compile here (mypyc and mypy-zope, a C compiler,
    CPython's headers), or C{None}.
    """
    for module, package in (("mypyc.build", "mypy"), ("mypy_zope", "mypy-zope")):
        try:
            importlib.import_module(module)
        except ImportError:
            return "{} is not installed".format(package)
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    if not cc or shutil.which(cc[0]) is None:
        return "no C compiler ({!r} not found)".format(cc[0] if cc else "")
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if not os.path.exists(headers):
        return "CPython's headers are not installed ({} not found)".format(headers)
    return None


#: The setup.py commands that build the package: the others (egg_info,
#: dist_info, sdist) need no compilation.
BUILDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"}
#: The commands of an editable install, which builds in place.
EDITABLE = {"editable_wheel", "develop"}


def packageExtensions(package: str) -> list[str]:
    """
    The files of the compiled build in the package directory C{package}
    (of the checkout, where other extension modules are not ours to
    remove): the extension modules of L{compiled.MODULES}, mypyc's shared
    library and the record of their sources.
    """
    found = []
    stems = [os.path.join(package, *name.split(".")[1:]) for name in compiled.MODULES]
    stems.append(os.path.join(package, compiled.GROUP.split(".")[-1] + "__mypyc"))
    for stem in stems:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if os.path.exists(stem + suffix):
                found.append(os.path.abspath(stem + suffix))
    if os.path.exists(os.path.join(package, compiled.DIGESTS)):
        found.append(os.path.abspath(os.path.join(package, compiled.DIGESTS)))
    return found


def remove(paths: list[str]) -> None:
    for path in paths:
        os.remove(path)
        say("removed {}".format(path))


class BuildExt(build_ext):
    """
    Build the compiled modules and record the sources they were built
    from; if that fails and they are not required, make the wheel the
    Python source instead, with no compiled module of an earlier build
    left in it.
    """

    def run(self) -> None:
        package = os.path.join(self.build_lib, "sipcore")
        try:
            super().run()
        except (Exception, SystemExit) as e:
            if REQUIRED:
                raise
            remove(compiled.extensionFiles(os.path.abspath(package))
                   + [path for path in [os.path.abspath(os.path.join(package, compiled.DIGESTS))]
                      if os.path.exists(path)])
            if self.inplace:
                remove(packageExtensions(os.path.join(HERE, "sipcore")))
            # The wheel was to be tagged for this platform: it is pure now.
            wheel = self.distribution.command_obj.get("bdist_wheel")
            if wheel is not None:
                wheel.root_is_pure = True
            self.distribution.ext_modules = []
            say("Python source, not compiled: compiling failed ({})".format(e))
            return
        # An extension module that an earlier build left in the build
        # directory (of a module compiled then and not now) would go into
        # the wheel and shadow its source.
        built = {os.path.abspath(os.path.join(self.build_lib, self.get_ext_filename(
            self.get_ext_fullname(extension.name)))) for extension in self.extensions}
        remove([path for path in compiled.extensionFiles(os.path.abspath(package))
                if path not in built])
        digests = compiled.sourceDigests(os.path.join(HERE, "sipcore"))
        for target in [package] + ([os.path.join(HERE, "sipcore")] if self.inplace else []):
            with open(os.path.join(target, compiled.DIGESTS), "w") as f:
                json.dump(digests, f, indent=1, sort_keys=True)
        say("compiled {} modules with mypyc".format(len(compiled.MODULES)))


def extensions() -> list[Extension]:
    """
    The compiled modules for C{setup()}, or none: mypyc translates
    L{compiled.MODULES} to C here, only for the commands that build (pip
    and build run each step, metadata first, in a process of its own).
    """
    commands = set(sys.argv[1:])
    if not commands & BUILDS:
        return []
    editable = bool(commands & EDITABLE)
    if MODE == "0" or (editable and not REQUIRED):
        if editable:
            # Compiled modules beside the sources would be imported in
            # place of every later edit.
            remove(packageExtensions(os.path.join(HERE, "sipcore")))
        say("Python source, not compiled: {}".format(
            "SIPCORE_MYPYC=0" if MODE == "0"
            else "an editable install is the Python source (SIPCORE_MYPYC=1 compiles it)"))
        return []
    reason = cannotCompile()
    if reason is None:
        from mypyc.build import mypycify

        paths = [os.path.join(*name.split(".")) + ".py" for name in compiled.MODULES]
        try:
            return mypycify(["--config-file", "setup.cfg", *paths],
                            group_name=compiled.GROUP, opt_level="3")
        except (Exception, SystemExit) as e:
            reason = "mypyc failed ({}); its messages are above".format(e)
    if REQUIRED:
        sys.exit("sipcore build: cannot compile (SIPCORE_MYPYC=1): {}".format(reason))
    say("Python source, not compiled: {}".format(reason))
    return []


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
