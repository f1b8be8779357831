# -*- test-case-name: tests.test_tap,tests.test_cleanup_integration -*-
"""
The C{location-cleanup} handler: when a stream connection closes, remove the
bindings registered over it.

Each close event puts the connection id into a job queue.  The queue's
runner takes a batch of connection ids, waits for any registration still in
flight on those connections (so a binding written just after its connection
died is removed too), then removes the batch's bindings with one statement
(C{DELETE FROM location WHERE server_id = %s AND connection_id = ANY(%s)}
with the PostgreSQL store).  A failed batch stays queued and is retried with
backoff until the database answers again.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from sipcore.events import TCP_CLOSED, TCP_RESET, TCP_TIMEOUT, ConnectionEvent
from sipcore.interfaces import IHandlerContext
from sipcore.plugin import Handler, handles, integer, number


class LocationCleanup(Handler):
    """
    Removes the bindings of closed connections through a job queue.

    @ivar queue: the L{sipcore.jobs.JobQueue} of connection ids.
    @ivar removed: bindings removed so far.
    """

    _log = Logger()

    class Options(usage.Options):
        optParameters = [
            ["batch-size", None, 1000, "connection ids per DELETE", integer(1)],
            ["batch-delay", None, 0.005,
             "seconds the queue waits after the first id before a batch starts", number(0)],
            ["max-queue", None, 1000000,
             "connection ids that may wait; more are refused and counted", integer(1)],
        ]

    def __init__(self, context: IHandlerContext) -> None:
        super().__init__(context)
        self.store = context.store
        self.serverId = context.serverId
        self.writes = context.writes
        self.removed = 0
        self.queue = context.makeJobQueue(
            "location-cleanup",
            self._removeBatch,
            batchSize=self.options["batch-size"],
            batchDelay=self.options["batch-delay"],
            maxSize=self.options["max-queue"],
        )

    @handles(TCP_CLOSED, TCP_RESET, TCP_TIMEOUT)
    def connectionClosed(self, event: ConnectionEvent) -> None:
        """
        Queue the closed connection's id.  Returns at once.
        """
        self.queue.put(event.conid)

    def _removeBatch(self, conids: Sequence[int]) -> defer.Deferred[int]:
        return defer.Deferred.fromCoroutine(self._remove(list(conids)))

    async def _remove(self, conids: list[int]) -> int:
        await self.writes.settled(conids)
        count: int = await self.store.removeConnections(self.serverId, conids)
        self.removed += count
        return count
