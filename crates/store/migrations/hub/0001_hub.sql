-- The hub's own database (`STATE_DIR/store/hub.db`), apart from any box's: the devices
-- that enrolled, what they sent, the receipts given, and the hub's own audit chain.

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- Append-only and hash-chained, as on a box (the same code writes and checks it).
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    detail     TEXT NOT NULL,                 -- JSON
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

CREATE TABLE devices (
    id           TEXT PRIMARY KEY,            -- the device's ULID
    public_key   BLOB NOT NULL,               -- raw Ed25519, 32 bytes
    hostname     TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'revoked')),
    enrolled_ms  INTEGER NOT NULL,
    decided_ms   INTEGER
);

-- One-time enrolment tokens, kept as their SHA-256 only.
CREATE TABLE enrol_tokens (
    hash        TEXT PRIMARY KEY,
    created_ms  INTEGER NOT NULL,
    used_by     TEXT,
    used_ms     INTEGER
);

-- Request nonces seen, per device, until they can no longer be fresh.
CREATE TABLE nonces (
    device      TEXT NOT NULL,
    nonce       TEXT NOT NULL,
    expires_ms  INTEGER NOT NULL,
    PRIMARY KEY (device, nonce)
) WITHOUT ROWID;
CREATE INDEX nonces_expiry ON nonces (expires_ms);

-- Blob content, stored once however many devices sent it: the encrypted file's id.
CREATE TABLE blobs (
    sha256     TEXT PRIMARY KEY,
    blob_id    TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    stored_ms  INTEGER NOT NULL
);

-- Each device's upload of a blob: what HEAD answers, and a reference to the blob.
CREATE TABLE uploads (
    device      TEXT NOT NULL REFERENCES devices (id),
    sha256      TEXT NOT NULL,
    length      INTEGER NOT NULL,
    received    INTEGER NOT NULL,
    complete    INTEGER NOT NULL DEFAULT 0,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (device, sha256)
);

-- The pieces of an upload still under way, each an encrypted blob file.
CREATE TABLE upload_parts (
    device   TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    at       INTEGER NOT NULL,
    bytes    INTEGER NOT NULL,
    blob_id  TEXT NOT NULL,
    PRIMARY KEY (device, sha256, at),
    FOREIGN KEY (device, sha256) REFERENCES uploads (device, sha256) ON DELETE CASCADE
);
CREATE INDEX upload_parts_blob ON upload_parts (blob_id);

CREATE TABLE frames (
    device       TEXT NOT NULL REFERENCES devices (id),
    local        INTEGER NOT NULL,            -- the frame's id on the device
    batch        TEXT NOT NULL,
    camera       TEXT NOT NULL,
    captured_ms  INTEGER NOT NULL,
    sha256       TEXT NOT NULL REFERENCES blobs (sha256),
    bytes        INTEGER NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    annotation   TEXT,                        -- JSON {version, shapes}
    predictions  TEXT NOT NULL,               -- JSON array
    received_ms  INTEGER NOT NULL,
    PRIMARY KEY (device, local)
);
CREATE INDEX frames_blob ON frames (sha256);

CREATE TABLE consents (
    device           TEXT NOT NULL REFERENCES devices (id),
    id               TEXT NOT NULL,
    record           TEXT NOT NULL,           -- JSON, the wire's consent record
    withdrawn_at_ms  INTEGER,
    updated_ms       INTEGER NOT NULL,
    PRIMARY KEY (device, id)
);

CREATE TABLE frame_consents (
    device   TEXT NOT NULL,
    local    INTEGER NOT NULL,
    consent  TEXT NOT NULL,
    PRIMARY KEY (device, local, consent),
    FOREIGN KEY (device, local) REFERENCES frames (device, local) ON DELETE CASCADE
);

-- Every receipt given, so the same batch, update or erasure gets the same bytes again.
CREATE TABLE receipts (
    device      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('batch', 'consents', 'erasure')),
    id          TEXT NOT NULL,
    receipt     TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (device, kind, id)
);

CREATE TABLE commands (
    id          TEXT PRIMARY KEY,
    device      TEXT NOT NULL REFERENCES devices (id),
    kind        TEXT NOT NULL CHECK (kind IN ('erase', 'sync_now', 'pause', 'resume')),
    frames      TEXT NOT NULL,                -- JSON array of device frame ids
    created_ms  INTEGER NOT NULL,
    acked_ms    INTEGER,
    result      TEXT                          -- JSON, the device's acknowledgement
);
CREATE INDEX commands_pending ON commands (device, acked_ms);
