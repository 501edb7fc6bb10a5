-- keymesh CSMS schema (issue #5: secrets), SQLite flavour.
--
-- Mirrors migrations/postgres/0002_csms.sql table for table and column for
-- column (see 0001_kms.sql for the conventions). Child tables reference the
-- globally unique `secret_id`; every read reaches them through a join with
-- `secrets` on `project_id`. `kms_key_id` is a plain column, not a foreign
-- key: it may name a key id or an alias and the key may be deleted later
-- while old versions stay encrypted under it.

CREATE TABLE secrets (
    secret_id             TEXT    NOT NULL PRIMARY KEY,
    project_id            TEXT    NOT NULL,
    name                  TEXT    NOT NULL,
    state                 TEXT    NOT NULL
        CHECK (state IN ('ENABLED', 'DISABLED', 'PENDING_DELETE', 'FROZEN')),
    kms_key_id            TEXT    NOT NULL,
    description           TEXT    NOT NULL,
    secret_type           TEXT    NOT NULL,
    auto_rotation         INTEGER NOT NULL CHECK (auto_rotation IN (0, 1)),
    rotation_period       TEXT    NOT NULL,
    rotation_config       TEXT    NOT NULL,
    -- JSON array of event names.
    event_subscriptions   TEXT    NOT NULL,
    enterprise_project_id TEXT    NOT NULL,
    rotation_func_urn     TEXT    NOT NULL,
    created_ms            INTEGER NOT NULL,
    updated_ms            INTEGER NOT NULL,
    scheduled_delete_ms   INTEGER,
    -- n of the next store-assigned version id `v<n>`: only ever grows, so
    -- an id is never reused after its version was dropped.
    next_version          INTEGER NOT NULL CHECK (next_version >= 1),
    CONSTRAINT secrets_project_name_uq UNIQUE (project_id, name)
) STRICT;

-- The purge scan: only secrets pending deletion.
CREATE INDEX secrets_pending_delete_idx ON secrets (scheduled_delete_ms)
    WHERE state = 'PENDING_DELETE';

-- One row per value. `seq` orders versions (oldest first); it equals n
-- for store-assigned ids `v<n>`.
CREATE TABLE secret_versions (
    secret_id  TEXT    NOT NULL REFERENCES secrets (secret_id) ON DELETE CASCADE,
    version_id TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    kms_key_id TEXT    NOT NULL,
    ciphertext BLOB    NOT NULL,
    created_ms INTEGER NOT NULL,
    expire_ms  INTEGER,
    PRIMARY KEY (secret_id, version_id),
    CONSTRAINT secret_versions_seq_uq UNIQUE (secret_id, seq)
) STRICT;

-- A stage names exactly one existing version of its secret. No cascade
-- from versions: a version that holds a stage must never be dropped.
CREATE TABLE secret_stages (
    secret_id  TEXT    NOT NULL REFERENCES secrets (secret_id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    version_id TEXT    NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (secret_id, name),
    FOREIGN KEY (secret_id, version_id) REFERENCES secret_versions (secret_id, version_id)
) STRICT;

CREATE INDEX secret_stages_version_idx ON secret_stages (secret_id, version_id);

CREATE TABLE secret_tags (
    secret_id TEXT NOT NULL REFERENCES secrets (secret_id) ON DELETE CASCADE,
    tag_key   TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (secret_id, tag_key)
) STRICT;
