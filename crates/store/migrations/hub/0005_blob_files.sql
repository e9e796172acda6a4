-- Hub schema 5: blobs by their file (issue 20, item 3). Whether a file is still named
-- (by a blob or an upload piece) is asked as each upload completes, for each of its
-- pieces; without this index that walked every blob the hub holds, so the ingest slowed
-- as the hub filled (66 blobs a second on 10,000 frames, 20 on 100,000).
CREATE INDEX blobs_by_file ON blobs (blob_id);
