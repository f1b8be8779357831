# -*- test-case-name: tests.test_audit -*-
"""
The C{connection-audit} handler: every stream connection's open and close,
one row each, in the C{connection_events} PostgreSQL table.

Each event becomes a row put into a job queue under a key of its own (a
sequence number), so no event replaces another.  The queue's runner writes
a batch with one parameterized multi-row C{INSERT ... ON CONFLICT DO
NOTHING} (L{sipcore.db.audit}) through the database pool
(L{sipcore.interfaces.IHandlerContext.dbPool}).  A failed batch stays queued
and is retried with backoff until the database answers again; a batch
retried after its answer was lost inserts nothing twice, because
C{(run_id, seq)} is the primary key.

At start the handler creates its table when it is missing (the DDL in
C{sipcore/db/audit.sql}), unless C{create-table=no}.  When the database is
away at start the handler starts anyway and creates the table before its
first batch; an SQL error (no privilege, a clashing table) stops sipcore's start.
Without a database the handler refuses to start.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg2
from twisted.internet import defer
from twisted.python import usage
from twisted.python.failure import Failure

from sipcore.db.audit import insertStatement, tableDDL
from sipcore.events import CONNECTION_EVENTS, ConnectionEvent
from sipcore.interfaces import IHandlerContext
from sipcore.plugin import Handler, HandlerError, boolean, handles, integer, number

__all__ = ["ConnectionAudit"]

#: psycopg2 errors that are a fault in the SQL or the schema rather than an
#: unreachable database: retrying will not help.
_SQL_ERRORS = (psycopg2.ProgrammingError, psycopg2.DataError, psycopg2.NotSupportedError)


def _row(runId: str, seq: int, event: ConnectionEvent) -> tuple[Any, ...]:
    """
    The parameters of one event's row, in L{sipcore.db.audit.COLUMNS} order.
    """
    return (
        runId,
        seq,
        event.time,
        event.serverId,
        event.name,
        event.conid,
        event.transport,
        event.local[0],
        event.local[1],
        event.remote[0],
        event.remote[1],
        event.reason,
        event.duration,
        event.wsCode,
        event.wsReason,
    )


def _reason(failure: Failure) -> str:
    """
    One line saying why a statement failed (never its parameters).
    """
    lines = str(failure.value).strip().splitlines()
    if lines:
        return lines[0]
    return failure.type.__name__ if failure.type is not None else "unknown error"


class ConnectionAudit(Handler):
    """
    Records every connection event in C{connection_events}.

    @ivar runId: this process's C{run_id} (a random UUID, as text).
    @ivar queue: the L{sipcore.jobs.JobQueue} of rows.
    @ivar written: rows written so far.
    @ivar tableReady: whether the table is known to exist.
    """

    class Options(usage.Options):
        optParameters = [
            ["batch-size", None, 500, "rows written by one INSERT", integer(minimum=1)],
            ["batch-delay", None, 0.05,
             "seconds to wait so that a burst shares one INSERT", number(minimum=0)],
            ["max-queue", None, 100000,
             "rows held while the database is away; beyond it new events are dropped",
             integer(minimum=1)],
            ["create-table", None, True,
             "create the connection_events table at start when it is missing", boolean],
        ]

    def __init__(self, context: IHandlerContext) -> None:
        """
        @raise HandlerError: when sipcore runs without a database.
        """
        super().__init__(context)
        self.pool = self.requireDatabase()
        self.runId = str(uuid.uuid4())
        self._seq = itertools.count(1)
        self.written = 0
        self.tableReady = not self.options["create-table"]
        self.queue = context.makeJobQueue(
            self.name,
            self._writeBatch,
            batchSize=self.options["batch-size"],
            batchDelay=self.options["batch-delay"],
            maxSize=self.options["max-queue"],
        )

    def start(self) -> defer.Deferred[None] | None:
        """
        Create the table when missing (unless C{create-table=no}).

        @return: a L{Deferred} that fires when done, or when the database
            is away (the table is then created before the first batch).
            It fails with L{HandlerError} on an SQL error.
        """
        if self.tableReady:
            return None
        return defer.Deferred.fromCoroutine(self._createAtStart())

    async def _createAtStart(self) -> None:
        try:
            await self._createTable()
        except _SQL_ERRORS as e:
            raise HandlerError(
                "handler {!r}: cannot create the connection_events table: {}".format(
                    self.name, _reason(Failure(e))
                )
            ) from e
        except Exception as e:
            self._log.warn(
                "{handler}: database unavailable at start ({error}); the "
                "connection_events table will be created before the first write",
                handler=self.name,
                error=_reason(Failure(e)),
            )

    async def _createTable(self) -> None:
        await self.pool.runOperation(tableDDL())
        self.tableReady = True
        self._log.info("{handler}: table connection_events ready", handler=self.name)

    @handles(*CONNECTION_EVENTS)
    def record(self, event: ConnectionEvent) -> None:
        """
        Queue the event's row.  Returns at once.
        """
        seq = next(self._seq)
        self.queue.put(seq, _row(self.runId, seq, event))

    def _writeBatch(self, rows: Sequence[tuple[Any, ...]]) -> defer.Deferred[int]:
        return defer.Deferred.fromCoroutine(self._write(list(rows)))

    async def _write(self, rows: list[tuple[Any, ...]]) -> int:
        if not self.tableReady:
            await self._createTable()
        params: list[Any] = []
        for row in rows:
            params.extend(row)
        await self.pool.runOperation(insertStatement(len(rows)), params)
        self.written += len(rows)
        return len(rows)

    def stop(self) -> None:
        """
        Log what was written.  sipcore drains the queue before this.
        """
        self._log.info(
            "{handler}: {written} connection events written, {left} not written",
            handler=self.name,
            written=self.written,
            left=self.queue.depth,
        )
