-- Account secrets sealed by the HSM (issue #9), SQLite flavour.
--
-- Mirrors migrations/postgres/0003_sealed_secrets.sql. A row's SK now lives
-- only in `sealed_secret`: AES-256-GCM under a keymesh-internal seal key
-- (generated in the HSM, stored below wrapped under the domain key), with
-- the row's identity as associated data (see src/sealed.rs). `secret_key`
-- stays for rows written before this migration: the edge seals every such
-- row on start and empties the column; a sealed row has `secret_key = ''`.
ALTER TABLE accounts ADD COLUMN sealed_secret BLOB;

-- X-Auth-Token subjects are looked up by (project, user).
CREATE INDEX accounts_project_user_idx ON accounts (project_id, user_id);

-- keymesh-internal AES keys that exist outside the HSM only wrapped under
-- a domain key, like a CMK's material (key_materials), but never a
-- customer's key. Written once (INSERT .. ON CONFLICT DO NOTHING), never
-- updated: every edge and keymeshctl agree on the first one stored.
CREATE TABLE seal_keys (
    name         TEXT    NOT NULL PRIMARY KEY,
    wrapping_key TEXT    NOT NULL,
    wrapped      BLOB    NOT NULL,
    created_ms   INTEGER NOT NULL
) STRICT;
