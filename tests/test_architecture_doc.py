# -*- test-case-name: tests.test_architecture_doc -*-
"""
Tests for docs/architecture.rst: the modules, classes and methods it names
exist under those names.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from twisted.python.reflect import ModuleNotFound, ObjectNotFound, namedAny
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.interface import InterfaceClass

DOC = Path(__file__).resolve().parent.parent / "docs" / "architecture.rst"

#: A dotted name in the text: C{sipcore.} and at least one more part.
_DOTTED = re.compile(r"\bsipcore(?:\.[A-Za-z_][A-Za-z0-9_]*)+")

#: A literal in double backquotes that is one capitalised name, not all
#: capitals (C{Foo} or C{Foo.bar}; not C{DELETE} or a constant).
_LITERAL = re.compile(r"``([A-Z][A-Za-z0-9_]*[a-z][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?``")


def _names(text: str) -> tuple[set[str], set[tuple[str, str | None]]]:
    dotted = {match.rstrip(".") for match in _DOTTED.findall(text)}
    literals = {(cls, attribute or None) for cls, attribute in _LITERAL.findall(text)}
    return dotted, literals


class ArchitectureDocTests(SynchronousTestCase):
    """
    The names docs/architecture.rst mentions.
    """

    def test_dottedNamesExist(self) -> None:
        """
        Every C{sipcore.*} dotted name in the document imports: a module,
        or an attribute of one (a class, a function, a method).
        """
        dotted, _ = _names(DOC.read_text(encoding="utf-8"))
        self.assertGreater(len(dotted), 40)
        missing = []
        for name in sorted(dotted):
            try:
                namedAny(name)
            except (ModuleNotFound, ObjectNotFound, AttributeError):
                missing.append(name)
        self.assertEqual(missing, [])

    def test_classNamesExist(self) -> None:
        """
        Every class name in double backquotes (C{``StoreService``},
        C{``ConnectionTable.remove``}) is a class or interface of a sipcore
        module, or the Twisted class it says, and the method after its dot
        exists.
        """
        _, literals = _names(DOC.read_text(encoding="utf-8"))
        self.assertGreater(len(literals), 30)
        from twisted.application.internet import StreamServerEndpointService
        from twisted.application.service import MultiService

        known: dict[str, object] = {"MultiService": MultiService,
                                    "StreamServerEndpointService": StreamServerEndpointService}
        import sipcore

        for info in pkgutil.walk_packages(sipcore.__path__, "sipcore."):
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if isinstance(value, (type, InterfaceClass)):
                    known.setdefault(name, value)
        missing = []
        for cls, attribute in sorted(literals, key=lambda pair: (pair[0], pair[1] or "")):
            found = known.get(cls)
            if found is None:
                missing.append(cls)
            elif attribute is not None:
                names = (found.names(all=True) if isinstance(found, InterfaceClass)
                         else dir(found))
                if attribute not in names:
                    missing.append("{}.{}".format(cls, attribute))
        self.assertEqual(missing, [])
