"""
Tests for L{sipcore.location.group.GroupCommitStore}: unit tests with a
held store and L{task.Clock}, then integration tests against the real
PostgreSQL server that count the statements sent.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from sipcore.interfaces import ILocationStore
from sipcore.location import (
    MemoryLocationStore,
    PostgresLocationStore,
    StoreUnavailable,
)
from sipcore.location.group import GroupCommitStore
from sipcore.location.ordering import PendingWrites
from sipcore.message import Response, parseMessage
from sipcore.sip.core import StatelessTransaction
from sipcore.sip.registrar import Registrar
from sipcore.testing import FakeFlow
from tests.dbhelpers import createTestSchema, startDatabase
from tests.test_location_contract import NOW, LocationStoreContractMixin, makeBinding
from tests.test_registrar import register


class HeldStore(MemoryLocationStore):
    """
    A memory store whose every call waits until the test releases it.

    @ivar calls: C{(method, arguments, gate)} in call order; C{gate.callback}
        applies the call to the memory store, C{gate.errback} fails it
        without applying it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[Any, ...], defer.Deferred[Any]]] = []

    def _hold(self, name: str, *args: Any) -> defer.Deferred[Any]:
        gate: defer.Deferred[Any] = defer.Deferred()
        self.calls.append((name, args, gate))
        method = getattr(super(), name)
        return gate.addCallback(lambda _: method(*args))

    def save(self, bindings: Any) -> defer.Deferred[None]:
        return self._hold("save", list(bindings))

    def remove(self, ruids: Any) -> defer.Deferred[int]:
        return self._hold("remove", list(ruids))

    def removeConnections(self, serverId: int, conids: Any) -> defer.Deferred[int]:
        return self._hold("removeConnections", serverId, list(conids))

    def lookupMany(self, aors: Any, now: float) -> defer.Deferred[Any]:
        return self._hold("lookupMany", list(aors), now)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def release(self, index: int = -1) -> None:
        self.calls[index][2].callback(None)


