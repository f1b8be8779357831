# -*- test-case-name: tests.test_lag -*-
"""
Process tuning for a running server (not for tests or libraries).

L{tuneGarbageCollector} sets CPython's cyclic garbage collector to collect
the young generation often (every 1,000 net allocations), the middle one
every 20 young collections and the whole heap only every 1,000 middle
collections, so that a full collection, which walks every live
transaction and binding, runs rarely and the reactor's pauses stay short.
Garbage in reference cycles that reached the oldest generation is freed
later.  Objects alive before the server starts serving (modules,
configuration) are frozen out of collections.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLD", "tuneGarbageCollector"]

#: Young-generation allocations between collections, and how many young
#: (middle) collections before a middle (full) one.
GC_THRESHOLD = (1000, 20, 1000)


def tuneGarbageCollector(threshold: tuple[int, int, int] = GC_THRESHOLD) -> None:
    """
    Set the collector's thresholds and freeze the objects alive now.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)
