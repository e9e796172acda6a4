-- Schema version 8: what erasure needs beyond version 7.
--
-- Erasure by window covers frames still in the pipeline. An erasure of a camera and
-- time window (a steward's, or the hub's command) is kept here for an hour; a frame the
-- store is handed later whose capture time falls in it was in flight when the erasure
-- ran, and is dropped unwritten (counted as `erased`).
CREATE TABLE erased_windows (
    id         INTEGER PRIMARY KEY,
    camera_id  TEXT,                      -- NULL: every camera
    from_at    INTEGER,                   -- NULL: from the start
    until_at   INTEGER NOT NULL,          -- exclusive; the erasure's time when it named none
    erased_at  INTEGER NOT NULL
);

-- A tombstone carries the frame's SHA-256 (the wire's name for its JPEG), so the hub
-- can also drop an upload that no frame of the box names: one sent for a batch that
-- never committed. NULL on tombstones from before.
ALTER TABLE tombstones ADD COLUMN sha256 TEXT;
