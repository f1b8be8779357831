"""
L{sipcore.interfaces.IBindingListing}: the memory and PostgreSQL stores list
their unexpired bindings by filter and page, the same way.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from sipcore.interfaces import IBindingListing
from sipcore.location import MemoryLocationStore
from sipcore.location.query import MAX_PAGE, BindingQuery
from tests.test_location_contract import NOW, makeBinding
from tests.test_location_postgres import PostgresStoreTestBase


class BindingQueryTests(SynchronousTestCase):
    """
    L{BindingQuery} refuses pages and filters it cannot answer.
    """

    def test_bounds(self) -> None:
        """
        The limit is 1 to L{MAX_PAGE}, the offset not negative, filters
        without NUL.
        """
        BindingQuery(limit=MAX_PAGE)
        self.assertRaises(ValueError, BindingQuery, limit=0)
        self.assertRaises(ValueError, BindingQuery, limit=MAX_PAGE + 1)
        self.assertRaises(ValueError, BindingQuery, offset=-1)
        self.assertRaises(ValueError, BindingQuery, domain="a\x00b")


class ListingContractMixin:
    """
    Tests every L{IBindingListing} provider passes; C{self.store} is a
    started, empty store.
    """

    store: Any

    async def fill(self) -> None:
        await self.store.save([
            makeBinding(ruid="r1", username="bob", domain="example.com", connectionId=5),
            makeBinding(ruid="r2", username="alice", domain="example.com", connectionId=6),
            makeBinding(ruid="r3", username="alice", domain="example.org", connectionId=5),
            makeBinding(ruid="r4", username="alice", domain="example.com", connectionId=6),
            makeBinding(ruid="r5", username="carol", domain="example.com", expires=NOW - 1),
        ])

    async def ruids(self, **query: Any) -> list[str]:
        bindings = await self.store.listBindings(NOW, BindingQuery(**query))
        return [b.ruid for b in bindings]

    async def test_provides(self) -> None:
        """
        The store provides L{IBindingListing}.
        """
        self.assertTrue(verifyObject(IBindingListing, self.store))  # type: ignore[attr-defined]

    async def test_orderAndExpiry(self) -> None:
        """
        Unexpired bindings come in user part, domain, ruid order.
        """
        await self.fill()
        self.assertEqual(await self.ruids(), ["r2", "r4", "r3", "r1"])  # type: ignore[attr-defined]

    async def test_filters(self) -> None:
        """
        Domain, user part and connection id filter, together or alone.
        """
        await self.fill()
        self.assertEqual(await self.ruids(domain="example.org"), ["r3"])  # type: ignore
        self.assertEqual(await self.ruids(username="alice"), ["r2", "r4", "r3"])  # type: ignore
        self.assertEqual(await self.ruids(conid=5), ["r3", "r1"])  # type: ignore
        self.assertEqual(  # type: ignore[attr-defined]
            await self.ruids(username="alice", domain="example.com", conid=6), ["r2", "r4"])
        self.assertEqual(await self.ruids(username="'; DROP TABLE location; --"),  # type: ignore
                         [])

    async def test_pages(self) -> None:
        """
        Offset and limit take a page of the ordered list.
        """
        await self.fill()
        self.assertEqual(await self.ruids(limit=2), ["r2", "r4"])  # type: ignore[attr-defined]
        self.assertEqual(await self.ruids(offset=2, limit=2), ["r3", "r1"])  # type: ignore
        self.assertEqual(await self.ruids(offset=4), [])  # type: ignore[attr-defined]


class MemoryListingTests(ListingContractMixin, TestCase):
    """
    L{MemoryLocationStore} lists its bindings.
    """

    def setUp(self) -> None:
        self.store = MemoryLocationStore()


class PostgresListingTests(ListingContractMixin, PostgresStoreTestBase):
    """
    L{sipcore.location.PostgresLocationStore} lists its bindings with one
    parameterized statement.
    """
