-- Schema version 9: instructions for annotators on each label (issue 18): a short text,
-- and an example cut from a frame on this box. The example is a frame and a box, not an
-- uploaded picture, so it is anonymized and encrypted like every frame, and it goes
-- when its frame is erased or expires (the reference is set to NULL).
ALTER TABLE labels ADD COLUMN instructions TEXT NOT NULL DEFAULT '';
ALTER TABLE labels ADD COLUMN example_frame INTEGER REFERENCES frames(id) ON DELETE SET NULL;
ALTER TABLE labels ADD COLUMN example_box TEXT;   -- JSON [x, y, w, h] in the frame's pixels
