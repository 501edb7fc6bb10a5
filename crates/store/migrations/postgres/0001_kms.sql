-- keymesh KMS schema (issue #4), PostgreSQL flavour.
--
-- Mirrors migrations/sqlite/0001_kms.sql table for table and column for
-- column, so that one set of statements (src/sql.rs) serves both backends.
-- Integers are BIGINT throughout (decoded as i64 on both backends). Names
-- and identifiers are COLLATE "C": ORDER BY then compares bytes, exactly as
-- SQLite's BINARY collation does, whatever the database's default locale.
-- Later features (issue #5: secrets) add their own numbered files.

-- API credentials. `secret_key` is stored as given: SDK-HMAC-SHA256
-- verification recomputes the signature with the SK itself, so a one-way
-- hash cannot replace it; database roles and grants protect it.
CREATE TABLE accounts (
    access_key  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    secret_key  TEXT   NOT NULL,
    project_id  TEXT COLLATE "C" NOT NULL,
    user_id     TEXT COLLATE "C" NOT NULL,
    role        TEXT   NOT NULL CHECK (role IN ('full', 'readonly')),
    created_ms  BIGINT NOT NULL
);

-- One row per project that has ever written: read-check-write transactions
-- lock it (SELECT ... FOR UPDATE) so that quota checks and unique-name
-- checks of one project run one at a time (see src/postgres.rs).
CREATE TABLE projects (
    project_id TEXT COLLATE "C" NOT NULL PRIMARY KEY
);

-- Customer master keys (metadata). `key_id` is globally unique; the second
-- unique key (project_id, key_id) is what child tables reference, so that a
-- child row can only ever point at a key of its own project.
CREATE TABLE keys (
    key_id                TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id            TEXT COLLATE "C" NOT NULL,
    alias                 TEXT COLLATE "C" NOT NULL,
    description           TEXT    NOT NULL,
    spec                  TEXT COLLATE "C" NOT NULL,
    key_usage             TEXT    NOT NULL,
    origin                TEXT    NOT NULL,
    state                 BIGINT  NOT NULL CHECK (state BETWEEN 1 AND 5),
    default_key           BOOLEAN NOT NULL,
    created_ms            BIGINT  NOT NULL,
    deletion_ms           BIGINT,
    material_version      BIGINT  NOT NULL CHECK (material_version >= 0),
    enterprise_project_id TEXT COLLATE "C" NOT NULL,
    keystore_id           TEXT    NOT NULL,
    CONSTRAINT keys_project_key_uq UNIQUE (project_id, key_id),
    CONSTRAINT keys_project_alias_uq UNIQUE (project_id, alias)
);

-- list_keys / find_keys_by_tags order.
CREATE INDEX keys_project_created_idx ON keys (project_id, created_ms, key_id);
-- The purge scan: only keys pending deletion.
CREATE INDEX keys_pending_deletion_idx ON keys (deletion_ms) WHERE state = 4;

-- Wrapped key material, one row per version.
CREATE TABLE key_materials (
    key_id       TEXT COLLATE "C" NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
    version      BIGINT NOT NULL CHECK (version >= 0),
    wrapping_key TEXT   NOT NULL,
    wrapped      BYTEA  NOT NULL,
    created_ms   BIGINT NOT NULL,
    PRIMARY KEY (key_id, version)
);

-- Alias resources (distinct from the `keys.alias` attribute).
CREATE TABLE aliases (
    project_id TEXT COLLATE "C" NOT NULL,
    alias      TEXT COLLATE "C" NOT NULL,
    key_id     TEXT COLLATE "C" NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (project_id, alias),
    FOREIGN KEY (project_id, key_id) REFERENCES keys (project_id, key_id) ON DELETE CASCADE
);

CREATE INDEX aliases_key_idx ON aliases (project_id, key_id);

CREATE TABLE key_tags (
    key_id    TEXT COLLATE "C" NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
    tag_key   TEXT COLLATE "C" NOT NULL,
    tag_value TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (key_id, tag_key)
);

-- Grants. `operations` is a JSON array of wire names (TEXT, as in SQLite).
CREATE TABLE grants (
    grant_id               TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id             TEXT COLLATE "C" NOT NULL,
    key_id                 TEXT COLLATE "C" NOT NULL,
    name                   TEXT   NOT NULL,
    grantee_principal      TEXT   NOT NULL,
    grantee_principal_type TEXT   NOT NULL,
    operations             TEXT   NOT NULL,
    issuing_principal      TEXT   NOT NULL,
    retiring_principal     TEXT COLLATE "C" NOT NULL,
    created_ms             BIGINT NOT NULL,
    FOREIGN KEY (project_id, key_id) REFERENCES keys (project_id, key_id) ON DELETE CASCADE
);

CREATE INDEX grants_key_idx ON grants (project_id, key_id, created_ms, grant_id);
CREATE INDEX grants_retiring_idx ON grants (project_id, retiring_principal, created_ms, grant_id);
