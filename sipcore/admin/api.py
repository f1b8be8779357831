# -*- test-case-name: tests.test_admin -*-
"""
The admin API: JSON over HTTP, routed with Klein.

Every path under C{/api/} needs C{Authorization: Bearer TOKEN} when the
server was given a token; C{/health/live} and C{/health/ready} never do.
Errors answer C{{"error": "..."}} with a 4xx or 5xx status.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from klein import Klein
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from sipcore.admin.status import RecentCloses, statusPage
from sipcore.events import REGISTRATION_REMOVED, RegistrationEvent
from sipcore.interfaces import IBindingListing, ILocationStore
from sipcore.location.binding import Binding, aorKey
from sipcore.location.query import MAX_PAGE, BindingQuery

__all__ = ["AdminAPI", "AdminParts", "ReadyCheck", "bindingJSON", "registrySamples"]


#: A readiness check: its name and a callable answering C{(ok, detail)}.
ReadyCheck = tuple[str, Callable[[], tuple[bool, str]]]


@dataclass(frozen=True)
class AdminParts:
    """
    The parts of the running server the admin API reads and acts on.

    @ivar reactor: the clock (binding expiry, connection ages).
    @ivar serverId: this node's C{server_id}.
    @ivar store: the L{ILocationStore} (lookups and removals go through it,
        so they are ordered with the registrar's writes).
    @ivar listing: the store's L{IBindingListing}, or C{None} when the
        store cannot list (registrations list answers C{501}).
    @ivar table: the L{sipcore.transport.connections.ConnectionTable}.
    @ivar bus: the L{sipcore.events.bus.EventBus}.
    @ivar handlers: the enabled handlers' names, in order.
    @ivar queues: the job queues.
    @ivar transactions: returns the transaction layer's counters.
    @ivar limits: returns the configured limits, by name.
    @ivar metrics: returns every figure, as C{(name, labels, value)}.
    @ivar reload: the server's reload (the same as on C{SIGHUP}): returns
        what each part said, by name.
    @ivar ready: the readiness checks.
    @ivar closes: the recent connection closes.
    @ivar nodes: lists the rows of the node table
        (L{sipcore.cluster.nodes.ClusterService.listNodes}), or C{None}
        without one (no C{--db}).
    """

    reactor: IReactorTime
    serverId: int
    store: ILocationStore
    listing: Any
    table: Any
    bus: Any
    handlers: Sequence[str]
    queues: Iterable[Any]
    transactions: Callable[[], dict[str, int]]
    limits: Callable[[], dict[str, Any]]
    metrics: Callable[[], Iterable[tuple[str, dict[str, str], float]]]
    reload: Callable[[], dict[str, str]]
    ready: Sequence[ReadyCheck]
    closes: RecentCloses
    nodes: Callable[[], defer.Deferred[list[Any]]] | None = None


def registrySamples(registry: Any) -> Iterable[tuple[str, dict[str, str], float]]:
    """
    Every sample of a C{prometheus_client} registry as C{(name, labels,
    value)}.
    """
    for family in registry.collect():
        for sample in family.samples:
            yield sample.name, dict(sample.labels), float(sample.value)


def bindingJSON(binding: Binding) -> dict[str, Any]:
    """
    A binding as a JSON object: its fields and its C{aor}.
    """
    value = asdict(binding)
    value["aor"] = aorKey(binding.username, binding.domain)
    return value


class _HTTPError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _send(request: IRequest, code: int, value: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(value, sort_keys=True).encode("utf-8") + b"\n"


def _argument(request: IRequest, name: str) -> str | None:
    values = request.args.get(name.encode("ascii"))  # type: ignore[attr-defined]
    if not values:
        return None
    try:
        return str(values[0].decode("utf-8"))
    except UnicodeDecodeError:
        raise _HTTPError(400, "{} is not UTF-8".format(name)) from None


def _intArgument(request: IRequest, name: str, default: int | None) -> int | None:
    text = _argument(request, name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise _HTTPError(400, "{} must be an integer".format(name)) from None


class AdminAPI:
    """
    The routes of the admin API over the server's L{AdminParts}.
    """

    app = Klein()
    _log = Logger()

    def __init__(self, parts: AdminParts, token: str | None) -> None:
        """
        @param parts: what the API reads and acts on.
        @param token: the bearer token C{/api/} requests must carry, or
            C{None}: none required.
        """
        self.parts = parts
        self._expected = ("Bearer " + token).encode("utf-8") if token else None

    def resource(self) -> Any:
        """
        @return: the L{twisted.web.resource.IResource} serving the API.
        """
        return self.app.resource()

    # -- plumbing ---------------------------------------------------------

    def _authorized(self, request: IRequest) -> bool:
        if self._expected is None:
            return True
        given = request.getHeader(b"authorization") or b""
        return hmac.compare_digest(given.encode("latin-1") if isinstance(given, str)
                                   else given, self._expected)

    async def _answer(self, request: IRequest, work: Callable[[], Any]) -> bytes:
        if not self._authorized(request):
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="sipcore"')
            return _send(request, 401, {"error": "missing or wrong bearer token"})
        try:
            result = await defer.maybeDeferred(work)
        except _HTTPError as e:
            return _send(request, e.code, {"error": e.message})
        except ValueError as e:
            return _send(request, 400, {"error": str(e)})
        except Exception as e:
            self._log.failure("admin request {path} failed", path=request.path)
            return _send(request, 500, {"error": str(e) or type(e).__name__})
        code, value = result
        return _send(request, code, value)

    # -- registrations ----------------------------------------------------

    @app.route("/api/registrations", methods=["GET"])
    def listRegistrations(self, request: IRequest) -> Any:
        """
        C{GET /api/registrations?domain=&user=&conid=&offset=&limit=}.
        """
        async def work() -> tuple[int, Any]:
            if not IBindingListing.providedBy(self.parts.listing):
                raise _HTTPError(501, "this store cannot list its bindings")
            query = BindingQuery(
                domain=_argument(request, "domain"),
                username=_argument(request, "user"),
                conid=_intArgument(request, "conid", None),
                offset=_intArgument(request, "offset", 0) or 0,
                limit=_intArgument(request, "limit", 100) or 0,
            )
            bindings = await self.parts.listing.listBindings(self.parts.reactor.seconds(), query)
            return 200, {"offset": query.offset, "limit": query.limit,
                         "registrations": [bindingJSON(b) for b in bindings]}
        return defer.Deferred.fromCoroutine(self._answer(request, work))

    async def _lookup(self, aor: str) -> list[Binding]:
        bindings: list[Binding] = await self.parts.store.lookup(aor, self.parts.reactor.seconds())
        if not bindings:
            raise _HTTPError(404, "no bindings for {}".format(aor))
        return bindings

    @app.route("/api/registrations/<string:aor>", methods=["GET"])
    def showRegistration(self, request: IRequest, aor: str) -> Any:
        """
        C{GET /api/registrations/AOR}: the unexpired bindings of one AoR.
        """
        async def work() -> tuple[int, Any]:
            bindings = await self._lookup(aor)
            return 200, {"aor": aor, "bindings": [bindingJSON(b) for b in bindings]}
        return defer.Deferred.fromCoroutine(self._answer(request, work))

    async def _remove(self, bindings: list[Binding]) -> int:
        removed: int = await self.parts.store.remove([b.ruid for b in bindings])
        now = self.parts.reactor.seconds()
        for binding in bindings:
            self.parts.bus.fire(RegistrationEvent.of(
                REGISTRATION_REMOVED, binding, now, self.parts.serverId))
        self._log.info("admin removed {count} bindings of {aor}", count=removed,
                       aor=aorKey(bindings[0].username, bindings[0].domain))
        return removed

    @app.route("/api/registrations/<string:aor>", methods=["DELETE"])
    def removeRegistration(self, request: IRequest, aor: str) -> Any:
        """
        C{DELETE /api/registrations/AOR}: remove every binding of one AoR.
        """
        async def work() -> tuple[int, Any]:
            bindings = await self._lookup(aor)
            return 200, {"aor": aor, "removed": await self._remove(bindings)}
        return defer.Deferred.fromCoroutine(self._answer(request, work))

    @app.route("/api/registrations/<string:aor>/<string:ruid>", methods=["DELETE"])
    def removeBinding(self, request: IRequest, aor: str, ruid: str) -> Any:
        """
        C{DELETE /api/registrations/AOR/RUID}: remove one binding.
        """
        async def work() -> tuple[int, Any]:
            bindings = [b for b in await self._lookup(aor) if b.ruid == ruid]
            if not bindings:
                raise _HTTPError(404, "{} has no binding {}".format(aor, ruid))
            return 200, {"aor": aor, "ruid": ruid, "removed": await self._remove(bindings)}
        return defer.Deferred.fromCoroutine(self._answer(request, work))

    # -- connections ------------------------------------------------------

    @app.route("/api/connections", methods=["GET"])
    def listConnections(self, request: IRequest) -> Any:
        """
        C{GET /api/connections?transport=&offset=&limit=}: live stream
        connections with their bound AoRs.
        """
        async def work() -> tuple[int, Any]:
            transport = _argument(request, "transport")
            offset = _intArgument(request, "offset", 0) or 0
            limit = _intArgument(request, "limit", 100) or 0
            if not 1 <= limit <= MAX_PAGE or offset < 0:
                raise _HTTPError(400, "limit must be 1 to {}, offset not negative".format(
                    MAX_PAGE))
            flows = sorted((f for f in self.parts.table
                            if transport is None or f.transport == transport),
                           key=lambda f: f.conid)[offset:offset + limit]
            listing = self.parts.listing
            canList = IBindingListing.providedBy(listing)
            now = self.parts.reactor.seconds()
            result = []
            for flow in flows:
                aors: list[str] | None = None
                if canList:
                    bound = await listing.listBindings(
                        now, BindingQuery(conid=flow.conid, limit=MAX_PAGE))
                    aors = sorted({aorKey(b.username, b.domain) for b in bound if b.serverId == self.parts.serverId})
                opened = self.parts.table.openedAt(flow.conid)
                result.append({
                    "conid": flow.conid,
                    "transport": flow.transport,
                    "local": list(flow.local),
                    "remote": list(flow.remote),
                    "age": None if opened is None else max(0.0, now - opened),
                    "aors": aors,
                })
            return 200, {"offset": offset, "limit": limit, "total": len(self.parts.table),
                         "connections": result}
        return defer.Deferred.fromCoroutine(self._answer(request, work))

    @app.route("/api/connections/<int:conid>", methods=["DELETE"])
    def closeConnection(self, request: IRequest, conid: int) -> Any:
        """
        C{DELETE /api/connections/CONID}: close one connection; its close
        event fires as for any close, so its bindings are cleaned up.
        """
        def work() -> tuple[int, Any]:
            flow = self.parts.table.get(conid)
            if flow is None:
                raise _HTTPError(404, "no live connection {}".format(conid))
            self._log.info("admin closes connection {conid}", conid=conid)
            flow.close()
            return 202, {"conid": conid, "closing": True}
        return defer.Deferred.fromCoroutine(self._answer(request, work))

    # -- handlers, queues, transactions, stats ------------------------------

    @app.route("/api/handlers", methods=["GET"])
    def handlers(self, request: IRequest) -> Any:
        """
        C{GET /api/handlers}: each handler's counters and each job queue's
        state.
        """
        def work() -> tuple[int, Any]:
            stats = self.parts.bus.metrics()
            return 200, {
                "handlers": [dict(stats.get(name, {}), name=name, subscribed=name in stats)
                             for name in self.parts.handlers],
                "queues": [queue.metrics() for queue in self.parts.queues],
            }
        return defer.Deferred.fromCoroutine(self._answer(request, work))

    @app.route("/api/transactions", methods=["GET"])
    def transactions(self, request: IRequest) -> Any:
        """
        C{GET /api/transactions}: the transaction counters and the limits.
        """
        def work() -> tuple[int, Any]:
            return 200, {"transactions": self.parts.transactions(),
                         "limits": self.parts.limits()}
        return defer.Deferred.fromCoroutine(self._answer(request, work))

    @app.route("/api/stats", methods=["GET"])
    def stats(self, request: IRequest) -> Any:
        """
        C{GET /api/stats}: every figure the metrics endpoint serves.
        """
        def work() -> tuple[int, Any]:
            return 200, {"stats": [{"name": name, "labels": labels, "value": value}
                                   for name, labels, value in self.parts.metrics()]}
        return defer.Deferred.fromCoroutine(self._answer(request, work))

    @app.route("/api/reload", methods=["POST"])
    def reload(self, request: IRequest) -> Any:
        """
        C{POST /api/reload}: the reload C{SIGHUP} does.
        """
        def work() -> tuple[int, Any]:
            return 200, {"reloaded": self.parts.reload()}
        return defer.Deferred.fromCoroutine(self._answer(request, work))

    @app.route("/api/closes", methods=["GET"])
    def closes(self, request: IRequest) -> Any:
        """
        C{GET /api/closes}: the recent connection closes, newest first.
        """
        def work() -> tuple[int, Any]:
            return 200, {"closes": self.parts.closes.recent()}
        return defer.Deferred.fromCoroutine(self._answer(request, work))

    @app.route("/api/nodes", methods=["GET"])
    def nodes(self, request: IRequest) -> Any:
        """
        C{GET /api/nodes}: every row of the node table, alive or not.
        """
        async def work() -> tuple[int, Any]:
            from sipcore.db import DatabaseUnavailable

            if self.parts.nodes is None:
                raise _HTTPError(501, "no node table: this server runs without --db")
            try:
                rows = await self.parts.nodes()
            except DatabaseUnavailable as e:
                raise _HTTPError(503, str(e)) from None
            return 200, {"serverId": self.parts.serverId, "nodes": rows}
        return defer.Deferred.fromCoroutine(self._answer(request, work))

    # -- status page ------------------------------------------------------

    @app.route("/status", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        """
        C{GET /status}: the status page (no data in it: its script asks the
        API, with the token the reader types in when there is one).
        """
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Security-Policy",
                          b"default-src 'self'; script-src 'unsafe-inline'; "
                          b"style-src 'unsafe-inline'")
        return statusPage()

    # -- health -----------------------------------------------------------

    @app.route("/health/live", methods=["GET"])
    def live(self, request: IRequest) -> bytes:
        """
        C{GET /health/live}: C{200} while the reactor answers.
        """
        return _send(request, 200, {"status": "live"})

    @app.route("/health/ready", methods=["GET"])
    def ready(self, request: IRequest) -> bytes:
        """
        C{GET /health/ready}: C{200} when every readiness check passes,
        else C{503}; the body names each check's result.
        """
        checks = {}
        for name, check in self.parts.ready:
            ok, detail = check()
            checks[name] = {"ok": ok, "detail": detail}
        ok = all(c["ok"] for c in checks.values())
        return _send(request, 200 if ok else 503,
                     {"status": "ready" if ok else "not ready", "checks": checks})
