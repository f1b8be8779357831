# -*- test-case-name: tests.test_core -*-
"""
In-process REGISTER micro-benchmark: feeds REGISTER datagrams (the sipp
scenario of C{bench/register.xml}, a new user each) straight into
L{SIPCore.messageReceived} with the L{Registrar} on a L{MemoryLocationStore}
and a L{FakeFlow}, on a clock that never moves: no sockets, no reactor.

It prints REGISTERs per second of the process's CPU time for new requests, and for retransmissions
(each REGISTER received again while its transaction is in Completed, as
when sipp retransmits to a server that fell behind).

    python bench/register_inprocess.py [--count N] [--profile] [--default-gc]
    python bench/register_inprocess.py --instructions

The collector is tuned as the server tunes it (L{sipcore.tuning}) unless
C{--default-gc} is given.  C{--instructions} counts the CPU instructions of
one new REGISTER with valgrind (C{apt-get install valgrind}): the
difference between feeding 3,000 and 1,000 REGISTERs, divided by 2,000, a
figure that does not depend on how fast or busy the host is; and of one
refresh (the same Call-ID and Contact, the next CSeq): the difference
between feeding 3,000 REGISTERs followed by 2,000 of their refreshes and
feeding the 3,000 alone, divided by 2,000.  It runs
the sipcore this Python imports, compiled or not (C{pip install .} in a
venv gives the compiled wheel where it can, an editable install the
Python source: see docs/compiled.rst), or this checkout's source when it
has none; it prints which.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import shutil
import subprocess
import sys
import time
from typing import Any

try:
    import sipcore  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.base import DelayedCall  # noqa: E402

from sipcore.location import MemoryLocationStore  # noqa: E402
from sipcore.sip.core import SIPCore  # noqa: E402
from sipcore.sip.registrar import Registrar  # noqa: E402
from sipcore.testing import FakeFlow  # noqa: E402
from sipcore.tuning import tuneGarbageCollector  # noqa: E402

_TEMPLATE = (
    "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{n}-{cseq}-0;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:u1x{n}@127.0.0.1:5060>;tag=4242SIPpTag{n}\r\n"
    "To: <sip:u1x{n}@127.0.0.1:5060>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: {cseq} REGISTER\r\n"
    "Contact: <sip:u1x{n}@127.0.0.1:5070;transport=UDP>\r\n"
    "Expires: 3600\r\n"
    "User-Agent: sipp-bench\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def datagram(n: int, cseq: int = 1) -> bytes:
    """
    The C{n}th REGISTER of the benchmark (user C{u1x<n>}); with C{cseq}
    above 1, its refresh: the same Call-ID and Contact, the next CSeq, a
    new branch.
    """
    return _TEMPLATE.format(n=n, cseq=cseq).encode("ascii")


class FrozenClock:
    """
    An L{IReactorTime} whose time never moves: timers are scheduled and
    cancelled but never fire.  (L{twisted.internet.task.Clock} sorts its
    calls on every C{callLater}, which is quadratic with thousands of
    transactions.)
    """

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.pending = 0

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> DelayedCall:
        self.pending += 1
        return DelayedCall(self.now + delay, f, args, kw, self._cancel, self._reset,
                           seconds=self.seconds)

    def _cancel(self, call: DelayedCall) -> None:
        self.pending -= 1

    def _reset(self, call: DelayedCall) -> None:
        pass

    def getDelayedCalls(self) -> list[DelayedCall]:
        return []


def build() -> tuple[SIPCore, FakeFlow, FrozenClock]:
    """
    A core routing REGISTER to a registrar on an in-memory store.
    """
    clock = FrozenClock()
    core = SIPCore(clock, domains=["127.0.0.1"])
    registrar = Registrar(MemoryLocationStore(clock), clock, isLocalDomain=core.isLocal)
    core.route("REGISTER", registrar)
    flow = FakeFlow("udp", remote=("127.0.0.1", 5070))
    return core, flow, clock


def run(count: int, retransmit: bool) -> float:
    """
    Feed C{count} REGISTERs (each twice when C{retransmit}: the timed part
    is then the second copies only) and return the rate per second.
    """
    core, flow, clock = build()
    data = [datagram(n) for n in range(count)]
    received = core.messageReceived
    if retransmit:
        for item in data:
            received(item, flow)
        del flow.sent[:]
    start = time.process_time()
    for i, item in enumerate(data):
        received(item, flow)
        if i % 1000 == 999:
            del flow.sent[:]
    elapsed = time.process_time() - start
    answered = len(flow.sent) + (count // 1000) * 1000
    assert answered == count, (answered, count)
    return count / elapsed


#: REGISTERs fed by the runs of L{instructionsPerRegister}.
_FEEDS = (1000, 3000)


def feed(count: int, refreshes: int = 0) -> None:
    """
    Build the core and feed it the first C{count} of L{_FEEDS}[-1] new
    REGISTERs, then the refreshes of the first C{refreshes} of them (all
    the datagrams are made, so every run makes the same ones).
    """
    core, flow, clock = build()
    total = _FEEDS[-1]
    data = [datagram(n) for n in range(total)] + [datagram(n, 2) for n in range(total)]
    for i, item in enumerate(data[:count] + data[total:total + refreshes]):
        core.messageReceived(item, flow)
        if i % 1000 == 999:
            del flow.sent[:]


def countInstructions(count: int, refreshes: int, defaultGc: bool) -> int:
    """
    The CPU instructions valgrind's callgrind counts in a process that
    runs L{feed}C{(count, refreshes)}.
    """
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    argv = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, os.path.abspath(__file__), "--feed", str(count),
            "--refreshes", str(refreshes)]
    if defaultGc:
        argv.append("--default-gc")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit("valgrind failed:\n" + result.stderr[-2000:])
    return int(found.group(1))


def instructionsPerRegister(defaultGc: bool) -> tuple[int, int]:
    """
    The CPU instructions of one new REGISTER and of one refresh, counted
    by valgrind's callgrind over three runs of L{feed}: 1,000 and 3,000
    new REGISTERs, and 3,000 new ones followed by 2,000 refreshes.
    """
    low, high = _FEEDS
    fewer = countInstructions(low, 0, defaultGc)
    more = countInstructions(high, 0, defaultGc)
    refreshed = countInstructions(high, high - low, defaultGc)
    return (more - fewer) // (high - low), (refreshed - more) // (high - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--default-gc", action="store_true",
                        help="keep CPython's collector thresholds (the server tunes them)")
    parser.add_argument("--instructions", action="store_true",
                        help="count the CPU instructions of one new REGISTER (valgrind)")
    parser.add_argument("--feed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--refreshes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from sipcore.compiled import buildName

    if args.instructions:
        new, refresh = instructionsPerRegister(args.default_gc)
        print("build: {}".format(buildName()))
        print("instructions per new REGISTER: {:,}".format(new))
        print("instructions per refresh:      {:,}".format(refresh))
        return
    if not args.default_gc:
        tuneGarbageCollector()
    if args.feed is not None:
        feed(args.feed, args.refreshes)
        return
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(args.count, False)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    print("build: {}".format(buildName()))
    for name, retransmit in (("new REGISTERs", False), ("retransmissions", True)):
        best = max(run(args.count, retransmit) for _ in range(args.rounds))
        print("{:16s} {:9.0f} /s".format(name, best))


if __name__ == "__main__":
    main()
