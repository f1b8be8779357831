# -*- test-case-name: tests.test_plugins -*-
"""
Helpers for writing handler plugins.

A handler plugin module in C{twisted/plugins/} stays light: it exposes a
L{LazyHandler} that names the implementation, which is imported only when
the handler is enabled and started::

    # twisted/plugins/myhandlers.py
    from sipcore.plugin import LazyHandler

    audit = LazyHandler(
        "connection-audit",
        "Log every connection close",
        ("tcp:closed", "tcp:reset", "tcp:timeout"),
        implementation="myhandlers.audit.ConnectionAudit",
    )

The implementation class is called with the L{HandlerContext}; it must have
C{handle(event)} and may have C{start()} and C{stop()} (each returning
C{None} or a L{Deferred}).

L{Handler} is a base class for implementations: typed options with
defaults (L{Option}, parsed by L{parseOptions} with a clear L{OptionError}
for an unknown or invalid one), no-op C{start} and C{stop}, and
C{handle(event)} dispatching to the methods marked with L{handles}::

    # myhandlers/audit.py
    from sipcore.plugin import Handler, Option, handles, integer

    class ConnectionAudit(Handler):
        options = {"batch-size": Option(integer(minimum=1), 100, "rows per INSERT")}

        @handles("tcp:closed", "tcp:reset", "tcp:timeout")
        def closed(self, event):
            ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.reflect import namedAny
from zope.interface import implementer

from sipcore.events._types import ALL_EVENTS
from sipcore.events.plugins import HANDLER_API_VERSION
from sipcore.interfaces import IEventHandler, IHandlerContext

__all__ = [
    "Handler",
    "HandlerContext",
    "HandlerError",
    "HandlerImportError",
    "HandlerNotStarted",
    "LazyHandler",
    "Option",
    "OptionError",
    "boolean",
    "choice",
    "describeHandler",
    "handles",
    "integer",
    "number",
    "parseOptions",
    "text",
]


class HandlerError(Exception):
    """
    A handler cannot run as configured (for example it needs a database and
    sipcore runs without one).  The message names the handler.  Raised from
    a handler's constructor or C{start}, it stops sipcore from starting.
    """


class OptionError(HandlerError, ValueError):
    """
    A handler option is unknown or its value is invalid.  The message names
    the handler, the option and what is expected.
    """


class HandlerImportError(ImportError):
    """
    A L{LazyHandler}'s implementation could not be imported; the message
    names the handler and the implementation.
    """


class HandlerNotStarted(RuntimeError):
    """
    A L{LazyHandler} was asked to handle an event before L{LazyHandler.start}
    (or after L{LazyHandler.stop}).
    """


@implementer(IPlugin, IEventHandler)
class LazyHandler:
    """
    An L{IEventHandler} that imports its implementation only when started.

    @ivar implementation: the dotted name of the implementation class (or
        any callable taking the context).
    @ivar timeout: seconds the bus waits for one event, or C{None} for the
        bus default.
    @ivar concurrency: events handled at once, or C{None} for the bus
        default.
    @ivar backlog: events that may wait beyond C{concurrency}, or C{None}
        for the bus default.
    """

    def __init__(
        self,
        name: str,
        description: str,
        events: Iterable[str],
        implementation: str,
        priority: int = 100,
        apiVersion: int = HANDLER_API_VERSION,
        timeout: float | None = None,
        concurrency: int | None = None,
        backlog: int | None = None,
    ) -> None:
        """
        @raise TypeError: if C{events} is a single string.
        """
        if isinstance(events, str):
            raise TypeError(
                "events must be a tuple of event names, not the string {!r}".format(events)
            )
        self.name = name
        self.description = description
        self.events = tuple(events)
        self.implementation = implementation
        self.priority = priority
        self.apiVersion = apiVersion
        self.timeout = timeout
        self.concurrency = concurrency
        self.backlog = backlog
        self._impl: Any = None

    def __repr__(self) -> str:
        return "<LazyHandler {!r} -> {}>".format(self.name, self.implementation)

    def start(self, context: IHandlerContext) -> Deferred[Any] | None:
        """
        Import the implementation, call it with C{context} and start the
        result if it has a C{start} method.

        @return: what the implementation's C{start()} returns (C{None} or a
            L{Deferred}).
        @raise HandlerImportError: if the implementation cannot be imported.
        @raise Exception: whatever building or starting it raises.  The
            handler stays unstarted.
        """
        if self._impl is not None:
            raise RuntimeError("handler {!r} is already started".format(self.name))
        try:
            factory = namedAny(self.implementation)
        except Exception as e:
            raise HandlerImportError(
                "handler {!r}: cannot import its implementation {!r}: {}: {}".format(
                    self.name, self.implementation, type(e).__name__, e
                )
            ) from e
        if getattr(context, "handlerName", None) is None:
            try:
                context.handlerName = self.name
            except AttributeError:
                pass
        impl = factory(context)
        if isinstance(impl, Handler):
            _checkEvents(self, impl)
        self._impl = impl
        start = getattr(impl, "start", None)
        if start is None:
            return None
        try:
            result: Deferred[Any] | None = start()
        except BaseException:
            self._impl = None
            raise
        return result

    def handle(self, event: Any) -> Any:
        """
        Hand C{event} to the implementation.

        @raise HandlerNotStarted: before L{start} or after L{stop}.
        """
        impl = self._impl
        if impl is None:
            raise HandlerNotStarted(
                "handler {!r} is not started: call start(context) before handle()".format(self.name)
            )
        return impl.handle(event)

    def stop(self) -> Deferred[Any] | None:
        """
        Stop the implementation (if started and it has a C{stop} method) and
        forget it.

        @return: what the implementation's C{stop()} returns.
        """
        impl, self._impl = self._impl, None
        stop = getattr(impl, "stop", None)
        if stop is None:
            return None
        result: Deferred[Any] | None = stop()
        return result


#: Builds a job queue: C{factory(name, runner, **kwargs)}.
JobQueueFactory = Callable[..., Any]


@implementer(IHandlerContext)
class HandlerContext:
    """
    What sipcore gives a handler when it starts.

    @ivar handlerName: the name of the handler it was made for (C{None}
        until known).
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
        options: dict[str, str] | None = None,
        writes: Any = None,
        jobQueueFactory: JobQueueFactory | None = None,
        jobQueues: dict[str, Any] | None = None,
        apiVersion: int = HANDLER_API_VERSION,
        handlerName: str | None = None,
    ) -> None:
        """
        @param serverId: this node's C{server_id}.
        @param reactor: provides C{IReactorTime} at least.
        @param store: the L{sipcore.interfaces.ILocationStore}.
        @param dbPool: the shared C{txpostgres} pool, or C{None}.
        @param options: the handler's own options.
        @param writes: the pending-writes tracker.
        @param jobQueueFactory: called as C{factory(name, runner, **kwargs)}
            to build a queue; default: L{sipcore.jobs.JobQueue} on
            C{reactor}.
        @param jobQueues: where built queues are recorded (a new C{dict} by
            default).
        @param handlerName: the name of the handler it is for; when
            C{None}, L{LazyHandler.start} sets it.
        """
        self.apiVersion = apiVersion
        self.serverId = serverId
        self.reactor = reactor
        self.store = store
        self.dbPool = dbPool
        self.options: dict[str, str] = dict(options or {})
        self.writes = writes
        self._jobQueueFactory = jobQueueFactory
        self.jobQueues: dict[str, Any] = jobQueues if jobQueues is not None else {}
        self.handlerName = handlerName

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


