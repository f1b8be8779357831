# -*- test-case-name: tests.test_cluster_nodes -*-
"""
The cluster's members, kept in the database (C{--db}): this node joins the
C{sipcore_node} table, keeps its heartbeat fresh, knows the other live
members, and declares dead the members whose heartbeat is older than the
deadline, removing their connection-bound bindings.

  - L{DatabaseNodeDirectory}: the L{INodeDirectory} the proxy reads, as of
    the last heartbeat.
  - L{ClusterService}: the Twisted service that joins, beats, takes over
    and leaves.

The statements are in L{sipcore.db.node}; docs/cluster.rst describes the
design and its failure modes.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any, TypedDict

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sipcore.cluster import INodeDirectory, Node
from sipcore.db import node as statements
from sipcore.interfaces import IDatabasePool

__all__ = ["ClusterService", "DatabaseNodeDirectory", "NodeIdInUse", "NodeRecord"]


class NodeIdInUse(Exception):
    """
    A live node holds the C{server_id} this node wants to join with.

    @ivar serverId: the C{server_id}.
    @ivar holder: the holder's URI.
    """

    def __init__(self, serverId: int, holder: str, age: float, deadline: float) -> None:
        self.serverId = serverId
        self.holder = holder
        super().__init__(
            "server_id {} is held by a live node at {} (its last heartbeat {:.1f} s ago): "
            "give this node another --server-id, or, if that node has just died, start "
            "again once its heartbeat is {:g} s old".format(serverId, holder, age, deadline))


@implementer(INodeDirectory)
class DatabaseNodeDirectory:
    """
    The live members of the cluster as of this node's last heartbeat (the
    L{ClusterService} refreshes it each heartbeat).

    Until the node has joined, L{secret} is random bytes of this process
    only, so no request signed by anyone else is accepted.

    @ivar serverId: this node's C{server_id}.
    @ivar secret: the key the members share (from C{sipcore_cluster}).
    """

    def __init__(self, serverId: int) -> None:
        self.serverId = serverId
        self.secret: bytes = os.urandom(32)
        self._members: dict[int, Node] = {}

    def node(self, serverId: int) -> Node | None:
        if serverId == self.serverId:
            return None
        return self._members.get(serverId)

    def nodes(self) -> list[Node]:
        return [self._members[k] for k in sorted(self._members)]

    def update(self, members: list[Node]) -> None:
        """
        Replace the members (this node's own entry is left out).
        """
        self._members = {m.serverId: m for m in members if m.serverId != self.serverId}

    def clear(self) -> None:
        """
        Forget every member (this node is not a member now).
        """
        self._members = {}


class NodeRecord(TypedDict):
    """
    One row of C{sipcore_node} as the admin API lists it: C{startedAt} and
    C{heartbeat} are POSIX seconds, C{heartbeatAge} the seconds since the
    heartbeat by the database's clock.
    """

    serverId: int
    uri: str
    incarnation: int
    startedAt: float
    heartbeat: float
    alive: bool
    heartbeatAge: float


class ClusterService(Service):
    """
    This node's membership of the cluster while the server runs.

    Start: create the cluster tables when asked (C{--db-init}), then join:
    write this node's row unless a live node holds its C{server_id}, which
    stops the start (L{NodeIdInUse}).  A database that is away does not
    stop the start: the join is retried each heartbeat.

    Every C{heartbeat} seconds: update this node's heartbeat (matched on
    its C{server_id} and incarnation), then read the live members into the
    L{directory}.  When the heartbeat finds no row, the others declared
    this node dead: it rejoins with a new incarnation and runs the start
    purge again (C{purgeAgain}).  Once its own heartbeats have succeeded
    for a full C{deadline}, each heartbeat also declares dead the other
    nodes whose heartbeat is older than C{deadline} and removes their
    connection-bound bindings (L{sipcore.db.node.TAKEOVER}); while the
    database is away nothing is declared.

    Stop: mark this node's row not alive.

    @ivar directory: the L{DatabaseNodeDirectory}.
    @ivar nodeURI: returns this node's URI.
    @ivar uri: this node's URI as last written (read from L{nodeURI} at
        each heartbeat: a listener on port 0 that was not bound yet at the
        join is in the URI from the next heartbeat on).
    @ivar incarnation: the incarnation this node joined with, or C{None}
        while it is not joined.
    """

    name = "cluster"
    incarnation: int | None = None

    _log = Logger()

    def __init__(
        self,
        pool: IDatabasePool,
        reactor: IReactorTime,
        directory: DatabaseNodeDirectory,
        nodeURI: Callable[[], str],
        heartbeat: float = 5.0,
        deadline: float = 15.0,
        createTables: bool = False,
        purgeAgain: Callable[[], defer.Deferred[None]] | None = None,
    ) -> None:
        """
        @param pool: the database pool.
        @param reactor: the clock of the heartbeat; a refused rejoin stops
            it (when it provides L{IReactorCore} and runs).
        @param directory: the directory to keep up to date.
        @param nodeURI: returns this node's URI (called when it joins, once
            the listeners are bound).
        @param heartbeat: seconds between heartbeats.
        @param deadline: seconds after which a node whose heartbeat was not
            updated is dead.
        @param createTables: create the cluster tables when missing
            (C{--db-init}).
        @param purgeAgain: runs the start purge again (the
            L{sipcore.service.StoreService}'s), when this node rejoins after
            being declared dead.
        """
        if not heartbeat > 0:
            raise ValueError("heartbeat must be positive")
        if not deadline > heartbeat:
            raise ValueError("deadline must be longer than the heartbeat")
        self._pool = pool
        self._reactor = reactor
        self.directory = directory
        self.serverId = directory.serverId
        self.nodeURI = nodeURI
        self.uri = ""
        self.heartbeat = heartbeat
        self.deadline = deadline
        self._createTables = createTables
        self._purgeAgain = purgeAgain
        self._healthySince: float | None = None
        self._failing = False
        self._takeoverFailing = False
        self._loop: task.LoopingCall | None = None
        self._beating: defer.Deferred[None] | None = None

    # -- starting and stopping ---------------------------------------------

    def startService(self) -> defer.Deferred[None]:  # type: ignore[override]
        """
        @return: a L{Deferred} firing once the first join was tried (joined,
            or retrying while the database is away), failing with
            L{NodeIdInUse} when a live node holds this C{server_id}.
        """
        Service.startService(self)
        return defer.Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        await self._beatOnce()
        if not self.running:
            return
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self._reactor
        self._loop.start(self.heartbeat, now=False).addErrback(
            lambda f: self._log.failure("cluster heartbeat timer stopped", f))

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        """
        @return: a L{Deferred} firing once this node's row is marked not
            alive (or that failed, which is logged); it never fails.
        """
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return defer.Deferred.fromCoroutine(self._leave())

    async def _leave(self) -> None:
        await self.idle()
        incarnation, self.incarnation = self.incarnation, None
        self.directory.clear()
        if incarnation is None:
            return
        try:
            await self._pool.runQuery(statements.LEAVE, (self.serverId, incarnation))
        except Exception as e:
            self._log.warn("could not mark server_id {serverId} as left ({error}); the others "
                           "will declare it dead after {deadline} s", serverId=self.serverId,
                           error=str(e) or type(e).__name__, deadline=self.deadline)
            return
        self._log.info("left the cluster: server_id {serverId} incarnation {incarnation}",
                       serverId=self.serverId, incarnation=incarnation)

    # -- the heartbeat -----------------------------------------------------

    def _tick(self) -> defer.Deferred[None]:
        d = self._beatOnce()
        d.addErrback(self._beatRefused)
        return d

    def _beatOnce(self) -> defer.Deferred[None]:
        d = defer.Deferred.fromCoroutine(self._beat())
        self._beating = d

        def done(result: object) -> object:
            self._beating = None
            return result

        return d.addBoth(done)

    def idle(self) -> defer.Deferred[None]:
        """
        @return: a L{Deferred} firing with C{None} once the heartbeat in
            progress, if any, is done; it never fails.
        """
        beating = self._beating
        if beating is None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()

        def done(result: object) -> object:
            d.callback(None)
            return result

        beating.addBoth(done)
        return d

    def _beatRefused(self, failure: Failure) -> None:
        """
        A rejoin was refused (another live node took this C{server_id}):
        this node cannot stay a member, so the server stops.
        """
        failure.trap(NodeIdInUse)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._log.error("cannot rejoin the cluster: {reason}", reason=str(failure.value))
        reactor = self._reactor
        if IReactorCore.providedBy(reactor) and reactor.running:
            reactor.stop()

    def beat(self) -> defer.Deferred[None]:
        """
        One heartbeat now (what the timer runs every C{heartbeat} seconds).

        @return: a L{Deferred} firing when done; it fails only with
            L{NodeIdInUse}.
        """
        return self._beatOnce()

    async def _beat(self) -> None:
        started = self._reactor.seconds()
        uri = self.nodeURI()
        if uri != self.uri:
            if self.uri:
                self._log.info("node URI of server_id {serverId} is now {uri}",
                               serverId=self.serverId, uri=uri)
            self.uri = uri
        try:
            if self.incarnation is None:
                await self._join()
            elif not await self._pool.runQuery(
                    statements.HEARTBEAT, (self.uri, self.serverId, self.incarnation)):
                await self._rejoin()
            rows = await self._pool.runQuery(statements.MEMBERS, (float(self.deadline),))
        except NodeIdInUse:
            raise
        except Exception as e:
            self._healthySince = None
            if not self._failing:
                self._failing = True
                self._log.warn("cluster heartbeat failed ({error}); no node is declared dead "
                               "while it fails; retrying every {interval} s",
                               error=str(e) or type(e).__name__, interval=self.heartbeat)
            return
        self.directory.update([Node(int(s), str(u), int(i)) for s, u, i in rows])
        if self._failing:
            self._failing = False
            self._log.info("cluster heartbeat works again ({count} other live nodes)",
                           count=len(self.directory.nodes()))
        if self._healthySince is None:
            self._healthySince = started
        if started - self._healthySince >= self.deadline:
            await self._takeOver()

    async def _join(self) -> None:
        if self._createTables:
            created = await statements.initNodeSchema(self._pool)
            self._createTables = False
            self._log.info("cluster tables {what}",
                           what="created" if created else "already present")
        incarnation, secret = await self._pool.runInteraction(self._joinInteraction)
        self.incarnation = incarnation
        self.directory.secret = secret
        self._log.info("joined the cluster as server_id {serverId} at {uri} "
                       "(incarnation {incarnation})", serverId=self.serverId,
                       uri=self.uri, incarnation=incarnation)

    def _joinInteraction(self, cursor: Any) -> defer.Deferred[tuple[int, bytes]]:
        async def join() -> tuple[int, bytes]:
            await cursor.execute(statements.JOIN,
                                 (self.serverId, self.uri, float(self.deadline)))
            row = cursor.fetchone()
            if row is None:
                await cursor.execute(statements.HOLDER, (self.serverId,))
                uri, age = cursor.fetchone()
                raise NodeIdInUse(self.serverId, uri, float(age), self.deadline)
            await cursor.execute(statements.SECRET_CREATE, (secrets.token_hex(32),))
            await cursor.execute(statements.SECRET_READ)
            (secret,) = cursor.fetchone()
            return int(row[0]), bytes.fromhex(secret)

        return defer.Deferred.fromCoroutine(join())

    async def _rejoin(self) -> None:
        self._log.warn("server_id {serverId} incarnation {incarnation} was declared dead by "
                       "another node; rejoining with a new incarnation",
                       serverId=self.serverId, incarnation=self.incarnation)
        self.incarnation = None
        self.directory.clear()
        self._healthySince = None
        await self._join()
        if self._purgeAgain is not None:
            await self._purgeAgain()

    async def _takeOver(self) -> None:
        try:
            rows = await self._pool.runQuery(statements.TAKEOVER,
                                             (self.serverId, float(self.deadline)))
        except Exception as e:
            if not self._takeoverFailing:
                self._takeoverFailing = True
                self._log.warn("dead-node takeover failed ({error}); will retry",
                               error=str(e) or type(e).__name__)
            return
        if self._takeoverFailing:
            self._takeoverFailing = False
            self._log.info("dead-node takeover works again")
        for serverId, uri, incarnation, removed in rows:
            self._log.warn(
                "declared node server_id {dead} at {uri} (incarnation {incarnation}) dead: "
                "no heartbeat for {deadline} s; removed {count} of its connection-bound "
                "bindings", dead=serverId, uri=uri, incarnation=incarnation,
                deadline=self.deadline, count=removed)

    # -- listing -------------------------------------------------------------

    def listNodes(self) -> defer.Deferred[list[NodeRecord]]:
        """
        Every row of C{sipcore_node}, alive or not.

        @return: a L{Deferred} firing with the L{NodeRecord}s by
            C{server_id}, or failing with L{sipcore.db.DatabaseUnavailable}
            (or the C{psycopg2} error).
        """
        def records(rows: list[tuple[Any, ...]]) -> list[NodeRecord]:
            return [
                NodeRecord(serverId=int(s), uri=u, incarnation=int(i), startedAt=float(st),
                           heartbeat=float(hb), alive=bool(a), heartbeatAge=float(age))
                for s, u, i, st, hb, a, age in rows
            ]

        return self._pool.runQuery(statements.LIST).addCallback(records)
