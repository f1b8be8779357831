# -*- test-case-name: tests.test_bench -*-
"""
sipcore benchmarks: REGISTER throughput side by side with Kamailio and
Twisted's own C{twisted.protocols.sip} registrar, the disconnect storm, the
memory of idle WebSocket connections, UDP flood fairness
(C{bench/flood.py}), and the MESSAGE rate and crossed-request latency of
workers and nodes (C{bench/cluster_client.py}).  See bench/README.md.

Usage::

    python bench/run.py [--quick] [--only NAME ...] [--storm N] [--out DIR]

C{BENCH_QUICK=1} is the same as C{--quick}: a smoke run of a couple of
minutes with short steps and a small storm, to check the benchmark works
(its figures are not the ones to quote).

Everything runs on 127.0.0.x (127.0.0.1; the second cluster node on
127.0.0.2, the flood's sources on 127.0.0.2-127.0.0.20).  Every loop is bounded in count and time;
every process started is recorded by pid and stopped by that pid (SIGTERM,
then SIGKILL after a grace period) whatever happens.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from procstat import CLK_TCK, cpuTicks

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
# The sipcore of this checkout (its version, its compiler), also when run as
# a script.
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
HOST = "127.0.0.1"
PAGE = os.sysconf("SC_PAGE_SIZE")

#: The pass criterion of a rate step: failed plus retransmitted REGISTERs
#: below this fraction of the calls, and every call completed.
MAX_BAD_FRACTION = 0.001


def log(message: str) -> None:
    print("[bench {}] {}".format(time.strftime("%H:%M:%S"), message), flush=True)


# ---------------------------------------------------------------------------
# Processes: started here, stopped by pid.


class Processes:
    """
    Every process the benchmark starts, so each is stopped by its pid.
    """

    def __init__(self) -> None:
        self.running: dict[int, tuple[str, subprocess.Popen[Any]]] = {}

    def start(self, name: str, argv: list[str], logPath: str, **kwargs: Any) -> subprocess.Popen[Any]:
        out = open(logPath, "ab")
        proc = subprocess.Popen(argv, stdout=kwargs.pop("stdout", out), stderr=out,
                                stdin=kwargs.pop("stdin", subprocess.DEVNULL), **kwargs)
        out.close()
        self.running[proc.pid] = (name, proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
        """
        SIGTERM the process by its pid, wait up to C{grace} seconds, then
        SIGKILL it.
        """
        self.running.pop(proc.pid, None)
        if proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stopAll(self) -> None:
        for _, proc in list(self.running.values()):
            self.stop(proc, grace=5.0)


PROCS = Processes()


def childPids(pid: int) -> list[int]:
    """
    C{pid} and its direct children (Kamailio's worker processes).
    """
    found = [pid]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/{}/stat".format(entry)) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def postgresPids() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/{}/comm".format(entry)) as f:
                    if f.read().strip() == "postgres":
                        found.append(int(entry))
            except OSError:
                continue
    return found


def rssBytes(pid: int) -> int:
    with open("/proc/{}/statm".format(pid)) as f:
        return int(f.read().split()[1]) * PAGE


def freePort() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def waitFor(check: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())


def udpAnswers(port: int, host: str = HOST) -> bool:
    """
    Whether something answers an OPTIONS on C{host:port} over UDP.
    """
    message = (
        "OPTIONS sip:{h}:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {h}:9;branch=z9hG4bKprobe{t}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:probe@{h}>;tag=p\r\nTo: <sip:{h}>\r\n"
        "Call-ID: probe{t}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).format(h=host, p=port, t=time.monotonic_ns())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.bind((host, 0))
        via = message.replace("{}:9".format(host), "{}:{}".format(host, s.getsockname()[1]))
        s.sendto(via.encode(), (host, port))
        try:
            s.recvfrom(65536)
            return True
        except OSError:
            return False


def tcpOpen(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.3):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# What is compared with: installed here when possible.


@dataclass
class Environment:
    skipped: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    dsn: str = ""
    dbName: str = ""
    #: Where sipcore's servers import the C{sipcore} package from: the
    #: working tree, or the directory the wheel is installed in.
    sipcoreTree: str = ROOT


def install(env: Environment) -> None:
    """
    Install sipp and Kamailio from Debian's packages when missing and
    possible (root with apt-get).
    """
    wanted = []
    if shutil.which("sipp") is None:
        wanted.append("sip-tester")
    if shutil.which("kamailio") is None:
        wanted += ["kamailio", "kamailio-postgres-modules"]
    elif not os.path.exists(kamailioModule("db_postgres.so") or "/nonexistent"):
        wanted.append("kamailio-postgres-modules")
    if not wanted:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        log("cannot install {} (not root, or no apt-get)".format(" ".join(wanted)))
        return
    log("installing {}".format(" ".join(wanted)))
    envVars = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300, env=envVars,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq"] + wanted, check=True, timeout=600,
                       env=envVars, stdout=subprocess.DEVNULL)
    except (subprocess.SubprocessError, OSError) as e:
        log("installation failed: {}".format(e))


def prepareSipcore(env: Environment, outDir: str, pure: bool) -> None:
    """
    Build the wheel that C{pip install .} builds for a user (its hot path
    compiled by mypyc where this machine can, see docs/compiled.rst) and
    install it in a directory for the servers to run, unless C{pure}, when
    they run the working tree's Python source.  The table says which build
    ran, and why it is not compiled when it is not.
    """
    if pure:
        env.versions["sipcore hot path"] = "Python source (--pure)"
        return
    wheels = os.path.join(outDir, "wheel")
    target = os.path.join(outDir, "sipcore-installed")
    log("building sipcore's wheel as pip install . does (compiled with mypyc where possible)")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    try:
        built = subprocess.run(pip + ["wheel", "-v", "--no-deps", "-w", wheels, ROOT],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=900)
        lines = re.findall(r"sipcore build: (.*)", built.stdout)
        wheel = [name for name in os.listdir(wheels) if name.endswith(".whl")] \
            if built.returncode == 0 else []
        if not wheel:
            raise OSError("pip wheel failed: " + built.stdout.strip().splitlines()[-1])
        subprocess.run(pip + ["install", "-q", "--no-deps", "--target", target,
                              os.path.join(wheels, wheel[0])], check=True, timeout=300)
    except (subprocess.SubprocessError, OSError, IndexError) as e:
        log("  no wheel: {}".format(e))
        env.versions["sipcore hot path"] = "Python source (no wheel: {})".format(e)
        return
    env.sipcoreTree = target
    compiledParser = [name for name in os.listdir(os.path.join(target, "sipcore", "message"))
                      if name.startswith("parser.") and not name.endswith(".py")]
    if compiledParser:
        env.versions["sipcore hot path"] = "compiled (mypyc), the wheel of pip install ."
    else:
        reason = lines[-1] if lines else "Python source"
        log("  " + reason)
        env.versions["sipcore hot path"] = "the wheel of pip install .: " + reason


def kamailioModule(name: str) -> str | None:
    for base in ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules",
                 "/usr/lib64/kamailio/modules"):
        path = os.path.join(base, name)
        if os.path.exists(path):
            return path
    return None


def commandVersion(argv: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "not installed"
    found = re.search(pattern, out.stdout + out.stderr)
    return found.group(1) if found else "unknown"


def prepareDatabase(env: Environment) -> bool:
    """
    Create (anew) the benchmark database with sipcore's schema, which is
    Kamailio's usrloc schema (so both use the same table).
    """
    import psycopg2
    import psycopg2.extensions

    base = os.environ.get("SIPCORE_BENCH_DSN") or os.environ.get("SIPCORE_TEST_DSN") or (
        "host=127.0.0.1 port=5432 dbname=test user=postgres")
    env.dbName = "sipcore_bench"
    try:
        admin = psycopg2.connect(base, connect_timeout=5)
    except psycopg2.Error as e:
        env.skipped["postgresql"] = "PostgreSQL not reachable ({})".format(
            str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        return False
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT version()")
        env.versions["postgresql"] = cur.fetchone()[0].split(" on ")[0]
        cur.execute("DROP DATABASE IF EXISTS sipcore_bench")
        cur.execute("CREATE DATABASE sipcore_bench")
    admin.close()
    env.dsn = psycopg2.extensions.make_dsn(base, dbname=env.dbName)
    conn = psycopg2.connect(env.dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        # The location table, and the node table of sipcore's cluster.
        for schema in ("location.sql", "node.sql"):
            with open(os.path.join(ROOT, "sipcore", "db", schema)) as f:
                cur.execute(f.read())
    conn.close()
    return True


def dbQuery(env: Environment, statement: str) -> Any:
    import psycopg2

    conn = psycopg2.connect(env.dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchone()[0] if cur.description else None
    finally:
        conn.close()


def kamailioUrl(env: Environment) -> str:
    import psycopg2.extensions

    parts = psycopg2.extensions.parse_dsn(env.dsn)
    auth = parts.get("user", "postgres")
    if parts.get("password"):
        auth += ":" + parts["password"]
    return "postgres://{}@{}:{}/{}".format(auth, parts.get("host", HOST),
                                           parts.get("port", "5432"), parts["dbname"])


# ---------------------------------------------------------------------------
# Servers.


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[Any]
    port: int
    transports: tuple[str, ...]
    includeChildren: bool = False
    usesDatabase: bool = False
    metricsPort: int | None = None
    adminPort: int | None = None
    host: str = HOST

    def pids(self) -> list[int]:
        return childPids(self.proc.pid) if self.includeChildren else [self.proc.pid]

    def cpuTicks(self) -> int:
        return sum(cpuTicks(pid) for pid in self.pids())


#: How sipcore is started: twistd, as the README runs it (on sipcore's
#: fair reactor, twistd sipcore's default on Linux); BENCH_REACTOR=NAME adds
#: twistd's --reactor NAME.
LAUNCH = "from twisted.scripts.twistd import run; run()\n"


def twistdReactorOption() -> list[str]:
    """
    twistd's C{--reactor} option of C{BENCH_REACTOR}, if it is set.
    """
    reactor = os.environ.get("BENCH_REACTOR")
    return ["--reactor", reactor] if reactor else []


def startSipcore(name: str, outDir: str, env: Environment, db: bool,
                 extra: list[str] = (), streamPorts: dict[str, int] | None = None,
                 workers: int = 0, benchOptions: bool = True,
                 adminPort: int | None = None, host: str = HOST) -> Server | None:
    """
    Start sipcore on loopback ports with C{twistd} (or C{sipcore.workers}).

    @param benchOptions: turn off the limits that would refuse benchmark
        traffic; without them the server runs on its defaults, as the
        README's command runs it, but for its ports.
    @param adminPort: where the admin API listens (default: nowhere).
    @param host: the address its SIP and metrics listeners bind to.
    """
    port = freePort()
    metricsPort = freePort()
    if workers:
        # sipcore.workers: N processes sharing the sockets (SO_REUSEPORT is
        # not needed: the supervisor binds once, the workers adopt).
        argv = [sys.executable, "-m", "sipcore.workers", "--workers", str(workers),
                "--logfile", os.path.join(outDir, name + ".log"), "--"]
    else:
        argv = [sys.executable, "-c", LAUNCH] + twistdReactorOption() + [
            "-n", "--pidfile=", "--logfile", os.path.join(outDir, name + ".log"), "sipcore"]
    argv += ["--listen", "udp:{}:interface={}".format(port, host),
             "--listen", "tcp:{}:interface={}".format(port, host),
             "--metrics-listen", "tcp:{}:interface={}".format(metricsPort, host),
             "--admin-listen", "none" if adminPort is None else
             "tcp:{}:interface={}".format(adminPort, HOST)]
    if benchOptions:
        argv += ["--domain", HOST, "--max-transactions", "0", "--rate-limit", "0",
                 "--max-connections", "0", "--max-connections-per-source", "0",
                 "--expiry-interval", "0", "--idle-timeout", "0", "--ws-ping-interval", "0"]
    for transport, streamPort in (streamPorts or {}).items():
        argv += ["--listen", "{}:{}:interface={}".format(transport, streamPort, HOST)]
    if db:
        argv += ["--db", env.dsn]
    argv += list(extra)
    # The package and its twisted/plugins from env.sipcoreTree (the
    # installed wheel, or the working tree) come first.  python -c and -m
    # put the current directory first on the path: it is the same tree.
    path = [env.sipcoreTree]
    envVars = dict(os.environ, SIPCORE_LAG_PROBE="1",
                   PYTHONPATH=os.pathsep.join(path + [os.environ.get("PYTHONPATH", "")]))
    proc = PROCS.start(name, argv, os.path.join(outDir, name + ".out"), env=envVars,
                       cwd=env.sipcoreTree)
    server = Server(name, proc, port, ("udp", "tcp"), usesDatabase=db, metricsPort=metricsPort,
                    includeChildren=bool(workers), adminPort=adminPort, host=host)
    if not waitFor(lambda: proc.poll() is not None or udpAnswers(port, host), 30):
        PROCS.stop(proc)
        return None
    if proc.poll() is not None:
        return None
    return server


def startKamailio(name: str, outDir: str, env: Environment, db: bool,
                  template: str | None = None) -> Server | None:
    port = freePort()
    template = os.path.join(BENCH, template or ("kamailio-db.cfg" if db else "kamailio-memory.cfg"))
    with open(template) as f:
        text = f.read()
    children = os.environ.get("BENCH_KAMAILIO_CHILDREN", "4")
    text = text.replace("@PORT@", str(port)).replace("@CHILDREN@", children)
    if db:
        text = text.replace("@DBURL@", kamailioUrl(env))
    cfg = os.path.join(outDir, name + ".cfg")
    with open(cfg, "w") as f:
        f.write(text)
    # 2 GiB of shared memory: usrloc keeps every binding there, and a UDP
    # ladder leaves some 500,000 (with 512 MiB the TCP ladder after it
    # found no memory for a connection).
    argv = ["kamailio", "-f", cfg, "-DD", "-E", "-m", "2048", "-M", "32", "-w", outDir,
            "-Y", outDir]
    proc = PROCS.start(name, argv, os.path.join(outDir, name + ".out"))
    server = Server(name, proc, port, ("udp", "tcp"), includeChildren=True, usesDatabase=db)
    # Kamailio answers OPTIONS to itself with 404 from this cfg: any answer
    # means it is up.
    if not waitFor(lambda: proc.poll() is not None or udpAnswers(port), 30):
        PROCS.stop(proc)
        return None
    if proc.poll() is not None:
        return None
    return server


def startTwisted(name: str, outDir: str) -> Server | None:
    port = freePort()
    argv = [sys.executable, os.path.join(BENCH, "twisted_registrar.py"), str(port)]
    proc = PROCS.start(name, argv, os.path.join(outDir, name + ".out"))
    if not waitFor(lambda: proc.poll() is not None or udpAnswers(port), 20):
        PROCS.stop(proc)
        return None
    if proc.poll() is not None:
        return None
    return Server(name, proc, port, ("udp",))


def metrics(port: int) -> dict[str, float]:
    """
    The samples of sipcore's C{/metrics}, keyed by their text (name and
    labels).
    """
    with urllib.request.urlopen("http://{}:{}/metrics".format(HOST, port), timeout=5) as r:
        text = r.read().decode()
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


# ---------------------------------------------------------------------------
# REGISTER rate steps with sipp.


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    elapsed: float
    achieved: float
    cpu: float
    dbCpu: float
    passed: bool


def sippStep(server: Server, transport: str, rate: int, seconds: float, runId: str,
             outDir: str) -> Step:
    calls = max(1, int(rate * seconds))
    stat = os.path.join(outDir, "sipp-{}-{}.csv".format(server.name, runId))
    argv = ["sipp", "-sf", os.path.join(BENCH, "register.xml"), "-key", "run", runId,
            "-i", HOST, "-p", str(freePort()), "{}:{}".format(HOST, server.port),
            "-t", "u1" if transport == "udp" else "t1", "-r", str(rate), "-m", str(calls),
            "-l", str(max(rate * 2, 100)), "-recv_timeout", "5000", "-max_reconnect", "0",
            "-buff_size", str(4 * 1024 * 1024),
            "-timeout", "{}s".format(int(seconds * 3 + 15)), "-timeout_error",
            "-trace_stat", "-stf", stat, "-fd", "1", "-nostdin", "-nd"]
    pgPids = postgresPids() if server.usesDatabase else []
    before = server.cpuTicks()
    pgBefore = sum(cpuTicks(p) for p in pgPids)
    t0 = time.monotonic()
    with open(os.path.join(outDir, "sipp.out"), "ab") as out:
        proc = PROCS.start("sipp", argv, os.path.join(outDir, "sipp.err"), stdout=out)
        try:
            proc.wait(seconds * 3 + 30)
        except subprocess.TimeoutExpired:
            pass
        PROCS.stop(proc)
    wall = max(time.monotonic() - t0, 1e-6)
    cpu = (server.cpuTicks() - before) / CLK_TCK / wall
    dbCpu = (sum(cpuTicks(p) for p in pgPids) - pgBefore) / CLK_TCK / wall
    row = readSippStats(stat)
    successful = int(row.get("SuccessfulCall(C)", 0))
    failed = int(row.get("FailedCall(C)", 0))
    retrans = int(row.get("Retransmissions(C)", 0))
    elapsed = epochOf(row.get("CurrentTime", "")) - epochOf(row.get("StartTime", ""))
    if elapsed <= 0:
        elapsed = parseElapsed(row.get("ElapsedTime(C)", "0"))
    achieved = successful / elapsed if elapsed > 0 else 0.0
    bad = failed + retrans + (calls - successful - failed)
    passed = (successful == calls and bad <= MAX_BAD_FRACTION * calls
              and achieved >= 0.9 * rate)
    return Step(rate, calls, successful, failed, retrans, elapsed, achieved, cpu, dbCpu, passed)


def readSippStats(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="latin-1") as f:
            lines = [line.rstrip("\n") for line in f if line.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    header = lines[0].split(";")
    return dict(zip(header, lines[-1].split(";"), strict=False))


def epochOf(text: str) -> float:
    """
    The POSIX time of one of sipp's time columns (C{date<TAB>time<TAB>epoch}).
    """
    try:
        return float(text.split("\t")[-1])
    except ValueError:
        return 0.0


def parseElapsed(text: str) -> float:
    """
    Seconds of an C{ElapsedTime} column: C{HH:MM:SS} or C{HH:MM:SS:micro}.
    """
    parts = text.split(":")
    try:
        if len(parts) == 4:
            h, m, s, micro = (int(p) for p in parts)
            return h * 3600 + m * 60 + s + micro / 1e6
        if len(parts) == 3:
            h, m, s = parts
            return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        pass
    return 0.0


def quiesce(server: Server, timeout: float = 15.0) -> None:
    """
    Wait (at most C{timeout} seconds) until the server is idle again: less
    than 10% of a core over half a second, e.g. after a failed step left
    it a backlog of retransmissions.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = server.cpuTicks()
        time.sleep(0.5)
        if (server.cpuTicks() - before) / CLK_TCK < 0.05:
            return