def _checkEvents(descriptor: LazyHandler, impl: Handler) -> None:
    """
    Refuse an implementation that uses L{handles} but has no method for an
    event its descriptor subscribes to: those events would be ignored
    without a word.

    @raise HandlerError: naming the handler and the events.
    """
    handled = type(impl).handledEvents()
    if not handled or type(impl).handle is not Handler.handle:
        return
    missing = [event for event in descriptor.events if event not in handled]
    if missing:
        raise HandlerError(
            "handler {!r} subscribes to {} but its implementation {} has no "
            "@handles method for {}".format(
                descriptor.name,
                ", ".join(missing),
                descriptor.implementation,
                "it" if len(missing) == 1 else "them",
            )
        )


# ---------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class Option:
    """
    One option of a handler.

    @ivar parse: turns the option's text into its value; raises
        C{ValueError} with a short reason (C{"must be an integer"}) when it
        cannot.  L{text}, L{integer}, L{number}, L{boolean} and L{choice}
        build the usual ones.
    @ivar default: the value when the option is not given (not parsed).
    @ivar help: one line for C{--list-handlers} and the docs.
    """

    parse: Callable[[str], Any]
    default: Any = None
    help: str = ""


def text(value: str) -> str:
    """
    An option taken as it is written.
    """
    return value


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """
    An integer option, optionally bounded (bounds included).
    """

    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError("must be an integer") from None
        _checkBounds(number, minimum, maximum)
        return number

    return parse


