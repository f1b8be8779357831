"""
Tests for the registration events the registrar fires
(C{registration:added}, C{registration:refreshed}, C{registration:removed}) and the expiry
backstop fires (C{registration:expired}).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipcore.events import (
    ALL_EVENTS,
    REGISTRATION_ADDED,
    REGISTRATION_EVENTS,
    REGISTRATION_EXPIRED,
    REGISTRATION_REFRESHED,
    REGISTRATION_REMOVED,
    RegistrationEvent,
)
from sipcore.location import MemoryLocationStore
from sipcore.location.ordering import PendingWrites
from sipcore.plugin import Handler, handles
from sipcore.service import StoreService
from sipcore.sip.core import StatelessTransaction
from sipcore.sip.registrar import Registrar, RegistrarPolicy
from sipcore.testing import FakeFlow, parseRequest
from tests.test_location_contract import makeBinding
from tests.test_registrar import START, DownStore, register


class RegistrationEventTests(SynchronousTestCase):
    """
    The registrar announces each binding it adds, refreshes or removes,
    once, after the store made the change.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = MemoryLocationStore(self.clock)
        self.events: list[RegistrationEvent] = []
        self.registrar = self.makeRegistrar(self.store)

    def makeRegistrar(self, store: MemoryLocationStore, **policy: object) -> Registrar:
        return Registrar(
            store, self.clock, isLocalDomain=lambda host: host == "example.com",
            serverId=7, policy=RegistrarPolicy(**policy),  # type: ignore[arg-type]
            writes=PendingWrites(), announce=self.events.append)

    def send(self, data: bytes, registrar: Registrar | None = None) -> int:
        flow = FakeFlow("udp", remote=("192.0.2.1", 40000))
        tx = StatelessTransaction(parseRequest(data), flow)
        response = self.successResultOf((registrar or self.registrar)(tx))
        assert response is not None
        return response.status

    def names(self) -> list[tuple[str, str]]:
        return [(event.name, event.contact) for event in self.events]

    def test_names(self) -> None:
        """
        The four registration events are known event names, so handlers
        may subscribe to them with L{handles}.
        """
        self.assertEqual(REGISTRATION_EVENTS, (
            "registration:added", "registration:refreshed", "registration:removed",
            "registration:expired"))
        for name in REGISTRATION_EVENTS:
            self.assertIn(name, ALL_EVENTS)

        class Listener(Handler):
            @handles(*REGISTRATION_EVENTS)
            def changed(self, event: RegistrationEvent) -> None:
                pass

        self.assertEqual(Listener.handledEvents(), REGISTRATION_EVENTS)

    def test_addedThenRefreshedThenRemoved(self) -> None:
        """
        A new contact is C{added}; the same contact registered again is
        C{refreshed}; C{expires=0} makes it C{removed}.  Each event carries
        the binding's values and the registrar's clock and server id.
        """
        self.assertEqual(self.send(register(["<sip:alice@192.0.2.1:5070>"], 600)), 200)
        [added] = self.events
        self.assertEqual(added.name, REGISTRATION_ADDED)
        self.assertEqual(added.aor, "alice@example.com")
        self.assertEqual(added.contact, "sip:alice@192.0.2.1:5070")
        self.assertEqual(added.expires, START + 600)
        self.assertEqual(added.time, START)
        self.assertEqual(added.serverId, 7)
        self.assertEqual(added.connectionId, -1)
        self.assertEqual(added.received, "sip:192.0.2.1:40000;transport=udp")
        self.clock.advance(10)
        self.assertEqual(self.send(register(["<sip:alice@192.0.2.1:5070>"], 600, cseq=2)), 200)
        self.assertEqual(self.events[1].name, REGISTRATION_REFRESHED)
        self.assertEqual(self.events[1].ruid, added.ruid)
        self.assertEqual(self.events[1].expires, START + 610)
        self.assertEqual(self.send(register(["<sip:alice@192.0.2.1:5070>"], 0, cseq=3)), 200)
        self.assertEqual(self.names(), [
            (REGISTRATION_ADDED, "sip:alice@192.0.2.1:5070"),
            (REGISTRATION_REFRESHED, "sip:alice@192.0.2.1:5070"),
            (REGISTRATION_REMOVED, "sip:alice@192.0.2.1:5070"),
        ])
        self.assertEqual(self.events[2].ruid, added.ruid)

    def test_wildcardRemovesEach(self) -> None:
        """
        C{Contact: *} with C{Expires: 0} fires one C{removed} per binding
        of the address of record.
        """
        self.send(register(["<sip:alice@192.0.2.1:5070>", "<sip:alice@192.0.2.2:5070>"], 600))
        del self.events[:]
        self.assertEqual(self.send(register(["*"], 0, cseq=2)), 200)
        self.assertEqual(sorted(self.names()), [
            (REGISTRATION_REMOVED, "sip:alice@192.0.2.1:5070"),
            (REGISTRATION_REMOVED, "sip:alice@192.0.2.2:5070"),
        ])

    def test_queryAndRetransmissionFireNothing(self) -> None:
        """
        A REGISTER without Contact (a query) changes nothing and fires
        nothing; neither does a retransmission the store already holds,
        nor removing a contact that is not registered.
        """
        data = register(["<sip:alice@192.0.2.1:5070>"], 600)
        self.send(data)
        self.send(data)
        self.send(register(None, cseq=2))
        self.send(register(["<sip:alice@192.0.2.9:5070>"], 0, cseq=3))
        self.assertEqual(self.names(), [(REGISTRATION_ADDED, "sip:alice@192.0.2.1:5070")])

    def test_replacedOldestIsRemoved(self) -> None:
        """
        A binding removed to keep the address of record within
        C{maxContacts} fires C{removed}; the new one C{added}.
        """
        registrar = self.makeRegistrar(self.store, maxContacts=1)
        self.send(register(["<sip:alice@192.0.2.1:5070>"], 600), registrar)
        self.clock.advance(1)
        self.send(register(["<sip:alice@192.0.2.2:5070>"], 600, callId="other"), registrar)
        self.assertEqual(self.names(), [
            (REGISTRATION_ADDED, "sip:alice@192.0.2.1:5070"),
            (REGISTRATION_REMOVED, "sip:alice@192.0.2.1:5070"),
            (REGISTRATION_ADDED, "sip:alice@192.0.2.2:5070"),
        ])

    def test_failedWriteFiresNothing(self) -> None:
        """
        A REGISTER the store could not serve (503) fires no event.
        """
        registrar = self.makeRegistrar(DownStore(self.clock))
        self.assertEqual(self.send(register(["<sip:alice@192.0.2.1:5070>"], 600), registrar), 503)
        self.assertEqual(self.events, [])