def findMaxRate(server: Server, transport: str, quick: bool, outDir: str,
                start: int = 250) -> dict[str, Any]:
    """
    Step the REGISTER rate up from C{start} until a step fails, then refine
    between the last passing and the first failing rate.  Bounded: at most
    16 steps.
    """
    seconds = 2.0 if quick else 8.0
    factor = 2.0 if quick else 1.5
    refinements = 0 if quick else 2
    rate = max(250, start)
    best: Step | None = None
    failedAt: int | None = None
    steps: list[Step] = []
    for number in range(16):
        step = sippStep(server, transport, rate, seconds,
                        "{}{}{}".format(transport[0], number, int(time.time()) % 100000), outDir)
        steps.append(step)
        log("  {} {} {}/s: {} ok, {} failed, {} retrans, {:.0f}/s, cpu {:.0%}{}".format(
            server.name, transport, rate, step.successful, step.failed, step.retransmissions,
            step.achieved, step.cpu, " db {:.0%}".format(step.dbCpu) if step.dbCpu else "")
            + ("" if step.passed else "  FAIL"))
        if step.passed:
            best = step
            if failedAt is None:
                rate = int(rate * factor)
                if rate > 60000:
                    break
                continue
        else:
            failedAt = rate if failedAt is None else min(failedAt, rate)
        if failedAt is not None:
            if refinements <= 0:
                break
            low = best.rate if best is not None else 0
            if failedAt - low < max(100, low * 0.1):
                break
            refinements -= 1
            rate = (low + failedAt) // 2
        quiesce(server)
    return {
        "server": server.name,
        "transport": transport,
        "maxRate": best.rate if best else 0,
        "achieved": round(best.achieved, 1) if best else 0,
        "cpu": round(best.cpu, 3) if best else None,
        "dbCpu": round(best.dbCpu, 3) if best and server.usesDatabase else None,
        "steps": [step.__dict__ for step in steps],
    }


