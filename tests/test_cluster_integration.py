"""
Two C{twistd -n sipcore} processes on one PostgreSQL form a cluster through
the node table: both appear in it, a third with a live C{server_id} is
refused, and when one is killed with SIGKILL the survivor removes its
connection-bound bindings and keeps its UDP ones.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Any

from psycopg2 import sql
from twisted.internet import protocol, reactor
from twisted.internet.interfaces import IReactorUDP
from twisted.trial.unittest import TestCase

from tests.dbhelpers import createTestSchema
from tests.serverhelpers import (
    PATIENCE,
    SIPCORE_PATH,
    ChildProcess,
    TCPClient,
    UDPClient,
    registerRequest,
    spawnChild,
    waitUntil,
)

#: Seconds without a heartbeat after which a node is dead, in these tests.
DEADLINE = 3.0


class _UDPClientTo(UDPClient):
    """
    A L{UDPClient} that sends to C{host} rather than 127.0.0.1.
    """

    def __init__(self, host: str, port: int) -> None:
        super().__init__(port)
        self.host = host

    def request(self, data: bytes) -> Any:
        self.transport.write(data, (self.host, self.serverPort))
        return self.waiters.next()


class TwoNodeTests(TestCase):
    """
    The node table with two real sipcore processes.
    """

    timeout = 120

    def node(self, serverId: int, host: str, dsn: str) -> tuple[ChildProcess, Any]:
        """
        Start C{twistd -n sipcore} as C{serverId}, listening on UDP and TCP
        at C{host}.
        """
        env = dict(os.environ, PYTHONPATH=SIPCORE_PATH)
        args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "sipcore", "--domain", "example.com",
                "--admin-listen", "none", "--db", dsn, "--server-id", str(serverId),
                "--node-heartbeat", "0.5", "--node-deadline", str(DEADLINE),
                "--listen", "udp:0:interface=" + host,
                "--listen", "tcp:0:interface=" + host]
        return spawnChild(self, args, env)

    async def ports(self, proc: ChildProcess, host: str) -> dict[str, int]:
        pattern = re.compile(r"listening on (udp|tcp) " + re.escape(host) + r":(\d+)")
        await waitUntil(lambda: len(pattern.findall(proc.output)) == 2, timeout=PATIENCE * 3,
                        what="two listeners: " + proc.output[-500:])
        return {kind: int(port) for kind, port in pattern.findall(proc.output)}

    async def test_cluster(self) -> None:
        """
        Both nodes join the node table with the URI of their TCP listener;
        a third process with a live node's C{server_id} is refused, naming
        it and the holder's URI; after node 2 is killed with SIGKILL, node
        1 declares it dead within the deadline and a few seconds and
        removes its TCP binding, and its UDP binding stays.
        """
        schema = await createTestSchema(self)
        one, _ = self.node(1, "127.0.0.1", schema.dsn)
        two, twoProcess = self.node(2, "127.0.0.2", schema.dsn)
        onePorts = await self.ports(one, "127.0.0.1")
        twoPorts = await self.ports(two, "127.0.0.2")

        async def nodes() -> list[tuple[Any, ...]]:
            return list(await schema.admin.runQuery(sql.SQL(
                "SELECT server_id, node_uri, alive FROM {}.sipcore_node ORDER BY server_id"
            ).format(sql.Identifier(schema.name))))

        expected = [
            (1, "sip:127.0.0.1:{};transport=tcp".format(onePorts["tcp"]), True),
            (2, "sip:127.0.0.2:{};transport=tcp".format(twoPorts["tcp"]), True),
        ]

        async def joined() -> bool:
            return await nodes() == expected

        await waitUntil(joined, timeout=PATIENCE * 2, interval=0.1, what="both nodes joined")

        third, _ = self.node(1, "127.0.0.3", schema.dsn)
        await third.ended
        self.assertIn("sipcore failed to start: server_id 1 is held by a live node at "
                      + expected[0][1], third.output)
        self.assertNotIn("Traceback", third.output)
        self.assertEqual(await nodes(), expected)

        tcp = TCPClient()
        await protocol.ClientCreator(reactor, lambda: tcp).connectTCP(
            "127.0.0.2", twoPorts["tcp"], timeout=PATIENCE)
        self.assertEqual((await tcp.request(registerRequest(
            "tcp", "bob", localPort=tcp.localPort))).status, 200)
        udp = _UDPClientTo("127.0.0.2", twoPorts["udp"])
        listening = IReactorUDP(reactor).listenUDP(0, udp, interface="127.0.0.1",
                                                   maxPacketSize=8192)
        self.addCleanup(listening.stopListening)
        self.assertEqual((await udp.request(registerRequest("udp", "carol"))).status, 200)

        async def bindings() -> list[tuple[Any, ...]]:
            return sorted(await schema.admin.runQuery(sql.SQL(
                "SELECT username, server_id, connection_id > 0 FROM {}.location"
            ).format(sql.Identifier(schema.name))))

        self.assertEqual(await bindings(), [("bob", 2, True), ("carol", 2, False)])

        os.kill(twoProcess.pid, signal.SIGKILL)
        await two.ended

        async def tookOver() -> bool:
            return await bindings() == [("carol", 2, False)]

        await waitUntil(tookOver, timeout=DEADLINE + 10, interval=0.1,
                        what="node 2's TCP binding removed")
        self.assertEqual([row[2] for row in await nodes()], [True, False])
        await waitUntil(lambda: "declared node server_id 2" in one.output,
                        what="the takeover logged: " + one.output[-1000:])
        self.assertIn("removed 1 of its connection-bound bindings", one.output)
        self.assertNotIn("Traceback", one.output)