def number(minimum: float | None = None, maximum: float | None = None) -> Callable[[str], float]:
    """
    A decimal number option, optionally bounded (bounds included).
    """

    def parse(value: str) -> float:
        try:
            result = float(value.strip())
        except ValueError:
            raise ValueError("must be a number") from None
        if result != result or result in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        _checkBounds(result, minimum, maximum)
        return result

    return parse


def _checkBounds(value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ValueError("must be at least {}".format(minimum))
    if maximum is not None and value > maximum:
        raise ValueError("must be at most {}".format(maximum))


_TRUE = frozenset({"1", "yes", "true", "on"})
_FALSE = frozenset({"0", "no", "false", "off"})


def boolean(value: str) -> bool:
    """
    A yes/no option: C{yes}, C{true}, C{on}, C{1} or C{no}, C{false},
    C{off}, C{0} (any case).
    """
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("must be yes or no (true/false, on/off, 1/0)")


def choice(*values: str) -> Callable[[str], str]:
    """
    An option that must be one of C{values}.
    """

    def parse(value: str) -> str:
        if value not in values:
            raise ValueError("must be one of {}".format(", ".join(values)))
        return value

    return parse


def parseOptions(
    handlerName: str, spec: Mapping[str, Option], given: Mapping[str, str]
) -> dict[str, Any]:
    """
    Check and convert a handler's options.

    @param handlerName: the handler's name, for messages.
    @param spec: the options the handler knows, by name.
    @param given: the options it was given (C{--handler-option} or its
        config-file section), C{str} to C{str}.
    @return: a value for every option in C{spec}: the parsed given value,
        else the default.
    @raise OptionError: for an unknown option (naming the known ones) or a
        value its parser refuses (naming the option, the value and the
        reason).
    """
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise OptionError(
            "handler {!r}: unknown option{} {}; known options: {}".format(
                handlerName,
                "s" if len(unknown) > 1 else "",
                ", ".join(map(repr, unknown)),
                ", ".join(sorted(spec)) or "(none)",
            )
        )
    values: dict[str, Any] = {}
    for name, option in spec.items():
        if name not in given:
            values[name] = option.default
            continue
        raw = given[name]
        try:
            values[name] = option.parse(raw)
        except ValueError as e:
            raise OptionError(
                "handler {!r}: option {}={!r}: {}".format(handlerName, name, raw, e)
            ) from None
    return values


# ---------------------------------------------------------------------------
# The Handler base class

_F = TypeVar("_F", bound=Callable[..., Any])


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
        method.sipcoreEvents = tuple(events)  # type: ignore[attr-defined]
        return method

    return mark


class Handler:
    """
    A base class for handler implementations (what a L{LazyHandler}
    builds).

    Subclasses declare their options in C{options} and mark the methods
    that handle events with L{handles}.  The constructor parses the
    options (raising L{OptionError} for an unknown or invalid one, so the
    server does not start), then subclasses open what they need in
    L{start} and release it in L{stop}.

    @cvar options: the options the handler accepts, by name.
    @ivar context: the L{IHandlerContext}.
    @ivar name: the handler's name (the descriptor's, from the context).
    @ivar optionValues: every option's value (parsed, or the default).
    """

    options: Mapping[str, Option] = {}
    _eventMethods: dict[str, str] = {}
    _log = Logger()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        methods: dict[str, str] = {}
        for base in reversed(cls.__mro__[1:]):
            methods.update(getattr(base, "_eventMethods", {}))
        own: dict[str, str] = {}
        for attribute, value in vars(cls).items():
            for event in getattr(value, "sipcoreEvents", ()):
                if event in own:
                    raise TypeError(
                        "{}: both {}() and {}() handle {!r}".format(
                            cls.__name__, own[event], attribute, event
                        )
                    )
                own[event] = attribute
        methods.update(own)
        cls._eventMethods = methods

    def __init__(self, context: IHandlerContext) -> None:
        """
        @param context: what sipcore offers the handler.
        @raise OptionError: for an unknown or invalid option.
        """
        self.context = context
        self.name: str = getattr(context, "handlerName", None) or type(self).__name__
        self.optionValues: dict[str, Any] = parseOptions(
            self.name, self.options, dict(context.options)
        )

    @classmethod
    def handledEvents(cls) -> tuple[str, ...]:
        """
        The event names the class has an L{handles} method for.
        """
        return tuple(event for event in ALL_EVENTS if event in cls._eventMethods)

    def option(self, name: str) -> Any:
        """
        The value of one option.

        @raise KeyError: for a name not in C{options}.
        """
        return self.optionValues[name]

    def requireDatabase(self) -> Any:
        """
        The shared database pool, for handlers that cannot work without
        one.

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
        return getattr(self, method)(event)

    def stop(self) -> Deferred[Any] | None:
        """
        Release the handler's resources.  Nothing by default.  The job
        queues made with C{context.makeJobQueue} are drained by sipcore
        before this is called.

        @return: C{None} or a L{Deferred}.
        """
        return None


# ---------------------------------------------------------------------------
# Describing handlers (twistd sipcore --list-handlers)


def describeHandler(provider: Any) -> tuple[list[str], str | None]:
    """
    Describe a handler plugin for C{--list-handlers}: its description,
    events, priority, API version, limits and, for a L{LazyHandler}, its
    implementation (imported, to check it can be) and declared options.

    @param provider: an L{IEventHandler} provider.
    @return: the indented lines, and a problem (C{str}) when the
        implementation cannot be imported, else C{None}.
    """
    lines = [
        "    " + str(provider.description),
        "    events:         " + ", ".join(provider.events),
        "    priority:       {}".format(provider.priority),
        "    API version:    {}".format(provider.apiVersion),
    ]
    limits = []
    for attribute in ("timeout", "concurrency", "backlog"):
        value = getattr(provider, attribute, None)
        limits.append(
            "{} {}".format(attribute, "(bus default)" if value is None else value)
        )
    lines.append("    limits:         " + ", ".join(limits))
    implementation = getattr(provider, "implementation", None)
    if not isinstance(implementation, str):
        return lines, None
    try:
        factory = namedAny(implementation)
    except Exception as e:
        problem = "cannot import its implementation {}: {}: {}".format(
            implementation, type(e).__name__, e
        )
        lines.append("    implementation: {} (CANNOT IMPORT: {}: {})".format(
            implementation, type(e).__name__, e))
        return lines, problem
    lines.append("    implementation: " + implementation)
    spec = getattr(factory, "options", None)
    if isinstance(spec, Mapping) and all(isinstance(o, Option) for o in spec.values()):
        if spec:
            lines.append("    options:")
            shown = {name: _showDefault(option.default) for name, option in spec.items()}
            width = max(len("{} = {}".format(name, shown[name])) for name in spec)
            for name, option in sorted(spec.items()):
                lines.append(
                    "      {}  {}".format(
                        "{} = {}".format(name, shown[name]).ljust(width), option.help
                    ).rstrip()
                )
        else:
            lines.append("    options:        (none)")
    return lines, None


def _showDefault(value: Any) -> str:
    """
    An option's default as it would be written on the command line.
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value == "":
        return "(empty)"
    return str(value)