# ---------------------------------------------------------------------------
# Disconnect storm and memory.


#: The storm scenarios: (name, transport, what the client does at once).
STORM_KINDS: dict[str, tuple[str, str]] = {
    "tcp-reset": ("tcp", "reset"),
    "ws-drop": ("ws", "drop"),
    "tcp-refresh": ("tcp", "refresh"),
}


def serverStartLines(logPath: str, timeout: float = 10.0) -> tuple[str, str]:
    """
    The build and the reactor a sipcore server logged at start (its
    C{build:} and C{reactor:} lines), C{"unknown"} for one not found.
    """
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(found) < 2:
        try:
            with open(logPath, errors="replace") as f:
                text = f.read()
        except OSError:
            text = ""
        for key, pattern in (("build", r"\] build: (.+)"), ("reactor", r"\] reactor: (\S+)")):
            match = re.search(pattern, text)
            if match:
                found[key] = match.group(1).strip()
        if len(found) < 2:
            time.sleep(0.1)
    return found.get("build", "unknown"), found.get("reactor", "unknown")


def registeredLeft(server: Server, env: Environment, db: bool) -> int | None:
    """
    Bindings of stream connections still stored: rows of the location table
    with a connection id (PostgreSQL), or whether the admin API still lists
    any binding (memory: 0 or 1; it sorts every binding, so it is asked
    only outside the measured window).  C{None} when it cannot be read.
    """
    if db:
        return int(dbQuery(env, "SELECT count(*) FROM location WHERE connection_id > 0"))
    url = "http://{}:{}/api/registrations?limit=1".format(HOST, server.adminPort)
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return len(json.loads(answer.read())["registrations"])
    except (OSError, ValueError, KeyError):
        return None


