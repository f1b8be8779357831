# -*- test-case-name: tests.test_location_memory,tests.test_location_postgres -*-
"""
The L{ILocationStore} contract, written once and run against every store.

L{LocationStoreContractMixin} holds the tests as coroutines over
C{self.store}.  A concrete test case mixes it in and sets C{self.store} (a
started store holding nothing) in C{setUp}:

  - with C{twisted.trial.unittest.TestCase} (real reactor) the coroutines
    run as they are (the PostgreSQL store);
  - with C{SynchronousTestCase}, decorate the class with L{synchronously}:
    each test then runs its coroutine and requires it to finish without the
    reactor (the memory store, whose Deferreds have all fired).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from twisted.internet import defer
from zope.interface.verify import verifyObject

from sipcore.interfaces import ILocationStore
from sipcore.location import Binding

__all__ = ["LocationStoreContractMixin", "makeBinding", "synchronously"]

C = TypeVar("C", bound=type)

#: A time well inside the range every store handles.
NOW = 1_700_000_000.0


def makeBinding(**kwargs: Any) -> Binding:
    """
    A binding with plausible values; C{kwargs} override them.
    """
    values: dict[str, Any] = dict(
        ruid="ruid-1",
        username="alice",
        domain="example.com",
        contact="sip:alice@192.0.2.10:5060;transport=tcp",
        expires=NOW + 3600,
        q=1.0,
        callid="call-1@192.0.2.10",
        cseq=7,
        lastModified=NOW,
        flags=0,
        cflags=0,
        userAgent="test-agent/1.0",
        socket="tcp:127.0.0.1:5060",
        serverId=1,
        connectionId=11,
    )
    values.update(kwargs)
    return Binding(**values)


def synchronously(cls: C) -> C:
    """
    Class decorator for a C{SynchronousTestCase} using the mixin: replace
    each coroutine test with a method that runs it and requires it to have
    finished (successfully) without the reactor.
    """

    def wrap(method: Callable[[Any], Coroutine[Any, Any, None]]) -> Callable[[Any], None]:
        @functools.wraps(method)
        def run(self: Any) -> None:
            self.successResultOf(defer.Deferred.fromCoroutine(method(self)))

        return run

    for name, value in inspect.getmembers(LocationStoreContractMixin):
        if name.startswith("test_") and inspect.iscoroutinefunction(value):
            setattr(cls, name, wrap(value))
    return cls


#: Text that has broken SQL built by string formatting, and text outside
#: ASCII; each must be stored exactly.
HOSTILE_TEXTS = [
    "'; DROP TABLE location; --",
    "x' OR '1'='1",
    'double "quotes" and \\backslashes\\',
    "semi;colons;;",
    "%s %(name)s %% {0} {}",
    "line\nbreak\ttab\rreturn",
    "unicode: \u00e9\u00e8 \u4e2d\u6587 \U0001f600 \u202eRTL \u0301combining",
    "$$ dollar $tag$ quoting $$",
    "E'\\x00 escaped'",
]


class LocationStoreContractMixin:
    """
    Tests every L{ILocationStore} provider must pass.  C{self.store} is a
    started, empty store.
    """

    store: Any

    async def assertFailsWith(self, d: defer.Deferred[Any],
                              *types: type[BaseException]) -> BaseException:
        """
        Await C{d} and require it to fail with one of C{types}.

        @return: the exception.
        """
        try:
            result = await d
        except types as e:
            return e
        self.fail(  # type: ignore[attr-defined]
            "expected {}, got result {!r}".format([t.__name__ for t in types], result)
        )
        raise AssertionError("unreachable")

    async def test_provides(self) -> None:
        """
        The store provides L{ILocationStore}.
        """
        self.assertTrue(verifyObject(ILocationStore, self.store))  # type: ignore[attr-defined]

    async def test_available(self) -> None:
        """
        A started store whose data is reachable says it is available.
        """
        self.assertIs(self.store.available, True)  # type: ignore[attr-defined]

    async def test_lookupMany(self) -> None:
        """
        C{lookupMany} answers the unexpired bindings of each address of
        record that has some, and leaves out those that have none; each
        call counts in C{statementCount}.
        """
        alice = makeBinding()
        bob = makeBinding(ruid="ruid-2", username="bob", contact="sip:bob@192.0.2.11")
        gone = makeBinding(ruid="ruid-3", username="carol", expires=NOW - 1)
        await self.store.save([alice, bob, gone])
        before = self.store.statementCount["lookupMany"]
        found = await self.store.lookupMany(
            ["alice@example.com", "bob@example.com", "carol@example.com", "nobody@example.com"],
            NOW)
        self.assertEqual(found, {"alice@example.com": [alice],  # type: ignore[attr-defined]
                                 "bob@example.com": [bob]})
        self.assertEqual(self.store.statementCount["lookupMany"],  # type: ignore[attr-defined]
                         before + 1)

    async def test_lookupUnknown(self) -> None:
        """
        An address of record with no bindings has an empty lookup.
        """
        self.assertEqual(await self.store.lookup("nobody@example.com", NOW), [])  # type: ignore[attr-defined]

    async def test_saveThenLookup(self) -> None:
        """
        A saved binding comes back from C{lookup} equal in every field,
        including the optional ones.
        """
        binding = makeBinding(
            received="sip:198.51.100.7:40123",
            path="<sip:proxy.example.com;lr>",
            q=0.5,
            methods=8191,
            instance="<urn:uuid:00000000-0000-1000-8000-000a95a0e128>",
            regId=1,
            flags=3,
            cflags=64,
            keepalive=1,
            partition=2,
            expires=NOW + 3600.25,
            lastModified=NOW - 0.5,
        )
        self.assertIsNone(await self.store.save([binding]))  # type: ignore[attr-defined]
        found = await self.store.lookup("alice@example.com", NOW)
        self.assertEqual(found, [binding])  # type: ignore[attr-defined]

    async def test_saveEmpty(self) -> None:
        """
        Saving no bindings succeeds and changes nothing.
        """
        self.assertIsNone(await self.store.save([]))  # type: ignore[attr-defined]

    async def test_refreshByRuid(self) -> None:
        """
        Saving a binding with the C{ruid} of a stored one replaces it.
        """
        await self.store.save([makeBinding(contact="sip:alice@192.0.2.10", cseq=1)])
        refreshed = makeBinding(contact="sip:alice@192.0.2.99", cseq=2, expires=NOW + 7200)
        await self.store.save([refreshed])
        self.assertEqual(await self.store.lookup("alice@example.com", NOW), [refreshed])  # type: ignore[attr-defined]

    async def test_ruidMovesBetweenAors(self) -> None:
        """
        Saving a C{ruid} under another address of record moves it: the old
        address of record no longer has it.
        """
        await self.store.save([makeBinding(username="alice")])
        moved = makeBinding(username="bob")
        await self.store.save([moved])
        self.assertEqual(await self.store.lookup("alice@example.com", NOW), [])  # type: ignore[attr-defined]
        self.assertEqual(await self.store.lookup("bob@example.com", NOW), [moved])  # type: ignore[attr-defined]

    async def test_batchRepeatingRuidLastWins(self) -> None:
        """
        When one C{save} repeats a C{ruid}, the last binding with it wins.
        """
        first = makeBinding(contact="sip:first@192.0.2.1")
        last = makeBinding(contact="sip:last@192.0.2.2")
        await self.store.save([first, last])
        self.assertEqual(await self.store.lookup("alice@example.com", NOW), [last])  # type: ignore[attr-defined]

    async def test_lookupOrder(self) -> None:
        """
        C{lookup} answers highest C{q} first; among equal C{q}, the most
        recently modified first; then by C{ruid}.
        """
        bindings = [
            makeBinding(ruid="a", q=0.1),
            makeBinding(ruid="b", q=1.0),
            makeBinding(ruid="c", q=0.5, lastModified=NOW - 10),
            makeBinding(ruid="d", q=0.5, lastModified=NOW),
            makeBinding(ruid="f", q=0.5, lastModified=NOW - 10),
            makeBinding(ruid="e", q=0.5, lastModified=NOW - 10),
        ]
        await self.store.save(bindings)
        found = await self.store.lookup("alice@example.com", NOW)
        self.assertEqual([b.ruid for b in found], ["b", "d", "c", "e", "f", "a"])  # type: ignore[attr-defined]

    async def test_lookupSkipsExpired(self) -> None:
        """
        C{lookup} leaves out bindings whose expiry is at or before C{now}.
        """
        await self.store.save(
            [
                makeBinding(ruid="past", expires=NOW - 1),
                makeBinding(ruid="exactly", expires=NOW),
                makeBinding(ruid="future", expires=NOW + 1),
            ]
        )
        found = await self.store.lookup("alice@example.com", NOW)
        self.assertEqual([b.ruid for b in found], ["future"])  # type: ignore[attr-defined]
        later = await self.store.lookup("alice@example.com", NOW - 2)
        self.assertEqual(sorted(b.ruid for b in later), ["exactly", "future", "past"])  # type: ignore[attr-defined]

    async def test_aorWithoutDomain(self) -> None:
        """
        A binding with an empty domain is found under its bare user name
        only, and one with a domain is not found under the bare user name.
        """
        bare = makeBinding(ruid="bare", domain="")
        full = makeBinding(ruid="full", domain="example.com")
        await self.store.save([bare, full])
        self.assertEqual(bare.aor, "alice")  # type: ignore[attr-defined]
        self.assertEqual(await self.store.lookup("alice", NOW), [bare])  # type: ignore[attr-defined]
        self.assertEqual(await self.store.lookup("alice@example.com", NOW), [full])  # type: ignore[attr-defined]

    async def test_remove(self) -> None:
        """
        C{remove} deletes the named bindings and answers how many it found;
        unknown C{ruid}s count for nothing.
        """
        await self.store.save(
            [makeBinding(ruid="r1"), makeBinding(ruid="r2"), makeBinding(ruid="r3")]
        )
        self.assertEqual(await self.store.remove(["r1", "r3", "unknown"]), 2)  # type: ignore[attr-defined]
        self.assertEqual(await self.store.remove(["r1"]), 0)  # type: ignore[attr-defined]
        self.assertEqual(await self.store.remove([]), 0)  # type: ignore[attr-defined]
        found = await self.store.lookup("alice@example.com", NOW)
        self.assertEqual([b.ruid for b in found], ["r2"])  # type: ignore[attr-defined]

    async def _connectionsFixture(self) -> None:
        await self.store.save(
            [
                makeBinding(ruid="s1c1", serverId=1, connectionId=1),
                makeBinding(ruid="s1c2", serverId=1, connectionId=2),
                makeBinding(ruid="s1c2b", username="bob", serverId=1, connectionId=2),
                makeBinding(ruid="s1c3", serverId=1, connectionId=3),
                makeBinding(ruid="s2c1", serverId=2, connectionId=1),
                makeBinding(ruid="s2c2", serverId=2, connectionId=2),
                makeBinding(ruid="s1udp", serverId=1, connectionId=-1),
                makeBinding(ruid="s1zero", serverId=1, connectionId=0),
            ]
        )

    async def _remaining(self) -> list[str]:
        found = await self.store.lookup("alice@example.com", NOW)
        found += await self.store.lookup("bob@example.com", NOW)
        return sorted(b.ruid for b in found)

    async def test_removeConnections(self) -> None:
        """
        C{removeConnections} removes exactly the bindings of that server on
        those connections: not the same connection ids of another server,
        not the server's other connections, not its UDP bindings.
        """
        await self._connectionsFixture()
        self.assertEqual(await self.store.removeConnections(1, [1, 2, 99]), 3)  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            await self._remaining(), ["s1c3", "s1udp", "s1zero", "s2c1", "s2c2"]
        )
        self.assertEqual(await self.store.removeConnections(1, [1, 2]), 0)  # type: ignore[attr-defined]
        self.assertEqual(await self.store.removeConnections(2, []), 0)  # type: ignore[attr-defined]

    async def test_removeConnectionsOneStatement(self) -> None:
        """
        C{removeConnections} handles any number of connection ids in one
        statement, and sends none for an empty list.
        """
        await self.store.save(
            [makeBinding(ruid="c{}".format(i), connectionId=i) for i in range(1, 201)]
        )
        before = self.store.statementCount["removeConnections"]
        self.assertEqual(await self.store.removeConnections(1, range(1, 501)), 200)  # type: ignore[attr-defined]
        self.assertEqual(self.store.statementCount["removeConnections"], before + 1)  # type: ignore[attr-defined]
        await self.store.removeConnections(1, [])
        self.assertEqual(self.store.statementCount["removeConnections"], before + 1)  # type: ignore[attr-defined]

    async def test_removeExpired(self) -> None:
        """
        C{removeExpired} removes the bindings whose expiry is at or before
        C{now} and answers with them, ordered by C{ruid}.
        """
        await self.store.save(
            [
                makeBinding(ruid="past", expires=NOW - 100),
                makeBinding(ruid="exactly", expires=NOW),
                makeBinding(ruid="future", expires=NOW + 1, username="bob"),
            ]
        )
        removed = await self.store.removeExpired(NOW)
        self.assertEqual([(b.ruid, b.expires) for b in removed],  # type: ignore[attr-defined]
                         [("exactly", NOW), ("past", NOW - 100)])
        self.assertEqual(await self.store.removeExpired(NOW), [])  # type: ignore[attr-defined]
        self.assertEqual(await self.store.lookup("alice@example.com", 0), [])  # type: ignore[attr-defined]
        found = await self.store.lookup("bob@example.com", 0)
        self.assertEqual([b.ruid for b in found], ["future"])  # type: ignore[attr-defined]

    async def test_purgeServer(self) -> None:
        """
        C{purgeServer} removes the server's bindings that are bound to a
        connection (C{connectionId > 0}) and keeps its UDP bindings (C{-1}),
        rows with the column default (C{0}) and other servers' bindings.
        """
        await self._connectionsFixture()
        self.assertEqual(await self.store.purgeServer(1, NOW + 1), 4)  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            await self._remaining(), ["s1udp", "s1zero", "s2c1", "s2c2"]
        )
        self.assertEqual(await self.store.purgeServer(1, NOW + 1), 0)  # type: ignore[attr-defined]

    async def test_purgeServerKeepsNewerBindings(self) -> None:
        """
        C{purgeServer} keeps bindings written at or after C{before}: they
        were registered since the start and their connections are live.
        """
        await self.store.save([  # type: ignore[attr-defined]
            makeBinding(ruid="old", serverId=1, connectionId=5, lastModified=NOW - 10),
            makeBinding(ruid="new", serverId=1, connectionId=6, lastModified=NOW),
        ])
        self.assertEqual(await self.store.purgeServer(1, NOW), 1)  # type: ignore[attr-defined]
        self.assertEqual(await self._remaining(), ["new"])  # type: ignore[attr-defined]

    async def test_hostileTextStoredExactly(self) -> None:
        """
        Quotes, semicolons, SQL fragments, format placeholders, control
        characters and non-ASCII text in every text field are stored and
        returned exactly (and never executed: the store keeps working).
        """
        bindings = []
        for i, text in enumerate(HOSTILE_TEXTS):
            bindings.append(
                makeBinding(
                    ruid="h{}".format(i) + text[:40],
                    username="user" + text[:40].replace("@", ""),
                    domain=text[:60].replace("@", ""),
                    contact="sip:" + text,
                    received=text,
                    path=text,
                    callid=text,
                    userAgent=text,
                    socket=text[:64],
                    instance=text,
                )
            )
        await self.store.save(bindings)
        for binding in bindings:
            self.assertEqual(await self.store.lookup(binding.aor, NOW), [binding])  # type: ignore[attr-defined]
        self.assertEqual(await self.store.remove([b.ruid for b in bindings]), len(bindings))  # type: ignore[attr-defined]

    async def test_longestValuesStoredExactly(self) -> None:
        """
        Text exactly as long as the table allows (counted in characters,
        multi-byte ones included) is stored exactly.
        """
        binding = makeBinding(
            ruid="\u00e9" * 64,
            username="u" * 64,
            domain="d" * 64,
            contact="\U0001f600" * 512,
            received="r" * 128,
            path="p" * 512,
            callid="c" * 255,
            userAgent="a" * 255,
            socket="s" * 64,
            instance="i" * 255,
        )
        await self.store.save([binding])
        self.assertEqual(await self.store.lookup(binding.aor, NOW), [binding])  # type: ignore[attr-defined]

    async def test_hostileArguments(self) -> None:
        """
        Hostile text in C{lookup} and C{remove} arguments matches nothing
        and harms nothing.
        """
        keep = makeBinding()
        await self.store.save([keep])
        for text in HOSTILE_TEXTS + ["a\x00b"]:
            self.assertEqual(await self.store.lookup(text, NOW), [])  # type: ignore[attr-defined]
            self.assertEqual(await self.store.lookup("alice@" + text, NOW), [])  # type: ignore[attr-defined]
        self.assertEqual(await self.store.remove(HOSTILE_TEXTS + ["a\x00b"]), 0)  # type: ignore[attr-defined]
        self.assertEqual(await self.store.lookup("alice@example.com", NOW), [keep])  # type: ignore[attr-defined]
