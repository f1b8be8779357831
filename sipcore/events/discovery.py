# -*- test-case-name: tests.test_plugins -*-
"""
Finding and choosing handler plugins.

Handler plugins are L{IEventHandler} providers found with
C{twisted.plugin.getPlugins}.  C{getPlugins} only logs a plugin module that
failed to import and silently skips much else, so L{findHandlers} checks
what it finds and reports every problem with the plugin's name:

  - a plugin module that raised at import;
  - a provider that does not really provide L{IEventHandler}
    (C{verifyObject} fails) or whose attributes have the wrong type;
  - a provider written for a handler API version this sipcore does not
    implement;
  - a name used by two plugins (neither is usable);
  - an event name that sipcore never fires.

L{selectHandlers} turns the configured names into providers, and fails
with L{HandlerConfigError} for a name that is not available.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger
from twisted.plugin import getPlugins
from twisted.python.failure import Failure
from twisted.python.modules import getModule
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from sipcore.events._types import ALL_EVENTS
from sipcore.interfaces import IEventHandler

__all__ = [
    "HANDLER_API_VERSION",
    "SUPPORTED_API_VERSIONS",
    "FoundHandlers",
    "HandlerConfigError",
    "PluginProblem",
    "findHandlers",
    "selectHandlers",
]

#: The handler API version this sipcore implements (L{IEventHandler},
#: L{sipcore.interfaces.IHandlerContext}).
HANDLER_API_VERSION = 1

#: The handler API versions a plugin may declare in C{apiVersion}.
SUPPORTED_API_VERSIONS: tuple[int, ...] = (HANDLER_API_VERSION,)

_log = Logger()


class HandlerConfigError(Exception):
    """
    The configured handlers cannot be used: a name is unknown or its plugin
    is broken, or the plugin package cannot be searched.
    """


@dataclass(frozen=True)
class PluginProblem:
    """
    Something wrong with one plugin.

    @ivar plugin: the handler name, or the plugin module's name when the
        module did not load.
    @ivar message: what is wrong, in one line.
    @ivar failure: the L{Failure} behind it, if any.
    """

    plugin: str
    message: str
    failure: Failure | None = None

    def __str__(self) -> str:
        return "{}: {}".format(self.plugin, self.message)


class FoundHandlers(dict[str, Any]):
    """
    The usable handler plugins, by name, plus the problems found on the way.

    @ivar problems: a C{list} of L{PluginProblem}.
    """

    problems: list[PluginProblem]

    def __init__(self, handlers: dict[str, Any], problems: list[PluginProblem]) -> None:
        super().__init__(handlers)
        self.problems = problems


def _pluginsPackage() -> types.ModuleType:
    import twisted.plugins

    return twisted.plugins


def _whereDefined(package: types.ModuleType) -> dict[int, str]:
    """
    Map the id of every object exposed by a loaded plugin module of
    C{package} to its dotted name (C{package.module.attribute}).
    """
    prefix = package.__name__ + "."
    where: dict[int, str] = {}
    for moduleName, module in list(sys.modules.items()):
        if not moduleName.startswith(prefix) or module is None:
            continue
        for attribute, value in list(vars(module).items()):
            where.setdefault(id(value), moduleName + "." + attribute)
    return where


def _describe(provider: object, where: dict[int, str]) -> str:
    name = where.get(id(provider))
    if name is None:
        name = "an object of " + getattr(type(provider), "__module__", "?")
    return "{!r} (plugin {})".format(provider, name)


def _moduleFiles(package: types.ModuleType) -> dict[str, str]:
    """
    Map the file path (without extension) of every module directly in
    C{package} to the module's name.  Lists files only: imports nothing.
    """
    files: dict[str, str] = {}
    try:
        for module in getModule(package.__name__).iterModules():
            files[os.path.splitext(os.path.abspath(module.filePath.path))[0]] = module.name
    except Exception:
        pass
    return files


def _failedModule(failure: Failure, files: dict[str, str]) -> str | None:
    """
    The plugin module whose import produced C{failure}, found from the
    traceback's file names (or a C{SyntaxError}'s file name).
    """
    candidates: list[str] = []
    filename = getattr(failure.value, "filename", None)
    if isinstance(filename, str):
        candidates.append(filename)
    candidates.extend(frame[1] for frame in failure.frames)
    for path in candidates:
        stem = os.path.splitext(os.path.abspath(path))[0]
        if stem in files:
            return files[stem]
    return None


def _checkProvider(provider: Any) -> str | None:
    """
    Why C{provider} cannot be used as a handler, or C{None} if it can.
    """
    try:
        verifyObject(IEventHandler, provider)
    except Invalid as e:
        return "does not provide IEventHandler: {}".format(" ".join(str(e).split()))
    name = provider.name
    if not isinstance(name, str) or not name or name != name.strip():
        return "name must be a non-empty str without surrounding spaces, not {!r}".format(name)
    apiVersion = provider.apiVersion
    if apiVersion not in SUPPORTED_API_VERSIONS:
        return (
            "written for handler API version {!r}, but this sipcore implements "
            "version(s) {}".format(apiVersion, ", ".join(map(str, SUPPORTED_API_VERSIONS)))
        )
    events = provider.events
    if isinstance(events, str) or not isinstance(events, Iterable):
        return "events must be a tuple of event names, not {!r}".format(events)
    unknown = [event for event in events if event not in ALL_EVENTS]
    if unknown:
        return "unknown event name(s) {}; known events: {}".format(
            ", ".join(map(repr, unknown)), ", ".join(ALL_EVENTS)
        )
    if not isinstance(provider.priority, int):
        return "priority must be an int, not {!r}".format(provider.priority)
    return None


def discoverHandlers(package: types.ModuleType | None = None) -> FoundHandlers:
    """
    Find the handler plugins in C{package} and check them, without logging.

    @param package: the plugin package to search (default C{twisted.plugins});
        any regular package works.
    @return: the L{FoundHandlers}: usable providers by name, and problems.
    @raise HandlerConfigError: if the package cannot be searched at all.
    """
    if package is None:
        package = _pluginsPackage()
    failures: list[Failure] = []

    def observe(event: dict[str, Any]) -> None:
        failure = event.get("log_failure", event.get("failure"))
        if isinstance(failure, Failure):
            failures.append(failure)

    # getPlugins catches an exception raised while importing a plugin module
    # (or while loading a plugin the dropin cache names) and only logs it:
    # watch the log while it runs.  It is synchronous, so the window holds
    # nothing else of ours.
    from twisted.logger import globalLogPublisher

    globalLogPublisher.addObserver(observe)  # type: ignore[arg-type]
    try:
        found = list(getPlugins(IEventHandler, package))
    except Exception as e:
        raise HandlerConfigError(
            "cannot search {} for handler plugins: {}: {}".format(
                getattr(package, "__name__", package), type(e).__name__, e
            )
        ) from e
    finally:
        globalLogPublisher.removeObserver(observe)  # type: ignore[arg-type]

    problems: list[PluginProblem] = []
    files = _moduleFiles(package) if failures else {}
    seenModules: set[str] = set()
    for failure in failures:
        module = _failedModule(failure, files)
        place = module if module is not None else "a plugin module in " + package.__name__
        if place in seenModules:
            continue
        seenModules.add(place)
        problems.append(
            PluginProblem(
                place,
                "failed to load: {}: {}".format(
                    failure.type.__name__ if failure.type else "?", failure.getErrorMessage()
                ),
                failure,
            )
        )

    where = _whereDefined(package)
    byName: dict[str, list[Any]] = {}
    for provider in found:
        reason = _checkProvider(provider)
        label = getattr(provider, "name", None)
        if not isinstance(label, str) or not label:
            label = _describe(provider, where)
        if reason is not None:
            problems.append(
                PluginProblem(label, "{}: {}".format(_describe(provider, where), reason))
            )
            continue
        providers = byName.setdefault(provider.name, [])
        if not any(p is provider for p in providers):
            providers.append(provider)

    handlers: dict[str, Any] = {}
    for name, providers in sorted(byName.items()):
        if len(providers) > 1:
            problems.append(
                PluginProblem(
                    name,
                    "{} plugins use this name, so none is used: {}".format(
                        len(providers), "; ".join(_describe(p, where) for p in providers)
                    ),
                )
            )
        else:
            handlers[name] = providers[0]
    return FoundHandlers(handlers, problems)


def findHandlers(package: types.ModuleType | None = None) -> FoundHandlers:
    """
    Find the usable handler plugins and log each problem found on the way
    as an error naming the plugin.

    @param package: the plugin package to search (default C{twisted.plugins}).
    @return: a L{FoundHandlers}, a C{dict} of handler name to provider with
        a C{problems} list.
    @raise HandlerConfigError: if the package cannot be searched at all.
    """
    result = discoverHandlers(package)
    for problem in result.problems:
        _log.error(
            "handler plugin {plugin}: {message}", plugin=problem.plugin, message=problem.message
        )
    return result


def selectHandlers(available: dict[str, Any], names: Sequence[str]) -> list[Any]:
    """
    The providers of the configured handler names, in the configured order
    (a name given twice is used once).

    @param available: what L{findHandlers} returned (or any C{dict} of name
        to provider).
    @param names: the configured handler names.
    @return: a C{list} of L{IEventHandler} providers.
    @raise HandlerConfigError: naming every configured name that is not
        available, the known names, and the plugin problems that may explain
        it.
    """
    selected: list[Any] = []
    seen: set[str] = set()
    missing: list[str] = []
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        if name in available:
            selected.append(available[name])
        else:
            missing.append(name)
    if missing:
        problems: list[PluginProblem] = list(getattr(available, "problems", []))
        related = [p for p in problems if p.plugin in missing]
        other = [p for p in problems if p.plugin not in missing and p.failure is not None]
        message = "handler{} not available: {}; known handlers: {}".format(
            "s" if len(missing) > 1 else "",
            ", ".join(map(repr, missing)),
            ", ".join(sorted(available)) or "(none)",
        )
        explain = related + other
        if explain:
            message += "; plugin problems: " + "; ".join(str(p) for p in explain)
        raise HandlerConfigError(message)
    return selected