#: The metrics that are 0 once every closed connection's bindings are
#: removed from the in-memory store: connections open, items in the job
#: queues (location cleanup's among them) and handler calls in flight.
_PENDING_METRICS = ("sipcore_connections_open", "sipcore_jobqueue_depth",
                    "sipcore_handler_inflight")


def cleanupPending(server: Server, env: Environment, db: bool) -> bool | None:
    """
    Whether the server still has close work to do: rows left (PostgreSQL),
    or any of L{_PENDING_METRICS} above 0 (memory: one cheap scrape instead
    of a listing that sorts every binding).  C{None} when it cannot be read.
    """
    if db:
        return registeredLeft(server, env, db) != 0
    try:
        return closeWorkIn(metrics(server.metricsPort))
    except (OSError, ValueError):
        return None


def closeWorkIn(sample: dict[str, float]) -> bool:
    """
    Whether the scraped C{sample} shows close work left: one of
    L{_PENDING_METRICS} (the metric itself, not another whose name starts
    the same) above 0.
    """
    return any(value > 0 for key, value in sample.items()
               if key.split("{")[0] in _PENDING_METRICS)


def answerFigures(samples: list[list[float | None]], start: float, end: float
                  ) -> dict[str, Any]:
    """
    The pinger's answer times for the OPTIONS sent from C{start} to C{end}
    (monotonic clock): how many, how many never answered, the largest,
    the 99th percentile and the median, in milliseconds.
    """
    times = [rtt for sent, rtt in samples
             if sent is not None and start <= sent <= end and rtt is not None]
    lost = sum(1 for sent, rtt in samples
               if sent is not None and start <= sent <= end and rtt is None)
    times.sort()

    def percentile(fraction: float) -> float | None:
        if not times:
            return None
        return round(1000 * times[max(0, math.ceil(fraction * len(times)) - 1)], 1)

    return {"pings": len(times) + lost, "lost": lost,
            "maxMs": round(1000 * times[-1], 1) if times else None,
            "p99Ms": percentile(0.99), "medianMs": percentile(0.5)}


