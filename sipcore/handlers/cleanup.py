# -*- test-case-name: tests.test_cleanup -*-
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
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from sipcore.events import CLOSE_EVENTS, ConnectionEvent

#: Handler options and their defaults.
DEFAULTS = {
    "batch-size": 1000,
    "batch-delay": 0.005,
    "max-queue": 1000000,
}


def _option(options: dict[str, str], name: str, kind: type) -> Any:
    raw = options.get(name)
    if raw is None:
        return DEFAULTS[name]
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(
            "location-cleanup: option {} must be a number, not {!r}".format(name, raw)
        ) from None
    if value < 0:
        raise ValueError("location-cleanup: option {} must not be negative".format(name))
    return value


class LocationCleanup:
    """
    Removes the bindings of closed connections through a job queue.

    @ivar queue: the L{sipcore.jobs.JobQueue} of connection ids.
    @ivar removed: bindings removed so far.
    """

    _log = Logger()

    def __init__(self, context: Any) -> None:
        unknown = set(context.options) - set(DEFAULTS)
        if unknown:
            raise ValueError("location-cleanup: unknown option(s): {}; known: {}".format(
                ", ".join(sorted(unknown)), ", ".join(sorted(DEFAULTS))))
        self.store = context.store
        self.serverId = context.serverId
        self.writes = context.writes
        self.removed = 0
        self.queue = context.makeJobQueue(
            "location-cleanup",
            self._removeBatch,
            batchSize=max(1, _option(context.options, "batch-size", int)),
            batchDelay=_option(context.options, "batch-delay", float),
            maxSize=max(1, _option(context.options, "max-queue", int)),
        )

    def handle(self, event: ConnectionEvent) -> None:
        """
        Queue the closed connection's id.  Returns at once.
        """
        if event.name in CLOSE_EVENTS:
            self.queue.put(event.conid)

    def _removeBatch(self, conids: Sequence[int]) -> defer.Deferred[int]:
        return defer.Deferred.fromCoroutine(self._remove(list(conids)))

    async def _remove(self, conids: list[int]) -> int:
        await self.writes.settled(conids)
        count: int = await self.store.removeConnections(self.serverId, conids)
        self.removed += count
        return count

    def stop(self) -> None:
        """
        Nothing to release: sipcore drains the queue at shutdown.
        """
