-- Hub schema 3: accounts for the hub's people, the same tables as a box's (schemas 1
-- and 3 there), worked by the same code (`store::Accounts`): Argon2id hashes, sessions
-- by the SHA-256 of their id, login failures for the rate limits, the one-time setup
-- code that makes the first admin. No default password.
CREATE TABLE users (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    role                 TEXT NOT NULL CHECK (role IN ('admin', 'annotator', 'reviewer', 'steward')),
    password_hash        TEXT NOT NULL,
    disabled             INTEGER NOT NULL DEFAULT 0,
    created_at           INTEGER NOT NULL,
    password_changed_at  INTEGER
);
CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    csrf        TEXT NOT NULL,
    ip          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_by_user ON sessions(user_id);
CREATE TABLE login_failures (
    id       INTEGER PRIMARY KEY,
    account  TEXT NOT NULL,
    ip       TEXT NOT NULL,
    at       INTEGER NOT NULL
);
CREATE INDEX login_failures_by_account ON login_failures(account, at);
CREATE INDEX login_failures_by_ip ON login_failures(ip, at);
CREATE TABLE login_known (
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    ip       TEXT NOT NULL,
    last_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, ip)
);
CREATE TABLE setup_codes (
    code_sha256  TEXT PRIMARY KEY,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER
);
