-- Hub schema 2: what the control plane last heard from each device (MQTT), so the
-- fleet's state is read from the store like everything else, from any hub process.
CREATE TABLE presence (
    device        TEXT PRIMARY KEY REFERENCES devices (id),
    online        INTEGER NOT NULL,           -- the retained status: 1 online, 0 offline (its will or its goodbye)
    changed_ms    INTEGER NOT NULL,           -- when the hub heard it
    telemetry     TEXT,                       -- JSON, wire::mqtt::Telemetry, the newest
    telemetry_ms  INTEGER
);

-- An erase command may name a camera and time window besides frame ids (JSON,
-- wire::v1::EraseWindow): the box erases what it holds there, sent or not.
ALTER TABLE commands ADD COLUMN erase_window TEXT;
