-- Schema version 2: when a frame was pre-labelled, so the pre-labeller can fall behind
-- and catch up from the database, never holding up anonymization.
ALTER TABLE frames ADD COLUMN prelabeled_at INTEGER;
CREATE INDEX frames_awaiting_prelabel ON frames(id) WHERE prelabeled_at IS NULL;
