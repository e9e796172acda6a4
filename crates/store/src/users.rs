//! Accounts, server-side sessions, login rate limits and the first-run setup code. The
//! store keeps hashes only: Argon2id for passwords (computed by the web crate), SHA-256
//! for session ids and setup codes, so a copied database holds nothing that logs in.
//!
//! A box's store and the hub's (`HubDb`) both keep these tables, and this one code works
//! them: [`Accounts`], which `web::auth` serves on either side. So the hub has the same
//! accounts, roles, sessions, limits and first-run setup code as a box, and no default
//! password either.

use std::sync::MutexGuard;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::{StoreError, audit};

/// What an account may do; each role has the least power its work needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Annotator,
    Reviewer,
    Steward,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Annotator, Role::Reviewer, Role::Steward];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Annotator => "annotator",
            Role::Reviewer => "reviewer",
            Role::Steward => "steward",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a role: use admin, annotator, reviewer or steward"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: i64,
    #[serde(skip)]
    pub password_hash: String,
}

/// A live session and its account.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub user: User,
    pub created_at: i64,
    pub last_seen: i64,
    pub csrf: String,
}

/// Failed logins within a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failures {
    pub count: u32,
    /// The newest, Unix ms.
    pub last_at: Option<i64>,
}

const USER_COLUMNS: &str = "u.id, u.name, u.role, u.disabled, u.created_at, u.password_hash";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(2)?;
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        role: role
            .parse()
            .map_err(|e: String| rusqlite::Error::InvalidColumnType(2, e, rusqlite::types::Type::Text))?,
        disabled: r.get(3)?,
        created_at: r.get(4)?,
        password_hash: r.get(5)?,
    })
}

/// An account's name by id, or NotFound.
fn user_name(conn: &rusqlite::Connection, id: i64) -> Result<String, StoreError> {
    conn.query_row("SELECT name FROM users WHERE id = ?1", [id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("user {id}")))
}

/// Accounts, sessions, login limits and the setup code, wherever their tables are.
pub trait Accounts: Send + Sync {
    fn user_count(&self) -> Result<u64, StoreError>;
    fn users(&self) -> Result<Vec<User>, StoreError>;
    fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError>;
    fn user(&self, id: i64) -> Result<User, StoreError>;
    /// Adds an account; the name must be new.
    fn add_user(&self, name: &str, role: Role, password_hash: &str, actor: &str) -> Result<User, StoreError>;
    /// Changes an account's role or disables it; either ends its sessions.
    fn update_user(&self, id: i64, role: Option<Role>, disabled: Option<bool>, actor: &str)
    -> Result<User, StoreError>;
    /// Sets a new password hash and ends every session of the account.
    fn set_password(&self, id: i64, password_hash: &str, actor: &str) -> Result<(), StoreError>;
    /// Records a new session by the SHA-256 of its id.
    fn create_session(&self, id_sha256: &str, user: i64, csrf: &str, ip: &str) -> Result<(), StoreError>;
    /// The session, if it exists, its account is enabled, and it is within both
    /// timeouts; then marks it seen. An expired session is deleted.
    fn session(&self, id_sha256: &str, idle_ms: i64, absolute_ms: i64) -> Result<Option<Session>, StoreError>;
    fn delete_session(&self, id_sha256: &str) -> Result<(), StoreError>;
    /// Records a failed login (and prunes those older than a day).
    fn record_login_failure(&self, account: &str, ip: &str) -> Result<(), StoreError>;
    /// Failed logins since `since` (Unix ms) for an account, or from an address.
    fn login_failures(&self, account: Option<&str>, ip: Option<&str>, since: i64) -> Result<Failures, StoreError>;
    /// A successful login: the address becomes known for the account, and its failures
    /// from that address are forgotten.
    fn record_login_success(&self, user: &User, ip: &str) -> Result<(), StoreError>;
    /// Whether the account has logged in from this address within `within_ms`.
    fn login_known(&self, account: &str, ip: &str, within_ms: i64) -> Result<bool, StoreError>;
    /// Replaces any setup code with a new one (by its SHA-256), valid for `valid_ms`.
    fn new_setup_code(&self, code_sha256: &str, valid_ms: i64) -> Result<(), StoreError>;
    /// Whether an unused, unexpired setup code waits (and no user exists yet).
    fn setup_pending(&self) -> Result<bool, StoreError>;
    /// Spends a setup code to create the first admin, in one transaction: the code
    /// works once, only while unexpired, and only while there are no users.
    fn first_admin(&self, code_sha256: &str, name: &str, password_hash: &str) -> Result<Option<User>, StoreError>;
    /// Appends to the audit log of the same database, in its own transaction.
    fn audit(&self, actor: &str, action: &str, subject: &str, detail: serde_json::Value) -> Result<i64, StoreError>;
    /// The database's clock, Unix ms.
    fn now_ms(&self) -> i64;
}

