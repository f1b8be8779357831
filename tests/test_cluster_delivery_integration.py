"""
Integration test: two C{twistd -n sipcore} nodes on one PostgreSQL
(C{--db}, distinct C{--server-id}, on 127.0.0.1 and 127.0.0.2) deliver to
each other's TCP clients: a MESSAGE from a client of one node to a client
of the other is delivered over the callee's connection and answered 200,
both ways, and a call between them completes.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from typing import Any

from twisted.trial.unittest import TestCase

from tests.dbhelpers import createTestSchema
from tests.serverhelpers import (
    PATIENCE,
    SIPCORE_PATH,
    ChildProcess,
    registerRequest,
    spawnChild,
    waitUntil,
)
from tests.test_cluster_workers import AnsweringClient, connect, inDialog, messageRequest


class TwoNodeDeliveryTests(TestCase):
    """
    Delivery between two nodes that know each other through the node table.
    """

    timeout = 120

    def node(self, serverId: int, host: str, dsn: str) -> tuple[ChildProcess, Any]:
        env = dict(os.environ, PYTHONPATH=SIPCORE_PATH)
        args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "sipcore", "--domain", "example.com",
                "--admin-listen", "none", "--db", dsn, "--server-id", str(serverId),
                "--node-heartbeat", "0.5", "--listen", "tcp:0:interface=" + host]
        return spawnChild(self, args, env)

    async def port(self, proc: ChildProcess, host: str) -> int:
        pattern = re.compile(r"listening on tcp " + re.escape(host) + r":(\d+)")
        await waitUntil(lambda: pattern.search(proc.output), timeout=PATIENCE * 3,
                        what="the TCP listener: " + proc.output[-500:])
        found = pattern.search(proc.output)
        assert found is not None
        return int(found.group(1))

    async def test_messageBetweenNodes(self) -> None:
        """
        Alice registers on node 1 and Bob on node 2; once each node has
        the other in its directory (until then a MESSAGE gets 480), a
        MESSAGE from either to the other is delivered and answered 200, and
        a call from Alice to Bob (INVITE, 200, ACK, BYE) completes.
        """
        schema = await createTestSchema(self)
        one, _ = self.node(1, "127.0.0.1", schema.dsn)
        two, _ = self.node(2, "127.0.0.2", schema.dsn)
        onePort = await self.port(one, "127.0.0.1")
        twoPort = await self.port(two, "127.0.0.2")
        alice = await connect(onePort, "127.0.0.1")
        bob = await connect(twoPort, "127.0.0.2")
        for client in (alice, bob):
            self.addCleanup(client.transport.loseConnection)  # type: ignore[union-attr]
        for user, client in (("alice", alice), ("bob", bob)):
            callId = "reg-" + user
            response = await client.request(
                registerRequest("tcp", user, callId=callId, localPort=client.localPort), callId)
            self.assertEqual(response.status, 200)

        for sender, to, receiver in ((alice, "bob", bob), (bob, "alice", alice)):
            statuses: list[int] = []

            async def delivered(sender: AnsweringClient = sender, to: str = to,
                                statuses: list[int] = statuses) -> bool:
                callId = "msg-" + secrets.token_hex(4)
                response = await sender.request(messageRequest(to, sender, callId), callId)
                statuses.append(response.status)
                return response.status == 200

            await waitUntil(delivered, timeout=PATIENCE * 2, interval=0.2,
                            what="a MESSAGE to {} delivered".format(to))
            self.assertEqual(set(statuses[:-1]) - {480}, set(), statuses)
            self.assertEqual(len([r for r in receiver.requests if r.method == "MESSAGE"]), 1)

        callId = "call-" + secrets.token_hex(4)
        ok = await alice.request(messageRequest("bob", alice, callId, method="INVITE"), callId)
        self.assertEqual(ok.status, 200, ok)
        alice.transport.write(inDialog("ACK", ok, alice, 1))  # type: ignore[union-attr]
        await waitUntil(lambda: [r for r in bob.requests
                                 if r.callId == callId and r.method == "ACK"],
                        what="the ACK at the callee")
        alice.responses.clear()
        bye = await alice.request(inDialog("BYE", ok, alice, 2), callId)
        self.assertEqual((bye.status, bye.cseq[1]), (200, "BYE"), bye)
        self.assertEqual([r.method for r in bob.requests if r.callId == callId],
                         ["INVITE", "ACK", "BYE"])
        for proc in (one, two):
            self.assertNotIn("Traceback", proc.output)
