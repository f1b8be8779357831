"""
Tests for L{sipcore.reactor}: the fair epoll reactor, its priority order
with real sockets, the Twisted internals it relies on, and that plain
C{twistd sipcore} runs on it.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from twisted.internet import error, protocol
from twisted.internet.interfaces import IListeningPort, IReadDescriptor, IWriteDescriptor
from twisted.internet.testing import MemoryReactor
from twisted.python import context, log
from twisted.trial.unittest import SynchronousTestCase, TestCase
from txpostgres import txpostgres
from zope.interface import implementer

from sipcore.testing import LogCapture
from tests.serverhelpers import SIPCORE_PATH, spawnChild, waitUntil


@implementer(IReadDescriptor, IWriteDescriptor)
class _Reader:
    """
    A selectable reading one end of a socket pair, recording what happens
    to it (and, in C{order}, its C{name} each time it reads).
    """

    def __init__(self, sock: socket.socket, onRead: Any, order: list[str] | None = None,
                 name: str = "") -> None:
        self.sock = sock
        self.onRead = onRead
        self.order = order if order is not None else []
        self.name = name
        self.read: list[bytes] = []
        self.systems: list[str] = []
        self.lost: list[Any] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "TestReader,7"

    def doRead(self) -> Any:
        self.read.append(self.sock.recv(100))
        self.order.append(self.name)
        self.systems.append(context.get(log.ILogContext)["system"])
        if not self.read[-1]:
            return error.ConnectionDone()
        return self.onRead()

    def doWrite(self) -> None:
        self.order.append(self.name + " writes")

    def connectionLost(self, reason: Any) -> None:
        self.lost.append(reason)


@implementer(IListeningPort)
class _ListeningReader(_Reader):
    """
    A L{_Reader} that provides L{IListeningPort}, as Twisted's listening
    ports and UDP ports do.
    """

    def startListening(self) -> None:
        pass

    def stopListening(self) -> None:
        pass

    def getHost(self) -> Any:
        return None


class _Datagrams(protocol.DatagramProtocol):
    def __init__(self, order: list[str]) -> None:
        self.order = order

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.order.append("udp")


class FairReactorTests(SynchronousTestCase):
    """
    L{sipcore.reactor.FairEPollReactor} serves its priority set before each
    bounded chunk of stream events.
    """

    def setUp(self) -> None:
        from sipcore.reactor import FairEPollReactor

        self.reactor = FairEPollReactor(maxEvents=8)
        self.order: list[str] = []

    def streams(self, count: int) -> list[tuple[_Reader, socket.socket]]:
        """
        C{count} stream readers registered with the reactor, and the peer
        socket of each.
        """
        made = []
        for _ in range(count):
            mine, theirs = socket.socketpair()
            self.addCleanup(mine.close)
            self.addCleanup(theirs.close)
            mine.setblocking(False)
            reader = _Reader(mine, lambda: None, self.order, "stream")
            self.reactor.addReader(reader)
            self.addCleanup(self.reactor.removeReader, reader)
            made.append((reader, theirs))
        return made

    def udpPort(self) -> tuple[Any, socket.socket]:
        """
        A real UDP port of the reactor on loopback, and a client socket.
        """
        port = self.reactor.listenUDP(0, _Datagrams(self.order), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.connect(("127.0.0.1", port.getHost().port))
        return port, client

    def test_reactorRuns(self) -> None:
        """
        It is a working epoll reactor: it runs a timer and stops.
        """
        ran: list[bool] = []
        self.reactor.callLater(0, ran.append, True)
        self.reactor.callLater(0, self.reactor.stop)
        self.reactor.run(installSignalHandlers=False)
        self.assertEqual(ran, [True])

    def test_maxEventsChecked(self) -> None:
        """
        Fewer than one stream event per turn is refused.
        """
        from sipcore.reactor import FairEPollReactor

        self.assertRaises(ValueError, FairEPollReactor, 0)

    def test_datagramBeforeStreams(self) -> None:
        """
        With 100 stream connections readable before a datagram arrives, one
        iteration reads the datagram first and then at most C{maxEvents}
        streams.
        """
        for _, peer in self.streams(100):
            peer.send(b"x")
        _, client = self.udpPort()
        client.send(b"OPTIONS")
        self.reactor.doIteration(0)
        self.assertEqual(self.order[0], "udp")
        self.assertEqual(self.order.count("stream"), 8)

    def test_datagramDuringBurst(self) -> None:
        """
        A datagram sent while a burst of stream events is being worked off
        is read in the next iteration, before that iteration's streams,
        not after the rest of the burst.
        """
        for _, peer in self.streams(100):
            peer.send(b"x")
        _, client = self.udpPort()
        self.reactor.doIteration(0)
        self.assertEqual(self.order, ["stream"] * 8)
        client.send(b"OPTIONS")
        self.reactor.doIteration(0)
        self.assertEqual(self.order[8:], ["udp"] + ["stream"] * 8)

    def test_waitWakesForPriority(self) -> None:
        """
        A wait for events with nothing else ready ends when a priority
        selectable becomes ready, and it is served in that iteration.
        """
        _, client = self.udpPort()
        client.send(b"OPTIONS")
        self.reactor.doIteration(5.0)
        self.assertEqual(self.order, ["udp"])

    def test_burstWorkedOff(self) -> None:
        """
        Every ready stream connection is read, C{maxEvents} per iteration.
        """
        streams = self.streams(20)
        for _, peer in streams:
            peer.send(b"x")
        for _ in range(3):
            self.reactor.doIteration(0)
        self.assertEqual([reader.read for reader, _ in streams], [[b"x"]] * 20)

    def test_priorityBookkeeping(self) -> None:
        """
        A priority selectable is one of the reactor's readers and writers
        like any other, and leaves the priority set when removed: a stream
        selectable given its file descriptor number later is a stream one.
        """
        mine, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        mine.setblocking(False)
        listener = _ListeningReader(mine, lambda: None, self.order, "listener")
        self.reactor.addReader(listener)
        self.reactor.addWriter(listener)
        self.assertIn(listener, self.reactor.getReaders())
        self.assertIn(listener, self.reactor.getWriters())
        self.reactor.removeWriter(listener)
        theirs.send(b"x")
        self.reactor.doIteration(0)
        self.assertEqual(self.order, ["listener"])
        self.assertEqual(self.reactor.removeAll(), [listener])
        fd = mine.fileno()
        mine.close()
        streams = self.streams(1)
        self.assertEqual(streams[0][0].fileno(), fd)
        for _ in range(9):
            self.streams(1)[0][1].send(b"y")
        streams[0][1].send(b"z")
        self.reactor.doIteration(0)
        self.assertEqual(self.order, ["listener"] + ["stream"] * 8)

    def test_isPriority(self) -> None:
        """
        Listening ports and txpostgres connections and cursors are
        priority selectables; other selectables are not.
        """
        from sipcore.reactor import isPriority

        port, _ = self.udpPort()
        tcpPort = self.reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        self.addCleanup(tcpPort.stopListening)
        connection = txpostgres.Connection(reactor=self.reactor)
        mine, theirs = socket.socketpair()
        self.addCleanup(mine.close)
        self.addCleanup(theirs.close)
        self.assertEqual(
            [isPriority(port), isPriority(tcpPort), isPriority(connection),
             isPriority(txpostgres.Cursor(None, connection)),
             isPriority(_Reader(mine, lambda: None))],
            [True, True, True, True, False])


class FairDispatchTests(SynchronousTestCase):
    """
    L{sipcore.reactor.FairEPollReactor} handles a plain read event of a
    stream selectable without a logging context, with Twisted's outcomes.
    """

    def reader(self, onRead: Any) -> tuple[Any, _Reader, socket.socket]:
        from sipcore.reactor import FairEPollReactor

        fair = FairEPollReactor()
        mine, theirs = socket.socketpair()
        self.addCleanup(mine.close)
        self.addCleanup(theirs.close)
        mine.setblocking(False)
        reader = _Reader(mine, onRead)
        fair.addReader(reader)
        self.addCleanup(fair.removeAll)
        return fair, reader, theirs

    def test_read(self) -> None:
        """
        A readable selectable has its C{doRead} called once per event,
        outside any logging context, and stays registered.
        """
        fair, reader, peer = self.reader(lambda: None)
        peer.send(b"one")
        fair.doPoll(0)
        self.assertEqual(reader.read, [b"one"])
        self.assertEqual(reader.systems, ["-"])
        self.assertIn(reader, fair.getReaders())
        fair.doPoll(0)
        self.assertEqual(reader.read, [b"one"])
        self.assertEqual(reader.lost, [])

    def test_readReturnsReason(self) -> None:
        """
        A reason returned by C{doRead} disconnects the selectable: it is no
        longer read and its C{connectionLost} gets the reason.
        """
        fair, reader, peer = self.reader(lambda: error.ConnectionLost())
        peer.send(b"x")
        fair.doPoll(0)
        self.assertNotIn(reader, fair.getReaders())
        self.assertEqual(len(reader.lost), 1)
        reader.lost[0].trap(error.ConnectionLost)

    def test_readRaises(self) -> None:
        """
        An exception raised by C{doRead} is logged under the selectable's
        log prefix and disconnects it with that exception.
        """
        logged = LogCapture(self)

        def broken() -> None:
            raise ZeroDivisionError("reader bug")

        fair, reader, peer = self.reader(broken)
        peer.send(b"x")
        fair.doPoll(0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertIn("TestReader,7", [e.get("log_system") for e in logged.events])
        self.assertNotIn(reader, fair.getReaders())
        self.assertEqual(len(reader.lost), 1)
        reader.lost[0].trap(ZeroDivisionError)

    def test_hangUpTakesTwistedsPath(self) -> None:
        """
        A read event with a hang-up is not a plain read event: Twisted's
        own handling reads in the selectable's logging context, and the
        end of the stream disconnects it.
        """
        fair, reader, peer = self.reader(lambda: None)
        peer.close()
        fair.doPoll(0)
        self.assertEqual(reader.read, [b""])
        self.assertEqual(reader.systems, ["TestReader,7"])
        self.assertNotIn(reader, fair.getReaders())
        self.assertEqual(len(reader.lost), 1)
        reader.lost[0].trap(error.ConnectionDone)


class _RecordingPoller:
    """
    Stands in for an epoll object and records every call made to it.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def register(self, fd: int, flags: int) -> None:
        self.calls.append(("register", fd))

    def modify(self, fd: int, flags: int) -> None:
        self.calls.append(("modify", fd))

    def unregister(self, fd: int) -> None:
        self.calls.append(("unregister", fd))


