"""
Tests for L{sipcore.location.shared}: the in-memory store the workers of
C{python -m sipcore.workers} share, over real socket pairs on this machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import sys
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.interfaces import IReactorSocket, ITransport
from twisted.trial.unittest import TestCase

from sipcore import workers
from sipcore.location import InvalidBinding, StoreUnavailable
from sipcore.location.group import GroupCommitStore
from sipcore.location.shared import SharedLocationStore, adoptStore, serveStore
from sipcore.testing import LogCapture
from tests.serverhelpers import (
    PATIENCE,
    SIPCORE_PATH,
    ChildProcess,
    listenUDP,
    registerRequest,
    spawnChild,
    startServer,
    waitUntil,
)
from tests.test_location_contract import NOW, LocationStoreContractMixin, makeBinding


class _Served:
    """
    A store served on one end of socket pairs, with clients on the others.
    """

    def __init__(self, testCase: TestCase) -> None:
        self.testCase = testCase
        self.allGone: defer.Deferred[None] = defer.Deferred()
        self.factory = serveStore(reactor, [], allGone=lambda: self.allGone.callback(None))
        # Runs after the clients' cleanups: the store ends of the pairs
        # close once the clients have.
        testCase.addCleanup(lambda: waitUntil(lambda: self.factory.connections == 0,
                                              what="store connections to close"))

    def pair(self) -> int:
        """
        A new socket pair: its store end is served, its other end returned
        (a file descriptor).
        """
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Twisted's annotation asks for a ServerFactory of its own protocol type.
        IReactorSocket(reactor).adoptStreamConnection(mine.fileno(), socket.AF_UNIX,
                                                      self.factory)  # type: ignore[arg-type]
        mine.close()
        return theirs.detach()

    def client(self) -> SharedLocationStore:
        store = adoptStore(reactor, self.pair())
        self.testCase.addCleanup(store.close)
        return store


class SharedLocationStoreContractTests(LocationStoreContractMixin, TestCase):
    """
    L{SharedLocationStore} keeps the L{ILocationStore} contract, through a
    real socket to a store server.
    """

    def setUp(self) -> None:
        self.served = _Served(self)
        self.store = self.served.client()


class SharingTests(TestCase):
    """
    Several clients see one set of bindings; operations of one client take
    effect in the order it called them.
    """

    def setUp(self) -> None:
        self.served = _Served(self)

    async def test_clientsShare(self) -> None:
        """
        A binding saved through one client is found, refreshed and removed
        through another.
        """
        first, second = self.served.client(), self.served.client()
        binding = makeBinding(ruid="r1", serverId=1, connectionId=5)
        await first.save([binding])
        self.assertEqual(await second.lookup("alice@example.com", NOW), [binding])
        self.assertEqual(await second.lookupMany(["alice@example.com", "bob@example.com"], NOW),
                         {"alice@example.com": [binding]})
        self.assertEqual(await second.removeConnections(1, [5]), 1)
        self.assertEqual(await first.lookup("alice@example.com", NOW), [])

    async def test_pipelinedInOrder(self) -> None:
        """
        Calls made without waiting are carried out in call order, and each
        answer goes to its own call.
        """
        store = self.served.client()
        saved = store.save([makeBinding(ruid="r1")])
        found = store.lookup("alice@example.com", NOW)
        removed = store.remove(["r1", "r2"])
        after = store.lookup("alice@example.com", NOW)
        calls: list[defer.Deferred[Any]] = [saved, found, removed, after]
        results = await defer.gatherResults(calls)
        self.assertEqual(results, [None, [makeBinding(ruid="r1")], 1, []])

    async def test_valuesSurvive(self) -> None:
        """
        Every field comes back exactly: non-ASCII text, C{None}s, fractional
        times and C{q}.
        """
        store = self.served.client()
        binding = makeBinding(ruid="r\u00e9", username="\u00e5sa", contact="sip:\u00e5sa@h",
                              received=None, path="<sip:p;lr>", q=0.125,
                              expires=NOW + 0.5, lastModified=NOW + 0.25, methods=None,
                              instance='"<urn:uuid:1>"', regId=2)
        await store.save([binding])
        self.assertEqual(await store.lookup("\u00e5sa@example.com", NOW), [binding])

    async def test_closeWaitsForAnswers(self) -> None:
        """
        C{close} lets the answers still due arrive before it disconnects;
        later calls fail with L{StoreUnavailable}.
        """
        store = self.served.client()
        saved = store.save([makeBinding(ruid="r1")])
        await store.close()
        await saved
        self.assertEqual(len(self.served.factory.store), 1)
        await self.assertFailure(store.lookup("alice@example.com", NOW), StoreUnavailable)

    async def test_allGone(self) -> None:
        """
        The server's C{allGone} runs once every client has closed.
        """
        first, second = self.served.client(), self.served.client()
        await first.save([makeBinding(ruid="r1")])
        await second.lookup("alice@example.com", NOW)
        await first.close()
        self.assertFalse(self.served.allGone.called)
        await second.close()
        await self.served.allGone


class StoreGoneTests(TestCase):
    """
    When the store process goes away, the worker's calls fail with
    L{StoreUnavailable} and one error line is logged.
    """

    async def test_pendingAndLaterCallsFail(self) -> None:
        """
        The call waiting when the store's end closes and every later call
        fail with L{StoreUnavailable}; one error line says so.
        """
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        logged = LogCapture(self)
        store = adoptStore(reactor, theirs.detach())
        self.addCleanup(store.close)
        pending = store.lookup("alice@example.com", NOW)
        mine.close()
        await self.assertFailure(pending, StoreUnavailable)
        await self.assertFailure(store.save([makeBinding()]), StoreUnavailable)
        await self.assertFailure(store.removeConnections(1, [2]), StoreUnavailable)
        gone = [e for e in logged.events if "store is gone" in e.get("log_format", "")]
        self.assertEqual(len(gone), 1)

    async def test_onLost(self) -> None:
        """
        C{onLost} is called when the connection is lost, not when the
        worker closes the store; C{available} follows the connection.
        """
        lost: list[None] = []
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        store = adoptStore(reactor, theirs.detach(), onLost=lambda: lost.append(None))
        self.assertTrue(store.available)
        mine.close()
        await waitUntil(lambda: lost, what="onLost")
        self.assertFalse(store.available)
        served = _Served(self)
        closed = adoptStore(reactor, served.pair(), onLost=lambda: lost.append(None))
        await closed.close()
        await waitUntil(lambda: served.factory.connections == 0, what="the close")
        self.assertFalse(closed.available)
        self.assertEqual(len(lost), 1)

    async def test_answerOutOfStep(self) -> None:
        """
        An answer whose id is not the one expected closes the connection:
        the waiting call fails with L{StoreUnavailable}, C{onLost} runs.
        """
        lost: list[None] = []
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        store = adoptStore(reactor, theirs.detach(), onLost=lambda: lost.append(None))
        self.addCleanup(mine.close)
        pending = store.lookup("alice@example.com", NOW)
        mine.sendall(_frame([99, "ok", []]))
        await self.assertFailure(pending, StoreUnavailable)
        self.assertEqual(len(lost), 1)

    async def test_cancelledCall(self) -> None:
        """
        A call its caller cancelled takes its answer quietly; the calls
        after it get theirs.
        """
        served = _Served(self)
        store = served.client()
        await store.save([makeBinding(ruid="r1")])
        cancelled = store.lookup("alice@example.com", NOW)
        after = store.lookup("alice@example.com", NOW)
        cancelled.cancel()
        self.failureResultOf(cancelled, defer.CancelledError)
        self.assertEqual(await after, [makeBinding(ruid="r1")])
        self.assertTrue(store.available)

    def test_neverConnected(self) -> None:
        """
        A store that was never adopted fails every call at once.
        """
        store = SharedLocationStore(reactor)
        self.failureResultOf(store.lookup("alice@example.com", NOW), StoreUnavailable)


class _RawClient(protocol.Protocol):
    """
    Writes frames as they are given and collects the answers.
    """

    transport: ITransport

    def __init__(self) -> None:
        self.buffer = b""
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)

    def answers(self) -> list[Any]:
        out, rest = [], self.buffer
        while len(rest) >= 4:
            (length,) = struct.unpack("!I", rest[:4])
            if len(rest) < 4 + length:
                break
            out.append(json.loads(rest[4:4 + length]))
            rest = rest[4 + length:]
        return out


def _frame(message: Any) -> bytes:
    data = message if isinstance(message, bytes) else json.dumps(message).encode()
    return struct.pack("!I", len(data)) + data


class BadRequestTests(TestCase):
    """
    The store server answers a malformed request with an error, logs it
    once per connection and stays up for the next request.
    """

    async def rawClient(self, served: _Served) -> _RawClient:
        client = _RawClient()
        fd = served.pair()
        # Twisted's annotation asks for a ServerFactory of its own protocol type.
        IReactorSocket(reactor).adoptStreamConnection(
            fd, socket.AF_UNIX,
            protocol.Factory.forProtocol(lambda: client))  # type: ignore[arg-type]
        os.close(fd)

        def close() -> Any:
            client.transport.loseConnection()
            return client.lost

        self.addCleanup(close)
        return client

    async def test_malformed(self) -> None:
        """
        Bytes that are not JSON, JSON nested too deep to decode, an unknown
        method, the wrong number or types of arguments and a binding with
        values the table cannot hold are each answered with an C{invalid}
        error, in order; a good request after them is served.
        """
        served = _Served(self)
        client = await self.rawClient(served)
        logged = LogCapture(self)
        frames = [
            b"not json",
            b"[" * 100000 + b"]" * 100000,
            [1, "dropTable", []],
            [2, "lookup", ["alice@example.com"]],
            [3, "removeConnections", [1, ["1"]]],
            [4, "save", [[["too", "short"]]]],
            [5, "save", [[[None] * 22]]],
            [6, "remove", [["r1"]]],
        ]
        for frame in frames:
            client.transport.write(_frame(frame))
        await waitUntil(lambda: len(client.answers()) == len(frames), what="answers")
        answers = client.answers()
        self.assertEqual([a[1:3] for a in answers[:7]], [["error", "invalid"]] * 7)
        self.assertEqual([a[0] for a in answers], [None, None, 1, 2, 3, 4, 5, 6])
        self.assertEqual(answers[-1], [6, "ok", 0])
        self.assertEqual(len(served.factory.store), 0)
        refused = [e for e in logged.events if "store request refused" in e.get("log_format", "")]
        self.assertEqual(len(refused), 1)

    async def test_storeErrorLogged(self) -> None:
        """
        An error inside the store process is answered as C{unavailable}
        (the worker's call fails with L{StoreUnavailable}) and logged with
        its traceback.
        """
        served = _Served(self)

        def broken(aor: str, now: float) -> Any:
            raise RuntimeError("broken store")

        self.patch(served.factory.store, "lookup", broken)
        store = served.client()
        failure = await self.assertFailure(store.lookup("alice@example.com", NOW),
                                           StoreUnavailable)
        self.assertIn("broken store", str(failure))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(await store.remove(["r1"]), 0)

    async def test_refusedBindingIsInvalidBinding(self) -> None:
        """
        A binding the store process refuses fails the worker's call with
        L{InvalidBinding}.
        """
        served = _Served(self)
        store = served.client()
        values = [None] * 22
        await self.assertFailure(store._call("save", [[values]]), InvalidBinding)


class SharedRegistrarTests(TestCase):
    """
    Two sipcore services built as workers are (C{workers.STORE_ENV} set)
    share one store: a contact registered through one is known to the
    other.
    """

    async def startWorker(self, served: _Served) -> Any:
        self.patch(os, "environ", dict(os.environ, **{workers.STORE_ENV: str(served.pair())}))
        return await startServer(self, transports=("udp",))

    async def test_registerThroughOneQueryThroughOther(self) -> None:
        """
        A REGISTER through one worker's port is seen by a REGISTER through
        the other's (its un-registration), and the store holds what the
        last one left.
        """
        served = _Served(self)
        first = await self.startWorker(served)
        second = await self.startWorker(served)
        # Group commit batches the worker's store calls, as for --db.
        self.assertIsInstance(first.registrar.store, GroupCommitStore)
        self.assertIsInstance(first.registrar.store.store, SharedLocationStore)
        one, two = listenUDP(self, first.ports["udp"]), listenUDP(self, second.ports["udp"])
        response = await one.request(registerRequest("udp", "alice", callId="c1"))
        self.assertEqual(response.status, 200)
        contacts = (await two.request(registerRequest("udp", "alice", callId="c1", cseq=2,
                                                      expires=0))).headers.values("Contact")
        self.assertEqual(contacts, [])
        self.assertEqual(len(served.factory.store), 0)
        response = await two.request(registerRequest("udp", "bob", callId="c2"))
        self.assertEqual(response.status, 200)
        self.assertEqual([b.username for b in served.factory.store.allBindings()], ["bob"])


def _children(pid: int) -> dict[int, str]:
    """
    The child processes of C{pid} and their command lines (from C{/proc}).
    """
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/{}/stat".format(entry)) as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                with open("/proc/{}/cmdline".format(entry), "rb") as f:
                    found[int(entry)] = f.read().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return found


class WorkersWithoutDatabaseTests(TestCase):
    """
    C{python -m sipcore.workers} without C{--db} runs a store process the
    workers share, and stops it after them.  (Which worker reads a datagram
    is the kernel's choice; L{SharedRegistrarTests} shows the sharing
    between two known workers.)
    """

    timeout = 90

    async def startSupervisor(self, count: int = 2) -> tuple[ChildProcess, Any, int]:
        env = dict(os.environ, PYTHONPATH=SIPCORE_PATH)
        env.pop(workers.STORE_ENV, None)
        args = [sys.executable, "-m", "sipcore.workers", "--workers", str(count), "--",
                "--domain", "example.com", "--listen", "udp:0:interface=127.0.0.1",
                "--admin-listen", "tcp:0:interface=127.0.0.1"]
        proc, transport = spawnChild(self, args, env, descendants=_children)
        pattern = re.compile(r"listening on udp 127\.0\.0\.1:(\d+)")
        await waitUntil(lambda: len(pattern.findall(proc.output)) == count,
                        timeout=PATIENCE * 3, what="workers listening: " + proc.output[-2000:])
        ports = {int(p) for p in pattern.findall(proc.output)}
        self.assertEqual(len(ports), 1)
        # Only worker 0 runs the admin API.
        await waitUntil(lambda: "admin API on" in proc.output, what="admin API listening")
        self.assertEqual(proc.output.count("admin API on"), 1)
        return proc, transport, ports.pop()

    async def test_sharedAcrossWorkers(self) -> None:
        """
        A binding registered through the shared port is in the answer to
        every later query, whichever worker reads it; SIGHUP to the
        supervisor reaches both workers' reload; SIGTERM stops both
        workers cleanly, then the store process, and the supervisor exits 0.
        """
        proc, transport, port = await self.startSupervisor()
        children = _children(transport.pid)
        self.assertEqual(sorted("--store" in c for c in children.values()), [False, False, True])
        contact = "<sip:alice@127.0.0.1:5999;transport=udp>"
        response = await listenUDP(self, port).request(
            registerRequest("udp", "alice", contact=contact, callId="c1"))
        self.assertEqual(response.status, 200)
        # Whichever worker reads each query, it answers with the binding.
        for cseq in range(2, 42):
            client = listenUDP(self, port)
            query = registerRequest("udp", "alice", callId="q{}".format(cseq), contact="*",
                                    expires=3600).replace(b"Contact: *\r\n", b"")
            answer = await client.request(query)
            self.assertEqual(answer.status, 200)
            self.assertEqual(len(answer.headers.values("Contact")), 1, answer)
        # SIGHUP reaches each worker's reload.
        os.kill(transport.pid, signal.SIGHUP)
        await waitUntil(lambda: proc.output.count("SIGHUP: reloaded") == 2,
                        what="both workers reloading: " + proc.output[-2000:])
        os.kill(transport.pid, signal.SIGTERM)
        self.assertEqual(await proc.ended, 0, proc.output[-3000:])
        self.assertEqual(proc.output.count("stopped cleanly"), 2, proc.output[-3000:])
        self.assertNotIn("Traceback", proc.output)
        self.assertNotIn("shared location store is gone", proc.output)
        self.assertIn("serving the shared location store to 2 workers", proc.output)
        self.assertIn("every worker has closed its socket; the store stops", proc.output)
        for pid in children:
            self.assertFalse(os.path.exists("/proc/{}".format(pid)), "child {} left".format(pid))

    async def test_storeDies(self) -> None:
        """
        When the store process dies, the workers stop and the supervisor
        exits with status 1.
        """
        proc, transport, port = await self.startSupervisor()
        children = _children(transport.pid)
        [storePid] = [pid for pid, c in children.items() if "--store" in c]
        os.kill(storePid, signal.SIGKILL)
        self.assertEqual(await proc.ended, 1, proc.output[-3000:])
        for pid in children:
            self.assertFalse(os.path.exists("/proc/{}".format(pid)), "child {} left".format(pid))

    async def test_oneWorkerNoStore(self) -> None:
        """
        A single worker keeps its bindings itself: no store process runs,
        and the worker registers and answers.
        """
        proc, transport, port = await self.startSupervisor(count=1)
        children = _children(transport.pid)
        self.assertEqual(len(children), 1)
        self.assertNotIn("--store", "".join(children.values()))
        response = await listenUDP(self, port).request(registerRequest("udp", "alice"))
        self.assertEqual(response.status, 200)
        os.kill(transport.pid, signal.SIGTERM)
        self.assertEqual(await proc.ended, 0, proc.output[-3000:])
