"""
Tests for L{sipcore.cluster.nodes}: the node table on the real PostgreSQL,
with each node's heartbeat timer on a L{task.Clock} (the database's times
are its own C{now()}; a test ages a node by moving its heartbeat back).
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql
from psycopg2.extensions import parse_dsn
from twisted.internet import defer, task
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from sipcore.cluster import INodeDirectory, Node
from sipcore.cluster.nodes import ClusterService, DatabaseNodeDirectory, NodeIdInUse
from sipcore.db import node as statements
from sipcore.location import MemoryLocationStore
from sipcore.service import StoreService
from sipcore.tap import Options, buildService
from sipcore.testing import UDPMemoryReactor
from tests.dbhelpers import TestSchema, createTestSchema, startDatabase
from tests.serverhelpers import waitUntil
from tests.test_cleanup_faults import Relay
from tests.test_location_contract import NOW, makeBinding

HEARTBEAT = 5.0
DEADLINE = 15.0


class ClusterServiceTests(TestCase):
    """
    Joining, heartbeats, the members list, takeover and leaving, against
    the real database.
    """

    timeout = 60

    def setUp(self) -> None:
        self.pools: dict[int, Any] = {}

    async def setUpSchema(self, withLocation: bool = True) -> TestSchema:
        self.schema = await createTestSchema(self, withLocation=withLocation)
        return self.schema

    async def member(self, serverId: int, dsn: str | None = None,
                     purges: list[int] | None = None, createTables: bool = False,
                     start: bool = True) -> tuple[ClusterService, task.Clock]:
        """
        A L{ClusterService} for C{serverId} on its own pool and clock,
        started unless C{start} is false, stopped at cleanup.
        """
        database = await startDatabase(self, dsn or self.schema.dsn, retryDelay=0.05,
                                       maxRetryDelay=0.2)
        self.pools[serverId] = database.pool
        clock = task.Clock()

        def purge() -> defer.Deferred[None]:
            assert purges is not None
            purges.append(serverId)
            return defer.succeed(None)

        service = ClusterService(
            database.pool, clock, DatabaseNodeDirectory(serverId),
            lambda: "sip:127.0.0.{}:5060;transport=tcp".format(serverId),
            heartbeat=HEARTBEAT, deadline=DEADLINE, createTables=createTables,
            purgeAgain=purge if purges is not None else None)
        self.addCleanup(lambda: service.stopService() if service.running else None)
        if start:
            await service.startService()
        return service, clock

    def relay(self) -> Relay:
        """
        A L{Relay} to the test server, up, switched off at cleanup.
        """
        parsed = parse_dsn(self.schema.dsn)
        relay = Relay(parsed.get("host", "127.0.0.1"), int(parsed.get("port", 5432)))
        relay.up()
        self.addCleanup(relay.down)
        return relay

    async def tick(self, service: ClusterService, clock: task.Clock) -> None:
        """
        Advance C{clock} by one heartbeat and wait for that heartbeat.
        """
        clock.advance(HEARTBEAT)
        await service.idle()

    async def query(self, text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """
        Run C{text} on the test's schema (its C{{}} is the schema's name).
        """
        statement = sql.SQL(text).format(sql.Identifier(self.schema.name))
        return list(await self.schema.admin.runQuery(statement, params))

    async def age(self, serverId: int, seconds: float = 3600.0) -> None:
        """
        Move C{serverId}'s heartbeat C{seconds} into the past.
        """
        await self.schema.admin.runOperation(
            sql.SQL("UPDATE {}.sipcore_node SET heartbeat = now() - make_interval(secs => %s)"
                    " WHERE server_id = %s").format(sql.Identifier(self.schema.name)),
            (seconds, serverId))

    async def nodeRow(self, serverId: int) -> tuple[Any, ...]:
        rows = await self.query(
            "SELECT node_uri, incarnation, alive, started_at = heartbeat,"
            " now() - heartbeat < interval '5 seconds' FROM {}.sipcore_node WHERE server_id = %s",
            (serverId,))
        self.assertEqual(len(rows), 1)
        return rows[0]

    async def addBinding(self, ruid: str, serverId: int, connectionId: int) -> None:
        await self.schema.admin.runOperation(
            sql.SQL("INSERT INTO {}.location (ruid, username, contact, server_id, connection_id,"
                    " expires) VALUES (%s, %s, %s, %s, %s, now() + interval '1 hour')").format(
                sql.Identifier(self.schema.name)),
            (ruid, ruid, "sip:" + ruid + "@127.0.0.9", serverId, connectionId))

    async def bindings(self) -> list[str]:
        return sorted(r[0] for r in await self.query("SELECT ruid FROM {}.location"))

    async def test_join(self) -> None:
        """
        Joining writes this node's row: its URI, incarnation 1, alive,
        started and beating at the database's C{now()}; the directory
        provides L{INodeDirectory} and holds the secret the first node
        wrote to C{sipcore_cluster}.
        """
        await self.setUpSchema()
        service, clock = await self.member(1)
        self.assertEqual(await self.nodeRow(1),
                         ("sip:127.0.0.1:5060;transport=tcp", 1, True, True, True))
        self.assertEqual(service.incarnation, 1)
        self.assertTrue(verifyObject(INodeDirectory, service.directory))
        [(secret,)] = await self.query("SELECT secret FROM {}.sipcore_cluster")
        self.assertEqual(service.directory.secret, bytes.fromhex(secret))
        self.assertEqual(len(service.directory.secret), 32)

    async def test_secretShared(self) -> None:
        """
        Every member reads the one secret the first wrote.
        """
        await self.setUpSchema()
        first, _ = await self.member(1)
        second, _ = await self.member(2)
        self.assertEqual(first.directory.secret, second.directory.secret)
        self.assertEqual(len(await self.query("SELECT * FROM {}.sipcore_cluster")), 1)

    async def test_secretBeforeJoining(self) -> None:
        """
        Before it joins, a directory's secret is random bytes of its own,
        not shared with any other.
        """
        self.assertNotEqual(DatabaseNodeDirectory(1).secret, DatabaseNodeDirectory(1).secret)

    async def test_liveServerIdRefused(self) -> None:
        """
        A node joining with a C{server_id} that a live node holds is
        refused with L{NodeIdInUse}, naming the C{server_id} and the
        holder's URI; the holder's row is unchanged.
        """
        await self.setUpSchema()
        await self.member(3)
        second, _ = await self.member(3, start=False)
        second.nodeURI = lambda: "sip:127.0.0.4:5060;transport=tcp"
        with self.assertRaises(NodeIdInUse) as caught:
            await second.startService()
        self.assertIn("server_id 3 is held by a live node at "
                      "sip:127.0.0.3:5060;transport=tcp", str(caught.exception))
        self.assertIsNone(second.incarnation)
        self.assertEqual((await self.nodeRow(3))[:3],
                         ("sip:127.0.0.3:5060;transport=tcp", 1, True))

    async def test_staleServerIdTakenOver(self) -> None:
        """
        A node may join with the C{server_id} of a node whose heartbeat is
        older than the deadline: it gets the next incarnation.
        """
        await self.setUpSchema()
        await self.member(1)
        await self.age(1, DEADLINE + 1)
        second, _ = await self.member(1)
        self.assertEqual(second.incarnation, 2)
        self.assertEqual((await self.nodeRow(1))[1:3], (2, True))

    async def test_stopLeaves(self) -> None:
        """
        A node that stops marks its row not alive, and a node with the same
        C{server_id} can join at once.
        """
        await self.setUpSchema()
        first, _ = await self.member(1)
        await first.stopService()
        self.assertEqual((await self.nodeRow(1))[2], False)
        second, _ = await self.member(1)
        self.assertEqual(second.incarnation, 2)

    async def test_heartbeat(self) -> None:
        """
        Each heartbeat of the timer updates the node's heartbeat.
        """
        await self.setUpSchema()
        service, clock = await self.member(1)
        await self.age(1, 60)
        self.assertEqual((await self.nodeRow(1))[4], False)
        await self.tick(service, clock)
        self.assertEqual((await self.nodeRow(1))[4], True)

    async def test_uriRewritten(self) -> None:
        """
        Each heartbeat writes the node's URI again, so a URI that changed
        since the join (a listener on port 0 bound since) is in the table.
        """
        await self.setUpSchema()
        service, clock = await self.member(1)
        service.nodeURI = lambda: "sip:127.0.0.1:40000;transport=tcp"
        await self.tick(service, clock)
        self.assertEqual((await self.nodeRow(1))[:3],
                         ("sip:127.0.0.1:40000;transport=tcp", 1, True))

    async def test_members(self) -> None:
        """
        Each heartbeat reads the other live nodes with a fresh heartbeat
        into the directory; a node whose heartbeat is older than the
        deadline is left out, and so is this node itself.
        """
        await self.setUpSchema()
        one, clock = await self.member(1)
        await self.member(2)
        await self.member(3)
        await self.tick(one, clock)
        self.assertEqual(one.directory.nodes(), [
            Node(2, "sip:127.0.0.2:5060;transport=tcp", 1),
            Node(3, "sip:127.0.0.3:5060;transport=tcp", 1),
        ])
        self.assertIsNone(one.directory.node(1))
        await self.age(3, DEADLINE + 1)
        await self.tick(one, clock)
        self.assertEqual([n.serverId for n in one.directory.nodes()], [2])
        self.assertIsNone(one.directory.node(3))

    async def test_takeover(self) -> None:
        """
        Once its own heartbeats have succeeded for a full deadline, a node
        declares dead the node whose heartbeat is older than the deadline
        and removes that node's connection-bound bindings; the dead node's
        UDP bindings and the other nodes' bindings stay, those of a node
        whose heartbeat is old but fresher than the deadline included.
        """
        await self.setUpSchema()
        survivor, clock = await self.member(1)
        await self.member(2)
        await self.member(3)
        await self.addBinding("dead-tcp", 2, 5)
        await self.addBinding("dead-udp", 2, 0)
        await self.addBinding("live-tcp", 1, 5)
        await self.addBinding("fresh-tcp", 3, 5)
        await self.age(2, DEADLINE + 1)
        await self.age(3, DEADLINE - 5)
        for _ in range(int(DEADLINE / HEARTBEAT) - 1):
            await self.tick(survivor, clock)
            self.assertEqual((await self.nodeRow(2))[2], True)
            self.assertEqual(len(await self.bindings()), 4)
        await self.tick(survivor, clock)
        self.assertEqual((await self.nodeRow(2))[2], False)
        self.assertEqual((await self.nodeRow(3))[2], True)
        self.assertEqual(await self.bindings(), ["dead-udp", "fresh-tcp", "live-tcp"])

    async def test_takeoverOneWinner(self) -> None:
        """
        Two survivors running the takeover at once: the dead node is
        declared by exactly one of them.
        """
        await self.setUpSchema()
        one, _ = await self.member(1)
        two, _ = await self.member(2)
        await self.member(3)
        await self.addBinding("dead-tcp", 3, 9)
        await self.age(3, DEADLINE + 1)
        pools = [(await startDatabase(self, self.schema.dsn)).pool for _ in range(2)]
        results = await defer.gatherResults([
            pool.runQuery(statements.TAKEOVER, (serverId, DEADLINE))
            for pool, serverId in zip(pools, (1, 2), strict=True)
        ])
        declared = [row for rows in results for row in rows]
        self.assertEqual([(row[0], row[3]) for row in declared], [(3, 1)])
        self.assertEqual(await self.bindings(), [])

    async def test_declaredDeadRejoins(self) -> None:
        """
        A node whose heartbeat finds its row declared dead rejoins with a
        new incarnation and runs the start purge again.
        """
        await self.setUpSchema()
        purges: list[int] = []
        service, clock = await self.member(1, purges=purges)
        await self.query("UPDATE {}.sipcore_node SET alive = false RETURNING 1")
        await self.tick(service, clock)
        self.assertEqual(service.incarnation, 2)
        self.assertEqual((await self.nodeRow(1))[1:3], (2, True))
        self.assertEqual(purges, [1])

    async def test_rejoinRefused(self) -> None:
        """
        A node declared dead whose C{server_id} another node took meanwhile
        cannot rejoin: it is no member any more, and it stops the reactor.
        """
        await self.setUpSchema()
        reactor = MemoryReactorClock()
        database = await startDatabase(self, self.schema.dsn)
        service = ClusterService(
            database.pool, reactor, DatabaseNodeDirectory(1),
            lambda: "sip:127.0.0.1:5060;transport=tcp", heartbeat=HEARTBEAT, deadline=DEADLINE)
        self.addCleanup(lambda: service.stopService() if service.running else None)
        await service.startService()
        reactor.run()
        await self.member(2)
        await self.query("UPDATE {}.sipcore_node SET alive = false WHERE server_id = 1"
                         " RETURNING 1")
        taker, _ = await self.member(1)
        self.assertEqual(taker.incarnation, 2)
        reactor.advance(HEARTBEAT)
        await service.idle()
        self.assertIsNone(service.incarnation)
        self.assertEqual(service.directory.nodes(), [])
        self.assertTrue(reactor.hasStopped)
        self.assertEqual((await self.nodeRow(1))[:3],
                         ("sip:127.0.0.1:5060;transport=tcp", 2, True))

    async def test_databaseDown(self) -> None:
        """
        While the database is away, a node declares nothing dead and
        removes nothing; when it returns, the heartbeats resume, and the
        node declares a stale node dead only once its own heartbeats have
        succeeded for a full deadline again.
        """
        await self.setUpSchema()
        relay = self.relay()
        survivor, clock = await self.member(1, dsn=relay.dsn(self.schema.dsn))
        await self.member(2)
        await self.addBinding("dead-tcp", 2, 5)
        await self.age(2, DEADLINE + 1)
        await relay.down()
        await self.age(1, 60)
        for _ in range(int(DEADLINE / HEARTBEAT) + 2):
            await self.tick(survivor, clock)
        self.assertEqual((await self.nodeRow(2))[2], True)
        self.assertEqual(await self.bindings(), ["dead-tcp"])
        self.assertFalse((await self.nodeRow(1))[4])
        relay.up()
        pool = self.pools[1]

        async def beating() -> bool:
            await self.tick(survivor, clock)
            return bool((await self.nodeRow(1))[4])

        await waitUntil(lambda: pool.available, what="the pool reconnected")
        await waitUntil(beating, what="heartbeats resumed")
        for _ in range(int(DEADLINE / HEARTBEAT) - 1):
            await self.tick(survivor, clock)
            self.assertEqual((await self.nodeRow(2))[2], True)
        await self.tick(survivor, clock)
        self.assertEqual((await self.nodeRow(2))[2], False)
        self.assertEqual(await self.bindings(), [])

    async def test_databaseDownAtStart(self) -> None:
        """
        A node whose database is away at start still starts, not joined,
        and joins at a heartbeat once the database is back.
        """
        await self.setUpSchema()
        relay = self.relay()
        dsn = relay.dsn(self.schema.dsn)
        await relay.down()
        service, clock = await self.member(1, dsn=dsn)
        self.assertIsNone(service.incarnation)
        relay.up()

        async def joined() -> bool:
            await self.tick(service, clock)
            return service.incarnation == 1

        await waitUntil(joined, what="joined")
        self.assertEqual((await self.nodeRow(1))[1:3], (1, True))

    async def test_createTables(self) -> None:
        """
        With C{createTables} (C{--db-init}) the node creates the cluster
        tables when they are missing, then joins.
        """
        await self.setUpSchema(withLocation=False)
        service, _ = await self.member(1, createTables=True)
        self.assertEqual(service.incarnation, 1)
        self.assertEqual((await self.nodeRow(1))[2], True)

    async def test_listNodes(self) -> None:
        """
        L{ClusterService.listNodes} lists every row, alive or not.
        """
        await self.setUpSchema()
        one, _ = await self.member(1)
        two, _ = await self.member(2)
        await two.stopService()
        records = await one.listNodes()
        self.assertEqual([(r["serverId"], r["uri"], r["incarnation"], r["alive"])
                          for r in records],
                         [(1, "sip:127.0.0.1:5060;transport=tcp", 1, True),
                          (2, "sip:127.0.0.2:5060;transport=tcp", 1, False)])
        self.assertLess(records[0]["heartbeatAge"], 5)
        self.assertLessEqual(records[0]["startedAt"], records[0]["heartbeat"])


class PurgeAgainTests(SynchronousTestCase):
    """
    L{StoreService.purgeAgain}: the start purge, run again as of now.
    """

    def test_purgeAgain(self) -> None:
        """
        It removes this node's connection-bound bindings last modified
        before now; its UDP bindings, its bindings written since and the
        other nodes' bindings stay.
        """
        clock = task.Clock()
        clock.advance(NOW)
        store = MemoryLocationStore(clock)
        service = StoreService(store, clock, serverId=1, expiryInterval=0)
        self.successResultOf(service.startService())
        self.successResultOf(store.save([
            makeBinding(ruid="old-tcp", contact="sip:a@192.0.2.1", lastModified=NOW + 1),
            makeBinding(ruid="old-udp", contact="sip:b@192.0.2.2", lastModified=NOW + 1,
                        connectionId=0),
            makeBinding(ruid="other", contact="sip:c@192.0.2.3", lastModified=NOW + 1,
                        serverId=2),
        ]))
        clock.advance(10)
        self.successResultOf(store.save([
            makeBinding(ruid="new-tcp", contact="sip:d@192.0.2.4", lastModified=NOW + 10),
        ]))
        self.successResultOf(service.purgeAgain())
        self.assertEqual(sorted(b.ruid for b in self.successResultOf(
            store.lookup("alice@example.com", clock.seconds()))),
            ["new-tcp", "old-udp", "other"])
        self.successResultOf(service.stopService())


class NodeOptionsTests(SynchronousTestCase):
    """
    C{--node-uri}, C{--node-heartbeat}, C{--node-deadline} and the service
    tree with C{--db}.
    """

    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_needDb(self) -> None:
        """
        The node options without C{--db} are usage errors naming the
        option: without a database there is no node table.
        """
        for args in (["--node-uri", "sip:127.0.0.1:5060;transport=tcp"],
                     ["--node-heartbeat", "2"], ["--node-deadline", "30"]):
            with self.assertRaises(usage.UsageError) as caught:
                self.parse(*args)
            self.assertIn(args[0] + " needs --db", str(caught.exception))

    def test_badValues(self) -> None:
        """
        A node URI that is not a SIP URI, a zero heartbeat and a deadline
        not longer than the heartbeat are usage errors.
        """
        self.assertRaises(usage.UsageError, self.parse, "--db", "dbname=x",
                          "--node-uri", "http://example.com/")
        self.assertRaises(usage.UsageError, self.parse, "--db", "dbname=x",
                          "--node-uri", "sip:")
        self.assertRaises(usage.UsageError, self.parse, "--db", "dbname=x",
                          "--node-heartbeat", "0")
        self.assertRaises(usage.UsageError, self.parse, "--db", "dbname=x",
                          "--node-heartbeat", "5", "--node-deadline", "5")

    def test_tree(self) -> None:
        """
        With C{--db} the cluster service starts after the database and
        before the store, with the options' heartbeat and deadline; without
        C{--db} there is none.
        """
        service = buildService(self.parse("--db", "dbname=x", "--node-heartbeat", "2",
                                          "--node-deadline", "7"), UDPMemoryReactor())
        self.assertEqual([child.name for child in service][:3],
                         ["database", "cluster", "store"])
        assert service.cluster is not None
        self.assertEqual((service.cluster.heartbeat, service.cluster.deadline), (2.0, 7.0))
        self.assertIsNone(buildService(self.parse(), UDPMemoryReactor()).cluster)

    def uri(self, *args: str) -> str:
        service = buildService(self.parse("--db", "dbname=x", *args), UDPMemoryReactor())
        assert service.cluster is not None
        uri: str = service.cluster.nodeURI()
        return uri

    def test_uriFromListeners(self) -> None:
        """
        The node URI is made of the first TCP listener (else TLS, else the
        first listener): its address, or C{--advertise-host} (else the
        first C{--domain}) for the wildcard address; C{--node-uri}
        overrides it.
        """
        self.assertEqual(self.uri("--listen", "udp:5060", "--listen", "ws:8080",
                                  "--listen", "tcp:5070:interface=127.0.0.2",
                                  "--listen", "tcp:5080"),
                         "sip:127.0.0.2:5070;transport=tcp")
        self.assertEqual(self.uri("--listen", "tcp:5070", "--advertise-host", "sip1.example.com",
                                  "--domain", "example.com"),
                         "sip:sip1.example.com:5070;transport=tcp")
        self.assertEqual(self.uri("--listen", "tcp:5070", "--domain", "example.com"),
                         "sip:example.com:5070;transport=tcp")
        self.assertEqual(self.uri("--listen", "tcp:5070:interface=\\:\\:1"),
                         "sip:[::1]:5070;transport=tcp")
        self.assertEqual(self.uri("--listen", "udp:5060:interface=127.0.0.3"),
                         "sip:127.0.0.3:5060;transport=udp")
        self.assertEqual(self.uri("--node-uri", "sip:node1.example.com;transport=tcp"),
                         "sip:node1.example.com;transport=tcp")