class EPollInternalsTests(SynchronousTestCase):
    """
    The internals of Twisted's epoll reactor that L{sipcore.reactor} uses
    are there and behave as it expects: this fails when Twisted changes
    them.
    """

    def test_methods(self) -> None:
        """
        C{doPoll(timeout)} is the reactor's iteration, C{_doReadOrWrite}
        takes C{(selectable, fd, event)} and C{_disconnectSelectable}
        C{(selectable, why, isRead)}.
        """
        import inspect

        from twisted.internet.epollreactor import EPollReactor

        def parameters(method: Any) -> list[str]:
            return list(inspect.signature(method).parameters)

        self.assertIs(EPollReactor.doIteration, EPollReactor.doPoll)
        self.assertEqual(parameters(EPollReactor.doPoll), ["self", "timeout"])
        self.assertEqual(parameters(EPollReactor._doReadOrWrite),
                         ["self", "selectable", "fd", "event"])
        self.assertEqual(parameters(EPollReactor._disconnectSelectable)[:4],
                         ["self", "selectable", "why", "isRead"])

    def test_attributes(self) -> None:
        """
        A new epoll reactor has its C{epoll} object in C{_poller} and its
        selectables by file descriptor in C{_selectables}.
        """
        import select

        from twisted.internet.epollreactor import EPollReactor

        epollReactor = EPollReactor()
        self.addCleanup(epollReactor._poller.close)
        self.assertIsInstance(epollReactor._poller, select.epoll)
        self.assertIsInstance(epollReactor._selectables, dict)
        for fd, selectable in epollReactor._selectables.items():
            self.assertEqual(selectable.fileno(), fd)

    def test_pollerCalls(self) -> None:
        """
        Adding and removing readers and writers calls only C{register},
        C{modify} and C{unregister} of C{_poller}, with the selectable's
        file descriptor: the calls L{sipcore.reactor}'s two sets route.
        """
        from twisted.internet.epollreactor import EPollReactor

        epollReactor = EPollReactor()
        epollReactor._poller.close()
        recording = _RecordingPoller()
        epollReactor._poller = recording
        mine, theirs = socket.socketpair()
        self.addCleanup(mine.close)
        self.addCleanup(theirs.close)
        reader = _Reader(mine, lambda: None)
        fd = mine.fileno()
        epollReactor.addReader(reader)
        epollReactor.addWriter(reader)
        epollReactor.removeReader(reader)
        epollReactor.removeWriter(reader)
        self.assertEqual(recording.calls, [("register", fd), ("modify", fd), ("modify", fd),
                                           ("unregister", fd)])


