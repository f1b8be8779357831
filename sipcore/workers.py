# -*- test-case-name: tests.test_workers -*-
"""
Several sipcore processes serving the same ports.

One Python process runs one reactor on one core.  This module starts
C{--workers N} sipcore processes that share the listening sockets, the way
Kamailio's children share its UDP socket: the supervisor binds every UDP,
TCP and WS listening socket once, and each worker listens on the same
sockets: the supervisor passes them to the workers and gives each
C{--listen} spec their descriptor (C{fd=N}, see
L{sipcore.transport.listen}), so a worker's listeners adopt them through
Twisted's public C{IReactorSocket}.  The kernel hands each datagram
to whichever worker reads first, and each new connection to whichever
worker accepts it; a connection then stays with that worker.

Usage::

    python -m sipcore.workers --workers 2 [--logfile PATH] -- \\
        --db "host=127.0.0.1 dbname=sip" --listen udp:5060 --listen tcp:5060 ...

The options after C{--} are C{twistd sipcore}'s.  Worker C{i} runs with
C{--server-id} I{base + i} (I{base} is the C{--server-id} given, default 0),
so each worker's connection-bound bindings are its own (its location
cleanup and its start-up purge touch only its rows).  Only worker 0 keeps
C{--metrics-listen}, and only worker 0 runs the admin API (on the
C{--admin-listen} given, or on its default, loopback port 8060): the
others run with C{--admin-listen none}.  Worker 0's API shows the
connections of worker 0 only; the registrations it lists are every
worker's.  Each worker logs to C{PATH.<i>} (or to standard
output).  The supervisor forwards SIGTERM and SIGINT to every worker (the
ordered shutdown) and SIGHUP (each worker's reload, which reopens its
log file), and stops all of them when one exits.

The workers are members of one cluster (L{sipcore.cluster}): the
supervisor binds one more TCP socket per worker on C{127.0.0.1} (an
ephemeral port: that worker's node URI,
C{sip:127.0.0.1:PORT;transport=tcp}), makes a random secret, and passes
each worker, in L{CLUSTER_ENV}, its C{server_id}, the secret and every
worker's node URI.  A worker listens on its own node socket too, and its
proxy reaches a contact registered over another worker's TCP or WebSocket
connection through that worker (L{sipcore.cluster.delivery}).

The location store is shared by every worker: with C{--db} it is the
database; without (and more than one worker), the supervisor also starts a
store process that keeps the bindings in memory and serves them to each worker over a private socket pair
(L{sipcore.location.shared}).  The store process outlives the workers (it
ignores SIGINT, so a Ctrl-C reaches the workers and their shutdown can still
remove bindings) and exits once the last worker's socket has closed.

A TLS or WSS listener is shared the same way: the supervisor binds its
TCP socket (after reading its certificate and key once, so a bad file
stops it before any worker starts), and each worker reads the files itself
and wraps every connection it accepts on the socket in TLS with its own
context (L{sipcore.transport.listen.AdoptedTLSServerEndpoint}); a reload
(SIGHUP) reads them again in every worker.

Workers run on L{sipcore.reactor.FairEPollReactor}.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["SharedSockets", "bindNodeSockets", "bindShared", "main", "workerArguments",
           "workerCluster", "workerStore"]

#: The environment variable that passes a worker its end of the socket pair
#: to the store process (a file descriptor number).
STORE_ENV = "SIPCORE_WORKER_STORE"

#: The environment variable that gives a worker its place in the cluster of
#: workers: JSON, C{{"serverId": N, "secret": HEX, "nodes": {"N": URI}}}.
CLUSTER_ENV = "SIPCORE_WORKER_CLUSTER"

#: The address every worker's node socket is bound to.
NODE_HOST = "127.0.0.1"

#: Seconds the supervisor waits for the store process to exit after the last
#: worker, before killing it.
STORE_EXIT_TIMEOUT = 10.0


class SharedSockets:
    """
    The listening sockets bound by the supervisor, one for each C{--listen}
    spec, in the order of the specs.

    @ivar sockets: C{(spec, socket)} pairs: the spec as given and the socket
        bound for it.
    """

    def __init__(self) -> None:
        self.sockets: list[tuple[str, socket.socket]] = []

    def specs(self) -> list[str]:
        """
        The C{--listen} specs that listen on the shared sockets: each spec
        given, with C{fd=N} naming its socket.
        """
        return ["{}:fd={}".format(spec, sock.fileno()) for spec, sock in self.sockets]

    def fds(self) -> list[int]:
        return [sock.fileno() for _, sock in self.sockets]

    def close(self) -> None:
        for _, sock in self.sockets:
            sock.close()


def bindShared(specs: Sequence[str]) -> SharedSockets:
    """
    Bind the listening socket of every C{--listen} spec.

    A TLS or WSS spec's certificate and key are read (and dropped): each
    worker reads them again for its own context.

    @raise ValueError: for a spec naming a socket already (C{fd=N}), or a
        TLS or WSS spec whose certificate or key cannot be used.
    @raise OSError: when a socket cannot be bound.
    """
    from sipcore.transport.listen import DEFAULT_BACKLOG, parseListen, tlsOf

    shared = SharedSockets()
    try:
        for text in specs:
            spec = parseListen(text)
            tlsOf(spec)
            if spec.fileno is not None:
                raise ValueError("--workers binds the sockets itself: {!r} names one".format(
                    text))
            udp = spec.transport == "udp"
            sock = socket.socket(spec.family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
            shared.sockets.append((text, sock))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((spec.interface, spec.port))
            if not udp:
                sock.listen(int(spec.options.get("backlog", DEFAULT_BACKLOG)))
            sock.setblocking(False)
            sock.set_inheritable(True)
    except BaseException:
        shared.close()
        raise
    return shared


def bindNodeSockets(count: int) -> list[socket.socket]:
    """
    Bind and listen on one TCP socket per worker on L{NODE_HOST}, each on
    an ephemeral port: where the other workers reach it.

    @raise OSError: when a socket cannot be bound.
    """
    from sipcore.transport.listen import DEFAULT_BACKLOG

    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((NODE_HOST, 0))
            sock.listen(DEFAULT_BACKLOG)
            sock.setblocking(False)
            sock.set_inheritable(True)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def nodeURIOf(sock: socket.socket) -> str:
    """
    The node URI of a worker's node socket.
    """
    return "sip:{}:{};transport=tcp".format(NODE_HOST, sock.getsockname()[1])


def nodeListenSpec(sock: socket.socket) -> str:
    """
    The C{--listen} spec of a worker's node socket.
    """
    return "tcp:{}:interface={}:fd={}".format(sock.getsockname()[1], NODE_HOST, sock.fileno())


def clusterOf(serverIds: Sequence[int], uris: Sequence[str], index: int,
              secret: bytes) -> str:
    """
    The L{CLUSTER_ENV} value of worker C{index}.
    """
    return json.dumps({
        "serverId": serverIds[index],
        "secret": secret.hex(),
        "nodes": {str(serverId): uri for serverId, uri in zip(serverIds, uris, strict=True)},
    })


def workerCluster() -> tuple[Any, str] | None:
    """
    The cluster of a worker of C{python -m sipcore.workers}: a
    L{sipcore.cluster.StaticNodeDirectory} of every worker and this
    worker's node URI, from L{CLUSTER_ENV}, or C{None} outside such a
    worker.  The variable is taken out of the environment.

    @raise ValueError: when the variable cannot be read.
    """
    text = os.environ.pop(CLUSTER_ENV, None)
    if text is None:
        return None
    from sipcore.cluster import Node, StaticNodeDirectory

    try:
        value = json.loads(text)
        serverId = int(value["serverId"])
        secret = bytes.fromhex(value["secret"])
        nodes = {int(k): Node(int(k), str(uri)) for k, uri in value["nodes"].items()}
        own = nodes[serverId].uri
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError("{} is malformed: {}".format(CLUSTER_ENV, type(e).__name__)) from None
    return StaticNodeDirectory(serverId, secret, nodes), own


def _option(args: list[str], name: str) -> tuple[str | None, list[str]]:
    """
    Take C{--name VALUE} or C{--name=VALUE} out of C{args}.

    @return: the last value (or C{None}) and the other arguments.
    """
    value = None
    rest: list[str] = []
    items = iter(args)
    for arg in items:
        if arg == name:
            value = next(items, None)
        elif arg.startswith(name + "="):
            value = arg[len(name) + 1:]
        else:
            rest.append(arg)
    return value, rest


def baseServerId(options: list[str]) -> int:
    """
    The C{--server-id} given (default 0): worker C{i} runs with I{base + i}.
    """
    serverId, _ = _option(options, "--server-id")
    return int(serverId) if serverId is not None else 0


def workerArguments(options: list[str], index: int) -> list[str]:
    """
    The C{sipcore} options of worker C{index}: its own C{--server-id}, and
    C{--metrics-listen} and C{--admin-listen} (or the admin API's default
    endpoint) for worker 0 only.
    """
    from sipcore.admin import OFF

    base = baseServerId(options)
    _, rest = _option(options, "--server-id")
    metrics, rest = _option(rest, "--metrics-listen")
    admin, rest = _option(rest, "--admin-listen")
    out = rest + ["--server-id", str(base + index)]
    if metrics and index == 0:
        out += ["--metrics-listen", metrics]
    if index == 0:
        if admin is not None:
            out += ["--admin-listen", admin]
    else:
        out += ["--admin-listen", OFF]
    return out


def withListen(options: list[str], specs: Sequence[str]) -> list[str]:
    """
    C{options} with the C{--listen} specs C{specs} in place of the
    C{--listen} options given.
    """
    rest: list[str] = []
    items = iter(options)
    for arg in items:
        if arg == "--listen":
            next(items, None)
        elif not arg.startswith("--listen="):
            rest.append(arg)
    for spec in specs:
        rest += ["--listen", spec]
    return rest


def listenSpecs(options: list[str]) -> list[str]:
    from sipcore.transport.listen import DEFAULT_LISTEN

    specs = []
    items = iter(options)
    for arg in items:
        if arg == "--listen":
            value = next(items, None)
            if value is not None:
                specs.append(value)
        elif arg.startswith("--listen="):
            specs.append(arg[len("--listen="):])
    return specs or list(DEFAULT_LISTEN)


# ---------------------------------------------------------------------------
# The worker side.


def workerStore(reactor: Any) -> Any:
    """
    The shared in-memory store of a worker started without C{--db}: a
    L{sipcore.location.shared.SharedLocationStore} on the socket the
    supervisor passed in L{STORE_ENV}, or C{None} outside such a worker.
    The variable is taken out of the environment, so the socket is adopted
    once.
    """
    fd = os.environ.pop(STORE_ENV, None)
    if fd is None:
        return None
    from twisted.internet.error import ReactorNotRunning

    from sipcore.location.shared import adoptStore

    def lost() -> None:
        # The store process is gone (or out of step): this worker cannot
        # serve registrations any more.  Stop; the supervisor stops the rest.
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass

    return adoptStore(reactor, int(fd), onLost=lost)


def releaseWorkerStore() -> None:
    """
    Close the socket to the store process of a worker that does not use it
    (its configuration file names a database).
    """
    fd = os.environ.pop(STORE_ENV, None)
    if fd is not None:
        os.close(int(fd))


def runStore(fds: list[int], logfile: str | None) -> None:
    """
    Run the store process: one in-memory location store served on each
    worker's socket, until every worker has closed its socket.
    """
    from twisted.internet import reactor
    from twisted.internet.error import ReactorNotRunning
    from twisted.logger import (
        FileLogObserver,
        Logger,
        formatEventAsClassicLogText,
        globalLogBeginner,
    )

    from sipcore.location.shared import serveStore

    # A Ctrl-C, or a service manager's SIGTERM, goes to the whole process
    # group: the workers stop on it and may still remove bindings while they
    # do; the store stays until they have closed their sockets (the
    # supervisor kills it if it outstays them).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A hang-up of the terminal reaches the workers' reload; the store has
    # nothing to reload.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    out = open("{}.store".format(logfile), "a") if logfile else sys.stdout
    globalLogBeginner.beginLoggingTo(
        [FileLogObserver(out, formatEventAsClassicLogText)], redirectStandardIO=False)
    log = Logger(namespace="sipcore.workers.store")

    def allGone() -> None:
        log.info("every worker has closed its socket; the store stops")
        try:
            reactor.stop()  # type: ignore[attr-defined]
        except ReactorNotRunning:
            pass

    serveStore(reactor, fds, allGone)
    # The store process holds every binding: it collects as the server does.
    from sipcore.tuning import tuneGarbageCollector

    reactor.callWhenRunning(tuneGarbageCollector)  # type: ignore[attr-defined]
    log.info("serving the shared location store to {count} workers", count=len(fds))
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined,call-arg]


def runWorker(index: int, options: list[str], logfile: str | None) -> None:
    """
    Run worker C{index}: run C{twistd --reactor sipcore-epoll sipcore} in
    this process (its C{--listen} specs name the shared sockets already).
    """
    argv = ["twistd", "--reactor", "sipcore-epoll", "-n", "--pidfile="]
    if logfile:
        argv += ["--logfile", "{}.{}".format(logfile, index)]
    argv += ["sipcore"] + workerArguments(options, index)
    sys.argv = argv
    from twisted.scripts.twistd import run

    run()


# ---------------------------------------------------------------------------
# The supervisor.


def supervise(count: int, options: list[str], logfile: str | None) -> int:
    """
    Bind the shared sockets, start C{count} workers, wait.

    @return: the exit status: 0 when every worker stopped after a signal,
        1 when one exited by itself or the store process died (the others
        are then stopped), or when the store process had to be killed.
    """
    hasDb = any(a == "--db" or a.startswith("--db=") for a in options)
    try:
        shared = bindShared(listenSpecs(options))
    except (ValueError, OSError) as e:
        print("sipcore.workers: {}".format(e), file=sys.stderr)
        return 2
    env = dict(os.environ)
    env.pop(STORE_ENV, None)
    env.pop(CLUSTER_ENV, None)
    nodeSockets: list[socket.socket] = []
    if count > 1:
        try:
            base = baseServerId(options)
        except ValueError:
            print("sipcore.workers: --server-id must be a number", file=sys.stderr)
            shared.close()
            return 2
        try:
            nodeSockets = bindNodeSockets(count)
        except OSError as e:
            print("sipcore.workers: {}".format(e), file=sys.stderr)
            shared.close()
            return 2
        serverIds = [base + index for index in range(count)]
        uris = [nodeURIOf(sock) for sock in nodeSockets]
        secret = secrets.token_bytes(32)
    store = None
    workerEnds: list[socket.socket] = []
    if not hasDb and count > 1:
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(count)]
        storeEnds = [pair[0] for pair in pairs]
        workerEnds = [pair[1] for pair in pairs]
        for sock in storeEnds + workerEnds:
            sock.set_inheritable(True)
        argv = [sys.executable, "-m", "sipcore.workers",
                "--store", ",".join(str(sock.fileno()) for sock in storeEnds)]
        if logfile:
            argv += ["--logfile", logfile]
        store = subprocess.Popen(argv, env=env, pass_fds=[sock.fileno() for sock in storeEnds])
        for sock in storeEnds:
            sock.close()
    workers = []
    # Each worker listens on the shared sockets, named by their descriptors.
    for index in range(count):
        argv = [sys.executable, "-m", "sipcore.workers", "--worker", str(index)]
        if logfile:
            argv += ["--logfile", logfile]
        workerEnv, fds = dict(env), shared.fds()
        specs = shared.specs()
        if workerEnds:
            workerEnv[STORE_ENV] = str(workerEnds[index].fileno())
            fds = fds + [workerEnds[index].fileno()]
        if nodeSockets:
            workerEnv[CLUSTER_ENV] = clusterOf(serverIds, uris, index, secret)
            fds = fds + [nodeSockets[index].fileno()]
            specs = specs + [nodeListenSpec(nodeSockets[index])]
        workers.append(subprocess.Popen(
            argv + ["--"] + withListen(options, specs),
            env=workerEnv, pass_fds=fds))
    shared.close()
    for sock in nodeSockets:
        sock.close()
    for sock in workerEnds:
        sock.close()
    stopping = []

    def stop(signum: int, frame: Any) -> None:
        stopping.append(signum)
        for worker in workers:
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGTERM)

    def hangUp(signum: int, frame: Any) -> None:
        for worker in workers:
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hangUp)
    status = 0
    while True:
        # poll() every child each time: it reaps the ones that exited, so
        # the wait below does not return at once for them again.
        running = [worker for worker in workers if worker.poll() is None]
        storeStatus = store.poll() if store is not None else None
        if not running:
            break
        if not stopping and (len(running) < len(workers) or storeStatus not in (None, 0)):
            # A worker exited by itself, or the store process died.  (It
            # exits by itself, with status 0, once every worker has closed
            # its socket: when they all found --db in a --config file.)
            status = 1
            stop(signal.SIGTERM, None)
        # The supervisor runs no reactor: wait for the next child to exit
        # without reaping it (poll() reaps it and keeps its status).
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            break
    if not stopping:
        # Every worker exited by itself.
        status = 1
    if store is not None:
        # Every worker has closed its socket: the store process exits by
        # itself.
        try:
            store.wait(STORE_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            store.kill()
            store.wait()
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    options: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, options = args[:cut], args[cut + 1:]
    parser = argparse.ArgumentParser(
        prog="python -m sipcore.workers",
        description="Run several sipcore processes sharing the listening sockets.")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--logfile", default=None)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--store", default=None, help=argparse.SUPPRESS)
    parsed = parser.parse_args(args)
    if parsed.store is not None:
        runStore([int(fd) for fd in parsed.store.split(",")], parsed.logfile)
        return 0
    if parsed.worker is not None:
        runWorker(parsed.worker, options, parsed.logfile)
        return 0
    if parsed.workers < 1:
        parser.error("--workers must be at least 1")
    return supervise(parsed.workers, options, parsed.logfile)


if __name__ == "__main__":
    sys.exit(main())
