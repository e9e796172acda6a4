-- Schema 6: sync batches. The outbox in SQLite is the truth about what has left the
-- box: a batch is formed in one transaction, its manifest stored as the exact bytes
-- sent (so a retry sends the same commit and the hub's answer is the same receipt),
-- and it moves pending -> uploading -> committed (with the hub's receipt) or rejected
-- (with the reason).
CREATE TABLE sync_batches (
    id               TEXT PRIMARY KEY,        -- a ULID
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'uploading', 'committed', 'rejected')),
    manifest         TEXT NOT NULL,           -- wire::v1::Manifest, as sent
    frames           INTEGER NOT NULL,
    bytes            INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    receipt          TEXT,                    -- the hub's signed receipt, verbatim
    reason           TEXT                     -- why the hub refused it
);
CREATE INDEX sync_batches_state ON sync_batches(state, next_attempt_at);

-- Which frames a batch carries, with the blob to upload for each. A frame is in at
-- most one batch that is not rejected. Erasing a frame removes it here too.
CREATE TABLE sync_batch_frames (
    batch_id  TEXT NOT NULL REFERENCES sync_batches(id) ON DELETE CASCADE,
    frame_id  INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE,
    sha256    TEXT NOT NULL,                  -- of the anonymized JPEG, as the hub names it
    PRIMARY KEY (batch_id, frame_id)
);
CREATE INDEX sync_batch_frames_frame ON sync_batch_frames(frame_id);

-- The SHA-256 of each frame's JPEG, the hub's name for it (the blob file's own name is
-- a keyed HMAC, which reveals nothing). Filled at capture; older frames when batched.
ALTER TABLE frames ADD COLUMN sha256 TEXT;

-- Frames retention removed before they could be synced: counted, never silent.
CREATE TABLE sync_expired (
    frame_id    INTEGER PRIMARY KEY,
    camera_id   TEXT NOT NULL,
    captured_at INTEGER NOT NULL,
    expired_at  INTEGER NOT NULL
);
