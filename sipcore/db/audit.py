# -*- test-case-name: tests.test_audit -*-
"""
The C{connection-audit} handler's table, C{connection_events}: its columns,
the C{INSERT} of a batch of events, and its DDL (C{audit.sql}: created when
missing, with its primary key C{(run_id, seq)} and two indexes).
"""

from __future__ import annotations

from importlib import resources

__all__ = ["COLUMNS", "insertStatement", "tableDDL"]

#: The columns the handler writes, in order (C{logged_at} has a default).
COLUMNS = (
    "run_id",
    "seq",
    "event_time",
    "server_id",
    "event",
    "connection_id",
    "transport",
    "local_host",
    "local_port",
    "remote_host",
    "remote_port",
    "reason",
    "duration",
    "ws_code",
    "ws_reason",
)

#: One row of values for L{_INSERT_HEAD}.
_ROW = "(CAST(%s AS uuid), %s, to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"

_INSERT_HEAD = (
    "INSERT INTO connection_events (run_id, seq, event_time, server_id, event, connection_id,"
    " transport, local_host, local_port, remote_host, remote_port, reason, duration, ws_code,"
    " ws_reason) VALUES "
)
_INSERT_TAIL = " ON CONFLICT (run_id, seq) DO NOTHING"


def insertStatement(rows: int) -> str:
    """
    The C{INSERT} of C{rows} events: built from constants only, every value
    a C{%s} parameter.

    @raise ValueError: if C{rows} is less than 1.
    """
    if rows < 1:
        raise ValueError("need at least one row")
    return _INSERT_HEAD + ", ".join([_ROW] * rows) + _INSERT_TAIL


def tableDDL() -> str:
    """
    The parameter-free DDL that creates the table and its indexes when
    missing (the text of the shipped C{audit.sql}).
    """
    return resources.files("sipcore.db").joinpath("audit.sql").read_text("utf-8")
