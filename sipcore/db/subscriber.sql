-- sipcore subscriber schema for PostgreSQL.
--
-- Kamailio's auth_db `subscriber` table at table version 7, as Kamailio
-- defines it for PostgreSQL (same column names, types, defaults and index
-- names), so kamctl/kamcli can manage the users sipcore authenticates.
--
--   username, domain  the user; `domain` is also the digest realm
--   password          the plain password ('' when only hashes are stored)
--   ha1               H(username:domain:password): 32 hex digits for MD5
--                     (Kamailio's default), 64 for SHA-256
--   ha1b              MD5(username@domain:domain:password), for clients
--                     that send "username@domain" as the digest user name
--
-- sipcore only reads this table (one parameterized SELECT per
-- authentication).  Idempotent: safe to run on a database that has it.

CREATE TABLE IF NOT EXISTS version (
    id SERIAL PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
);

CREATE TABLE IF NOT EXISTS subscriber (
    id SERIAL PRIMARY KEY NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT '' NOT NULL,
    password VARCHAR(64) DEFAULT '' NOT NULL,
    ha1 VARCHAR(128) DEFAULT '' NOT NULL,
    ha1b VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT subscriber_account_idx UNIQUE (username, domain)
);

CREATE INDEX IF NOT EXISTS subscriber_username_idx ON subscriber (username);

INSERT INTO version (table_name, table_version) VALUES ('subscriber', 7)
    ON CONFLICT (table_name) DO NOTHING;