class TwistdReactorTests(TestCase):
    """
    Plain C{twistd sipcore} runs on the fair reactor, and C{--reactor}
    still chooses another; the server logs which one runs.
    """

    timeout = 60

    async def runTwistd(self, *before: str) -> str:
        """
        Start C{twistd [before] -n sipcore} on a loopback UDP port, wait for
        its reactor line, and stop it.

        @return: the reactor line.
        """
        env = dict(os.environ, PYTHONPATH=SIPCORE_PATH)
        proc, transport = spawnChild(self, [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            *before, "-n", "--pidfile=", "--logfile=-", "sipcore", "--admin-listen", "none",
            "--listen", "udp:0:interface=127.0.0.1"], env)
        await waitUntil(lambda: "reactor: " in proc.output or proc.ended.called,
                        what="the reactor line")
        transport.signalProcess("TERM")
        await proc.ended
        [line] = [line for line in proc.output.splitlines() if "] reactor: " in line]
        return line

    async def test_defaultIsFair(self) -> None:
        """
        Without C{--reactor}, it is L{sipcore.reactor.FairEPollReactor}.
        """
        line = await self.runTwistd()
        self.assertIn("reactor: sipcore.reactor.FairEPollReactor (listeners, UDP", line)

    async def test_reactorOptionHonoured(self) -> None:
        """
        C{--reactor poll} runs Twisted's poll reactor, and the line says it
        is not the fair one.
        """
        line = await self.runTwistd("--reactor", "poll")
        self.assertIn("reactor: twisted.internet.pollreactor.PollReactor (not sipcore's fair",
                      line)


class DescribeReactorTests(SynchronousTestCase):
    """
    L{sipcore.service.describeReactor}.
    """

    def test_names(self) -> None:
        """
        It names the reactor's class, and says whether it is the fair one.
        """
        from sipcore.reactor import FairEPollReactor
        from sipcore.service import describeReactor

        fair = FairEPollReactor()
        self.addCleanup(fair.removeAll)
        self.assertTrue(describeReactor(fair).startswith(
            "sipcore.reactor.FairEPollReactor (listeners,"))
        self.assertEqual(
            describeReactor(MemoryReactor()).split(" (")[:2],
            ["twisted.internet.testing.MemoryReactor", "not sipcore's fair reactor: a burst "
             "of stream connection events delays UDP, new connections and the database; see "
             "docs/transports.rst)"])
