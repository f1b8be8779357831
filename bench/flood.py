# -*- test-case-name: tests.test_bench -*-
"""
UDP flood fairness: does a well-behaved source keep being answered while
other sources flood the server?

The server is started as a user starts it (C{twistd -n sipcore} of this
Python, default options except C{--limit-exempt none} and a free port on
127.0.0.1).  A flooder process sends OPTIONS from 8 source addresses
(127.0.0.2 to 127.0.0.9, which are not exempt) as fast as it can, for
C{--seconds} seconds or C{--max-packets} datagrams, whichever comes first.
While it floods, a prober process sends one OPTIONS every 100 ms from
127.0.0.20 and matches the answers.  The report: the flood's achieved
rate, the datagrams the kernel dropped at the server's socket (its receive
buffer was full), the server's CPU, the prober's answered fraction and its
largest and median answer times.

Usage::

    python bench/flood.py [--seconds 10] [--max-packets 5000000] [--out DIR]
    python bench/flood.py flooder PORT SECONDS MAX_PACKETS
    python bench/flood.py prober PORT SECONDS
    python bench/flood.py inprocess [COUNT]

The first form runs the whole benchmark and prints the result as JSON;
the next two are its client processes (each prints one JSON line).
C{inprocess} measures instead the CPU time one flooded datagram costs from
C{datagramReceived} to its drop: COUNT OPTIONS (default 300,000) from 8
sources over their rate, fed to the UDP protocol of a SIP core with the
default rate limit on a clock that does not move (no socket, no reactor).
Everything runs on 127.0.0.1-127.0.0.20; every process started is stopped
by its pid.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from procstat import CLK_TCK, cpuTicks

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SERVER_HOST = "127.0.0.1"
FLOOD_HOSTS = tuple("127.0.0.{}".format(n) for n in range(2, 10))
PROBE_HOST = "127.0.0.20"
PROBE_INTERVAL = 0.1


def options(host: str, localPort: int, serverPort: int, tag: str) -> bytes:
    """
    One OPTIONS to the server, from C{host:localPort}, identified by
    C{tag} (its branch and Call-ID).
    """
    return (
        "OPTIONS sip:{server}:{sport} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{tag};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:bench@{host}>;tag={tag}\r\n"
        "To: <sip:{server}>\r\n"
        "Call-ID: {tag}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).format(server=SERVER_HOST, sport=serverPort, host=host, port=localPort,
             tag=tag).encode()


def callIdOf(datagram: bytes) -> str | None:
    """
    The Call-ID of a response (the prober's tag), or C{None}.
    """
    for line in datagram.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"call-id", b"i"):
            return value.strip().decode("ascii", "replace")
    return None


# ---------------------------------------------------------------------------
# The client processes.


def flooder(port: int, seconds: float, maxPackets: int) -> dict[str, Any]:
    """
    Send OPTIONS from every address of L{FLOOD_HOSTS} in turn, as fast as
    possible, for C{seconds} or C{maxPackets} datagrams.  Answers are
    never read (the kernel drops them when the sockets' buffers fill).

    @return: datagrams sent, send errors, seconds taken, the rate.
    """
    sockets = []
    for host in FLOOD_HOSTS:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((host, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sockets.append(s)
    # 64 different requests per source, so those the server admits are new
    # requests, not retransmissions.
    batch = []
    for k in range(64):
        for n, s in enumerate(sockets):
            tag = "fl{}x{}p{}".format(n, k, os.getpid())
            batch.append((s.sendto, options(FLOOD_HOSTS[n], s.getsockname()[1], port, tag)))
    destination = (SERVER_HOST, port)
    sent = errors = 0
    print("FLOODING", flush=True)
    start = time.monotonic()
    deadline = start + seconds
    while sent < maxPackets and time.monotonic() < deadline:
        for send, data in batch:
            try:
                send(data, destination)
            except OSError:
                errors += 1
        sent += len(batch)
    took = time.monotonic() - start
    for s in sockets:
        s.close()
    return {"sent": sent - errors, "errors": errors, "seconds": round(took, 3),
            "rate": round((sent - errors) / took) if took > 0 else 0}


def prober(port: int, seconds: float) -> dict[str, Any]:
    """
    Send one OPTIONS every L{PROBE_INTERVAL} seconds for C{seconds}, from
    L{PROBE_HOST}; wait one more second for late answers.

    @return: probes sent, answered, and the answer times.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((PROBE_HOST, 0))
    localPort = s.getsockname()[1]
    sentAt: dict[str, float] = {}
    answered: set[str] = set()
    times: list[float] = []
    start = time.monotonic()
    stopSending = start + seconds
    end = stopSending + 1.0
    nextProbe = start
    number = 0
    while True:
        now = time.monotonic()
        if now >= end or (now >= stopSending and len(times) == len(sentAt)):
            break
        if now >= nextProbe and now < stopSending:
            tag = "probe{}p{}".format(number, os.getpid())
            number += 1
            sentAt[tag] = now
            s.sendto(options(PROBE_HOST, localPort, port, tag), (SERVER_HOST, port))
            nextProbe += PROBE_INTERVAL
        wait = max(0.0, min(nextProbe if now < stopSending else end, end) - time.monotonic())
        ready, _, _ = select.select([s], [], [], wait)
        if not ready:
            continue
        data = s.recv(65536)
        callId = callIdOf(data)
        if callId in sentAt and callId not in answered and data.startswith(b"SIP/2.0 "):
            answered.add(callId)
            times.append(time.monotonic() - sentAt[callId])
    s.close()
    return {
        "probes": len(sentAt),
        "answered": len(times),
        "maxAnswerSeconds": round(max(times), 4) if times else None,
        "medianAnswerSeconds": round(statistics.median(times), 4) if times else None,
    }


def inprocess(count: int) -> dict[str, Any]:
    """
    Feed C{count} OPTIONS from the 8 flood sources, after enough to empty
    their buckets, to a L{sipcore.transport.udp.SIPDatagramProtocol} in
    front of a L{sipcore.sip.core.SIPCore} with the default rate limit.

    @return: the microseconds of CPU time per datagram, and the limiter's
        counts.
    """
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock

    from sipcore.sip.core import SIPCore
    from sipcore.sip.limits import RateLimiter
    from sipcore.transport.udp import SIPDatagramProtocol

    class Transport:
        def write(self, data: bytes, address: Any) -> None:
            pass

        def getHost(self) -> IPv4Address:
            return IPv4Address("UDP", SERVER_HOST, 5060)

    clock = Clock()
    core = SIPCore(clock, domains=[SERVER_HOST])
    limiter = RateLimiter(clock)
    core.limiter = limiter
    udp = SIPDatagramProtocol(core, receiveBuffer=0, limiter=limiter)
    udp.makeConnection(Transport())  # type: ignore[arg-type]
    sources = [(host, 40000) for host in FLOOD_HOSTS]
    datagrams = [options(host, 40000, 5060, "in{}".format(k))
                 for k in range(64) for host, _ in sources]
    addresses = [sources[k % len(sources)] for k in range(len(datagrams))]
    pairs = list(zip(datagrams, addresses, strict=True))
    receive = udp.datagramReceived
    for data, address in pairs * 5:  # 320 per source: past burst and overdraft
        receive(data, address)
    rounds = max(1, count // len(pairs))
    start = time.process_time()
    for _ in range(rounds):
        for data, address in pairs:
            receive(data, address)
    took = time.process_time() - start
    counts = limiter.counts()
    return {"datagrams": rounds * len(pairs),
            "microsecondsPerDatagram": round(took / (rounds * len(pairs)) * 1e6, 3),
            "limiter": {k: counts[k] for k in ("admitted", "refused", "dropped", "droppedEarly")}}


# ---------------------------------------------------------------------------
# The harness.


def freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((SERVER_HOST, 0))
        return int(s.getsockname()[1])


def socketDrops(port: int) -> int | None:
    """
    Datagrams the kernel dropped at the IPv4 UDP socket bound to C{port}
    (the last column of C{/proc/net/udp}), or C{None} if not found.
    """
    try:
        with open("/proc/net/udp") as f:
            lines = f.readlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 12 and fields[1].endswith(":{:04X}".format(port)):
            return int(fields[-1])
    return None


def answers(port: int) -> bool:
    """
    Whether the server answers an OPTIONS from 127.0.0.1.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.bind((SERVER_HOST, 0))
        tag = "ready{}".format(time.monotonic_ns())
        s.sendto(options(SERVER_HOST, s.getsockname()[1], port, tag), (SERVER_HOST, port))
        try:
            s.recvfrom(65536)
            return True
        except OSError:
            return False


class Processes:
    """
    The processes started, each stopped by its pid.
    """

    def __init__(self) -> None:
        self.running: dict[int, subprocess.Popen[Any]] = {}

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kwargs)
        self.running[proc.pid] = proc
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
        self.running.pop(proc.pid, None)
        if proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stopAll(self) -> None:
        for proc in list(self.running.values()):
            self.stop(proc)


def twistdCommand() -> list[str]:
    """
    C{twistd} of the Python running this (a virtualenv's own).
    """
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def readJson(proc: subprocess.Popen[Any], timeout: float) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": "did not finish in time"}
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    return {"error": "no result (exit code {})".format(proc.returncode)}


def runFlood(outDir: str, seconds: float = 10.0, maxPackets: int = 5_000_000,
             serverArgs: Sequence[str] = (), env: dict[str, str] | None = None,
             reactor: str | None = None) -> dict[str, Any]:
    """
    The whole benchmark: server, flooder, prober; see the module docstring.

    @param outDir: where the server's log goes.
    @param serverArgs: more C{sipcore} options.
    @param env: the server's environment (default: this one's).
    @param reactor: the C{twistd --reactor} name (default: twistd's).
    @return: the figures (C{error} set if the server did not start).
    """
    procs = Processes()
    port = freePort()
    logPath = os.path.join(outDir, "flood-server.log")
    argv = twistdCommand() + (["--reactor", reactor] if reactor else []) + [
        "-n", "--pidfile=", "--logfile", logPath, "sipcore",
        "--listen", "udp:{}:interface={}".format(port, SERVER_HOST),
        "--domain", SERVER_HOST, "--limit-exempt", "none", "--admin-listen", "none",
    ] + list(serverArgs)
    me = os.path.abspath(__file__)
    result: dict[str, Any] = {"seconds": seconds, "maxPackets": maxPackets,
                              "sources": len(FLOOD_HOSTS), "reactor": reactor or "default"}
    try:
        with open(os.path.join(outDir, "flood-server.out"), "ab") as out:
            server = procs.start(argv, stdout=out, stderr=out, env=env, cwd=outDir)
        deadline = time.monotonic() + 30
        while server.poll() is None and not answers(port):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if server.poll() is not None or not answers(port):
            result["error"] = "the server did not start (see {})".format(logPath)
            return result
        # Let the readiness probes' tokens come back (127.0.0.1 is not exempt).
        time.sleep(0.5)
        dropsBefore = socketDrops(port)
        ticksBefore = cpuTicks(server.pid)
        t0 = time.monotonic()
        flood = procs.start([sys.executable, me, "flooder", str(port), str(seconds),
                             str(maxPackets)], stdout=subprocess.PIPE, text=True)
        assert flood.stdout is not None
        ready, _, _ = select.select([flood.stdout], [], [], 10)
        if not ready or not flood.stdout.readline().startswith("FLOODING"):
            result["error"] = "the flooder did not start"
            return result
        probe = procs.start([sys.executable, me, "prober", str(port),
                             str(max(1.0, seconds - 1.5))],
                            stdout=subprocess.PIPE, text=True)
        probed = readJson(probe, seconds + 15)
        flooded = readJson(flood, seconds + 15)
        wall = time.monotonic() - t0
        ticks = cpuTicks(server.pid) - ticksBefore
        dropsAfter = socketDrops(port)
        result["flood"] = flooded
        result["probe"] = probed
        result["serverCpu"] = round(ticks / CLK_TCK / wall, 3) if wall > 0 else None
        if dropsBefore is not None and dropsAfter is not None:
            result["kernelDrops"] = dropsAfter - dropsBefore
        if probed.get("probes"):
            result["answeredFraction"] = round(probed["answered"] / probed["probes"], 3)
    finally:
        procs.stopAll()
    return result


def summary(result: dict[str, Any]) -> str:
    """
    One line of the figures of L{runFlood}.
    """
    if "error" in result:
        return "flood: " + result["error"]
    flood, probe = result["flood"], result["probe"]
    return ("flood {rate}/s from {sources} sources ({sent} datagrams, {drops} dropped by the "
            "kernel), server CPU {cpu}; prober answered {answered}/{probes} ({fraction}), "
            "largest answer time {largest} s, median {median} s").format(
        rate=flood.get("rate"), sources=result["sources"], sent=flood.get("sent"),
        drops=result.get("kernelDrops", "?"), cpu=result.get("serverCpu"),
        answered=probe.get("answered"), probes=probe.get("probes"),
        fraction=result.get("answeredFraction"), largest=probe.get("maxAnswerSeconds"),
        median=probe.get("medianAnswerSeconds"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "flooder":
        print(json.dumps(flooder(int(argv[1]), float(argv[2]), int(argv[3]))), flush=True)
        return 0
    if argv and argv[0] == "prober":
        print(json.dumps(prober(int(argv[1]), float(argv[2]))), flush=True)
        return 0
    if argv and argv[0] == "inprocess":
        print(json.dumps(inprocess(int(argv[1]) if len(argv) > 1 else 300_000)), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="how long the flood lasts (default 10)")
    parser.add_argument("--max-packets", type=int, default=5_000_000,
                        help="most datagrams the flooder sends (default 5,000,000)")
    parser.add_argument("--out", default=None, help="directory for the server's log")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="one more sipcore option (repeatable)")
    parser.add_argument("--reactor", default=None,
                        help="twistd's --reactor for the server, e.g. epoll (default: "
                             "twistd sipcore's, the fair reactor on Linux)")
    args = parser.parse_args(argv)
    outDir = args.out or tempfile.mkdtemp(prefix="sipcore-flood-")
    os.makedirs(outDir, exist_ok=True)
    result = runFlood(outDir, args.seconds, args.max_packets, args.server_arg,
                      reactor=args.reactor)
    print(summary(result), file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
