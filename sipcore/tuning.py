# -*- test-case-name: tests.test_lag -*-
"""
Process tuning for a running server (not for tests or libraries).

What CPython's cyclic garbage collector costs a server is its pauses: a
collection walks every object of the generations it collects, and a
REGISTER leaves a dozen tracked objects alive for as long as its
transaction waits out timer J (32 s over UDP), and a binding for as long
as it is registered.  With the default thresholds (700, 10, 10) a full
collection runs every few seconds under load and stops the reactor for
about a second once some 100,000 transactions and bindings are alive;
with a large young generation (50,000) the middle collections grow as
long.  sipcore collects the young generation often (every 1,000 net
allocations: recent objects, still in the CPU's caches, so this is cheap),
the middle one every 20 young collections (pauses of tens of
milliseconds) and the whole heap only every 1,000 middle collections (and,
as CPython does anyway, only once a quarter of the heap is new).  Measured
at 2,500 REGISTERs/s for 40 s in one process: the longest pause fell from
0.9 s (50,000 / 50 / 100) and 1.0 s (the defaults) to under 0.1 s, for
about the same time collected in all as the former (a third of the
defaults').  The price: garbage in reference cycles that lived long
enough to reach the oldest generation is freed later.  Objects created
before the server starts serving (modules, configuration) are frozen out
of collections.
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
