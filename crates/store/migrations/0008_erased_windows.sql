-- Schema version 8: erasure by window covers frames still in the pipeline. An erasure
-- of a camera and time window (a steward's, or the hub's command) is kept here for an
-- hour; a frame the store is handed later whose capture time falls in it was in flight
-- when the erasure ran, and is dropped unwritten (counted as `erased`).
CREATE TABLE erased_windows (
    id         INTEGER PRIMARY KEY,
    camera_id  TEXT,                      -- NULL: every camera
    from_at    INTEGER,                   -- NULL: from the start
    until_at   INTEGER NOT NULL,          -- exclusive; the erasure's time when it named none
    erased_at  INTEGER NOT NULL
);
