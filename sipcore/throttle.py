# -*- test-case-name: tests.test_limits -*-
"""
Log throttling: one line per key (a source, a limit) per interval, so a
flood can never turn into a flood of log lines.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Hashable

from twisted.internet.interfaces import IReactorTime

#: Seconds between two log lines about the same key.
DEFAULT_LOG_INTERVAL = 60.0

#: Keys remembered at most.
DEFAULT_MAX_KEYS = 10000


class LogThrottle:
    """
    Decides whether an event about a key (a source, a limit) is logged now.

    Memory is bounded: at most C{maxKeys} keys are remembered, the least
    recently logged forgotten first.
    """

    def __init__(
        self,
        clock: IReactorTime,
        interval: float = DEFAULT_LOG_INTERVAL,
        maxKeys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        """
        @param clock: where the time comes from.
        @param interval: seconds between two log lines for one key.
        @param maxKeys: how many keys to remember.
        """
        self._clock = clock
        self.interval = interval
        self.maxKeys = maxKeys
        # key -> [time of the last line, hits suppressed since]
        self._keys: OrderedDict[Hashable, list[float]] = OrderedDict()

    def hit(self, key: Hashable) -> int | None:
        """
        Record one event about C{key}.

        @return: C{None} if it must not be logged (one was logged less than
            C{interval} ago); otherwise the number of events suppressed
            since the last line logged for C{key}.
        """
        now = self._clock.seconds()
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return None
        suppressed = int(entry[1]) if entry is not None else 0
        self._keys[key] = [now, 0]
        self._keys.move_to_end(key)
        while len(self._keys) > self.maxKeys:
            self._keys.popitem(last=False)
        return suppressed

    def addSuppressed(self, key: Hashable, count: int) -> None:
        """
        Count C{count} events about C{key} that were handled without
        L{hit} (e.g. dropped before they reached the code that logs) as
        suppressed: the next line logged for C{key} includes them.  Nothing
        is recorded for a key with no line logged yet.
        """
        entry = self._keys.get(key)
        if entry is not None:
            entry[1] += count

    def __len__(self) -> int:
        return len(self._keys)


def sourceKey(host: str) -> str:
    """
    The key per-source limits count a peer under.

    One IPv6 host owns a whole /64 and can pick a fresh address for every
    connection or request, so IPv6 sources are counted per /64; an
    IPv4-mapped IPv6 address counts as its IPv4 address.  Anything that is
    no IP address is used as it is, lower-cased.
    """
    if ":" not in host:
        return host.lower()
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host.lower()
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))
