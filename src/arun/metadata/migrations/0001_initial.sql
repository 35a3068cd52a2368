-- arun metadata, schema version 1.
-- Every table is keyed by namespace first: an object in one namespace is
-- invisible from another. Labels and other maps are JSON objects; protobuf
-- Any values are stored serialized; times are nanoseconds since the epoch.

CREATE TABLE namespaces (
    name        TEXT PRIMARY KEY,
    labels      TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL
);

CREATE TABLE containers (
    namespace        TEXT NOT NULL REFERENCES namespaces(name),
    id               TEXT NOT NULL,
    labels           TEXT NOT NULL DEFAULT '{}',
    image            TEXT NOT NULL DEFAULT '',
    runtime_name     TEXT NOT NULL DEFAULT '',
    runtime_options  BLOB,
    spec             BLOB,
    snapshotter      TEXT NOT NULL DEFAULT '',
    snapshot_key     TEXT NOT NULL DEFAULT '',
    sandbox_id       TEXT NOT NULL DEFAULT '',
    extensions       TEXT NOT NULL DEFAULT '{}',
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (namespace, id)
);

CREATE TABLE images (
    namespace           TEXT NOT NULL REFERENCES namespaces(name),
    name                TEXT NOT NULL,
    labels              TEXT NOT NULL DEFAULT '{}',
    target_media_type   TEXT NOT NULL,
    target_digest       TEXT NOT NULL,
    target_size         INTEGER NOT NULL,
    target_annotations  TEXT NOT NULL DEFAULT '{}',
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);

-- A blob's presence in a namespace (the bytes live once in the content store).
CREATE TABLE content (
    namespace   TEXT NOT NULL REFERENCES namespaces(name),
    digest      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    labels      TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (namespace, digest)
);
CREATE INDEX content_by_digest ON content (digest);

-- Ingests in progress, by client ref; the backend ref is namespaced.
CREATE TABLE ingests (
    namespace   TEXT NOT NULL REFERENCES namespaces(name),
    ref         TEXT NOT NULL,
    backend_ref TEXT NOT NULL,
    expected    TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (namespace, ref)
);

-- Snapshot keys of a namespace, mapped to the snapshotter's own (backend) keys.
CREATE TABLE snapshots (
    namespace    TEXT NOT NULL REFERENCES namespaces(name),
    snapshotter  TEXT NOT NULL,
    key          TEXT NOT NULL,
    backend_key  TEXT NOT NULL,
    parent       TEXT NOT NULL DEFAULT '',
    labels       TEXT NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (namespace, snapshotter, key)
);
CREATE INDEX snapshots_by_parent ON snapshots (namespace, snapshotter, parent);
CREATE UNIQUE INDEX snapshots_by_backend_key ON snapshots (snapshotter, backend_key);

CREATE TABLE leases (
    namespace   TEXT NOT NULL REFERENCES namespaces(name),
    id          TEXT NOT NULL,
    labels      TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (namespace, id)
);

-- Resources a lease holds: type is containerd's resource type string
-- ("content", "ingests", "snapshots/<snapshotter>", "images").
CREATE TABLE lease_resources (
    namespace  TEXT NOT NULL,
    lease      TEXT NOT NULL,
    type       TEXT NOT NULL,
    id         TEXT NOT NULL,
    PRIMARY KEY (namespace, lease, type, id),
    FOREIGN KEY (namespace, lease) REFERENCES leases(namespace, id) ON DELETE CASCADE
);
CREATE INDEX lease_resources_by_id ON lease_resources (namespace, type, id);

CREATE TABLE sandboxes (
    namespace        TEXT NOT NULL REFERENCES namespaces(name),
    id               TEXT NOT NULL,
    labels           TEXT NOT NULL DEFAULT '{}',
    runtime_name     TEXT NOT NULL DEFAULT '',
    runtime_options  BLOB,
    spec             BLOB,
    sandboxer        TEXT NOT NULL DEFAULT '',
    extensions       TEXT NOT NULL DEFAULT '{}',
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (namespace, id)
);
