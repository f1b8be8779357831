# -*- test-case-name: tests.test_location_shared -*-
"""
One in-memory location store shared by several sipcore processes.

C{python -m sipcore.workers} without C{--db} starts a store process next to
its workers.  The store process keeps every binding in one
L{MemoryLocationStore} and serves it over a private connected socket per
worker (a C{socketpair} made by the supervisor; nothing listens on a path or
a port).  Each worker's L{SharedLocationStore} sends the store's operations
over that socket, so every worker sees every registration, as with the
PostgreSQL store.

The protocol: each message is a 32-bit length-prefixed JSON document.  A
request is C{[method, arguments]}; the answer is C{["ok", result]} or
C{["error", kind, text]}.  The store process answers requests in the order
they came, one connection at a time, so one worker's operations take effect
in the order it called them.  Requests written in one reactor turn leave in
one write and their answers come back in one read: there is no window to
wait for.

Failures: a binding the table could not store is refused in the worker
(L{sipcore.location.InvalidBinding}) before anything is sent.  When the store
process is gone, every waiting and later call fails with
L{sipcore.location.StoreUnavailable} (the registrar answers C{503}); the
supervisor then stops the workers.  A malformed request is answered with an
error and logged once per connection; the connection stays up.
"""

from __future__ import annotations

import json
import socket
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from sipcore.interfaces import ILocationStore
from sipcore.location import StoreUnavailable
from sipcore.location.binding import Binding, checkBindings
from sipcore.location.memory import MemoryLocationStore

__all__ = ["SharedLocationStore", "StoreServerFactory", "adoptStore", "serveStore"]

#: The largest message either side accepts (a lookup of many addresses of
#: record answers with many bindings).
MAX_MESSAGE = 64 * 1024 * 1024

#: Binding fields in the order they travel.
_FIELDS = tuple(field.name for field in fields(Binding))


def _encodeBinding(binding: Binding) -> list[Any]:
    return [getattr(binding, name) for name in _FIELDS]


def _decodeBinding(values: list[Any]) -> Binding:
    if not isinstance(values, list) or len(values) != len(_FIELDS):
        raise ValueError("a binding has {} fields".format(len(_FIELDS)))
    # The generated __init__ of a frozen dataclass sets each field through
    # object.__setattr__; filling the instance's dictionary at once builds
    # the same object in a fraction of the time.  The values are checked by
    # the store (checkBinding) before they are kept.
    binding = object.__new__(Binding)
    binding.__dict__.update(zip(_FIELDS, values, strict=True))
    return binding


def _decodeBindings(values: Any) -> list[Binding]:
    if not isinstance(values, list):
        raise ValueError("bindings must be a list")
    return [_decodeBinding(v) for v in values]


def _strings(values: Any) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("expected a list of strings")
    return values


def _ints(values: Any) -> list[int]:
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise ValueError("expected a list of integers")
    return values


def _int(value: Any) -> int:
    if type(value) is not int:
        raise ValueError("expected an integer")
    return value


def _time(value: Any) -> float:
    if type(value) not in (int, float):
        raise ValueError("expected a number")
    return float(value)


