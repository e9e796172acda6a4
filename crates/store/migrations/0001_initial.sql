-- Schema version 1. Times are Unix milliseconds (UTC). See ARCHITECTURE.md, "The store".

CREATE TABLE cameras (
    id          TEXT PRIMARY KEY,
    zone        TEXT,                         -- for consents scoped to a zone
    keep_days   INTEGER,                      -- NULL: the global default
    created_at  INTEGER NOT NULL
);

-- One anonymized frame. The pixels are in an encrypted blob named by a keyed hash.
CREATE TABLE frames (
    id           INTEGER PRIMARY KEY,
    camera_id    TEXT NOT NULL REFERENCES cameras(id),
    seq          INTEGER NOT NULL,            -- the camera's frame counter
    captured_at  INTEGER NOT NULL,
    blob_id      TEXT NOT NULL,
    bytes        INTEGER NOT NULL,            -- encoded (JPEG) size
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    provenance   TEXT NOT NULL,               -- JSON: models, SHA-256s, thresholds, counts, timings
    local_only   INTEGER NOT NULL DEFAULT 0,  -- kept with no `annotate` consent: never synced or exported
    status       TEXT NOT NULL DEFAULT 'new'
                 CHECK (status IN ('new', 'in_progress', 'annotated', 'accepted', 'rejected')),
    metadata     TEXT NOT NULL DEFAULT '{}',  -- JSON, free-form
    synced_at    INTEGER
);
CREATE INDEX frames_by_camera_time ON frames(camera_id, captured_at);
CREATE INDEX frames_by_time ON frames(captured_at);
CREATE INDEX frames_by_blob ON frames(blob_id);

-- Machine proposals: the anonymizer's own face and plate boxes and the pre-labeller's
-- objects. Kept apart from what people draw.
CREATE TABLE detections (
    id            INTEGER PRIMARY KEY,
    frame_id      INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE,
    source        TEXT NOT NULL CHECK (source IN ('anonymizer', 'prelabel')),
    label         TEXT NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    score         REAL NOT NULL,
    model         TEXT NOT NULL,
    model_sha256  TEXT NOT NULL
);
CREATE INDEX detections_by_frame ON detections(frame_id);

-- The label schema.
CREATE TABLE labels (
    id     INTEGER PRIMARY KEY,
    name   TEXT NOT NULL UNIQUE,
    color  TEXT NOT NULL DEFAULT '#3b82f6',
    shape  TEXT NOT NULL DEFAULT 'any' CHECK (shape IN ('any', 'box', 'polygon'))
);
CREATE TABLE label_attributes (
    id        INTEGER PRIMARY KEY,
    label_id  INTEGER NOT NULL REFERENCES labels(id) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('text', 'number', 'checkbox', 'select')),
    choices   TEXT NOT NULL DEFAULT '[]',     -- JSON array, for `select`
    UNIQUE (label_id, name)
);

-- Human annotations, versioned: a save adds a version; the newest is current.
CREATE TABLE annotations (
    frame_id    INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    shapes      TEXT NOT NULL,                -- JSON array of shapes with label and attributes
    author      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (frame_id, version)
);

CREATE TABLE reviews (
    id          INTEGER PRIMARY KEY,
    frame_id    INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,             -- the annotation version reviewed
    decision    TEXT NOT NULL CHECK (decision IN ('accept', 'reject')),
    comment     TEXT NOT NULL DEFAULT '',
    reviewer    TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Work queues and claims ("give me the next frame to label").
CREATE TABLE queues (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    filter  TEXT NOT NULL DEFAULT '{}'        -- JSON: cameras, time window, status
);
CREATE TABLE queue_items (
    queue_id    INTEGER NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    frame_id    INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE,
    claimed_by  TEXT,
    claimed_at  INTEGER,
    PRIMARY KEY (queue_id, frame_id)
);

-- Consent (ARCHITECTURE.md, the store's "Consent").
CREATE TABLE consents (
    id               TEXT PRIMARY KEY,
    scope            TEXT NOT NULL CHECK (scope IN ('device', 'camera', 'zone')),
    scope_ref        TEXT,                    -- the camera id, or the zone name
    covered          TEXT NOT NULL,           -- who is covered, e.g. "site staff"
    legal_basis      TEXT NOT NULL,
    purposes         TEXT NOT NULL,           -- comma-separated: annotate, sync, train
    valid_from       INTEGER NOT NULL,
    valid_until      INTEGER,
    evidence_sha256  TEXT,
    recorded_by      TEXT NOT NULL,
    recorded_at      INTEGER NOT NULL,
    withdrawn_at     INTEGER
);
-- The consents that covered a frame's camera when it was captured.
CREATE TABLE frame_consents (
    frame_id    INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE,
    consent_id  TEXT NOT NULL REFERENCES consents(id),
    PRIMARY KEY (frame_id, consent_id)
);
CREATE INDEX frame_consents_by_consent ON frame_consents(consent_id);

-- Accounts and sessions, for the web API.
CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'annotator', 'reviewer', 'steward')),
    password_hash  TEXT NOT NULL,
    disabled       INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);
CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,             -- SHA-256 of the session id: a stolen database holds no live ids
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    csrf        TEXT NOT NULL
);

-- Append-only and hash-chained: hash = SHA-256(prev_hash || canonical JSON of the entry).
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

-- What sync must carry to the hub, in order; the outbox, not a client library's queue,
-- is the source of truth.
CREATE TABLE sync_outbox (
    id               INTEGER PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('frame', 'annotation', 'tombstone')),
    ref              TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'acknowledged')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    created_at       INTEGER NOT NULL
);
-- What was erased, by id only, so sync can ask the hub to erase its copy.
CREATE TABLE tombstones (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,                -- frame
    ref         TEXT NOT NULL,                -- frame id and blob id; never content
    erased_at   INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    synced_at   INTEGER
);

CREATE TABLE retention_runs (
    id           INTEGER PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL,
    removed      INTEGER NOT NULL,
    freed_bytes  INTEGER NOT NULL,
    outcome      TEXT NOT NULL                -- ok, or what went wrong
);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
