-- Domain-key binding (issue 9 §7), SQLite flavour.
--
-- One row per HSM domain key (wrapping key) label: its key check value
-- (KCV), computed in the HSM by the crypto-workers (GetDomainKeyCheck).
-- Edges refuse to start when the HSM's key under the label has another KCV,
-- and `keymeshctl domain-key init` refuses to create a second key over
-- recorded material. Existing deployments get their row on the edge's first
-- start after this migration (the HSM's KCV is recorded as found).
CREATE TABLE domain_keys (
    label       TEXT    NOT NULL PRIMARY KEY,
    kcv         TEXT    NOT NULL,
    recorded_ms INTEGER NOT NULL
) STRICT;
