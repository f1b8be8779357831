-- The connection-audit handler's table: one row per connection event.
-- Created by the handler at start when missing (option create-table=yes),
-- in the first schema of the connection's search_path.  Idempotent.
--
-- (run_id, seq) identifies an event: run_id is random per sipcore process
-- (connection ids restart at 1 with the process), seq counts the events of
-- that process.  A batch retried after a lost answer inserts nothing twice.

CREATE TABLE IF NOT EXISTS connection_events (
    run_id uuid NOT NULL,
    seq bigint NOT NULL,
    event_time timestamp with time zone NOT NULL,
    server_id integer NOT NULL,
    event varchar(32) NOT NULL,
    connection_id integer NOT NULL,
    transport varchar(8) NOT NULL,
    local_host varchar(64) NOT NULL,
    local_port integer NOT NULL,
    remote_host varchar(64) NOT NULL,
    remote_port integer NOT NULL,
    reason text,
    duration double precision,
    ws_code integer,
    ws_reason text,
    logged_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT connection_events_pkey PRIMARY KEY (run_id, seq)
);

CREATE INDEX IF NOT EXISTS connection_events_time_idx
    ON connection_events (event_time);

CREATE INDEX IF NOT EXISTS connection_events_connection_idx
    ON connection_events (server_id, connection_id);
