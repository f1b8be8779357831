# -*- test-case-name: tests.test_plugins -*-
"""
The handler plugin API.

A handler plugin is an immutable L{HandlerPlugin} in a module of a
C{twisted/plugins/} directory.  It names its implementation, which is
imported only when sipcore reads the handler's options or makes the
handler, the way Twisted's C{ServiceMaker} names a C{twistd} plugin's
module::

    # twisted/plugins/myhandlers.py
    from sipcore.plugin import HandlerPlugin

    audit = HandlerPlugin(
        "connection-audit",
        "Log every connection close",
        ("tcp:closed", "tcp:reset", "tcp:timeout"),
        implementation="myhandlers.audit.ConnectionAudit",
    )

The implementation is usually a L{Handler} subclass: its options are a
L{usage.Options} subclass called C{Options}, the methods marked with
L{handles} get the events, and C{start} and C{stop} open and release what
it needs::

    # myhandlers/audit.py
    from twisted.python import usage

    from sipcore.plugin import Handler, handles, integer

    class ConnectionAudit(Handler):
        class Options(usage.Options):
            optParameters = [["batch-size", None, 100, "Rows per INSERT.", integer(1)]]

        @handles("tcp:closed", "tcp:reset", "tcp:timeout")
        def closed(self, event):
            ...

For every service sipcore parses the options (L{parseOptions}), builds a
L{HandlerContext} and calls L{HandlerPlugin.makeHandler}, which returns a
new handler each time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import FunctionType
from typing import Any, Callable, TypeVar
from weakref import WeakKeyDictionary

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python import usage
from twisted.python.reflect import namedAny
from zope.interface import implementer

from sipcore.events._types import ALL_EVENTS
from sipcore.interfaces import IEventHandler, IHandlerContext, IHandlerPlugin

__all__ = [
    "HANDLER_API_VERSION",
    "SUPPORTED_API_VERSIONS",
    "EnabledHandler",
    "Handler",
    "HandlerConfigError",
    "HandlerContext",
    "HandlerError",
    "HandlerImportError",
    "HandlerPlugin",
    "OptionError",
    "boolean",
    "handles",
    "integer",
    "number",
    "parseOptions",
]

#: The handler API version this sipcore implements (L{IHandlerPlugin},
#: L{IEventHandler}, L{IHandlerContext} and this module).
HANDLER_API_VERSION = 2

#: The handler API versions a plugin may declare in C{apiVersion}.
SUPPORTED_API_VERSIONS: tuple[int, ...] = (HANDLER_API_VERSION,)


class HandlerError(Exception):
    """
    A handler cannot run as configured (for example it needs a database and
    sipcore runs without one).  The message names the handler.  Raised while
    the service is built or from a handler's C{start}, it stops sipcore from
    starting.
    """


class HandlerConfigError(HandlerError):
    """
    The configured handlers cannot be used: a name is unknown or its plugin
    is broken, or the plugin package cannot be searched.
    """


class OptionError(HandlerError, ValueError):
    """
    A handler option is unknown or its value is invalid.  The message names
    the handler and the option.
    """


class HandlerImportError(HandlerError, ImportError):
    """
    A L{HandlerPlugin}'s implementation could not be imported; the message
    names the handler and the implementation.
    """


# ---------------------------------------------------------------------------
# Coercions for handler options (the last item of an C{optParameters} entry)


_TRUE = frozenset({"1", "yes", "true", "on"})
_FALSE = frozenset({"0", "no", "false", "off"})


def boolean(value: str) -> bool:
    """
    A yes/no value: C{yes}, C{true}, C{on}, C{1} or C{no}, C{false},
    C{off}, C{0} (any case).
    """
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("must be yes or no (true/false, on/off, 1/0), not {!r}".format(value))


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """
    An integer, optionally bounded (bounds included).
    """

    def coerce(value: str) -> int:
        try:
            result = int(value.strip())
        except ValueError:
            raise ValueError("must be an integer, not {!r}".format(value)) from None
        _checkBounds(result, minimum, maximum)
        return result

    return coerce


def number(minimum: float | None = None, maximum: float | None = None) -> Callable[[str], float]:
    """
    A finite decimal number, optionally bounded (bounds included).
    """

    def coerce(value: str) -> float:
        try:
            result = float(value.strip())
        except ValueError:
            raise ValueError("must be a number, not {!r}".format(value)) from None
        if result != result or result in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number, not {!r}".format(value))
        _checkBounds(result, minimum, maximum)
        return result

    return coerce


def _checkBounds(value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ValueError("must be at least {}, not {}".format(minimum, value))
    if maximum is not None and value > maximum:
        raise ValueError("must be at most {}, not {}".format(maximum, value))


# ---------------------------------------------------------------------------
# The plugin descriptor


@implementer(IPlugin, IHandlerPlugin)
@dataclass(frozen=True, repr=False)
class HandlerPlugin:
    """
    A handler plugin that imports its implementation only when its options
    are read or a handler is made.

    @ivar implementation: the dotted name of the implementation: a class
        (or any callable) taking the L{IHandlerContext}, with an C{Options}
        attribute, the L{usage.Options} subclass of its options (L{Handler}
        has one without options).
    @ivar timeout: seconds the bus waits for one event, or C{None} for the
        bus default.
    @ivar concurrency: events handled at once, or C{None} for the bus
        default.
    @ivar backlog: events that may wait beyond C{concurrency}, or C{None}
        for the bus default.
    """

    name: str
    description: str
    events: tuple[str, ...]
    implementation: str
    priority: int = 100
    apiVersion: int = HANDLER_API_VERSION
    timeout: float | None = None
    concurrency: int | None = None
    backlog: int | None = None

    def __post_init__(self) -> None:
        """
        @raise TypeError: if C{events} is not a tuple of event names.
        """
        if not isinstance(self.events, tuple):
            raise TypeError(
                "events must be a tuple of event names, not {!r}".format(self.events)
            )

    def __repr__(self) -> str:
        return "<HandlerPlugin {!r} -> {}>".format(self.name, self.implementation)

    def _load(self) -> Any:
        try:
            return namedAny(self.implementation)
        except Exception as e:
            raise HandlerImportError(
                "handler {!r}: cannot import its implementation {!r}: {}: {}".format(
                    self.name, self.implementation, type(e).__name__, e
                )
            ) from e

    def makeOptions(self) -> usage.Options:
        """
        Import the implementation and make an instance of its C{Options}.

        @raise HandlerImportError: if the implementation cannot be imported
            or has no C{Options}.
        """
        implementation = self._load()
        try:
            optionsClass = implementation.Options
        except AttributeError:
            raise HandlerImportError(
                "handler {!r}: its implementation {} has no Options class".format(
                    self.name, self.implementation
                )
            ) from None
        options: usage.Options = optionsClass()
        return options

    def makeHandler(self, context: IHandlerContext) -> IEventHandler:
        """
        Import the implementation and call it with C{context}.

        @return: a new handler.
        @raise HandlerImportError: if the implementation cannot be imported.
        @raise HandlerError: if it is a L{Handler} without an L{handles}
            method for an event the plugin subscribes to, or refuses the
            context.
        """
        implementation = self._load()
        if isinstance(implementation, type) and issubclass(implementation, Handler):
            _checkEvents(self, implementation)
        handler: IEventHandler = implementation(context)
        return handler


def _checkEvents(plugin: HandlerPlugin, implementation: type[Handler]) -> None:
    """
    Refuse an implementation that uses L{handles} but has no method for an
    event its plugin subscribes to: those events would be ignored without
    a word.
    """
    handled = implementation.handledEvents()
    if not handled or implementation.handle is not Handler.handle:
        return
    missing = [event for event in plugin.events if event not in handled]
    if missing:
        raise HandlerError(
            "handler {!r} subscribes to {} but its implementation {} has no "
            "@handles method for {}".format(
                plugin.name,
                ", ".join(missing),
                plugin.implementation,
                "it" if len(missing) == 1 else "them",
            )
        )


def parseOptions(plugin: IHandlerPlugin, given: Mapping[str, str]) -> usage.Options:
    """
    Parse a handler's options from C{key=value} text, as sipcore does with
    C{--handler-option NAME:key=value} and the C{[handler:NAME]} section of
    the configuration file: each becomes C{--key=value} (a flag: C{--key}
    for a yes value, nothing for a no) for the plugin's C{Options}.

    @param plugin: the L{IHandlerPlugin}.
    @param given: option name to its text.
    @return: the parsed options.
    @raise OptionError: for an unknown option (naming the known ones) or an
        invalid value.
    @raise HandlerImportError: if the implementation cannot be imported.
    """
    options = plugin.makeOptions()
    takesValue = _optionNames(options)
    unknown = sorted(set(given) - set(takesValue))
    if unknown:
        raise OptionError(
            "handler {!r}: unknown option{} {}; known options: {}".format(
                plugin.name,
                "s" if len(unknown) > 1 else "",
                ", ".join(map(repr, unknown)),
                ", ".join(sorted(takesValue)) or "(none)",
            )
        )
    argv = []
    for key, value in given.items():
        if takesValue[key]:
            argv.append("--{}={}".format(key, value))
            continue
        try:
            on = boolean(value)
        except ValueError as e:
            raise OptionError("handler {!r}: option {}: {}".format(plugin.name, key, e)) from None
        if on:
            argv.append("--" + key)
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        raise OptionError("handler {!r}: {}".format(plugin.name, e)) from None
    return options


def _optionNames(options: usage.Options) -> dict[str, bool]:
    """
    The long names of a handler's options (not C{help} and C{version}),
    each with whether it takes a value.
    """
    names: dict[str, bool] = {}
    for spec in options.longOpt:
        name = spec.rstrip("=")
        if name not in ("help", "version"):
            names[name] = names.get(name, False) or spec.endswith("=")
    return names


# ---------------------------------------------------------------------------
# What sipcore builds for each enabled handler


@implementer(IHandlerContext)
class HandlerContext:
    """
    What sipcore gives L{HandlerPlugin.makeHandler}.

    @ivar jobQueues: C{dict} of name to the job queues built through
        L{makeJobQueue}, for the service to start, drain and report.  Several
        contexts may share one C{dict}, which makes queue names unique
        across them.
    """

    def __init__(
        self,
        serverId: int,
        reactor: Any,
        store: Any,
        dbPool: Any = None,
        options: Mapping[str, Any] | None = None,
        writes: Any = None,
        jobQueueFactory: Callable[..., Any] | None = None,
        jobQueues: dict[str, Any] | None = None,
        apiVersion: int = HANDLER_API_VERSION,
        handlerName: str | None = None,
        pinger: Any = None,
    ) -> None:
        """
        @param serverId: this node's C{server_id}.
        @param reactor: provides C{IReactorTime} at least.
        @param store: the L{sipcore.interfaces.ILocationStore}.
        @param dbPool: the database's L{sipcore.interfaces.IDatabasePool}
            (the L{sipcore.db.Database}'s pool), or C{None} without a
            database.
        @param options: the handler's parsed options (L{parseOptions}), or
            C{None}: a L{Handler} then takes the defaults of its C{Options}.
        @param writes: the pending-writes tracker.
        @param jobQueueFactory: called as C{factory(name, runner, **kwargs)}
            to build a queue; default: L{sipcore.jobs.JobQueue} on
            C{reactor}.
        @param jobQueues: where built queues are recorded (a new C{dict} by
            default).
        @param handlerName: the name of the handler it is for.
        @param pinger: the L{sipcore.interfaces.IPinger} of the proxy, or
            C{None}.
        """
        self.apiVersion = apiVersion
        self.serverId = serverId
        self.reactor = reactor
        self.store = store
        self.dbPool = dbPool
        self.options = options
        self.writes = writes
        self._jobQueueFactory = jobQueueFactory
        self.jobQueues: dict[str, Any] = jobQueues if jobQueues is not None else {}
        self.handlerName = handlerName
        self.pinger = pinger

    def makeJobQueue(self, name: str, runner: Callable[[list[Any]], Any], **kwargs: Any) -> Any:
        """
        Build and record a job queue.

        @param name: unique among the recorded queues.
        @param runner: called with a C{list} of items; returns a L{Deferred}.
        @param kwargs: L{sipcore.jobs.JobQueue} options.
        @return: the queue.
        @raise ValueError: if a queue of that name was already made.
        """
        if name in self.jobQueues:
            raise ValueError("a job queue named {!r} already exists".format(name))
        factory = self._jobQueueFactory
        if factory is None:
            from sipcore.jobs import JobQueue

            queue = JobQueue(name, runner, self.reactor, **kwargs)
        else:
            queue = factory(name, runner, **kwargs)
        self.jobQueues[name] = queue
        return queue


@implementer(IEventHandler)
@dataclass(frozen=True, eq=False)
class EnabledHandler:
    """
    A handler made from its plugin for one service: what the service starts
    and stops and the bus delivers to, with the plugin's name, events,
    priority and limits.

    @ivar handler: the L{IEventHandler} the plugin made.
    """

    name: str
    events: tuple[str, ...]
    priority: int
    timeout: float | None
    concurrency: int | None
    backlog: int | None
    handler: IEventHandler

    @classmethod
    def make(cls, plugin: IHandlerPlugin, context: IHandlerContext) -> EnabledHandler:
        """
        Make a handler with C{plugin.makeHandler(context)}.
        """
        return cls(
            plugin.name,
            plugin.events,
            plugin.priority,
            plugin.timeout,
            plugin.concurrency,
            plugin.backlog,
            plugin.makeHandler(context),
        )

    def start(self) -> Any:
        """
        Start the handler: what its C{start()} returns.
        """
        return self.handler.start()

    def handle(self, event: Any) -> Any:
        """
        Hand C{event} to the handler: what its C{handle(event)} returns.
        """
        return self.handler.handle(event)

    def stop(self) -> Any:
        """
        Stop the handler: what its C{stop()} returns.
        """
        return self.handler.stop()


# ---------------------------------------------------------------------------
# The Handler base class

_F = TypeVar("_F", bound=Callable[..., Any])

#: The event names of each function marked with L{handles}.
_handledEvents: WeakKeyDictionary[Callable[..., Any], tuple[str, ...]] = WeakKeyDictionary()


def handles(*events: str) -> Callable[[_F], _F]:
    """
    Mark a method of a L{Handler} subclass as the one that handles
    C{events}: L{Handler.handle} calls it with the event.

    @raise ValueError: at class definition, for an event name sipcore never
        fires, or no name at all.
    """
    if not events:
        raise ValueError("@handles needs at least one event name")
    unknown = [event for event in events if event not in ALL_EVENTS]
    if unknown:
        raise ValueError(
            "@handles: unknown event name(s) {}; known events: {}".format(
                ", ".join(map(repr, unknown)), ", ".join(ALL_EVENTS)
            )
        )

    def mark(method: _F) -> _F:
        _handledEvents[method] = tuple(events)
        return method

    return mark


@implementer(IEventHandler)
class Handler:
    """
    A base class for handler implementations.

    Subclasses declare their options in C{Options} and mark the methods
    that handle events with L{handles}; they open what they need in
    L{start} and release it in L{stop}.

    @cvar Options: the L{usage.Options} subclass of the handler's options
        (none by default).
    @ivar context: the L{IHandlerContext}.
    @ivar name: the handler's name (the plugin's, from the context).
    @ivar options: the parsed options (C{context.options}, or the defaults
        of C{Options} when the context has none).
    """

    Options: type[usage.Options] = usage.Options
    _eventMethods: dict[str, Callable[[Any, Any], Any]] = {}
    _log = Logger()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        methods: dict[str, Callable[[Any, Any], Any]] = {}
        for base in reversed(cls.__mro__[1:]):
            methods.update(vars(base).get("_eventMethods", {}))
        own: dict[str, Callable[[Any, Any], Any]] = {}
        for attribute, value in vars(cls).items():
            marked = _handledEvents.get(value, ()) if isinstance(value, FunctionType) else ()
            for event in marked:
                if event in own:
                    raise TypeError(
                        "{}: both {}() and {}() handle {!r}".format(
                            cls.__name__, own[event].__name__, attribute, event
                        )
                    )
                own[event] = value
        cls._eventMethods = {**methods, **own}

    def __init__(self, context: IHandlerContext) -> None:
        """
        @param context: what sipcore offers the handler.
        """
        self.context = context
        self.name: str = context.handlerName or type(self).__name__
        options = context.options
        self.options: Mapping[str, Any] = self.Options() if options is None else options

    @classmethod
    def handledEvents(cls) -> tuple[str, ...]:
        """
        The event names the class has an L{handles} method for.
        """
        return tuple(event for event in ALL_EVENTS if event in cls._eventMethods)

    def requireDatabase(self) -> Any:
        """
        The database's pool (L{sipcore.interfaces.IDatabasePool}), for
        handlers that cannot work without one.

        @return: C{context.dbPool}.
        @raise HandlerError: when sipcore runs without a database.
        """
        pool = self.context.dbPool
        if pool is None:
            raise HandlerError(
                "handler {!r} needs a PostgreSQL database, but sipcore runs without one: "
                "start it with --db DSN (or db = in the config file), or disable the "
                "handler".format(self.name)
            )
        return pool

    def start(self) -> Deferred[Any] | None:
        """
        Open the handler's resources.  Nothing by default.

        @return: C{None} or a L{Deferred}; a failure stops sipcore's start.
        """
        return None

    def handle(self, event: Any) -> Any:
        """
        Call the L{handles} method for C{event.name}, if there is one.

        @return: what the method returns (C{None}, a L{Deferred} or a
            coroutine), or C{None} for an event no method handles.
        """
        method = self._eventMethods.get(event.name)
        if method is None:
            return None
        return method(self, event)

    def stop(self) -> Deferred[Any] | None:
        """
        Release the handler's resources.  Nothing by default.  The job
        queues made with C{context.makeJobQueue} are drained by sipcore
        before this is called.

        @return: C{None} or a L{Deferred}.
        """
        return None
