"""
Tests for L{sipcore.location.memory} and L{sipcore.location.binding}.
"""

from __future__ import annotations

import dataclasses

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from sipcore.location import (
    UDP_CONNECTION_ID,
    Binding,
    InvalidBinding,
    MemoryLocationStore,
    aorKey,
    checkBinding,
    splitAor,
)
from sipcore.location import binding as bindingmodule
from tests.test_location_contract import NOW, LocationStoreContractMixin, makeBinding, synchronously


@synchronously
class MemoryLocationStoreContractTests(LocationStoreContractMixin, SynchronousTestCase):
    """
    L{MemoryLocationStore} keeps the L{ILocationStore} contract, with every
    Deferred already fired.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.store = MemoryLocationStore(self.clock)
        self.successResultOf(self.store.start())


class MemoryLocationStoreTests(SynchronousTestCase):
    """
    Behaviour of L{MemoryLocationStore} beyond the contract: its indexes
    stay consistent.
    """

    def setUp(self) -> None:
        self.store = MemoryLocationStore(task.Clock())

    def test_connectionIndexFollowsRefresh(self) -> None:
        """
        When a refresh moves a binding to another connection, removing the
        old connection leaves it alone and removing the new one removes it.
        """
        self.successResultOf(self.store.save([makeBinding(connectionId=5)]))
        self.successResultOf(self.store.save([makeBinding(connectionId=6)]))
        self.assertEqual(self.successResultOf(self.store.removeConnections(1, [5])), 0)
        self.assertEqual(len(self.store), 1)
        self.assertEqual(self.successResultOf(self.store.removeConnections(1, [6])), 1)
        self.assertEqual(len(self.store), 0)

    def test_noStaleIndexEntries(self) -> None:
        """
        After its bindings are gone, an address of record or a connection
        leaves nothing behind in the indexes.
        """
        self.successResultOf(
            self.store.save(
                [makeBinding(ruid="a", connectionId=1), makeBinding(ruid="b", connectionId=2)]
            )
        )
        self.successResultOf(self.store.remove(["a"]))
        self.successResultOf(self.store.removeExpired(NOW + 10**6))
        self.assertEqual(self.store._byAor, {})
        self.assertEqual(self.store._byConnection, {})
        self.assertEqual(self.store._aorOfRuid, {})

    def test_refusedBatchStoresNothing(self) -> None:
        """
        A batch with one unstorable binding stores none of them and counts
        no statement.
        """
        d = self.store.save([makeBinding(ruid="ok"), makeBinding(ruid="bad", callid="c" * 256)])
        self.failureResultOf(d, InvalidBinding)
        self.assertEqual(len(self.store), 0)
        self.assertEqual(self.store.statementCount["save"], 0)

    def test_allBindings(self) -> None:
        """
        C{allBindings} lists every binding, expired ones included, by
        C{ruid}.
        """
        bindings = [makeBinding(ruid="b", expires=1.0), makeBinding(ruid="a")]
        self.successResultOf(self.store.save(bindings))
        self.assertEqual(self.store.allBindings(), [bindings[1], bindings[0]])

    def test_closeAndStartFire(self) -> None:
        """
        C{start} and C{close} fire at once with C{None}.
        """
        self.assertIsNone(self.successResultOf(self.store.start()))
        self.assertIsNone(self.successResultOf(self.store.close()))


class BindingTests(SynchronousTestCase):
    """
    L{Binding}, L{aorKey}, L{splitAor} and L{checkBinding}.
    """

    def test_aor(self) -> None:
        """
        C{aor} is C{username@domain}, or the bare user name when the domain
        is empty.
        """
        self.assertEqual(makeBinding(username="bob", domain="example.org").aor, "bob@example.org")
        self.assertEqual(makeBinding(username="bob", domain="").aor, "bob")
        self.assertEqual(aorKey("bob", ""), "bob")
        self.assertEqual(aorKey("bob", "example.org"), "bob@example.org")

    def test_checkRemembersOnlyPasses(self) -> None:
        """
        L{checkBinding} remembers a binding that passed, without changing
        how it compares or prints; a refused binding is refused every time,
        and a changed copy of a passed one is checked afresh.
        """
        good = makeBinding()
        before = repr(good)
        checkBinding(good)
        checkBinding(good)
        self.assertEqual(repr(good), before)
        self.assertEqual(good, makeBinding())
        bad = makeBinding(contact="x" * 513)
        for _ in range(2):
            self.assertRaises(InvalidBinding, checkBinding, bad)
        self.assertRaises(InvalidBinding, checkBinding, dataclasses.replace(good, cseq=2**31))

    def test_splitAor(self) -> None:
        """
        L{splitAor} splits at the first C{"@"} and inverts L{aorKey}.
        """
        self.assertEqual(splitAor("bob@example.org"), ("bob", "example.org"))
        self.assertEqual(splitAor("bob"), ("bob", ""))
        self.assertEqual(splitAor("bob@a@b"), ("bob", "a@b"))
        self.assertEqual(splitAor(aorKey("bob", "x")), ("bob", "x"))

    def test_kamailioDefaults(self) -> None:
        """
        A binding defaults to Kamailio's values: not bound to a stream
        connection (C{connection_id} C{-1}), q 1.0, the column defaults for
        Call-ID and CSeq.
        """
        binding = Binding(ruid="r", username="u", domain="d", contact="sip:u@h", expires=1.0)
        self.assertEqual(binding.connectionId, UDP_CONNECTION_ID)
        self.assertEqual(UDP_CONNECTION_ID, -1)
        self.assertFalse(binding.boundToConnection)
        self.assertTrue(makeBinding(connectionId=3).boundToConnection)
        self.assertEqual((binding.q, binding.callid, binding.cseq), (1.0, "Default-Call-ID", 1))

    def test_makeBinding(self) -> None:
        """
        L{binding.makeBinding} builds the binding the dataclass constructor
        builds from the same fields: equal, same hash and repr, as frozen,
        and checked like any other; a missing or unknown field is refused.
        """
        model = makeBinding(instance="<urn:uuid:1>", regId=2, path="<sip:p>")
        values = dataclasses.asdict(model)
        made = bindingmodule.makeBinding(dict(values))
        self.assertEqual(made, model)
        self.assertEqual(hash(made), hash(model))
        self.assertEqual(repr(made), repr(model))
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, made, "contact", "x")
        checkBinding(made)
        self.assertRaises(InvalidBinding, checkBinding,
                          bindingmodule.makeBinding(dict(values, cseq=2**31)))
        missing = dict(values)
        del missing["partition"]
        self.assertRaises(TypeError, bindingmodule.makeBinding, missing)
        self.assertRaises(TypeError, bindingmodule.makeBinding, dict(values, color="red"))

    def test_frozen(self) -> None:
        """
        Bindings are immutable; L{dataclasses.replace} makes changed copies.
        """
        binding = makeBinding()
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, binding, "contact", "x")
        self.assertEqual(dataclasses.replace(binding, cseq=9).cseq, 9)

    def test_keywordOnly(self) -> None:
        """
        Fields are keyword-only, so a call cannot silently swap two of them.
        """
        self.assertRaises(TypeError, Binding, "r", "u", "d", "sip:u@h", 1.0)

    def test_isExpired(self) -> None:
        """
        A binding has expired at its expiry time and after it.
        """
        binding = makeBinding(expires=100.0)
        self.assertFalse(binding.isExpired(99.9))
        self.assertTrue(binding.isExpired(100.0))
        self.assertTrue(binding.isExpired(100.1))

    def test_checkBindingMessages(self) -> None:
        """
        L{checkBinding} names the field and the limit.
        """
        e = self.assertRaises(InvalidBinding, checkBinding, makeBinding(ruid="r" * 65))
        self.assertIn("ruid is 65 characters long; the location table allows 64", str(e))
        e = self.assertRaises(InvalidBinding, checkBinding, makeBinding(flags="1"))
        self.assertIn("flags must be an integer", str(e))
        self.assertIsInstance(e, ValueError)

    def test_checkBindingAcceptsNullableNone(self) -> None:
        """
        The nullable columns accept C{None}.
        """
        checkBinding(
            makeBinding(received=None, path=None, socket=None, methods=None, instance=None)
        )