class ExpiryEventTests(SynchronousTestCase):
    """
    The expiry backstop fires C{registration:expired} once for each
    binding it removes.
    """

    def test_expiredOnce(self) -> None:
        """
        Every C{expiryInterval} seconds the store service removes the
        bindings that expired and fires one C{registration:expired} for
        each, with the binding's values; a later run fires nothing for
        them again, and bindings still valid fire nothing.
        """
        clock = Clock()
        clock.advance(START)
        store = MemoryLocationStore(clock)
        events: list[RegistrationEvent] = []
        service = StoreService(store, clock, serverId=4, expiryInterval=60.0,
                               announce=events.append)
        self.successResultOf(service.startService())
        self.successResultOf(store.save([
            makeBinding(ruid="short", contact="sip:a@192.0.2.1", expires=START + 30),
            makeBinding(ruid="long", contact="sip:b@192.0.2.2", expires=START + 3600),
        ]))
        clock.advance(60)
        [expired] = events
        self.assertEqual(expired.name, REGISTRATION_EXPIRED)
        self.assertEqual((expired.ruid, expired.contact, expired.expires, expired.serverId),
                         ("short", "sip:a@192.0.2.1", START + 30, 4))
        self.assertEqual(expired.time, START + 60)
        clock.advance(60)
        self.assertEqual(len(events), 1)
        self.assertEqual([b.ruid for b in self.successResultOf(
            store.lookup("alice@example.com", clock.seconds()))], ["long"])
        self.successResultOf(service.stopService())
