"""
Tests for L{sipcore.workers}: the worker options, the shared sockets, and
how a worker's reactor adopts them.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sipcore import workers


class WorkerArgumentsTests(SynchronousTestCase):
    """
    Each worker gets its own C{server_id}; only worker 0 serves metrics.
    """

    def test_serverIdPerWorker(self) -> None:
        """
        Worker I{i} runs with C{--server-id} base + I{i}, whichever way the
        base was written.
        """
        self.assertEqual(workers.workerArguments(["--db", "x", "--server-id", "10"], 2),
                         ["--db", "x", "--server-id", "12"])
        self.assertEqual(workers.workerArguments(["--server-id=3"], 0), ["--server-id", "3"])
        self.assertEqual(workers.workerArguments([], 1), ["--server-id", "1"])

    def test_metricsOnWorkerZero(self) -> None:
        """
        C{--metrics-listen} stays with worker 0 and is dropped for others.
        """
        options = ["--metrics-listen", "tcp:9060"]
        self.assertIn("tcp:9060", workers.workerArguments(options, 0))
        self.assertNotIn("tcp:9060", workers.workerArguments(options, 1))

    def test_listenSpecs(self) -> None:
        """
        The listen specs are the C{--listen} options, or sipcore's defaults.
        """
        self.assertEqual(workers.listenSpecs(["--listen", "udp:5070", "--listen=tcp:5071"]),
                         ["udp:5070", "tcp:5071"])
        self.assertEqual(workers.listenSpecs([]), ["udp:5060", "tcp:5060", "ws:8080"])


class SharedSocketTests(SynchronousTestCase):
    """
    The supervisor binds each listening socket once; workers adopt them.
    """

    def test_bindAndEncode(self) -> None:
        """
        UDP and stream specs get a bound socket each; the encoded form
        decodes to the same addresses and descriptors.
        """
        shared = workers.bindShared(["udp:0:interface=127.0.0.1", "ws:0:interface=127.0.0.1"])
        self.addCleanup(shared.close)
        kinds = sorted(kind for kind, _, _ in shared.sockets)
        self.assertEqual(kinds, ["tcp", "udp"])
        decoded = workers.SharedSockets.decode(shared.encode())
        self.assertEqual(sorted(decoded.values()), sorted(shared.fds()))

    def test_tlsRefused(self) -> None:
        """
        TLS listeners are refused.
        """
        self.assertRaises(ValueError, workers.bindShared,
                          ["tls:0:privateKey=k.pem:certKey=c.pem"])

    def test_adopt(self) -> None:
        """
        After L{workers.adoptShared}, listening on a shared address adopts
        its descriptor; another address is bound as usual.
        """
        calls: list[tuple[Any, ...]] = []

        class Reactor:
            def listenUDP(self, port: int, protocol: Any, interface: str = "",
                          maxPacketSize: int = 8192) -> Any:
                calls.append(("listenUDP", port))

            def listenTCP(self, port: int, factory: Any, backlog: int = 50,
                          interface: str = "") -> Any:
                calls.append(("listenTCP", port))

            def adoptDatagramPort(self, fd: int, family: int, protocol: Any,
                                  maxPacketSize: int) -> Any:
                calls.append(("adoptDatagramPort", fd))

            def adoptStreamPort(self, fd: int, family: int, factory: Any) -> Any:
                calls.append(("adoptStreamPort", fd))

        reactor = Reactor()
        workers.adoptShared(reactor, {("udp", "127.0.0.1", 5060): 7,
                                      ("tcp", "127.0.0.1", 5060): 8})
        reactor.listenUDP(5060, None, interface="127.0.0.1")
        reactor.listenTCP(5060, None, interface="127.0.0.1")
        reactor.listenTCP(9999, None, interface="127.0.0.1")
        self.assertEqual(calls, [("adoptDatagramPort", 7), ("adoptStreamPort", 8),
                                 ("listenTCP", 9999)])


class WorkerStoreTests(SynchronousTestCase):
    """
    A worker takes its socket to the store process from the environment
    once.
    """

    def test_outsideWorkers(self) -> None:
        """
        Without the variable there is no shared store.
        """
        self.patch(workers.os, "environ", {})
        self.assertIsNone(workers.workerStore(object()))

    def test_releasedWithDatabase(self) -> None:
        """
        A worker whose configuration names a database closes its socket to
        the store process (whose end then reads end-of-file) and forgets
        the variable.
        """
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(mine.close)
        mine.settimeout(5)
        environ = {workers.STORE_ENV: str(theirs.detach())}
        self.patch(workers.os, "environ", environ)
        workers.releaseWorkerStore()
        self.assertEqual(environ, {})
        self.assertEqual(mine.recv(10), b"")
        workers.releaseWorkerStore()
