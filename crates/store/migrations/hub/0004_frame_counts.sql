-- Hub schema 4: each device's frame count, kept beside the device by triggers in the
-- same transaction as the frames themselves (issue 20, item 3). The fleet view counted
-- every frame of every device on each request, a walk of the whole table: under load
-- it took most of the hub's CPU from the ingest. `INSERT OR IGNORE` of a frame already
-- held fires no trigger, so a batch sent twice is counted once; erasure and retention
-- delete rows, which count down.
ALTER TABLE devices ADD COLUMN frames INTEGER NOT NULL DEFAULT 0;
UPDATE devices SET frames = (SELECT COUNT(*) FROM frames f WHERE f.device = devices.id);
CREATE TRIGGER frames_count_in AFTER INSERT ON frames BEGIN
    UPDATE devices SET frames = frames + 1 WHERE id = NEW.device;
END;
CREATE TRIGGER frames_count_out AFTER DELETE ON frames BEGIN
    UPDATE devices SET frames = frames - 1 WHERE id = OLD.device;
END;