def storm(env: Environment, kind: str, count: int, outDir: str, db: bool = False
          ) -> dict[str, Any]:
    """
    The storm of C{kind} (L{STORM_KINDS}) as a user sees it: sipcore started
    as the README starts it (twistd, default options but for loopback
    ports, in memory unless C{db}), C{count} connections registered, then
    all reset, dropped or refreshed at once while C{bench/storm_pinger.py},
    in its own process, sends an OPTIONS over UDP every 10 ms.

    Measured: the pinger's answer times (largest, 99th percentile, median,
    lost) from the moment of the storm until its work is done plus 0.5 s;
    the seconds until no binding of the connections is left (reset, drop)
    or until the last refresh is answered (refresh); the resident memory per
    idle registered connection; the largest reactor lag the server's own
    probe saw (for comparison with what the client saw).
    """
    transport, action = STORM_KINDS[kind]
    name = "storm-" + kind
    streamPort = freePort()
    server = startSipcore(name, outDir, env, db=db, benchOptions=False, adminPort=freePort(),
                          streamPorts={transport: streamPort} if transport == "ws" else None)
    if server is None:
        return {"kind": kind, "error": "sipcore did not start"}
    build, reactor = serverStartLines(os.path.join(outDir, name + ".log"))
    port = streamPort if transport == "ws" else server.port
    result: dict[str, Any] = {"kind": kind, "transport": transport, "connections": count,
                              "build": build, "reactor": reactor,
                              "storage": "postgresql" if db else "memory"}
    try:
        if db:
            dbQuery(env, "TRUNCATE location")
        time.sleep(1.0)
        rssBefore = rssBytes(server.proc.pid)
        client = PROCS.start(
            name + "-client",
            [sys.executable, os.path.join(BENCH, "storm_client.py"), transport, str(port),
             str(count), "--hold", "600"] + (["--reset"] if action == "reset" else []),
            os.path.join(outDir, name + "-client.err"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = readLine(client, "READY", 300)
        if ready is None:
            result["error"] = "the client did not finish registering"
            return result
        _, registered, failed, took = ready.split()
        result.update(registered=int(registered), registerFailed=int(failed),
                      registerSeconds=float(took))
        time.sleep(2.0)
        result["rssPerConnection"] = round(
            (rssBytes(server.proc.pid) - rssBefore) / max(1, int(registered)))
        pinger = PROCS.start(
            name + "-pinger",
            [sys.executable, os.path.join(BENCH, "storm_pinger.py"), str(server.port),
             "--seconds", "180"],
            os.path.join(outDir, name + "-pinger.err"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if readLine(pinger, "READY", 15) is None:
            result["error"] = "the pinger got no answer"
            return result
        # Let the lag probe's recent window (5 s) forget the registration
        # phase, and the pinger measure a quiet server first.
        time.sleep(5.0)
        lagBefore = metrics(server.metricsPort).get(
            'sipcore_reactor_lag_seconds{stat="recent_max"}', 0.0)
        profiler = None
        pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        if os.environ.get("BENCH_PROFILE") == "1" and os.path.exists(pyspy):
            # Where the storm's time goes: a py-spy profile of the server.
            profiler = PROCS.start(name + "-py-spy", [
                pyspy, "record", "-p", str(server.proc.pid), "-d", "8", "-r", "500",
                "-f", "raw", "-o", os.path.join(outDir, name + ".py-spy.txt")],
                os.path.join(outDir, name + "-py-spy.out"))
            time.sleep(1.0)
        t0 = time.monotonic()
        client.stdin.write("REFRESH\n" if action == "refresh" else "DROP\n")
        client.stdin.flush()
        maxLag = 0.0
        done = None
        if action == "refresh":
            line = readLine(client, "REFRESHED", 120)
            done = time.monotonic() - t0 if line is not None else None
            if line is not None:
                _, answered, refreshFailed, _ = line.split()
                result.update(refreshAnswered=int(answered), refreshFailed=int(refreshFailed))
            maxLag = metrics(server.metricsPort).get(
                'sipcore_reactor_lag_seconds{stat="recent_max"}', 0.0)
        else:
            deadline = t0 + 60
            lastPoll = 0.0
            while time.monotonic() < deadline:
                if cleanupPending(server, env, db) is False:
                    done = time.monotonic() - t0
                    break
                if time.monotonic() - lastPoll > 0.25:
                    lastPoll = time.monotonic()
                    maxLag = max(maxLag, metrics(server.metricsPort).get(
                        'sipcore_reactor_lag_seconds{stat="recent_max"}', 0.0))
                time.sleep(0.05)
        end = time.monotonic() if done is None else t0 + done
        time.sleep(1.0)
        maxLag = max(maxLag, metrics(server.metricsPort).get(
            'sipcore_reactor_lag_seconds{stat="recent_max"}', 0.0))
        pinger.stdin.write("STOP\n")
        pinger.stdin.flush()
        report = readLine(pinger, "{", 30)
        samples = json.loads(report)["samples"] if report else []
        result.update(
            secondsUntilDone=round(done, 3) if done is not None else None,
            answers=answerFigures(samples, t0, end + 0.5),
            answersBefore=answerFigures(samples, t0 - 4.0, t0),
            maxLagSeconds=round(maxLag, 4), lagBeforeSeconds=round(lagBefore, 4),
        )
        if action != "refresh":
            result["bindingsLeft"] = registeredLeft(server, env, db)
        else:
            client.stdin.write("DROP\n")
            client.stdin.flush()
        readLine(client, "DROPPED", 30)
        PROCS.stop(client)
        PROCS.stop(pinger)
        if profiler is not None:
            try:
                profiler.wait(15)
            except subprocess.TimeoutExpired:
                pass
            PROCS.stop(profiler)
    finally:
        PROCS.stop(server.proc)
    return result


def readLine(proc: subprocess.Popen[Any], prefix: str, timeout: float) -> str | None:
    import selectors

    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                return None
            if line.startswith(prefix):
                return line.strip()
    return None


# ---------------------------------------------------------------------------
# UDP flood fairness (bench/flood.py).


def floodFairness(env: Environment, outDir: str, quick: bool) -> dict[str, Any]:
    """
    Run C{bench/flood.py}'s benchmark against the sipcore this run measures
    (the installed wheel unless C{--pure}): 10 s of flood (5 s quick).
    """
    import flood

    path = [env.sipcoreTree]
    envVars = dict(os.environ,
                   PYTHONPATH=os.pathsep.join(path + [os.environ.get("PYTHONPATH", "")]))
    result: dict[str, Any] = flood.runFlood(outDir, seconds=5.0 if quick else 10.0,
                                            env=envVars)
    log("  " + flood.summary(result))
    return result


# ---------------------------------------------------------------------------
# Cluster: MESSAGE rate and the latency of a request that crosses members
# (bench/cluster_client.py).


#: What the cluster part measures: (name, database, workers, nodes).  The
#: nodes of C{sipcore-postgres-2n} are two twistd processes on 127.0.0.1
#: and 127.0.0.2 on one database.
CLUSTER_SETUPS = (
    ("sipcore-memory", False, 0, 1),
    ("sipcore-memory-2w", False, 2, 1),
    ("sipcore-postgres", True, 0, 1),
    ("sipcore-postgres-2w", True, 2, 1),
    ("sipcore-postgres-2n", True, 0, 2),
    ("kamailio-memory", False, 0, 1),
)

#: Registered users of the cluster part, spread evenly over the members.
CLUSTER_USERS = 200


def clusterSend(servers: list[Server], rate: float, seconds: float, outDir: str,
                seed: int) -> dict[str, Any]:
    """
    One run of C{cluster_client.py send} at C{rate} MESSAGE/s for
    C{seconds}, one sender connection per member, with the members' CPU.
    """
    argv = [sys.executable, os.path.join(BENCH, "cluster_client.py"), "send",
            "--users", str(CLUSTER_USERS), "--rate", str(rate), "--seconds", str(seconds),
            "--timeout", "5", "--seed", str(seed),
            # Workers share one address: several sender connections land on
            # each of them, as the users' connections do.
            "--connections", "1" if len(servers) > 1 else "4"]
    for server in servers:
        argv += ["--server", "{}:{}".format(server.host, server.port)]
    before = sum(server.cpuTicks() for server in servers)
    t0 = time.monotonic()
    proc = PROCS.start("cluster-send", argv, os.path.join(outDir, "cluster-send.err"),
                       stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        out = ""
    PROCS.stop(proc)
    wall = max(time.monotonic() - t0, 1e-6)
    lines = [line for line in (out or "").splitlines() if line.startswith("{")]
    if not lines:
        return {"rate": rate, "error": "the sender printed no result (cluster-send.err)"}
    result: dict[str, Any] = json.loads(lines[-1])
    result["cpu"] = round((sum(server.cpuTicks() for server in servers) - before)
                          / CLK_TCK / wall, 3)
    result["passed"] = (result["failed"] <= MAX_BAD_FRACTION * result["sent"]
                        and result["achieved"] >= 0.9 * rate)
    return result


def startClusterSetup(name: str, db: bool, workers: int, nodes: int, outDir: str,
                      env: Environment) -> list[Server]:
    """
    The members of one setup of L{CLUSTER_SETUPS}, on an empty location
    table; an empty list if one did not start (the others are stopped).
    """
    if db:
        dbQuery(env, "TRUNCATE location")
    if name.startswith("kamailio"):
        kamailio = startKamailio(name, outDir, env, db=False, template="kamailio-message.cfg")
        return [kamailio] if kamailio is not None else []
    members: list[Server] = []
    for index in range(nodes):
        extra = ["--server-id", str(index), "--node-heartbeat", "0.5"] if nodes > 1 else []
        member = startSipcore(name if nodes == 1 else "{}-{}".format(name, index + 1), outDir,
                              env, db=db, workers=workers, extra=extra,
                              host="127.0.0.{}".format(index + 1))
        if member is None:
            for started in members:
                PROCS.stop(started.proc)
            return []
        members.append(member)
    return members


def clusterSetup(name: str, db: bool, workers: int, nodes: int, outDir: str, env: Environment,
                 quick: bool) -> dict[str, Any]:
    """
    Register L{CLUSTER_USERS} TCP users spread evenly over the members,
    then measure the answer times of MESSAGE at 50/s for 10 s (3 s quick)
    by whether it crossed members, and step the MESSAGE rate up from 250/s
    by 1.5x (2x quick) in 5 s steps (2 s quick) until a step has 0.1% or
    more failed or falls below 90% of the asked rate, then one bisection
    step (none quick).  Bounded: at most 12 rate steps.
    """
    members = startClusterSetup(name, db, workers, nodes, outDir, env)
    if not members:
        return {"server": name, "error": "the server did not start (see {}*.out)".format(name)}
    answerer = None
    try:
        argv = [sys.executable, os.path.join(BENCH, "cluster_client.py"), "answer",
                "--users", str(CLUSTER_USERS), "--hold", "900"]
        for member in members:
            argv += ["--server", "{}:{}".format(member.host, member.port)]
        answerer = PROCS.start("cluster-answer", argv,
                               os.path.join(outDir, "cluster-answer.err"),
                               stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
        ready = readLine(answerer, "READY", 60)
        if ready is None or int(ready.split()[1]) != CLUSTER_USERS:
            return {"server": name, "error": "users not registered: {}".format(ready)}
        # Nodes find each other at their heartbeats: until then a request
        # to the other node's user gets 480.
        for attempt in range(20):
            probe = clusterSend(members, 50, 1, outDir, seed=1000 + attempt)
            if probe.get("failed") == 0:
                break
        seconds = 3.0 if quick else 10.0
        latency = clusterSend(members, 50, seconds, outDir, seed=1)
        log("  {} latency at 50/s: same {} crossed {} ({} crossed)".format(
            name, latency.get("same"), latency.get("crossed"), latency.get("crossedShare")))
        step = 2.0 if quick else 5.0
        factor = 2.0 if quick else 1.5
        refinements = 0 if quick else 1
        rate, best, failedAt = 250, None, None
        steps: list[dict[str, Any]] = []
        for number in range(12):
            outcome = clusterSend(members, rate, step, outDir, seed=10 + number)
            steps.append(outcome)
            log("  {} MESSAGE {}/s: {} ok, {} failed, {}/s, {} crossed, cpu {}{}".format(
                name, rate, outcome.get("ok"), outcome.get("failed"), outcome.get("achieved"),
                outcome.get("crossedShare"), outcome.get("cpu"),
                "" if outcome.get("passed") else "  FAIL"))
            if outcome.get("passed"):
                best = outcome
                if failedAt is None:
                    rate = int(rate * factor)
                    continue
            else:
                failedAt = rate if failedAt is None else min(failedAt, rate)
            if refinements <= 0:
                break
            low = best["rate"] if best is not None else 0
            if failedAt - low < max(100, low * 0.1):
                break
            refinements -= 1
            rate = int((low + failedAt) // 2)
            for member in members:
                quiesce(member)
        return {
            "server": name,
            "members": len(members) * max(1, workers),
            "maxRate": int(best["rate"]) if best else 0,
            "crossedShare": best.get("crossedShare") if best else None,
            "cpu": best.get("cpu") if best else None,
            "latency": latency,
            "steps": steps,
        }
    finally:
        if answerer is not None:
            try:
                assert answerer.stdin is not None
                answerer.stdin.write("STOP\n")
                answerer.stdin.close()
            except OSError:
                pass
            PROCS.stop(answerer)
        for member in members:
            PROCS.stop(member.proc)


def clusterBench(env: Environment, outDir: str, quick: bool,
                 haveDb: bool) -> list[dict[str, Any]]:
    """
    Every setup of L{CLUSTER_SETUPS} that can run here, one after another.
    """
    chosen = os.environ.get("BENCH_CLUSTER_SETUPS", "").split(",")
    results = []
    for name, db, workers, nodes in CLUSTER_SETUPS:
        if chosen != [""] and name not in chosen:
            continue
        skipped = env.skipped.get(name) or (env.skipped.get("postgresql") if db else None)
        if skipped:
            results.append({"server": name, "error": "skipped: " + skipped})
            continue
        log("cluster: {}".format(name))
        results.append(clusterSetup(name, db, workers, nodes, outDir, env, quick))
    return results


# ---------------------------------------------------------------------------
# Report.


def machine(env: Environment) -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        memory = int(f.readline().split()[1]) * 1024
    import sipcore
    import twisted

    versions = dict(env.versions)
    versions.update(
        python=platform.python_version(),
        twisted=twisted.__version__,
        sipcore=sipcore.__version__,
        kamailio=commandVersion(["kamailio", "-v"], r"version: kamailio (\S+)"),
        sipp=commandVersion(["sipp", "-v"], r"SIPp (v[\w.\-]+)"),
    )
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": model,
        "cores": os.cpu_count(),
        "memoryGiB": round(memory / 2**30, 1),
        "kernel": platform.release(),
        "versions": versions,
    }


def bestOfRounds(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """
    The figure of each server and transport over several rounds: the round
    with the highest rate (each round's rates are kept in C{perRound}, in
    round order, C{None} where a round did not measure it).

    @param rounds: each round's L{findMaxRate} results.
    @return: one result per server and transport, in first-seen order.
    """
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for index, rates in enumerate(rounds):
        for r in rates:
            key = (r["server"], r["transport"])
            kept = best.get(key)
            if kept is None:
                kept = best[key] = dict(r, perRound=[None] * len(rounds))
            elif r["maxRate"] > kept["maxRate"]:
                best[key] = dict(r, perRound=kept["perRound"])
            best[key]["perRound"][index] = r["maxRate"]
    return list(best.values())


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 2)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    rates = {(r["server"], r["transport"]): r["maxRate"] for r in results["rates"]}
    ratios = {
        "sipcore-memory / kamailio-memory (udp)": (
            ratio(rates.get(("sipcore-memory", "udp")), rates.get(("kamailio-memory", "udp"))),
            0.6),
        "sipcore-memory / twisted-sip (udp)": (
            ratio(rates.get(("sipcore-memory", "udp")), rates.get(("twisted-sip", "udp"))), 1.0),
        "sipcore-postgres / kamailio-db (udp)": (
            ratio(rates.get(("sipcore-postgres", "udp")), rates.get(("kamailio-db", "udp"))),
            1.0),
        "sipcore-postgres / kamailio-db (tcp)": (
            ratio(rates.get(("sipcore-postgres", "tcp")), rates.get(("kamailio-db", "tcp"))),
            1.0),
        "sipcore-memory-2w / kamailio-memory (udp)": (
            ratio(rates.get(("sipcore-memory-2w", "udp")), rates.get(("kamailio-memory", "udp"))),
            0.6),
        "sipcore-memory-2w / twisted-sip (udp)": (
            ratio(rates.get(("sipcore-memory-2w", "udp")), rates.get(("twisted-sip", "udp"))),
            1.0),
        "sipcore-postgres-2w / kamailio-db (udp)": (
            ratio(rates.get(("sipcore-postgres-2w", "udp")), rates.get(("kamailio-db", "udp"))),
            1.0),
        "sipcore-postgres-2w / kamailio-db (tcp)": (
            ratio(rates.get(("sipcore-postgres-2w", "tcp")), rates.get(("kamailio-db", "tcp"))),
            1.0),
    }
    return {name: {"ratio": value, "target": target,
                   "met": None if value is None else value >= target}
            for name, (value, target) in ratios.items()}


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# sipcore benchmark results",
        "",
        "- date: {}{}".format(m["date"], " (quick mode: smoke run, not figures to quote)"
                              if results["quick"] else ""),
        "- machine: {} ({} cores, {} GiB), Linux {}".format(
            m["cpu"], m["cores"], m["memoryGiB"], m["kernel"]),
        "- versions: " + ", ".join("{} {}".format(k, v) for k, v in sorted(m["versions"].items())),
        "",
        "## REGISTER rate (highest with < 0.1% failed or retransmitted)",
        "",
        "{} round(s); each round after the first runs the servers in the reverse order "
        "of the one before, and a server's figure is its best round.".format(
            results.get("roundCount", 1)),
        "",
        "| server | transport | REGISTER/s | each round | server CPU | PostgreSQL CPU |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in results["rates"]:
        lines.append("| {} | {} | {} | {} | {} | {} |".format(
            r["server"], r["transport"], r["maxRate"],
            " / ".join("-" if v is None else str(v) for v in r.get("perRound", [r["maxRate"]])),
            "{:.0%}".format(r["cpu"]) if r["cpu"] is not None else "-",
            "{:.0%}".format(r["dbCpu"]) if r.get("dbCpu") is not None else "-"))
    lines += ["", "## Ratios measured in this run", "",
              "| comparison | ratio | target | met |", "|---|---:|---:|---|"]
    for name, r in results["ratios"].items():
        lines.append("| {} | {} | {} | {} |".format(
            name, "-" if r["ratio"] is None else r["ratio"], r["target"],
            "-" if r["met"] is None else ("yes" if r["met"] else "no")))
    lines += ["", "## Disconnect storm (a UDP client's answer times, from its own process)", "",
              "sipcore as the README runs it (twistd, default options but for loopback "
              "ports); a pinger sends an OPTIONS over UDP every 10 ms meanwhile. Answer times "
              "are of the OPTIONS sent from the storm until its work was done plus 0.5 s; "
              "done: no binding left (reset, drop), every refresh answered (refresh).", "",
              "| storm | build | reactor | storage | connections | largest answer (ms) "
              "| 99th percentile (ms) | median (ms) | pings (lost) | done after (s) "
              "| server's own lag probe (ms) | RSS per idle registered connection (bytes) |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in results["storm"]:
        if "error" in s:
            lines.append("| {} | {} | {} | {} | - | {} | | | | | | |".format(
                s["kind"], s.get("build", "-"), s.get("reactor", "-"), s.get("storage", "-"),
                s["error"]))
            continue
        answers = s.get("answers", {})
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {:.1f} | {} |".format(
            s["kind"], s["build"], s["reactor"], s["storage"], s.get("registered"),
            answers.get("maxMs"), answers.get("p99Ms"), answers.get("medianMs"),
            answers.get("pings"), answers.get("lost"), s.get("secondsUntilDone"),
            1000 * s.get("maxLagSeconds", 0), s.get("rssPerConnection")))
    fairness = results.get("flood")
    if fairness:
        lines += ["", "## UDP flood fairness (bench/flood.py)", ""]
        if "error" in fairness:
            lines.append("- " + fairness["error"])
        else:
            probe = fairness["probe"]
            lines += [
                "| flood datagrams/s | sources | dropped by the kernel | server CPU "
                "| prober answered | largest answer time (s) | median (s) |",
                "|---:|---:|---:|---:|---:|---:|---:|",
                "| {} | {} | {} | {:.0%} | {}/{} ({:.0%}) | {} | {} |".format(
                    fairness["flood"].get("rate"), fairness["sources"],
                    fairness.get("kernelDrops", "-"), fairness.get("serverCpu") or 0,
                    probe.get("answered"), probe.get("probes"),
                    fairness.get("answeredFraction") or 0,
                    probe.get("maxAnswerSeconds"), probe.get("medianAnswerSeconds")),
            ]
    cluster = results.get("cluster")
    if cluster:
        lines += ["", "## Cluster: MESSAGE between registered TCP users (bench/cluster_client.py)",
                  "", "| server | processes | MESSAGE/s | crossed at that rate | server CPU "
                  "| same member: median / p99 (ms) | crossed: median / p99 (ms) |",
                  "|---|---:|---:|---:|---:|---|---|"]
        for c in cluster:
            if "error" in c:
                lines.append("| {} | | {} | | | | |".format(c["server"], c["error"]))
                continue
            times = ["-" if c["latency"].get(kind, {}).get(key) is None
                     else str(c["latency"][kind][key])
                     for kind in ("same", "crossed") for key in ("medianMs", "p99Ms")]
            lines.append("| {} | {} | {} | {} | {} | {} / {} | {} / {} |".format(
                c["server"], c["members"], c["maxRate"],
                "-" if c["crossedShare"] is None else "{:.0%}".format(c["crossedShare"]),
                "-" if c["cpu"] is None else "{:.0%}".format(c["cpu"]), *times))
    if results["skipped"]:
        lines += ["", "## Skipped", ""]
        for name, why in results["skipped"].items():
            lines.append("- {}: {}".format(name, why))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------


SERVERS = ("sipcore-memory", "sipcore-memory-2w", "sipcore-postgres", "sipcore-postgres-2w",
           "kamailio-memory", "kamailio-db", "twisted-sip")

#: What the quick (smoke) run covers: each kind of server, the storm and
#: the flood, once.
QUICK_PARTS = ("sipcore-memory", "sipcore-postgres-2w", "kamailio-db", "twisted-sip", "storm",
               "flood")

#: Workers of the multi-process variants (sipcore.workers).
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))


def startServer(name: str, outDir: str, env: Environment, haveDb: bool) -> Server | None:
    """
    Start the server C{name} (one of L{SERVERS}) on an empty location table.
    """
    if haveDb:
        dbQuery(env, "TRUNCATE location")
    if name == "sipcore-memory":
        return startSipcore(name, outDir, env, db=False)
    if name == "sipcore-postgres":
        return startSipcore(name, outDir, env, db=True)
    if name == "sipcore-memory-2w":
        return startSipcore(name, outDir, env, db=False, workers=WORKERS)
    if name == "sipcore-postgres-2w":
        return startSipcore(name, outDir, env, db=True, workers=WORKERS)
    if name == "kamailio-memory":
        return startKamailio(name, outDir, env, db=False)
    if name == "kamailio-db":
        return startKamailio(name, outDir, env, db=True)
    return startTwisted(name, outDir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("BENCH_QUICK") == "1",
                        help="smoke run: short steps, small storm (BENCH_QUICK=1)")
    parser.add_argument("--only", action="append",
                        choices=SERVERS + ("storm", "flood", "cluster"),
                        help="run only these parts (repeatable)")
    parser.add_argument("--storm", type=int, default=None,
                        help="connections in the disconnect storm (default 10000; quick 300)")
    parser.add_argument("--storm-kinds", default=os.environ.get(
                            "BENCH_STORM_KINDS", ",".join(STORM_KINDS)),
                        help="comma-separated storms: tcp-reset (every TCP connection reset "
                             "at once), ws-drop (every WebSocket connection closed at once), "
                             "tcp-refresh (a REGISTER refresh over every TCP connection at "
                             "once); default all (BENCH_STORM_KINDS)")
    parser.add_argument("--storm-db", action="store_true",
                        default=os.environ.get("BENCH_STORM_DB") == "1",
                        help="run the storm's server on PostgreSQL (--db) instead of the "
                             "README's in-memory default (BENCH_STORM_DB=1)")
    parser.add_argument("--transports", default=None,
                        help="comma-separated transports for the rate steps "
                             "(default udp,tcp; quick udp)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of the rate steps, in alternating server order "
                             "(default 2; quick 1)")
    parser.add_argument("--out", default=os.path.join(BENCH, "results"))
    parser.add_argument("--pure", action="store_true",
                        default=os.environ.get("BENCH_PURE") == "1",
                        help="run sipcore from the working tree's Python source "
                             "(BENCH_PURE=1); by default the servers run the wheel that "
                             "pip install . builds, compiled with mypyc where possible")
    args = parser.parse_args(argv)
    quick = args.quick
    roundCount = max(1, args.rounds if args.rounds is not None else (1 if quick else 2))
    parts = set(args.only or (QUICK_PARTS if quick
                              else SERVERS + ("storm", "flood", "cluster")))
    transports = (args.transports or ("udp" if quick else "udp,tcp")).split(",")
    stormCount = args.storm if args.storm is not None else (300 if quick else 10000)
    stormKinds = args.storm_kinds.split(",")
    for kind in stormKinds:
        if kind not in STORM_KINDS:
            parser.error("--storm-kinds: {!r} is not one of {}".format(kind, ", ".join(STORM_KINDS)))
    stormDb = args.storm_db
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outDir = os.path.join(args.out, stamp)
    os.makedirs(outDir, exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    env = Environment()
    install(env)
    prepareSipcore(env, outDir, args.pure)
    if shutil.which("sipp") is None:
        for name in SERVERS:
            env.skipped[name] = "sipp (Debian package sip-tester) is not installed"
    if shutil.which("kamailio") is None:
        env.skipped["kamailio-memory"] = "kamailio is not installed (Debian package kamailio)"
        env.skipped["kamailio-db"] = env.skipped["kamailio-memory"]
    elif kamailioModule("db_postgres.so") is None:
        env.skipped["kamailio-db"] = ("kamailio's db_postgres module is not installed "
                                      "(Debian package kamailio-postgres-modules)")
    dbParts = ("sipcore-postgres", "sipcore-postgres-2w", "kamailio-db") + (
        ("storm",) if stormDb else ())
    # The benchmark database is made anew only when a part uses it.
    haveDb = bool(parts & set(dbParts)) and prepareDatabase(env)
    if not haveDb:
        for name in dbParts:
            if name in parts:
                env.skipped[name] = env.skipped["postgresql"]

    results: dict[str, Any] = {"quick": quick, "rates": [], "rounds": [], "storm": [],
                               "skipped": {}, "roundCount": roundCount}
    try:
        order = [name for name in SERVERS if name in parts]
        previous: dict[tuple[str, str], int] = {}
        for number in range(roundCount):
            # Rounds alternate the order, so a host that drifts faster or
            # slower during the run favours no server.
            names = order if number % 2 == 0 else order[::-1]
            rates: list[dict[str, Any]] = []
            results["rounds"].append(rates)
            for name in names:
                if name in env.skipped:
                    continue
                log("round {}: starting {}".format(number + 1, name))
                server = startServer(name, outDir, env, haveDb)
                if server is None:
                    env.skipped[name] = "the server did not start (see {}.out)".format(name)
                    log("  " + env.skipped[name])
                    continue
                try:
                    for transport in transports:
                        if transport not in server.transports:
                            continue
                        # Later rounds start two steps below the last figure.
                        start = int(previous.get((name, transport), 0) / 2.25)
                        outcome = findMaxRate(server, transport, quick, outDir, start=start)
                        previous[(name, transport)] = outcome["maxRate"]
                        rates.append(outcome)
                finally:
                    PROCS.stop(server.proc)
        results["rates"] = sorted(
            bestOfRounds(results["rounds"]),
            key=lambda r: (SERVERS.index(r["server"]), transports.index(r["transport"])))
        if "storm" in parts and "storm" not in env.skipped:
            for kind in stormKinds:
                log("storm: {} x {}{}".format(stormCount, kind, " (PostgreSQL)" if stormDb else ""))
                outcome = storm(env, kind, stormCount, outDir, db=stormDb)
                log("  {}".format(outcome))
                results["storm"].append(outcome)
        if "flood" in parts:
            log("UDP flood fairness")
            results["flood"] = floodFairness(env, outDir, quick)
        if "cluster" in parts:
            results["cluster"] = clusterBench(env, outDir, quick, haveDb)
    finally:
        PROCS.stopAll()

    results["skipped"] = env.skipped
    results["machine"] = machine(env)
    results["ratios"] = summarize(results)
    text = markdown(results)
    for directory in (outDir, args.out):
        with open(os.path.join(directory, "results.json" if directory == outDir
                               else "latest.json"), "w") as f:
            json.dump(results, f, indent=2)
        with open(os.path.join(directory, "results.md" if directory == outDir
                               else "latest.md"), "w") as f:
            f.write(text)
    print(text)
    for name, why in env.skipped.items():
        log("skipped {}: {}".format(name, why))
    log("results in {}".format(outDir))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        PROCS.stopAll()
