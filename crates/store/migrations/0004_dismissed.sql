-- Schema version 4: the pre-labels people rejected, kept with each annotation version
-- (ids of `detections` rows), so a rejection is seen on every tablet, follows undo and
-- conflicts like any edit, and keeps rejected proposals out of exports' predictions.
ALTER TABLE annotations ADD COLUMN dismissed TEXT NOT NULL DEFAULT '[]';