/// Where the account tables are: a box's store or the hub's, each with its clock.
pub(crate) trait AccountTables: Send + Sync {
    fn tables(&self) -> MutexGuard<'_, Connection>;
    /// A connection for reads that need not wait for the writer (a box's reader pool);
    /// the writing one where there is no other.
    fn read_tables(&self) -> MutexGuard<'_, Connection> {
        self.tables()
    }
    fn clock_ms(&self) -> i64;
}

impl<T: AccountTables> Accounts for T {
    fn audit(&self, actor: &str, action: &str, subject: &str, detail: serde_json::Value) -> Result<i64, StoreError> {
        let mut conn = self.tables();
        let tx = conn.transaction()?;
        let seq = audit::append(&tx, self.clock_ms(), actor, action, subject, &detail)?;
        tx.commit()?;
        Ok(seq)
    }

    fn now_ms(&self) -> i64 {
        self.clock_ms()
    }

    fn user_count(&self) -> Result<u64, StoreError> {
        Ok(self.tables().query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0))? as u64)
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        let conn = self.tables();
        let mut stmt = conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.id"))?;
        let rows = stmt.query_map([], user_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let conn = self.tables();
        Ok(conn
            .query_row(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.name = ?1"), [name], user_row)
            .optional()?)
    }

    fn user(&self, id: i64) -> Result<User, StoreError> {
        let conn = self.tables();
        conn.query_row(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1"), [id], user_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("user {id}")))
    }

    fn add_user(&self, name: &str, role: Role, password_hash: &str, actor: &str) -> Result<User, StoreError> {
        let now = self.clock_ms();
        let mut conn = self.tables();
        let tx = conn.transaction()?;
        let taken: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)", [name], |r| r.get(0))?;
        if taken {
            return Err(StoreError::Invalid(format!("a user named `{name}` exists: pick another name")));
        }
        tx.execute(
            "INSERT INTO users (name, role, password_hash, created_at, password_changed_at) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![name, role.as_str(), password_hash, now],
        )?;
        let id = tx.last_insert_rowid();
        audit::append(&tx, now, actor, "user.add", &format!("user/{name}"), &serde_json::json!({ "role": role }))?;
        tx.commit()?;
        drop(conn);
        self.user(id)
    }

    fn update_user(
        &self,
        id: i64,
        role: Option<Role>,
        disabled: Option<bool>,
        actor: &str,
    ) -> Result<User, StoreError> {
        let now = self.clock_ms();
        let mut conn = self.tables();
        let tx = conn.transaction()?;
        let name = user_name(&tx, id)?;
        if let Some(role) = role {
            tx.execute("UPDATE users SET role = ?2 WHERE id = ?1", params![id, role.as_str()])?;
        }
        if let Some(disabled) = disabled {
            tx.execute("UPDATE users SET disabled = ?2 WHERE id = ?1", params![id, disabled])?;
        }
        let admins: i64 =
            tx.query_row("SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0", [], |r| r.get(0))?;
        if admins == 0 {
            return Err(StoreError::Invalid("that would leave no enabled admin: make another admin first".into()));
        }
        tx.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
        audit::append(
            &tx,
            now,
            actor,
            "user.update",
            &format!("user/{name}"),
            &serde_json::json!({ "role": role, "disabled": disabled }),
        )?;
        tx.commit()?;
        drop(conn);
        self.user(id)
    }

    fn set_password(&self, id: i64, password_hash: &str, actor: &str) -> Result<(), StoreError> {
        let now = self.clock_ms();
        let mut conn = self.tables();
        let tx = conn.transaction()?;
        let name = user_name(&tx, id)?;
        tx.execute(
            "UPDATE users SET password_hash = ?2, password_changed_at = ?3 WHERE id = ?1",
            params![id, password_hash, now],
        )?;
        tx.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
        audit::append(&tx, now, actor, "user.password", &format!("user/{name}"), &serde_json::json!({}))?;
        tx.commit()?;
        Ok(())
    }

    fn create_session(&self, id_sha256: &str, user: i64, csrf: &str, ip: &str) -> Result<(), StoreError> {
        let now = self.clock_ms();
        self.tables().execute(
            "INSERT INTO sessions (id_hash, user_id, created_at, last_seen, csrf, ip) VALUES (?1, ?2, ?3, ?3, ?4, ?5)",
            params![id_sha256, user, now, csrf, ip],
        )?;
        Ok(())
    }

    fn session(&self, id_sha256: &str, idle_ms: i64, absolute_ms: i64) -> Result<Option<Session>, StoreError> {
        let now = self.clock_ms();
        // Every request asks this: read without waiting for the writer, which is taken
        // only to end a session or mark it seen (at most once a minute).
        let found = self
            .read_tables()
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS}, s.created_at, s.last_seen, s.csrf FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.id_hash = ?1"
            ))?
            .query_row([id_sha256], |r| {
                Ok((user_row(r)?, r.get::<_, i64>(6)?, r.get::<_, i64>(7)?, r.get::<_, String>(8)?))
            })
            .optional()?;
        let Some((user, created_at, last_seen, csrf)) = found else { return Ok(None) };
        if user.disabled || now - last_seen > idle_ms || now - created_at > absolute_ms {
            self.tables().execute("DELETE FROM sessions WHERE id_hash = ?1", [id_sha256])?;
            return Ok(None);
        }
        // Written at most once a minute: reads stay cheap.
        if now - last_seen > 60_000 {
            self.tables().execute("UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1", params![id_sha256, now])?;
        }
        Ok(Some(Session { user, created_at, last_seen: now, csrf }))
    }

    fn delete_session(&self, id_sha256: &str) -> Result<(), StoreError> {
        self.tables().execute("DELETE FROM sessions WHERE id_hash = ?1", [id_sha256])?;
        Ok(())
    }

    fn record_login_failure(&self, account: &str, ip: &str) -> Result<(), StoreError> {
        let now = self.clock_ms();
        let conn = self.tables();
        conn.execute("INSERT INTO login_failures (account, ip, at) VALUES (?1, ?2, ?3)", params![account, ip, now])?;
        conn.execute("DELETE FROM login_failures WHERE at < ?1", [now - 86_400_000])?;
        Ok(())
    }

    fn login_failures(&self, account: Option<&str>, ip: Option<&str>, since: i64) -> Result<Failures, StoreError> {
        let (column, value) = match (account, ip) {
            (Some(a), _) => ("account", a),
            (None, Some(i)) => ("ip", i),
            (None, None) => return Ok(Failures::default()),
        };
        let (count, last_at): (i64, Option<i64>) = self.tables().query_row(
            &format!("SELECT COUNT(*), MAX(at) FROM login_failures WHERE {column} = ?1 AND at >= ?2"),
            params![value, since],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Failures { count: count as u32, last_at })
    }

    fn record_login_success(&self, user: &User, ip: &str) -> Result<(), StoreError> {
        let now = self.clock_ms();
        let conn = self.tables();
        conn.execute(
            "INSERT INTO login_known (user_id, ip, last_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (user_id, ip) DO UPDATE SET last_at = excluded.last_at",
            params![user.id, ip, now],
        )?;
        conn.execute("DELETE FROM login_failures WHERE account = ?1 AND ip = ?2", params![user.name, ip])?;
        Ok(())
    }

    fn login_known(&self, account: &str, ip: &str, within_ms: i64) -> Result<bool, StoreError> {
        let since = self.clock_ms() - within_ms;
        Ok(self.tables().query_row(
            "SELECT EXISTS (SELECT 1 FROM login_known k JOIN users u ON u.id = k.user_id
             WHERE u.name = ?1 AND k.ip = ?2 AND k.last_at >= ?3)",
            params![account, ip, since],
            |r| r.get(0),
        )?)
    }

    fn new_setup_code(&self, code_sha256: &str, valid_ms: i64) -> Result<(), StoreError> {
        let now = self.clock_ms();
        let mut conn = self.tables();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM setup_codes WHERE used_at IS NULL", [])?;
        tx.execute(
            "INSERT INTO setup_codes (code_sha256, created_at, expires_at) VALUES (?1, ?2, ?3)",
            params![code_sha256, now, now + valid_ms],
        )?;
        audit::append(&tx, now, "system", "setup_code.new", "setup", &serde_json::json!({ "valid_ms": valid_ms }))?;
        tx.commit()?;
        Ok(())
    }

    fn setup_pending(&self) -> Result<bool, StoreError> {
        let now = self.clock_ms();
        Ok(self.tables().query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM users)
               AND EXISTS (SELECT 1 FROM setup_codes WHERE used_at IS NULL AND expires_at > ?1)",
            [now],
            |r| r.get(0),
        )?)
    }

    fn first_admin(&self, code_sha256: &str, name: &str, password_hash: &str) -> Result<Option<User>, StoreError> {
        let now = self.clock_ms();
        let mut conn = self.tables();
        let tx = conn.transaction()?;
        let users: i64 = tx.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
        let spent = tx.execute(
            "UPDATE setup_codes SET used_at = ?2 WHERE code_sha256 = ?1 AND used_at IS NULL AND expires_at > ?2",
            params![code_sha256, now],
        )?;
        if users > 0 || spent == 0 {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO users (name, role, password_hash, created_at, password_changed_at) VALUES (?1, 'admin', ?2, ?3, ?3)",
            params![name, password_hash, now],
        )?;
        let id = tx.last_insert_rowid();
        audit::append(&tx, now, name, "user.setup", &format!("user/{name}"), &serde_json::json!({ "role": "admin" }))?;
        tx.commit()?;
        drop(conn);
        Ok(Some(self.user(id)?))
    }
}
