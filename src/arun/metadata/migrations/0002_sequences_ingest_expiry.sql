-- arun metadata, schema version 2.
-- Monotonic counters (backend keys of snapshots and ingests are "<ns>/<n>/<key>",
-- n from the counter of that snapshotter or of content), and the expiry of an
-- ingest that no lease holds (garbage collection keeps it until then).

CREATE TABLE sequences (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);

ALTER TABLE ingests ADD COLUMN expires_at INTEGER;
