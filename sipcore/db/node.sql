-- sipcore's cluster tables: the nodes sharing this database, and the
-- secret they share.  Created by `sipcore db init` and by `--db-init`
-- (sipcore.db.node.initNodeSchema) when missing.  Idempotent.
--
-- sipcore_node: one row per server_id.  A node writes its row when it
-- joins (incarnation counts its joins), updates heartbeat every
-- --node-heartbeat seconds, and sets alive to false when it stops; a
-- survivor sets alive to false when the heartbeat is older than the
-- deadline.  All times are the database's now().
--
-- sipcore_cluster: one row (id = 1) holding the members' shared secret,
-- written by the first node that joins.

CREATE TABLE IF NOT EXISTS sipcore_node (
    server_id INTEGER PRIMARY KEY NOT NULL,
    node_uri TEXT NOT NULL,
    incarnation BIGINT NOT NULL,
    started_at TIMESTAMP WITH TIME ZONE NOT NULL,
    heartbeat TIMESTAMP WITH TIME ZONE NOT NULL,
    alive BOOLEAN NOT NULL
);

CREATE TABLE IF NOT EXISTS sipcore_cluster (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    secret TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);
