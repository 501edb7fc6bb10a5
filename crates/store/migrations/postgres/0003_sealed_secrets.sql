-- Account secrets sealed by the HSM (issue #9), PostgreSQL flavour.
--
-- Mirrors migrations/sqlite/0003_sealed_secrets.sql (see there).
ALTER TABLE accounts ADD COLUMN sealed_secret BYTEA;

CREATE INDEX accounts_project_user_idx ON accounts (project_id, user_id);

CREATE TABLE seal_keys (
    name         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    wrapping_key TEXT   NOT NULL,
    wrapped      BYTEA  NOT NULL,
    created_ms   BIGINT NOT NULL
);
