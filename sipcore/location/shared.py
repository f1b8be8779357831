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
request is C{[id, method, arguments]}; the answer is C{[id, "ok", result]}
or C{[id, "error", kind, text]}.  The store process answers requests in the
order they came, one connection at a time, so one worker's operations take
effect in the order it called them; the worker checks each answer's id
against the call it expects.  Requests written in one reactor turn leave in
one write, and the worker's group commit (L{sipcore.location.group}) batches
REGISTERs' calls further.

Failures:
  - a binding the table could not store is never made
    (L{sipcore.location.Binding} raises L{sipcore.location.InvalidBinding}),
    in the worker or when the store process decodes one;
  - a malformed request is answered with an error (kind C{"invalid"}) and
    logged once per connection, and the connection stays up; an error
    inside the store process is logged with its traceback and answered as
    C{"unavailable"};
  - when the connection to the store process is lost (the process died, or
    an answer made no sense), every waiting and later call fails with
    L{sipcore.location.StoreUnavailable} (the registrar answers C{503}),
    and the worker is told (C{onLost}): a worker of C{sipcore.workers}
    stops, and the supervisor stops the others.
"""

from __future__ import annotations

import itertools
import json
import socket
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import fields
from operator import attrgetter
from typing import Any, NamedTuple

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from sipcore.interfaces import ILocationStore
from sipcore.location import InvalidBinding, StoreUnavailable
from sipcore.location.binding import Binding
from sipcore.location.memory import MemoryLocationStore

__all__ = ["SharedLocationStore", "StoreServerFactory", "adoptStore", "serveStore"]

#: The largest message either side accepts (a lookup of many addresses of
#: record answers with many bindings).
MAX_MESSAGE = 64 * 1024 * 1024

#: Binding fields in the order they travel.
_FIELDS = tuple(field.name for field in fields(Binding))

#: A binding's field values, in the order they travel.
_values = attrgetter(*_FIELDS)


def _encodeBinding(binding: Binding) -> list[Any]:
    return list(_values(binding))


def _decodeBinding(values: list[Any]) -> Binding:
    if not isinstance(values, list) or len(values) != len(_FIELDS):
        raise ValueError("a binding has {} fields".format(len(_FIELDS)))
    return Binding(**dict(zip(_FIELDS, values, strict=True)))


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

class _Operation(NamedTuple):
    """
    One operation the store process serves.

    @ivar run: calls the store's method: C{run(store, *arguments)}.
    @ivar checks: one function per argument that checks it and returns its
        value (raising C{ValueError} for a bad one).
    @ivar encode: turns the method's result into JSON values.
    """

    run: Callable[..., Any]
    checks: tuple[Callable[[Any], Any], ...]
    encode: Callable[[Any], Any]


def _encodeBindings(found: list[Binding]) -> list[list[Any]]:
    return [_encodeBinding(b) for b in found]


#: Each operation the store process serves, by name.
_OPERATIONS: dict[str, _Operation] = {
    "lookup": _Operation(
        lambda store, aor, now: store.lookup(aor, now), (_aor, _time), _encodeBindings),
    "lookupMany": _Operation(
        lambda store, aors, now: store.lookupMany(aors, now), (_strings, _time),
        lambda found: {aor: _encodeBindings(bs) for aor, bs in found.items()},
    ),
    "save": _Operation(
        lambda store, bindings: store.save(bindings), (_decodeBindings,), lambda result: None),
    "remove": _Operation(lambda store, ruids: store.remove(ruids), (_strings,), int),
    "removeConnections": _Operation(
        lambda store, serverId, conids: store.removeConnections(serverId, conids),
        (_int, _ints), int),
    "removeExpired": _Operation(
        lambda store, now: store.removeExpired(now), (_time,), _encodeBindings),
    "purgeServer": _Operation(
        lambda store, serverId, before: store.purgeServer(serverId, before), (_int, _time), int),
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
        self._failed = False

    def connectionMade(self) -> None:
        self.factory.connections += 1

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.factory.connectionGone()

    def stringReceived(self, data: bytes) -> None:
        ident = None
        try:
            request = json.loads(data)
            if not isinstance(request, list) or len(request) != 3:
                raise ValueError("a request is [id, method, arguments]")
            ident, method, arguments = request
            operation = _OPERATIONS[method]
            checks = operation.checks
            if not isinstance(arguments, list) or len(arguments) != len(checks):
                raise ValueError("{} takes {} arguments".format(method, len(checks)))
            args = [check(arg) for check, arg in zip(checks, arguments, strict=True)]
        except Exception as e:  # anything a peer's bytes can cause, RecursionError too
            if not self._complained:
                self._complained = True
                self._log.error("store request refused: {error}", error=e)
            self._reply([ident, "error", "invalid", str(e)])
            return
        d = defer.maybeDeferred(operation.run, self.factory.store, *args)
        d.addCallback(lambda value: [ident, "ok", operation.encode(value)])
        d.addErrback(self._storeFailed, ident, method)
        d.addCallback(self._reply)

    def _storeFailed(self, failure: Failure, ident: Any, method: str) -> list[Any]:
        if failure.check(ValueError, TypeError):
            # The store refused the values.
            return [ident, "error", "invalid", failure.getErrorMessage()]
        if not self._failed:
            self._failed = True
            self._log.failure("store operation {method} failed", failure, method=method)
        return [ident, "error", "unavailable", failure.getErrorMessage()]

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

    @ivar waiting: the calls sent and not answered yet: their id, their
        L{Deferred} and how to decode their result.
    @ivar drained: fires when no call is waiting any more (set by
        L{SharedLocationStore.close}).
    """

    MAX_LENGTH = MAX_MESSAGE
    _log = Logger()

    def __init__(self, store: SharedLocationStore) -> None:
        self.store = store
        self.waiting: deque[tuple[int, defer.Deferred[Any], Callable[[Any], Any]]] = deque()
        self.drained: defer.Deferred[None] | None = None
        self._ids = itertools.count(1)

    def connectionMade(self) -> None:
        self.store._connected(self)

    def call(self, method: str, arguments: list[Any], decode: Callable[[Any], Any]) -> defer.Deferred[Any]:
        ident = next(self._ids)
        d: defer.Deferred[Any] = defer.Deferred()
        self.waiting.append((ident, d, decode))
        self.sendString(json.dumps([ident, method, arguments], separators=(",", ":")).encode("utf-8"))
        return d

    def stringReceived(self, data: bytes) -> None:
        try:
            answer = json.loads(data)
            ident = answer[0]
        except Exception:
            ident = None
        if not self.waiting or self.waiting[0][0] != ident:
            self._log.error("an answer of the store process does not match the call "
                            "it should answer; closing the connection")
            _disconnect(self)
            return
        _, d, decode = self.waiting.popleft()
        if not self.waiting and self.drained is not None:
            self.drained.callback(None)
        if d.called:
            # Cancelled by its caller: the answer has nowhere to go.
            return
        try:
            if answer[1] == "ok":
                result = decode(answer[2])
            elif answer[2] == "invalid":
                raise InvalidBinding(answer[3])
            else:
                raise StoreUnavailable(answer[3])
        except Exception:
            d.errback(Failure())
            return
        d.callback(result)

    def lengthLimitExceeded(self, length: int) -> None:
        _disconnect(self)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        waiting, self.waiting = self.waiting, deque()
        if self.drained is not None and not self.drained.called:
            self.drained.callback(None)
        self.store._lost(reason)
        for _, d, _ in waiting:
            if not d.called:
                d.errback(StoreUnavailable("the store process is gone"))


