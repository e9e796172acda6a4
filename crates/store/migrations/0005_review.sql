-- Schema version 5 (issue 15). Frame ids are never reused; purposes are a typed set; a
-- review accepts one version, and that version is what leaves the box; the outbox
-- leases. Runs with foreign keys off (the migrator turns them off and checks them
-- after), since `frames` is rebuilt under the tables that reference it.

-- Frames gain AUTOINCREMENT: an erased frame's id never comes back, so tombstones,
-- outbox rows, audit subjects and exports keep naming the frame they named.
CREATE TABLE frames_v5 (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    camera_id         TEXT NOT NULL REFERENCES cameras(id),
    seq               INTEGER NOT NULL,
    captured_at       INTEGER NOT NULL,
    blob_id           TEXT NOT NULL,
    bytes             INTEGER NOT NULL,
    width             INTEGER NOT NULL,
    height            INTEGER NOT NULL,
    provenance        TEXT NOT NULL,
    local_only        INTEGER NOT NULL DEFAULT 0,
    status            TEXT NOT NULL DEFAULT 'new'
                      CHECK (status IN ('new', 'in_progress', 'annotated', 'accepted', 'rejected')),
    metadata          TEXT NOT NULL DEFAULT '{}',
    synced_at         INTEGER,
    prelabeled_at     INTEGER,
    -- The annotation version a review accepted: what `export --status accepted` and sync
    -- send. A later draft reopens the frame without changing it.
    accepted_version  INTEGER
);
INSERT INTO frames_v5 (id, camera_id, seq, captured_at, blob_id, bytes, width, height, provenance, local_only,
                       status, metadata, synced_at, prelabeled_at, accepted_version)
SELECT f.id, f.camera_id, f.seq, f.captured_at, f.blob_id, f.bytes, f.width, f.height, f.provenance, f.local_only,
       f.status, f.metadata, f.synced_at, f.prelabeled_at,
       (SELECT r.version FROM reviews r WHERE r.frame_id = f.id AND r.decision = 'accept' ORDER BY r.id DESC LIMIT 1)
FROM frames f;
DROP TABLE frames;
ALTER TABLE frames_v5 RENAME TO frames;
CREATE INDEX frames_by_camera_time ON frames(camera_id, captured_at);
CREATE INDEX frames_by_time ON frames(captured_at);
CREATE INDEX frames_by_blob ON frames(blob_id);
CREATE INDEX frames_awaiting_prelabel ON frames(id) WHERE prelabeled_at IS NULL;

-- Past every id ever given: erased frames left tombstones naming theirs.
INSERT INTO sqlite_sequence (name, seq)
SELECT 'frames', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'frames');
UPDATE sqlite_sequence SET seq = max(seq,
        COALESCE((SELECT MAX(id) FROM frames), 0),
        COALESCE((SELECT MAX(CAST(ref AS INTEGER)) FROM tombstones WHERE kind = 'frame'), 0))
WHERE name = 'frames';

-- Accepted frames whose newest version is not the accepted one were edited after the
-- review (the defect this version fixes): they are reopened.
UPDATE frames SET status = 'in_progress'
WHERE status = 'accepted'
  AND (accepted_version IS NULL
       OR accepted_version < (SELECT MAX(a.version) FROM annotations a WHERE a.frame_id = frames.id));

-- Purposes: a typed set, one row per purpose, instead of comma-text matched with LIKE.
CREATE TABLE consent_purposes (
    consent_id  TEXT NOT NULL REFERENCES consents(id),
    purpose     TEXT NOT NULL CHECK (purpose IN ('annotate', 'sync', 'train')),
    PRIMARY KEY (consent_id, purpose)
) WITHOUT ROWID;
INSERT OR IGNORE INTO consent_purposes (consent_id, purpose)
SELECT c.id, trim(p.value) FROM consents c, json_each('["' || replace(c.purposes, ',', '","') || '"]') p;
ALTER TABLE consents DROP COLUMN purposes;

-- The outbox leases entries to the sync stage and retries with back-off.
ALTER TABLE sync_outbox ADD COLUMN leased_until INTEGER;
ALTER TABLE sync_outbox ADD COLUMN last_error TEXT;
CREATE INDEX sync_outbox_due ON sync_outbox(state, next_attempt_at);

-- Tombstones name the frame by id, typed, so pruning and sync need not parse `ref`.
ALTER TABLE tombstones ADD COLUMN frame_id INTEGER;
UPDATE tombstones SET frame_id = CAST(ref AS INTEGER) WHERE kind = 'frame';
