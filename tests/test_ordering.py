"""
Tests for L{sipcore.location.ordering}.
"""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from sipcore.location.ordering import PendingWrites


class PendingWritesTests(SynchronousTestCase):
    """
    L{PendingWrites} lets a cleanup wait for the registration work in
    flight on the same connection.
    """

    def test_settledAtOnceWhenNothingInFlight(self) -> None:
        """
        With no work in flight for the connection, C{settled} has fired.
        """
        writes = PendingWrites()
        self.assertIsNone(self.successResultOf(writes.settled([1, 2])))

    def test_waitsForWorkOfThatConnection(self) -> None:
        """
        C{settled} fires only after the work tracked for the connection has
        finished, and the work's own result passes through unchanged.
        """
        writes = PendingWrites()
        work: defer.Deferred[str] = defer.Deferred()
        self.assertIs(writes.track(7, work), work)
        settled = writes.settled([7])
        self.assertNoResult(settled)
        self.assertEqual(len(writes), 1)
        work.callback("row written")
        self.successResultOf(settled)
        self.assertEqual(self.successResultOf(work), "row written")
        self.assertEqual(len(writes), 0)

    def test_failedWorkSettlesToo(self) -> None:
        """
        Work that fails still counts as finished, and its failure stays
        with its own Deferred.
        """
        writes = PendingWrites()
        work: defer.Deferred[None] = defer.Deferred()
        writes.track(3, work)
        settled = writes.settled([3])
        work.errback(RuntimeError("database away"))
        self.successResultOf(settled)
        self.failureResultOf(work, RuntimeError)

    def test_otherConnectionsDoNotDelay(self) -> None:
        """
        Work in flight for another connection does not hold a cleanup back.
        """
        writes = PendingWrites()
        writes.track(1, defer.Deferred())
        self.successResultOf(writes.settled([2]))

    def test_laterWorkIsNotAwaited(self) -> None:
        """
        C{settled} waits for the work in flight when it was called, not for
        work started afterwards.
        """
        writes = PendingWrites()
        first: defer.Deferred[None] = defer.Deferred()
        writes.track(5, first)
        settled = writes.settled([5])
        writes.track(5, defer.Deferred())
        first.callback(None)
        self.successResultOf(settled)

    def test_untrackedConnection(self) -> None:
        """
        Work without a connection id (UDP) and work already done are not
        tracked.
        """
        writes = PendingWrites()
        writes.track(None, defer.Deferred())
        writes.track(4, defer.succeed(None))
        self.assertEqual(len(writes), 0)
