# -*- test-case-name: tests.test_location_memory,tests.test_location_postgres -*-
"""
The location layer: bindings (registered contacts) and the stores that hold
them.

  - L{Binding}: one row of Kamailio's usrloc C{location} table (version 9).
  - L{MemoryLocationStore}: the default, in-process store.
  - L{PostgresLocationStore}: the shared store, in PostgreSQL through
    C{txpostgres}.  Imported on first use, so importing this package stays
    light (no C{txpostgres} or C{psycopg2} import).

Both provide L{sipcore.interfaces.ILocationStore}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sipcore.location.binding import (
    UDP_CONNECTION_ID,
    Binding,
    InvalidBinding,
    aorKey,
    splitAor,
)


class StoreUnavailable(Exception):
    """
    The store's backing database cannot answer now (down, unreachable, a
    connection lost mid-statement, no answer in time, or the store is not
    started).  The operation may be retried later; nothing is known to have
    been written (a C{save} that failed this way may or may not have
    committed).
    """


from sipcore.location.memory import MemoryLocationStore  # noqa: E402

if TYPE_CHECKING:
    from sipcore.location.postgres import PostgresLocationStore

__all__ = [
    "UDP_CONNECTION_ID",
    "Binding",
    "InvalidBinding",
    "MemoryLocationStore",
    "PostgresLocationStore",
    "StoreUnavailable",
    "aorKey",
    "splitAor",
]


def __getattr__(name: str) -> Any:
    """
    Import L{PostgresLocationStore} (and with it C{txpostgres} and
    C{psycopg2}) only when it is asked for.
    """
    if name == "PostgresLocationStore":
        from sipcore.location.postgres import PostgresLocationStore

        return PostgresLocationStore
    raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))