def _aor(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected an address of record")
    return value


def _disconnect(protocol: Int32StringReceiver) -> None:
    if protocol.transport is not None:
        protocol.transport.loseConnection()


# ---------------------------------------------------------------------------
# The store process's side.

#: Each operation the store process serves: how to check its arguments,
#: and how to encode its result.
_OPERATIONS: dict[str, tuple[tuple[Callable[[Any], Any], ...], Callable[[Any], Any]]] = {
    "lookup": ((_aor, _time), lambda found: [_encodeBinding(b) for b in found]),
    "lookupMany": (
        (_strings, _time),
        lambda found: {aor: [_encodeBinding(b) for b in bs] for aor, bs in found.items()},
    ),
    "save": ((_decodeBindings,), lambda result: None),
    "remove": ((_strings,), int),
    "removeConnections": ((_int, _ints), int),
    "removeExpired": ((_time,), int),
    "purgeServer": ((_int, _time), int),
}


class _StoreServerProtocol(Int32StringReceiver):
    """
    Serves one worker's requests from the shared L{MemoryLocationStore}.
    """

    MAX_LENGTH = MAX_MESSAGE
    _log = Logger()

    def __init__(self, factory: StoreServerFactory) -> None:
        self.factory = factory
        self._complained = False

    def connectionMade(self) -> None:
        self.factory.connections += 1

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.factory.connectionGone()

    def stringReceived(self, data: bytes) -> None:
        try:
            method, arguments = json.loads(data)
            checks, encode = _OPERATIONS[method]
            if not isinstance(arguments, list) or len(arguments) != len(checks):
                raise ValueError("{} takes {} arguments".format(method, len(checks)))
            args = [check(arg) for check, arg in zip(checks, arguments, strict=True)]
        except (ValueError, TypeError, KeyError) as e:
            if not self._complained:
                self._complained = True
                self._log.error("store request refused: {error}", error=e)
            self._reply(["error", "invalid", str(e)])
            return
        result = defer.maybeDeferred(getattr(self.factory.store, method), *args)
        result.addCallbacks(
            lambda value: self._reply(["ok", encode(value)]),
            lambda failure: self._reply(
                ["error", "invalid" if failure.check(ValueError, TypeError) else "unavailable",
                 failure.getErrorMessage()]),
        )

    def _reply(self, message: list[Any]) -> None:
        self.sendString(json.dumps(message, separators=(",", ":")).encode("utf-8"))

    def lengthLimitExceeded(self, length: int) -> None:
        self._log.error("store request of {length} bytes refused; closing the connection",
                        length=length)
        _disconnect(self)


class StoreServerFactory(Factory):
    """
    Builds the store process's side of each worker's connection.

    @ivar store: the L{MemoryLocationStore} every worker shares.
    @ivar connections: how many worker connections are open.
    @ivar allGone: called once the last open connection has closed.
    """

    def __init__(self, store: MemoryLocationStore, allGone: Callable[[], None] | None = None) -> None:
        self.store = store
        self.connections = 0
        self.allGone = allGone

    def buildProtocol(self, addr: Any) -> _StoreServerProtocol:
        return _StoreServerProtocol(self)

    def connectionGone(self) -> None:
        self.connections -= 1
        if self.connections == 0 and self.allGone is not None:
            self.allGone()


def serveStore(reactor: Any, fds: Iterable[int], allGone: Callable[[], None]) -> StoreServerFactory:
    """
    Serve one shared L{MemoryLocationStore} on each connected socket in
    C{fds} (the store process's ends of the supervisor's socket pairs).

    @param allGone: called when every connection has closed (every worker
        has exited).
    """
    factory = StoreServerFactory(MemoryLocationStore(reactor), allGone)
    for fd in fds:
        reactor.adoptStreamConnection(fd, socket.AF_UNIX, factory)
        socket.close(fd)
    return factory


# ---------------------------------------------------------------------------
# The worker's side.


class _StoreClientProtocol(Int32StringReceiver):
    """
    Sends a worker's store operations and matches the answers to them, in
    order.
    """

    MAX_LENGTH = MAX_MESSAGE

    def __init__(self, store: SharedLocationStore) -> None:
        self.store = store
        self.waiting: deque[tuple[defer.Deferred[Any], Callable[[Any], Any]]] = deque()

    def connectionMade(self) -> None:
        self.store._connected(self)

    def call(self, method: str, arguments: list[Any], decode: Callable[[Any], Any]) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.waiting.append((d, decode))
        self.sendString(json.dumps([method, arguments], separators=(",", ":")).encode("utf-8"))
        return d

    def stringReceived(self, data: bytes) -> None:
        if not self.waiting:
            # An answer nobody asked for: the two sides are out of step.
            _disconnect(self)
            return
        d, decode = self.waiting.popleft()
        try:
            answer = json.loads(data)
            if answer[0] == "ok":
                result = decode(answer[1])
            elif answer[1] == "invalid":
                raise ValueError(answer[2])
            else:
                raise StoreUnavailable(answer[2])
        except (ValueError, TypeError, KeyError, IndexError, StoreUnavailable):
            d.errback(Failure())
            return
        d.callback(result)

    def lengthLimitExceeded(self, length: int) -> None:
        _disconnect(self)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.store._lost(reason)
        waiting, self.waiting = self.waiting, deque()
        for d, _ in waiting:
            d.errback(StoreUnavailable("the store process is gone"))


@implementer(ILocationStore)
class SharedLocationStore:
    """
    The worker's L{ILocationStore}: every operation is carried out by the
    store process (see the module docstring).

    @ivar statementCount: a L{Counter} of the operations sent, by method
        name, counted as the other stores count their statements.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self.clock = clock
        self.statementCount: Counter[str] = Counter()
        self._protocol: _StoreClientProtocol | None = None
        self._gone = False
        self._closing = False

    def buildProtocol(self) -> _StoreClientProtocol:
        return _StoreClientProtocol(self)

    def _connected(self, protocol: _StoreClientProtocol) -> None:
        self._protocol = protocol

    def _lost(self, reason: Failure | None) -> None:
        self._protocol = None
        self._gone = True
        if not self._closing:
            self._log.error("the shared location store is gone: {reason}",
                            reason=reason.getErrorMessage() if reason else "closed")

    def _call(self, method: str, arguments: list[Any],
              decode: Callable[[Any], Any] = lambda value: value) -> defer.Deferred[Any]:
        if self._protocol is None:
            return defer.fail(StoreUnavailable(
                "the store process is gone" if self._gone else "not connected to the store process"))
        self.statementCount[method] += 1
        return self._protocol.call(method, arguments, decode)

    def start(self) -> defer.Deferred[None]:
        """
        See L{ILocationStore.start}: the connection is made when the store
        is adopted (L{adoptStore}).
        """
        return defer.succeed(None)

    def close(self) -> defer.Deferred[None]:
        """
        See L{ILocationStore.close}: answers still due arrive first, then
        the connection closes.  The bindings stay in the store process.
        """
        self._closing = True
        protocol = self._protocol
        if protocol is None:
            return defer.succeed(None)
        pending = [d for d, _ in protocol.waiting]
        done = defer.DeferredList(pending, consumeErrors=True) if pending else defer.succeed(None)

        def disconnect(_: Any) -> None:
            if protocol.transport is not None:
                protocol.transport.loseConnection()

        return done.addCallback(disconnect)

    def lookup(self, aor: str, now: float) -> defer.Deferred[list[Binding]]:
        """
        See L{ILocationStore.lookup}.
        """
        return self._call("lookup", [aor, now], _decodeBindings)

    def lookupMany(self, aors: Iterable[str], now: float) -> defer.Deferred[dict[str, list[Binding]]]:
        """
        See L{MemoryLocationStore.lookupMany}.
        """
        return self._call("lookupMany", [list(aors), now],
                          lambda found: {aor: _decodeBindings(bs) for aor, bs in found.items()})

    def save(self, bindings: Iterable[Binding]) -> defer.Deferred[None]:
        """
        See L{ILocationStore.save}: the answer comes once the store process
        holds every binding.  Fails with L{sipcore.location.InvalidBinding}
        (and sends nothing) if one cannot be stored exactly.
        """
        try:
            batch = checkBindings(bindings)
        except ValueError:
            return defer.fail(Failure())
        if not batch:
            return defer.succeed(None)
        return self._call("save", [[_encodeBinding(b) for b in batch]])

    def remove(self, ruids: Iterable[str]) -> defer.Deferred[int]:
        """
        See L{ILocationStore.remove}.
        """
        wanted = sorted(set(ruids))
        if not wanted:
            return defer.succeed(0)
        return self._call("remove", [wanted])

    def removeConnections(self, serverId: int, conids: Iterable[int]) -> defer.Deferred[int]:
        """
        See L{ILocationStore.removeConnections}.
        """
        wanted = sorted(set(conids))
        if not wanted:
            return defer.succeed(0)
        return self._call("removeConnections", [serverId, wanted])

    def removeExpired(self, now: float) -> defer.Deferred[int]:
        """
        See L{ILocationStore.removeExpired}.
        """
        return self._call("removeExpired", [now])

    def purgeServer(self, serverId: int, before: float) -> defer.Deferred[int]:
        """
        See L{ILocationStore.purgeServer}.
        """
        return self._call("purgeServer", [serverId, before])


class _ClientFactory(Factory):
    def __init__(self, store: SharedLocationStore) -> None:
        self.store = store

    def buildProtocol(self, addr: Any) -> _StoreClientProtocol:
        return self.store.buildProtocol()


def adoptStore(reactor: Any, fd: int) -> SharedLocationStore:
    """
    A L{SharedLocationStore} talking to the store process over the connected
    socket C{fd} (the worker's end of its socket pair; closed here, the
    reactor keeps its own copy).
    """
    store = SharedLocationStore(reactor)
    reactor.adoptStreamConnection(fd, socket.AF_UNIX, _ClientFactory(store))
    socket.close(fd)
    return store