@implementer(ILocationStore)
class SharedLocationStore:
    """
    The worker's L{ILocationStore}: every operation is carried out by the
    store process (see the module docstring).

    @ivar statementCount: a L{Counter} of the operations sent, by method
        name, counted as the other stores count their statements.
    @ivar onLost: called (with no argument) when the connection to the store
        process is lost without L{close}.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime | None = None,
                 onLost: Callable[[], None] | None = None) -> None:
        self.clock = clock
        self.onLost = onLost
        self.statementCount: Counter[str] = Counter()
        self._protocol: _StoreClientProtocol | None = None
        self._gone = False
        self._closing = False

    @property
    def available(self) -> bool:
        """
        C{True} while the store process can be reached (the
        C{sipcore_store_available} metric).
        """
        return self._protocol is not None and not self._closing

    def _connected(self, protocol: _StoreClientProtocol) -> None:
        self._protocol = protocol

    def _lost(self, reason: Failure | None) -> None:
        self._protocol = None
        self._gone = True
        if self._closing:
            return
        self._log.error("the shared location store is gone: {reason}",
                        reason=reason.getErrorMessage() if reason else "closed")
        if self.onLost is not None:
            self.onLost()

    def _call(self, method: str, arguments: list[Any],
              decode: Callable[[Any], Any] = lambda value: value) -> defer.Deferred[Any]:
        if self._protocol is None or self._closing:
            return defer.fail(StoreUnavailable(
                "the store is closed" if self._closing
                else "the store process is gone" if self._gone
                else "not connected to the store process"))
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
        See L{ILocationStore.close}: later calls fail at once; the answers
        still due arrive first, then the connection closes.  The bindings
        stay in the store process.
        """
        self._closing = True
        protocol = self._protocol
        if protocol is None:
            return defer.succeed(None)
        if protocol.waiting:
            protocol.drained = defer.Deferred()
            drained: defer.Deferred[None] = protocol.drained
        else:
            drained = defer.succeed(None)

        def disconnect(_: Any) -> None:
            _disconnect(protocol)

        return drained.addCallback(disconnect)

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
        holds every binding.
        """
        batch = list(bindings)
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

    def removeExpired(self, now: float) -> defer.Deferred[list[Binding]]:
        """
        See L{ILocationStore.removeExpired}.
        """
        return self._call("removeExpired", [now], _decodeBindings)

    def purgeServer(self, serverId: int, before: float) -> defer.Deferred[int]:
        """
        See L{ILocationStore.purgeServer}.
        """
        return self._call("purgeServer", [serverId, before])


def adoptStore(reactor: Any, fd: int, onLost: Callable[[], None] | None = None) -> SharedLocationStore:
    """
    A L{SharedLocationStore} talking to the store process over the connected
    socket C{fd} (the worker's end of its socket pair; closed here, the
    reactor keeps its own copy).

    @param onLost: see L{SharedLocationStore.onLost}.
    """
    store = SharedLocationStore(reactor, onLost)
    reactor.adoptStreamConnection(
        fd, socket.AF_UNIX, Factory.forProtocol(lambda: _StoreClientProtocol(store)))
    socket.close(fd)
    return store
