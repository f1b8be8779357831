# -*- test-case-name: tests.test_bench -*-
"""
The CPU time of a process, read from C{/proc} (Linux), for the benchmarks
(C{bench/run.py}, C{bench/flood.py}).
"""

from __future__ import annotations

import os

#: Clock ticks per second, the unit of L{cpuTicks}.
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpuTicks(pid: int) -> int:
    """
    utime + stime of C{pid} in clock ticks (0 when it is gone).
    """
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])
