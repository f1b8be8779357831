# -*- test-case-name: tests.test_cluster_nodes -*-
"""
sipcore's cluster tables on PostgreSQL: C{sipcore_node} (one row per
node: its C{server_id}, URI, incarnation, start time, heartbeat and whether
it is alive) and C{sipcore_cluster} (one row: the secret the members
share); the statements L{sipcore.cluster.nodes.ClusterService} sends; and
the schema (C{node.sql}).

Statements: fixed text, every value a C{%s} parameter; every time is the
database's C{now()}, so the nodes' clocks never matter.  A deadline is
given in seconds (C{make_interval(secs => %s)}).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from twisted.internet import defer

__all__ = [
    "HEARTBEAT",
    "HOLDER",
    "JOIN",
    "LEAVE",
    "LIST",
    "MEMBERS",
    "SECRET_CREATE",
    "SECRET_READ",
    "TAKEOVER",
    "initNodeSchema",
    "nodeSchemaSQL",
]

#: Join as C{server_id} with a URI: parameters C{(server_id, node_uri,
#: deadline)}.  A new row gets incarnation 1; a row whose node is not alive
#: or whose heartbeat is older than the deadline is taken over with the
#: next incarnation.  Answers C{(incarnation,)}, or no row when a live node
#: holds the C{server_id}.
JOIN = (
    "INSERT INTO sipcore_node AS n (server_id, node_uri, incarnation, started_at, heartbeat,"
    " alive) VALUES (%s, %s, 1, now(), now(), true)"
    " ON CONFLICT (server_id) DO UPDATE SET node_uri = EXCLUDED.node_uri,"
    " incarnation = n.incarnation + 1, started_at = now(), heartbeat = now(), alive = true"
    " WHERE NOT n.alive OR n.heartbeat < now() - make_interval(secs => %s)"
    " RETURNING n.incarnation"
)

#: The node holding a C{server_id}: parameter C{(server_id,)}.  Answers
#: C{(node_uri, seconds since its heartbeat)}.
HOLDER = (
    "SELECT node_uri, EXTRACT(EPOCH FROM now() - heartbeat) FROM sipcore_node"
    " WHERE server_id = %s"
)

#: One heartbeat: parameters C{(node_uri, server_id, incarnation)} (the
#: URI is written again: a listener on port 0 may have been bound since the
#: join).  Answers one row while this incarnation is alive, none once it
#: was declared dead (or replaced).
HEARTBEAT = (
    "UPDATE sipcore_node SET heartbeat = now(), node_uri = %s"
    " WHERE server_id = %s AND incarnation = %s AND alive RETURNING server_id"
)

#: The live members: parameter C{(deadline,)}.  Answers C{(server_id,
#: node_uri, incarnation)} of every node alive with a heartbeat fresher
#: than the deadline, by C{server_id}.
MEMBERS = (
    "SELECT server_id, node_uri, incarnation FROM sipcore_node"
    " WHERE alive AND heartbeat >= now() - make_interval(secs => %s) ORDER BY server_id"
)

#: Declare dead every other node whose heartbeat is older than the deadline
#: and remove its connection-bound bindings (its UDP bindings stay), in one
#: statement: parameters C{(server_id, deadline)}.  Two nodes running it
#: at once cannot both declare a node (the second one's C{UPDATE} finds it
#: no longer alive).  Answers C{(server_id, node_uri, incarnation, rows
#: removed)} per node declared.
TAKEOVER = (
    "WITH dead AS (UPDATE sipcore_node SET alive = false"
    " WHERE alive AND server_id <> %s AND heartbeat < now() - make_interval(secs => %s)"
    " RETURNING server_id, node_uri, incarnation),"
    " gone AS (DELETE FROM location USING dead WHERE location.server_id = dead.server_id"
    " AND location.connection_id > 0 RETURNING location.server_id)"
    " SELECT dead.server_id, dead.node_uri, dead.incarnation,"
    " (SELECT count(*) FROM gone WHERE gone.server_id = dead.server_id)"
    " FROM dead ORDER BY dead.server_id"
)

#: Leave: parameters C{(server_id, incarnation)}; the row stays, not alive.
LEAVE = (
    "UPDATE sipcore_node SET alive = false WHERE server_id = %s AND incarnation = %s"
    " RETURNING server_id"
)

#: Every node, for listing: C{(server_id, node_uri, incarnation, started_at
#: and heartbeat as POSIX seconds, alive, seconds since the heartbeat)}.
LIST = (
    "SELECT server_id, node_uri, incarnation, EXTRACT(EPOCH FROM started_at),"
    " EXTRACT(EPOCH FROM heartbeat), alive, EXTRACT(EPOCH FROM now() - heartbeat)"
    " FROM sipcore_node ORDER BY server_id"
)

#: Write the shared secret unless one is there: parameter C{(secret,)}.
SECRET_CREATE = "INSERT INTO sipcore_cluster (id, secret) VALUES (1, %s) ON CONFLICT DO NOTHING"

#: The shared secret: answers C{(secret,)}.
SECRET_READ = "SELECT secret FROM sipcore_cluster WHERE id = 1"

# Key of the transaction-scoped advisory lock that serializes concurrent
# runs of initNodeSchema ("sipc" "node" as ASCII).
_INIT_LOCK_KEY = 0x73697063_6E6F6465


def nodeSchemaSQL() -> str:
    """
    @return: the text of the shipped C{node.sql}.
    """
    return resources.files("sipcore.db").joinpath("node.sql").read_text("utf-8")


async def createNodeTables(cursor: Any) -> bool:
    """
    Create the cluster tables when missing, in the transaction of
    C{cursor}, under an advisory lock (two nodes starting at once do not
    race).

    @return: C{True} if C{sipcore_node} was created.
    """
    await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK_KEY,))
    await cursor.execute("SELECT to_regclass(%s) IS NULL", ("sipcore_node",))
    (missing,) = cursor.fetchone()
    # Static DDL shipped with the package; it carries no values.
    await cursor.execute(nodeSchemaSQL())
    return bool(missing)


def initNodeSchema(runner: Any) -> defer.Deferred[bool]:
    """
    Create the cluster tables (C{sipcore_node}, C{sipcore_cluster}) when
    missing.  Idempotent.

    @param runner: a connected C{txpostgres.Connection} or a started
        L{sipcore.db.DatabasePool}: anything with C{runInteraction}.
    @return: a L{Deferred} firing with C{True} if C{sipcore_node} was
        created, C{False} if it was there, or failing with the C{psycopg2}
        error (or L{sipcore.db.DatabaseUnavailable}).
    """

    def interaction(cursor: Any) -> defer.Deferred[bool]:
        return defer.Deferred.fromCoroutine(createNodeTables(cursor))

    return defer.maybeDeferred(runner.runInteraction, interaction)
