"""
Tests for L{sipcore.location.memory} and L{sipcore.location.binding}.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from sipcore.location import (
    UDP_CONNECTION_ID,
    Binding,
    InvalidBinding,
    MemoryLocationStore,
    aorKey,
    splitAor,
)
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
    L{Binding}, L{aorKey} and L{splitAor}.
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

    def test_refusesUnstorableValues(self) -> None:
        """
        A binding cannot be made with a value the C{location} table cannot
        store exactly: NUL characters, text longer than its column,
        integers out of the 32-bit range or not integers, times that are
        not finite numbers, an empty C{ruid}, a user part with C{"@"};
        L{dataclasses.replace} checks its copy the same way.
        """
        invalid: list[dict[str, Any]] = [
            dict(contact="sip:a\x00b@example.com"),
            dict(contact="sip:" + "x" * 10_000),
            dict(callid="c" * 256),
            dict(cseq=2**31),
            dict(connectionId=-(2**31) - 1),
            dict(expires=float("nan")),
            dict(expires=float("inf")),
            dict(lastModified=-1.0),
            dict(q=float("nan")),
            dict(ruid=""),
            dict(username="a@b"),
            dict(methods=True),
        ]
        for bad in invalid:
            self.assertRaises(InvalidBinding, makeBinding, **bad)
        self.assertRaises(InvalidBinding, dataclasses.replace, makeBinding(), cseq=2**31)

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

    def test_refusalMessages(self) -> None:
        """
        L{InvalidBinding} names the field and the limit.
        """
        e = self.assertRaises(InvalidBinding, makeBinding, ruid="r" * 65)
        self.assertIn("ruid is 65 characters long; the location table allows 64", str(e))
        e = self.assertRaises(InvalidBinding, makeBinding, flags="1")
        self.assertIn("flags must be an integer", str(e))
        self.assertIsInstance(e, ValueError)

    def test_acceptsNullableNone(self) -> None:
        """
        The nullable columns accept C{None}.
        """
        binding = makeBinding(received=None, path=None, socket=None, methods=None, instance=None)
        self.assertIsNone(binding.received)
