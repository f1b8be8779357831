# -*- test-case-name: tests.test_lag -*-
"""
Process tuning for a running server (not for tests or libraries).

The cyclic garbage collector's default thresholds (700 allocations for a
young collection) make CPython scan the young generation every few SIP
messages and, as the heap grows with bindings, transactions and
connections, run full collections that stop the reactor for tens of
milliseconds.  sipcore's hot path creates few reference cycles, so it
collects less often: measured on the REGISTER path, this is about a
quarter of the CPU time per message.  Objects created before the server
starts serving (modules, configuration) are frozen out of collections.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLD", "tuneGarbageCollector"]

#: Young-generation allocations between collections, and how many young
#: (middle) collections before a middle (full) one.
GC_THRESHOLD = (50000, 50, 100)


def tuneGarbageCollector(threshold: tuple[int, int, int] = GC_THRESHOLD) -> None:
    """
    Set the collector's thresholds and freeze the objects alive now.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)