class GroupCommitUnitTests(SynchronousTestCase):
    """
    Batching, failure and ordering of L{GroupCommitStore}, on a
    L{task.Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.inner = HeldStore()
        self.store = GroupCommitStore(self.inner, self.clock, window=0.002, maxBatch=3)

    def test_provides(self) -> None:
        """
        The wrapper provides L{ILocationStore}.
        """
        self.assertTrue(verifyObject(ILocationStore, self.store))

    def test_badArguments(self) -> None:
        """
        A negative window or a batch size below one is refused.
        """
        self.assertRaises(ValueError, GroupCommitStore, self.inner, self.clock, window=-1)
        self.assertRaises(ValueError, GroupCommitStore, self.inner, self.clock, maxBatch=0)

    def test_savesWithinWindowShareOneStatement(self) -> None:
        """
        Saves called within the window reach the wrapped store as one
        C{save} holding every binding, sent when the window ends.
        """
        d1 = self.store.save([makeBinding(ruid="a", username="a")])
        self.clock.advance(0.001)
        d2 = self.store.save([makeBinding(ruid="b", username="b")])
        self.assertEqual(self.inner.calls, [])
        self.clock.advance(0.0011)
        self.assertEqual(self.inner.names(), ["save"])
        self.assertEqual([b.ruid for b in self.inner.calls[0][1][0]], ["a", "b"])
        self.assertNoResult(d1)
        self.assertNoResult(d2)
        self.inner.release()
        self.assertIsNone(self.successResultOf(d1))
        self.assertIsNone(self.successResultOf(d2))
        self.assertEqual(self.store.stats["batches"], 1)
        self.assertEqual(self.store.stats["batchedSaves"], 2)

    def test_saveAfterWindowStartsNewBatch(self) -> None:
        """
        A save called after the window ended goes into the next batch, sent
        after the first has finished.
        """
        self.store.save([makeBinding(ruid="a", username="a")])
        self.clock.advance(0.002)
        d2 = self.store.save([makeBinding(ruid="b", username="b")])
        self.clock.advance(0.002)
        self.assertEqual(self.inner.names(), ["save"])
        self.inner.release(0)
        self.assertEqual(self.inner.names(), ["save", "save"])
        self.assertEqual([b.ruid for b in self.inner.calls[1][1][0]], ["b"])
        self.inner.release(1)
        self.successResultOf(d2)

    def test_maxBatchSendsAtOnce(self) -> None:
        """
        A batch holding C{maxBatch} bindings is sent at once, without
        waiting for its window; later saves start a new batch.
        """
        for name in "abc":
            self.store.save([makeBinding(ruid=name, username=name)])
        self.assertEqual(self.inner.names(), ["save"])
        self.assertEqual(len(self.inner.calls[0][1][0]), 3)
        self.store.save([makeBinding(ruid="d", username="d")])
        self.inner.release(0)
        self.clock.advance(0.002)
        self.assertEqual([b.ruid for b in self.inner.calls[1][1][0]], ["d"])

    def test_noResultBeforeCommit(self) -> None:
        """
        A save's L{Deferred} has no result until the batch's statement has
        committed, however long that takes.
        """
        d = self.store.save([makeBinding()])
        self.clock.advance(10)
        self.assertNoResult(d)
        self.assertEqual(len(self.inner), 0)
        self.inner.release()
        self.successResultOf(d)
        self.assertEqual(len(self.inner), 1)

    def test_failedBatchFailsEverySave(self) -> None:
        """
        When the batch's statement fails, every save in it fails with that
        failure and none of their bindings is stored.
        """
        saves = [self.store.save([makeBinding(ruid=n, username=n)]) for n in "ab"]
        self.clock.advance(0.002)
        self.inner.calls[0][2].errback(StoreUnavailable("database away"))
        for d in saves:
            self.failureResultOf(d, StoreUnavailable)
        self.assertEqual(len(self.inner), 0)
        self.assertEqual(self.store.stats["failedBatches"], 1)

    def test_removeWaitsForEarlierSave(self) -> None:
        """
        A remove called after a save of the same ruid closes the filling
        batch (sent at once) and reaches the store only once it has
        finished, so the binding ends up removed.
        """
        saved = self.store.save([makeBinding(ruid="x")])
        removed = self.store.remove(["x"])
        self.assertEqual(self.inner.names(), ["save"])
        self.inner.release(0)
        self.successResultOf(saved)
        self.assertEqual(self.inner.names(), ["save", "remove"])
        self.inner.release(1)
        self.assertEqual(self.successResultOf(removed), 1)
        self.assertEqual(len(self.inner), 0)

    def test_removeConnectionsWaitsForSaveInFlight(self) -> None:
        """
        C{removeConnections} does not overtake a batch in flight: it is
        sent after the batch finished, and removes the batch's binding.
        """
        saved = self.store.save([makeBinding(ruid="x", serverId=1, connectionId=7)])
        self.clock.advance(0.002)
        removed = self.store.removeConnections(1, [7])
        self.assertEqual(self.inner.names(), ["save"])
        self.inner.release(0)
        self.inner.release(1)
        self.successResultOf(saved)
        self.assertEqual(self.successResultOf(removed), 1)

    def test_removeRunsAfterFailedBatch(self) -> None:
        """
        A failed batch does not stop the writes queued behind it.
        """
        saved = self.store.save([makeBinding(ruid="x")])
        removed = self.store.remove(["y"])
        self.inner.calls[0][2].errback(StoreUnavailable("away"))
        self.failureResultOf(saved, StoreUnavailable)
        self.inner.release(1)
        self.assertEqual(self.successResultOf(removed), 0)

    def test_saveAfterRemoveWaits(self) -> None:
        """
        A save called after a remove is sent only once the remove has
        finished.
        """
        self.store.remove(["x"])
        saved = self.store.save([makeBinding(ruid="x")])
        self.clock.advance(0.002)
        self.assertEqual(self.inner.names(), ["remove"])
        self.inner.release(0)
        self.assertEqual(self.inner.names(), ["remove", "save"])
        self.inner.release(1)
        self.successResultOf(saved)
        self.assertEqual(len(self.inner), 1)

    def test_lookupsShareOneStatement(self) -> None:
        """
        Lookups within the window are answered by one C{lookupMany}; each
        gets only its own address of record's unexpired bindings.
        """
        self.inner.calls.clear()
        MemoryLocationStore.save(self.inner, [
            makeBinding(ruid="a", username="alice", expires=NOW + 100),
            makeBinding(ruid="b", username="bob", expires=NOW + 5),
        ])
        alice = self.store.lookup("alice@example.com", NOW)
        self.clock.advance(0.001)
        bob = self.store.lookup("bob@example.com", NOW + 10)
        self.clock.advance(0.0011)
        self.assertEqual(self.inner.names(), ["lookupMany"])
        self.inner.release()
        self.assertEqual([b.ruid for b in self.successResultOf(alice)], ["a"])
        self.assertEqual(self.successResultOf(bob), [])

    def test_lookupWaitsForPendingSaveOfItsAor(self) -> None:
        """
        A lookup of an address of record whose save is still queued waits
        for that save and sees its binding.
        """
        self.store.save([makeBinding(ruid="a", username="alice")])
        found = self.store.lookup("alice@example.com", NOW)
        self.assertEqual(self.inner.names(), ["save"])
        self.inner.release(0)
        self.clock.advance(0.002)
        self.assertEqual(self.inner.names(), ["save", "lookupMany"])
        self.inner.release(1)
        self.assertEqual([b.ruid for b in self.successResultOf(found)], ["a"])

    def test_closeSendsWaitingSaves(self) -> None:
        """
        C{close} sends the filling batch at once and closes the wrapped
        store only after it finished.
        """
        saved = self.store.save([makeBinding()])
        closed = self.store.close()
        self.assertEqual(self.inner.names(), ["save"])
        self.assertNoResult(closed)
        self.inner.release()
        self.successResultOf(saved)
        self.successResultOf(closed)


class GroupCommitRegistrarTests(SynchronousTestCase):
    """
    The registrar on a L{GroupCommitStore}: answers wait for the commit,
    a failed batch fails every REGISTER in it.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.inner = HeldStore()
        self.store = GroupCommitStore(self.inner, self.clock, window=0.002, batchLookups=False)
        self.writes = PendingWrites()
        self.registrar = Registrar(
            self.store, self.clock, isLocalDomain=lambda host: host == "example.com",
            writes=self.writes)

    def startRegister(self, user: str) -> tuple[FakeFlow, defer.Deferred[Any]]:
        flow = FakeFlow("udp", remote=("192.0.2.1", 40000))
        data = register(["<sip:{}@192.0.2.1:5070>".format(user)],
                        to="<sip:{}@example.com>".format(user), callId=user)
        tx = StatelessTransaction(parseMessage(data), flow)  # type: ignore[arg-type]
        return flow, self.registrar(tx)

    def answer(self, flow: FakeFlow) -> Response:
        [(raw, _)] = flow.sent
        response = parseMessage(raw)
        assert isinstance(response, Response)
        return response

    def test_noOkBeforeCommit(self) -> None:
        """
        Two REGISTERs share one batch; neither is answered until the batch
        committed, then both get C{200}.
        """
        started = [self.startRegister(user) for user in ("alice", "bob")]
        self.clock.advance(0.002)
        self.assertEqual(self.inner.names(), ["save"])
        self.assertEqual(len(self.inner.calls[0][1][0]), 2)
        for flow, d in started:
            self.assertEqual(flow.sent, [])
            self.assertNoResult(d)
        self.inner.release()
        for flow, d in started:
            self.successResultOf(d)
            self.assertEqual(self.answer(flow).status, 200)
        self.assertEqual(self.registrar.stats["registered"], 2)

    def test_unavailableBatchAnswers503Each(self) -> None:
        """
        A batch failing with L{StoreUnavailable} gets every REGISTER in it
        C{503} with C{Retry-After}; none is counted registered or stored.
        """
        started = [self.startRegister(user) for user in ("alice", "bob")]
        self.clock.advance(0.002)
        self.inner.calls[0][2].errback(StoreUnavailable("database away"))
        for flow, d in started:
            self.successResultOf(d)
            response = self.answer(flow)
            self.assertEqual(response.status, 503)
            self.assertIsNotNone(response.headers.first("Retry-After"))
        self.assertEqual(self.registrar.stats["registered"], 0)
        self.assertEqual(self.registrar.stats["unavailable"], 2)
        self.assertEqual(len(self.inner), 0)

    def test_failedBatchAnswers500Each(self) -> None:
        """
        A batch failing with any other error gets every REGISTER in it
        C{500}; none is counted registered or stored.
        """
        started = [self.startRegister(user) for user in ("alice", "bob")]
        self.clock.advance(0.002)
        self.inner.calls[0][2].errback(Failure(RuntimeError("constraint violated")))
        for flow, d in started:
            self.successResultOf(d)
            self.assertEqual(self.answer(flow).status, 500)
        self.assertEqual(self.registrar.stats["registered"], 0)
        self.assertEqual(len(self.inner), 0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_cleanupWaitsForBatch(self) -> None:
        """
        The registrar's work stays tracked in L{PendingWrites} until the
        batch committed, so a connection cleanup waits for it.
        """
        flow = FakeFlow("tcp", conid=9)
        data = register(["<sip:alice@192.0.2.1:5070;transport=tcp>"])
        tx = StatelessTransaction(parseMessage(data), flow)  # type: ignore[arg-type]
        self.registrar(tx)
        settled = self.writes.settled([9])
        self.clock.advance(0.002)
        self.assertNoResult(settled)
        self.inner.release()
        self.successResultOf(settled)


class GroupCommitPostgresTests(LocationStoreContractMixin, TestCase):
    """
    L{GroupCommitStore} on the real PostgreSQL store keeps the
    L{ILocationStore} contract, and sends one statement per batch.
    """

    # trial waits for the coroutine; unittest's stub says setUp returns None.
    async def setUp(self) -> None:  # type: ignore[override]
        self.schema = await createTestSchema(self)
        database = await startDatabase(self, self.schema.dsn)
        self.inner = PostgresLocationStore(database.pool)
        self.store = GroupCommitStore(self.inner, reactor, window=0.002, maxBatch=100)
        self.addCleanup(self.store.close)
        await self.store.start()

    async def test_concurrentSavesOneInsert(self) -> None:
        """
        Fifty saves called together become one C{INSERT}; fifty lookups
        called together become one C{SELECT}, and each sees its binding.
        """
        before = self.inner.statementCount["save"]
        await defer.gatherResults([
            self.store.save([makeBinding(ruid="r{}".format(i), username="u{}".format(i))])
            for i in range(50)
        ])
        self.assertEqual(self.inner.statementCount["save"], before + 1)
        found = await defer.gatherResults([
            self.store.lookup("u{}@example.com".format(i), NOW) for i in range(50)
        ])
        self.assertEqual([[b.ruid for b in f] for f in found],
                         [["r{}".format(i)] for i in range(50)])
        self.assertEqual(self.inner.statementCount["lookupMany"], 1)
        self.assertEqual(self.inner.statementCount["lookup"], 0)

    async def test_batchAtomic(self) -> None:
        """
        A batch the database refuses (one row breaks a C{CHECK} constraint
        that L{Binding} cannot know of) fails every save in it, and
        stores none of its rows, not even the valid one.
        """
        await self.schema.admin.runOperation(
            "ALTER TABLE {}.location ADD CONSTRAINT no_bob CHECK (username <> 'bob')".format(
                self.schema.name))
        saves = [
            self.store.save([makeBinding(ruid=n, username=n)]) for n in ("alice", "bob")
        ]
        results = await defer.DeferredList(saves, consumeErrors=True)
        self.assertEqual([ok for ok, _ in results], [False, False])
        self.assertEqual(await self.store.lookup("alice@example.com", NOW), [])
