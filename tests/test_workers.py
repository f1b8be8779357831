"""
Tests for L{sipcore.workers}: the worker options, the shared sockets, and
how a worker's listeners name them.
"""

from __future__ import annotations

import os
import socket

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from sipcore import workers
from sipcore.transport.listen import parseListen
from tests.test_transport_support import makeCertificate


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
                         ["--db", "x", "--server-id", "12", "--admin-listen", "none"])
        self.assertEqual(workers.workerArguments(["--server-id=3"], 0), ["--server-id", "3"])
        self.assertEqual(workers.workerArguments([], 1),
                         ["--server-id", "1", "--admin-listen", "none"])

    def test_metricsOnWorkerZero(self) -> None:
        """
        C{--metrics-listen} stays with worker 0 and is dropped for others.
        """
        options = ["--metrics-listen", "tcp:9060"]
        self.assertIn("tcp:9060", workers.workerArguments(options, 0))
        self.assertNotIn("tcp:9060", workers.workerArguments(options, 1))

    def test_adminOnWorkerZero(self) -> None:
        """
        Worker 0 keeps the C{--admin-listen} given, or none (so it takes the
        admin API's default endpoint); every other worker runs with
        C{--admin-listen none}, so no two workers try the same port.
        """
        options = ["--admin-listen=tcp:8061:interface=127.0.0.1"]
        self.assertEqual(workers.workerArguments(options, 0),
                         ["--server-id", "0", "--admin-listen", "tcp:8061:interface=127.0.0.1"])
        self.assertEqual(workers.workerArguments(options, 1),
                         ["--server-id", "1", "--admin-listen", "none"])
        self.assertNotIn("--admin-listen", workers.workerArguments([], 0))

    def test_listenSpecs(self) -> None:
        """
        The listen specs are the C{--listen} options, or sipcore's defaults.
        """
        self.assertEqual(workers.listenSpecs(["--listen", "udp:5070", "--listen=tcp:5071"]),
                         ["udp:5070", "tcp:5071"])
        self.assertEqual(workers.listenSpecs([]), ["udp:5060", "tcp:5060", "ws:8080"])


class SharedSocketTests(SynchronousTestCase):
    """
    The supervisor binds each listening socket once; workers listen on them
    through specs that name their descriptors.
    """

    def test_bindAndSpecs(self) -> None:
        """
        UDP and stream specs get a bound socket each (a stream socket
        listens); the workers' specs are those given with C{fd=N} naming
        each socket, and parse to the same address.
        """
        given = ["udp:0:interface=127.0.0.1", "ws:0:interface=127.0.0.1"]
        shared = workers.bindShared(given)
        self.addCleanup(shared.close)
        [(_, udp), (_, ws)] = shared.sockets
        self.assertEqual((udp.type, ws.type), (socket.SOCK_DGRAM, socket.SOCK_STREAM))
        self.assertEqual(ws.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 1)
        specs = [parseListen(text) for text in shared.specs()]
        self.assertEqual([spec.fileno for spec in specs], shared.fds())
        self.assertEqual([spec.description for spec in specs],
                         [parseListen(text).description for text in given])

    def test_secure(self) -> None:
        """
        A TLS or WSS spec gets a listening TCP socket; its worker spec
        keeps the certificate and key and names the socket.
        """
        key, cert = makeCertificate(FilePath(self.mktemp()))
        given = ["tls:0:interface=127.0.0.1:privateKey={}:certKey={}".format(key, cert),
                 "wss:0:interface=127.0.0.1:privateKey={}:certKey={}".format(key, cert)]
        shared = workers.bindShared(given)
        self.addCleanup(shared.close)
        for (_, sock), text in zip(shared.sockets, shared.specs(), strict=True):
            self.assertEqual(sock.type, socket.SOCK_STREAM)
            self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 1)
            spec = parseListen(text)
            self.assertEqual(spec.fileno, sock.fileno())
            self.assertEqual(spec.options["privateKey"], key)

    def test_refused(self) -> None:
        """
        A TLS spec whose key is not its certificate's is refused, and so
        are specs naming a socket already; the sockets bound before the
        refused spec are closed.
        """
        directory = FilePath(self.mktemp())
        key, _ = makeCertificate(directory.child("one"))
        _, cert = makeCertificate(directory.child("two"))
        before = len(os.listdir("/proc/self/fd"))
        error = self.assertRaises(ValueError, workers.bindShared, [
            "tcp:0:interface=127.0.0.1",
            "tls:0:privateKey={}:certKey={}".format(key, cert)])
        self.assertIn("unusable certificate or key", str(error))
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)
        self.assertRaises(ValueError, workers.bindShared, ["udp:0:fd=3"])
        before = len(os.listdir("/proc/self/fd"))
        self.assertRaises(ValueError, workers.bindShared,
                          ["udp:0:interface=127.0.0.1", "udp:0:fd=3"])
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)

    def test_withListen(self) -> None:
        """
        The workers' options have the shared sockets' specs in place of the
        C{--listen} options given, whichever way they were written.
        """
        options = ["--listen", "udp:5060", "--db", "x", "--listen=tcp:5060"]
        self.assertEqual(workers.withListen(options, ["udp:5060:fd=3", "tcp:5060:fd=4"]),
                         ["--db", "x", "--listen", "udp:5060:fd=3", "--listen", "tcp:5060:fd=4"])


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


class WorkerClusterTests(SynchronousTestCase):
    """
    Each worker gets a node socket of its own and, in the environment, a
    directory of every worker and the secret they share.
    """

    def test_nodeSockets(self) -> None:
        """
        One listening TCP socket per worker on 127.0.0.1, each on its own
        port; the worker's listen spec names its descriptor and its node
        URI its port.
        """
        sockets = workers.bindNodeSockets(2)
        for sock in sockets:
            self.addCleanup(sock.close)
        ports = [sock.getsockname()[1] for sock in sockets]
        self.assertEqual(len(set(ports)), 2)
        self.assertEqual([sock.getsockname()[0] for sock in sockets], ["127.0.0.1"] * 2)
        self.assertEqual(sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 1)
        spec = parseListen(workers.nodeListenSpec(sockets[0]))
        self.assertEqual((spec.transport, spec.port, spec.fileno),
                         ("tcp", ports[0], sockets[0].fileno()))
        self.assertEqual(workers.nodeURIOf(sockets[1]),
                         "sip:127.0.0.1:{};transport=tcp".format(ports[1]))

    def test_directoryFromEnvironment(self) -> None:
        """
        The worker reads its C{server_id}, the secret and every worker's
        node URI once, and takes the variable out of the environment.
        """
        uris = ["sip:127.0.0.1:4001;transport=tcp", "sip:127.0.0.1:4002;transport=tcp"]
        environ = {workers.CLUSTER_ENV: workers.clusterOf([10, 11], uris, 1, b"\x01" * 32)}
        self.patch(workers.os, "environ", environ)
        found = workers.workerCluster()
        assert found is not None
        directory, own = found
        self.assertEqual(environ, {})
        self.assertEqual((directory.serverId, directory.secret, own), (11, b"\x01" * 32, uris[1]))
        self.assertEqual([(n.serverId, n.uri) for n in directory.nodes()], [(10, uris[0])])
        self.assertIsNone(workers.workerCluster())

    def test_malformed(self) -> None:
        """
        A malformed variable is an error that does not show its value.
        """
        self.patch(workers.os, "environ", {workers.CLUSTER_ENV: '{"secret": "abcd"}'})
        error = self.assertRaises(ValueError, workers.workerCluster)
        self.assertNotIn("abcd", str(error))
