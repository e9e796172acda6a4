-- Schema version 3: what the LAN web API needs beyond version 1's users and sessions.

-- Failed logins, kept so rate limits survive a restart; pruned after a day.
CREATE TABLE login_failures (
    id       INTEGER PRIMARY KEY,
    account  TEXT NOT NULL,
    ip       TEXT NOT NULL,
    at       INTEGER NOT NULL
);
CREATE INDEX login_failures_by_account ON login_failures(account, at);
CREATE INDEX login_failures_by_ip ON login_failures(ip, at);

-- Addresses an account has logged in from: a flood against the account from elsewhere
-- does not lock these out.
CREATE TABLE login_known (
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    ip       TEXT NOT NULL,
    last_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, ip)
);

-- The one-time code that creates the first admin (only its SHA-256 is kept).
CREATE TABLE setup_codes (
    code_sha256  TEXT PRIMARY KEY,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER
);

ALTER TABLE users ADD COLUMN password_changed_at INTEGER;
ALTER TABLE sessions ADD COLUMN ip TEXT NOT NULL DEFAULT '';
CREATE INDEX sessions_by_user ON sessions(user_id);

-- Label attributes gain a default; labels an order for pickers.
ALTER TABLE label_attributes ADD COLUMN default_value TEXT NOT NULL DEFAULT '';

-- Claims expire, so a frame an annotator walked away from returns to the queue.
CREATE INDEX queue_items_by_claim ON queue_items(claimed_by, claimed_at);
CREATE INDEX reviews_by_frame ON reviews(frame_id, id);
INSERT INTO queues (name, filter) VALUES ('all', '{}');
