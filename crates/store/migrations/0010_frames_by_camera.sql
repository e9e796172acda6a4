-- Schema version 10: frames by camera in id order (issue 20, item 3). Each stored batch
-- summarizes, per camera, the frames past that camera's last summarized id. Without
-- this index that was a walk of every frame stored since, by any camera: the whole table
-- for a camera new to a full store, or one that had been offline. Under load it held the
-- store's writer for 60 to 240 ms a batch, and every annotation save waited behind it.
-- (An index on camera_id alone is ordered by (camera_id, rowid), so "camera = ? AND
-- id > ?" is one range.)
CREATE INDEX frames_by_camera ON frames(camera_id);
