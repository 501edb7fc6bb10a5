-- keymesh KMS schema (issue #4), SQLite flavour.
--
-- Mirrors migrations/postgres/0001_kms.sql table for table and column for
-- column, so that one set of statements (src/sql.rs) serves both backends.
-- STRICT tables make SQLite reject a value of the wrong type instead of
-- storing it; booleans are INTEGER 0/1 (STRICT knows no BOOLEAN).
-- Later features (issue #5: secrets) add their own numbered files.

-- API credentials. `secret_key` is stored as given: SDK-HMAC-SHA256
-- verification recomputes the signature with the SK itself, so a one-way
-- hash cannot replace it; the database file's access control protects it.
CREATE TABLE accounts (
    access_key  TEXT    NOT NULL PRIMARY KEY,
    secret_key  TEXT    NOT NULL,
    project_id  TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('full', 'readonly')),
    created_ms  INTEGER NOT NULL
) STRICT;

-- Customer master keys (metadata). `key_id` is globally unique; the second
-- unique key (project_id, key_id) is what child tables reference, so that a
-- child row can only ever point at a key of its own project.
CREATE TABLE keys (
    key_id                TEXT    NOT NULL PRIMARY KEY,
    project_id            TEXT    NOT NULL,
    alias                 TEXT    NOT NULL,
    description           TEXT    NOT NULL,
    spec                  TEXT    NOT NULL,
    key_usage             TEXT    NOT NULL,
    origin                TEXT    NOT NULL,
    state                 INTEGER NOT NULL CHECK (state BETWEEN 1 AND 5),
    default_key           INTEGER NOT NULL CHECK (default_key IN (0, 1)),
    created_ms            INTEGER NOT NULL,
    deletion_ms           INTEGER,
    material_version      INTEGER NOT NULL CHECK (material_version >= 0),
    enterprise_project_id TEXT    NOT NULL,
    keystore_id           TEXT    NOT NULL,
    CONSTRAINT keys_project_key_uq UNIQUE (project_id, key_id),
    CONSTRAINT keys_project_alias_uq UNIQUE (project_id, alias)
) STRICT;

-- list_keys / find_keys_by_tags order.
CREATE INDEX keys_project_created_idx ON keys (project_id, created_ms, key_id);
-- The purge scan: only keys pending deletion.
CREATE INDEX keys_pending_deletion_idx ON keys (deletion_ms) WHERE state = 4;

-- Wrapped key material, one row per version.
CREATE TABLE key_materials (
    key_id       TEXT    NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
    version      INTEGER NOT NULL CHECK (version >= 0),
    wrapping_key TEXT    NOT NULL,
    wrapped      BLOB    NOT NULL,
    created_ms   INTEGER NOT NULL,
    PRIMARY KEY (key_id, version)
) STRICT;

-- Alias resources (distinct from the `keys.alias` attribute).
CREATE TABLE aliases (
    project_id TEXT    NOT NULL,
    alias      TEXT    NOT NULL,
    key_id     TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (project_id, alias),
    FOREIGN KEY (project_id, key_id) REFERENCES keys (project_id, key_id) ON DELETE CASCADE
) STRICT;

CREATE INDEX aliases_key_idx ON aliases (project_id, key_id);

CREATE TABLE key_tags (
    key_id    TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
    tag_key   TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (key_id, tag_key)
) STRICT;

-- Grants. `operations` is a JSON array of wire names.
CREATE TABLE grants (
    grant_id               TEXT    NOT NULL PRIMARY KEY,
    project_id             TEXT    NOT NULL,
    key_id                 TEXT    NOT NULL,
    name                   TEXT    NOT NULL,
    grantee_principal      TEXT    NOT NULL,
    grantee_principal_type TEXT    NOT NULL,
    operations             TEXT    NOT NULL,
    issuing_principal      TEXT    NOT NULL,
    retiring_principal     TEXT    NOT NULL,
    created_ms             INTEGER NOT NULL,
    FOREIGN KEY (project_id, key_id) REFERENCES keys (project_id, key_id) ON DELETE CASCADE
) STRICT;

CREATE INDEX grants_key_idx ON grants (project_id, key_id, created_ms, grant_id);
CREATE INDEX grants_retiring_idx ON grants (project_id, retiring_principal, created_ms, grant_id);
