# -*- test-case-name: tests.test_plugins,tests.test_list_handlers -*-
"""
Finding, checking and choosing handler plugins.

Handler plugins are L{IHandlerPlugin} providers in the modules of the
C{twisted.plugins} package.  L{discoverHandlers} reads Twisted's plugin
cache (C{twisted.plugin.getCache}, which is what C{getPlugins} reads) and
loads the handler plugins it names.  C{getPlugins} only logs a plugin module
that failed to import, so discovery also imports again each module that is
missing from the cache, to report why.  Every problem names the plugin:

  - a plugin module that raised at import;
  - a provider that does not really provide L{IHandlerPlugin}
    (C{verifyObject} fails) or whose attributes have the wrong type;
  - a provider written for a handler API version this sipcore does not
    implement;
  - a name used by two plugins (neither is usable);
  - an event name that sipcore never fires.

L{selectHandlers} turns the configured names into plugins, and fails with
L{HandlerConfigError} for a name that is not available.  L{describeHandler}
describes one plugin for C{--list-handlers}.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger
from twisted.plugin import getCache
from twisted.python.failure import Failure
from twisted.python.modules import getModule
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from sipcore.events._types import ALL_EVENTS
from sipcore.interfaces import IHandlerPlugin
from sipcore.plugin import SUPPORTED_API_VERSIONS, HandlerConfigError, HandlerError

__all__ = [
    "FoundHandlers",
    "PluginProblem",
    "describeHandler",
    "discoverHandlers",
    "findHandlers",
    "selectHandlers",
]

_log = Logger()


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


def _loadFailed(moduleName: str) -> PluginProblem:
    """
    The problem of a plugin module whose import just raised (call from an
    C{except} block).
    """
    failure = Failure()
    return PluginProblem(
        moduleName,
        "failed to load: {}: {}".format(
            failure.type.__name__ if failure.type else "?", failure.getErrorMessage()
        ),
        failure,
    )


def _usableName(name: object) -> bool:
    return isinstance(name, str) and bool(name) and name == name.strip()


def _checkPlugin(plugin: Any) -> tuple[str | None, str | None]:
    """
    Check C{plugin} as a handler plugin.

    @return: C{(name, reason)}: the plugin's name when it provides
        L{IHandlerPlugin} with a usable name (else C{None}), and why it
        cannot be used (C{None} if it can).
    """
    try:
        verifyObject(IHandlerPlugin, plugin)
    except Invalid as e:
        # An object that fails the check may lack any attribute, its name
        # included: the one place discovery reads an attribute it may not
        # have.
        name = getattr(plugin, "name", None)
        return (name if _usableName(name) else None), "does not provide IHandlerPlugin: {}".format(
            " ".join(str(e).split()))
    name = plugin.name
    if not _usableName(name):
        return None, "name must be a non-empty str without surrounding spaces, not {!r}".format(
            name)
    if plugin.apiVersion not in SUPPORTED_API_VERSIONS:
        return name, (
            "written for handler API version {!r}, but this sipcore implements "
            "version(s) {}".format(plugin.apiVersion, ", ".join(map(str, SUPPORTED_API_VERSIONS)))
        )
    events = plugin.events
    if not isinstance(events, tuple):
        return name, "events must be a tuple of event names, not {!r}".format(events)
    unknown = [event for event in events if event not in ALL_EVENTS]
    if unknown:
        return name, "unknown event name(s) {}; known events: {}".format(
            ", ".join(map(repr, unknown)), ", ".join(ALL_EVENTS)
        )
    if not isinstance(plugin.priority, int):
        return name, "priority must be an int, not {!r}".format(plugin.priority)
    return name, None


def discoverHandlers(package: types.ModuleType | None = None) -> FoundHandlers:
    """
    Find the handler plugins in C{package} and check them, without logging.

    @param package: the plugin package to search (default C{twisted.plugins});
        any regular package works.
    @return: the L{FoundHandlers}: usable plugins by name, and problems.
    @raise HandlerConfigError: if the package cannot be searched at all.
    """
    if package is None:
        import twisted.plugins

        package = twisted.plugins
    try:
        dropins = getCache(package)
        modules = list(getModule(package.__name__).iterModules())
    except Exception as e:
        raise HandlerConfigError(
            "cannot search {} for handler plugins: {}: {}".format(
                package.__name__, type(e).__name__, e
            )
        ) from e

    problems: list[PluginProblem] = []
    # A module that failed to import is left out of the cache (getCache only
    # logs the failure): import it again to say why.
    for module in modules:
        if module.name.rpartition(".")[2] not in dropins:
            try:
                module.load()
            except Exception:
                problems.append(_loadFailed(module.name))

    byName: dict[str, list[tuple[str, Any]]] = {}
    for dropin in dropins.values():
        for cached in dropin.plugins:
            if not any(i.isOrExtends(IHandlerPlugin) for i in cached.provided):
                continue
            where = "{}.{}".format(dropin.moduleName, cached.name)
            try:
                plugin = cached.load()
            except Exception:
                # Cached while it was good; the module raises now.
                if all(p.plugin != dropin.moduleName for p in problems):
                    problems.append(_loadFailed(dropin.moduleName))
                continue
            name, reason = _checkPlugin(plugin)
            if reason is not None:
                problems.append(PluginProblem(
                    where if name is None else name,
                    "{!r} (plugin {}): {}".format(plugin, where, reason)))
                continue
            found = byName.setdefault(plugin.name, [])
            if all(other is not plugin for _, other in found):
                found.append((where, plugin))

    handlers: dict[str, Any] = {}
    for name, found in sorted(byName.items()):
        if len(found) > 1:
            problems.append(
                PluginProblem(
                    name,
                    "{} plugins use this name, so none is used: {}".format(
                        len(found),
                        "; ".join("{!r} (plugin {})".format(p, where) for where, p in found),
                    ),
                )
            )
        else:
            handlers[name] = found[0][1]
    return FoundHandlers(handlers, problems)


def findHandlers(package: types.ModuleType | None = None) -> FoundHandlers:
    """
    Find the usable handler plugins and log each problem found on the way
    as an error naming the plugin.

    @param package: the plugin package to search (default C{twisted.plugins}).
    @return: a L{FoundHandlers}, a C{dict} of handler name to plugin with
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
    The plugins of the configured handler names, in the configured order
    (a name given twice is used once).

    @param available: what L{findHandlers} returned (or any C{dict} of name
        to plugin).
    @param names: the configured handler names.
    @return: a C{list} of L{IHandlerPlugin} providers.
    @raise HandlerConfigError: naming every configured name that is not
        available, the known names, and the plugin problems that may explain
        it.
    """
    selected: list[Any] = []
    missing: list[str] = []
    for name in dict.fromkeys(names):
        if name in available:
            selected.append(available[name])
        else:
            missing.append(name)
    if missing:
        problems: list[PluginProblem] = (
            available.problems if isinstance(available, FoundHandlers) else []
        )
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


def describeHandler(plugin: Any) -> tuple[list[str], str | None]:
    """
    Describe a handler plugin for C{--list-handlers}: its description,
    events, priority, API version, limits, implementation (imported, to
    check it can be) and the options its C{Options} class declares.

    @param plugin: an L{IHandlerPlugin} provider.
    @return: the indented lines, and a problem (C{str}, naming the
        handler) when the implementation cannot be imported, else C{None}.
    """
    lines = [
        "    " + str(plugin.description),
        "    events:         " + ", ".join(plugin.events),
        "    priority:       {}".format(plugin.priority),
        "    API version:    {}".format(plugin.apiVersion),
        "    limits:         " + ", ".join(
            "{} {}".format(attribute, "(bus default)" if value is None else value)
            for attribute, value in (
                ("timeout", plugin.timeout),
                ("concurrency", plugin.concurrency),
                ("backlog", plugin.backlog),
            )
        ),
    ]
    try:
        options = plugin.makeOptions()
    except Exception as e:
        problem = str(e) if isinstance(e, HandlerError) else "handler {!r}: {}: {}".format(
            plugin.name, type(e).__name__, e)
        lines.append("    implementation: {} (CANNOT IMPORT: {})".format(
            plugin.implementation, problem))
        return lines, problem
    lines.append("    implementation: {}".format(plugin.implementation))
    shown = {}
    for spec in options.longOpt:
        name = spec.rstrip("=")
        if name not in ("help", "version"):
            default = options.defaults.get(name)
            if not spec.endswith("="):
                default = bool(default)
            shown[name] = "{} = {}".format(name, _showDefault(default))
    if not shown:
        lines.append("    options:        (none)")
        return lines, None
    lines.append("    options:")
    width = max(map(len, shown.values()))
    for name in sorted(shown):
        lines.append("      {}  {}".format(
            shown[name].ljust(width), options.docs.get(name) or "").rstrip())
    return lines, None


def _showDefault(value: Any) -> str:
    """
    An option's default as it would be written in C{--handler-option}.
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value == "":
        return "(empty)"
    return str(value)
