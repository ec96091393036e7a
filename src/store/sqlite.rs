//! The embedded store: one SQLite file (WAL mode), so a single command runs
//! rolegate with no server. Calls run on the blocking pool; one connection
//! behind a mutex is plenty for the write rate of user management, and reads
//! on the request path only happen on cache misses.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::{
    key_hash, new_org, new_user, now, random_token, refuse_last_admin, touches_admin, ts,
    AuditFilter, AuditRecord, Change, ChangePage, CreatedOrg, LoggedChange, NewAudit, NewInvite,
    NewPasswordReset, NewUser, Org, PlaybackKey, ReplicaBeat, Store, StoreError, User, ADMIN_ROLE,
};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    api_key_hash BLOB NOT NULL UNIQUE,
    player_key TEXT NOT NULL UNIQUE,
    webhook TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    email TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    token_key BLOB NOT NULL,
    password_hash TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX users_org ON users(org_id, role);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_org ON audit(org_id, id);
"#,
    // 2: invites (the token is stored only as a SHA-256 hash).
    r#"
CREATE TABLE invites (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    token_hash BLOB NOT NULL UNIQUE,
    role TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    used_by TEXT
);
CREATE INDEX invites_org ON invites(org_id);
"#,
    // 3: playback signing keys per organisation and revoked playback tokens.
    r#"
CREATE TABLE playback_keys (
    kid TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    private_key BLOB NOT NULL,
    public_key BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER,
    max_token_exp INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX playback_keys_org ON playback_keys(org_id);
CREATE TABLE revoked_playback (
    jti TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    exp INTEGER NOT NULL,
    revoked_at INTEGER NOT NULL
);
"#,
    // 4: the change log every follower reads, and each replica's heartbeat
    // (`store::changelog`). AUTOINCREMENT: a sequence number is never reused,
    // even after the newest entries were pruned.
    r#"
CREATE TABLE change_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    change TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX change_log_at ON change_log(at_ms);
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    applied INTEGER NOT NULL,
    seen_at_ms INTEGER NOT NULL
);
"#,
    // 5: single-use password resets (the token only as a SHA-256 hash).
    r#"
CREATE TABLE password_resets (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE INDEX password_resets_user ON password_resets(user_id);
"#,
];

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn q(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, msg)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Duplicate(msg.unwrap_or_else(|| "row".to_owned()))
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::SystemIoFailure
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Query(other.to_string()),
    }
}

const ORG_COLS: &str = "id, name, api_key_hash, player_key, webhook, created_at";
const USER_COLS: &str = "id, org_id, email, role, token_key, password_hash, created_at";

fn org_row(r: &Row<'_>) -> rusqlite::Result<Org> {
    let hash: Vec<u8> = r.get(2)?;
    let mut api_key_hash = [0u8; 32];
    if hash.len() == 32 {
        api_key_hash.copy_from_slice(&hash);
    }
    Ok(Org {
        id: r.get(0)?,
        name: r.get(1)?,
        api_key_hash,
        player_key: r.get(3)?,
        webhook: r.get(4)?,
        created_at: ts(r.get(5)?),
    })
}

fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        org_id: r.get(1)?,
        email: r.get(2)?,
        role: r.get(3)?,
        token_key: r.get(4)?,
        password_hash: r.get(5)?,
        created_at: ts(r.get(6)?),
    })
}

fn user_tx(tx: &Transaction<'_>, id: &str) -> Result<User, StoreError> {
    tx.query_row(
        &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
        [id],
        user_row,
    )
    .optional()
    .map_err(q)?
    .ok_or_else(|| StoreError::NotFound(id.to_owned()))
}

/// Refuse a change that would leave `user`'s organisation without a nanoAdmin.
fn guard_last_admin(
    tx: &Transaction<'_>,
    user: &User,
    new_role: Option<&str>,
) -> Result<(), StoreError> {
    if !touches_admin(user, new_role) {
        return Ok(());
    }
    let admins: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM users WHERE org_id = ?1 AND role = ?2",
            params![user.org_id, ADMIN_ROLE],
            |r| r.get(0),
        )
        .map_err(q)?;
    refuse_last_admin(admins)
}

impl SqliteStore {
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            if let Some(dir) = Path::new(&path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Unavailable(format!("cannot create `{}`: {e}", dir.display()))
                    })?;
                }
            }
            let mut conn = Connection::open(&path)
                .map_err(|e| StoreError::Unavailable(format!("cannot open `{path}`: {e}")))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(q)?;
            // synchronous = FULL: in WAL mode, NORMAL may lose the last
            // commits on power loss, and a lost tokenKey renewal would bring a
            // revoked token back to life after the reboot. FULL syncs the WAL
            // at every commit; user management writes are rare enough that
            // the fsync does not matter, and request-path reads never write.
            // cache_size = -512 (KiB): the request path reads one user by
            // primary key (a few B-tree pages), and the OS page cache holds
            // the file anyway; SQLite's default of 2 MiB per connection was
            // resident set a sidecar pays for nothing.
            conn.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; \
                 PRAGMA cache_size = -512;",
            )
            .map_err(q)?;
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Run `f` with the connection on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Unavailable("connection poisoned".to_owned()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    /// The one row (if any) a single-parameter query finds.
    async fn one<T, P>(
        &self,
        sql: String,
        param: P,
        row: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        P: rusqlite::ToSql + Send + 'static,
    {
        // Cached statements: these lookups serve the request path's cache
        // misses, where preparing the SQL each time was most of the read.
        self.with(move |c| {
            c.prepare_cached(&sql)
                .and_then(|mut st| st.query_row([param], row).optional())
                .map_err(q)
        })
        .await
    }

    /// One UPDATE (`?1` the new value, `?2` the id) of a row that must exist,
    /// logging `change` with it.
    async fn update_one(
        &self,
        sql: &'static str,
        value: rusqlite::types::Value,
        id: &str,
        change: Option<Change>,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.tx(move |tx| {
            if tx.execute(sql, params![value, id]).map_err(q)? == 0 {
                return Err(StoreError::NotFound(id));
            }
            match change {
                Some(change) => log_change(tx, &change),
                None => Ok(()),
            }
        })
        .await
    }

    /// Run `f` inside one transaction.
    async fn tx<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(q)?;
            let out = f(&tx)?;
            tx.commit().map_err(q)?;
            Ok(out)
        })
        .await
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    let done: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Migration(format!("migration {}: {e}", i + 1)))?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(|e| StoreError::Migration(e.to_string()))?;
    }
    tx.commit()
        .map_err(|e| StoreError::Migration(e.to_string()))
}

/// Append `change` to the change log inside the caller's transaction.
fn log_change(tx: &Transaction<'_>, change: &Change) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO change_log (change, at_ms) VALUES (?1, ?2)",
        params![change.encode(), crate::clock::unix_now_ms()],
    )
    .map_err(q)?;
    Ok(())
}

fn insert_user(tx: &Transaction<'_>, u: NewUser) -> Result<User, StoreError> {
    let user = new_user(u);
    tx.execute(
        &format!("INSERT INTO users ({USER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            user.id,
            user.org_id,
            user.email,
            user.role,
            user.token_key,
            user.password_hash,
            user.created_at.unix_timestamp()
        ],
    )
    .map_err(|e| match q(e) {
        StoreError::Duplicate(_) => StoreError::Duplicate(format!("user `{}`", user.email)),
        other => other,
    })?;
    Ok(user)
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(q))
            .await
    }

    async fn create_org(&self, name: &str) -> Result<CreatedOrg, StoreError> {
        let name = name.to_owned();
        self.tx(move |tx| {
            let created = new_org(name);
            let org = &created.org;
            tx.execute(
                &format!("INSERT INTO orgs ({ORG_COLS}) VALUES (?1, ?2, ?3, ?4, NULL, ?5)"),
                params![
                    org.id,
                    org.name,
                    org.api_key_hash.to_vec(),
                    org.player_key,
                    org.created_at.unix_timestamp()
                ],
            )
            .map_err(|e| match q(e) {
                StoreError::Duplicate(_) => {
                    StoreError::Duplicate(format!("organisation `{}`", org.name))
                }
                other => other,
            })?;
            Ok(created)
        })
        .await
    }

    async fn org(&self, id: &str) -> Result<Option<Org>, StoreError> {
        self.one(
            format!("SELECT {ORG_COLS} FROM orgs WHERE id = ?1"),
            id.to_owned(),
            org_row,
        )
        .await
    }

    async fn org_by_name(&self, name: &str) -> Result<Option<Org>, StoreError> {
        self.one(
            format!("SELECT {ORG_COLS} FROM orgs WHERE name = ?1"),
            name.to_owned(),
            org_row,
        )
        .await
    }

    async fn org_by_api_key_hash(&self, hash: &[u8; 32]) -> Result<Option<Org>, StoreError> {
        self.one(
            format!("SELECT {ORG_COLS} FROM orgs WHERE api_key_hash = ?1"),
            hash.to_vec(),
            org_row,
        )
        .await
    }

    async fn org_by_player_key(&self, key: &str) -> Result<Option<Org>, StoreError> {
        self.one(
            format!("SELECT {ORG_COLS} FROM orgs WHERE player_key = ?1"),
            key.to_owned(),
            org_row,
        )
        .await
    }

    async fn rotate_api_key(&self, org_id: &str) -> Result<String, StoreError> {
        let key = random_token("ak_");
        self.update_one(
            "UPDATE orgs SET api_key_hash = ?1 WHERE id = ?2",
            key_hash(&key).to_vec().into(),
            org_id,
            Some(Change::OrgKeys(org_id.to_owned())),
        )
        .await?;
        Ok(key)
    }

    async fn rotate_player_key(&self, org_id: &str) -> Result<String, StoreError> {
        let key = random_token("pk_");
        self.update_one(
            "UPDATE orgs SET player_key = ?1 WHERE id = ?2",
            key.clone().into(),
            org_id,
            Some(Change::OrgKeys(org_id.to_owned())),
        )
        .await?;
        Ok(key)
    }

    // ---- playback signing keys and revoked playback tokens (issue 6) --------
    async fn playback_keys(&self, org_id: Option<&str>) -> Result<Vec<PlaybackKey>, StoreError> {
        let org_id = org_id.map(str::to_owned);
        self.with(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT kid, org_id, private_key, public_key, created_at, retired_at, \
                     max_token_exp FROM playback_keys \
                     WHERE ?1 IS NULL OR org_id = ?1 ORDER BY created_at, rowid",
                )
                .map_err(q)?;
            let rows = stmt
                .query_map(params![org_id], |r| {
                    Ok(PlaybackKey {
                        kid: r.get(0)?,
                        org_id: r.get(1)?,
                        private_key: r.get(2)?,
                        public_key: r.get(3)?,
                        created_at: r.get(4)?,
                        retired_at: r.get(5)?,
                        max_token_exp: r.get(6)?,
                    })
                })
                .map_err(q)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(q)
        })
        .await
    }

    async fn playback_key(&self, kid: &str) -> Result<Option<PlaybackKey>, StoreError> {
        let kid = kid.to_owned();
        self.with(move |conn| {
            conn.query_row(
                "SELECT kid, org_id, private_key, public_key, created_at, retired_at, \
                 max_token_exp FROM playback_keys WHERE kid = ?1",
                params![kid],
                |r| {
                    Ok(PlaybackKey {
                        kid: r.get(0)?,
                        org_id: r.get(1)?,
                        private_key: r.get(2)?,
                        public_key: r.get(3)?,
                        created_at: r.get(4)?,
                        retired_at: r.get(5)?,
                        max_token_exp: r.get(6)?,
                    })
                },
            )
            .optional()
            .map_err(q)
        })
        .await
    }

    async fn put_playback_key(
        &self,
        key: PlaybackKey,
        rotate: bool,
    ) -> Result<PlaybackKey, StoreError> {
        self.tx(move |tx| {
            if !rotate {
                let existing = tx
                    .query_row(
                        "SELECT kid, org_id, private_key, public_key, created_at, retired_at, \
                         max_token_exp FROM playback_keys \
                         WHERE org_id = ?1 AND retired_at IS NULL",
                        params![key.org_id],
                        |r| {
                            Ok(PlaybackKey {
                                kid: r.get(0)?,
                                org_id: r.get(1)?,
                                private_key: r.get(2)?,
                                public_key: r.get(3)?,
                                created_at: r.get(4)?,
                                retired_at: r.get(5)?,
                                max_token_exp: r.get(6)?,
                            })
                        },
                    )
                    .optional()
                    .map_err(q)?;
                if let Some(k) = existing {
                    return Ok(k);
                }
            }
            tx.execute(
                "UPDATE playback_keys SET retired_at = ?1 WHERE org_id = ?2 AND retired_at IS NULL",
                params![key.created_at, key.org_id],
            )
            .map_err(q)?;
            tx.execute(
                "INSERT INTO playback_keys (kid, org_id, private_key, public_key, created_at, \
                 retired_at, max_token_exp) VALUES (?1, ?2, ?3, ?4, ?5, NULL, 0)",
                params![
                    key.kid,
                    key.org_id,
                    key.private_key,
                    key.public_key,
                    key.created_at
                ],
            )
            .map_err(q)?;
            Ok(key)
        })
        .await
    }

    async fn extend_playback_key(&self, kid: &str, exp: i64) -> Result<(), StoreError> {
        let kid = kid.to_owned();
        self.tx(move |tx| {
            tx.execute(
                "UPDATE playback_keys SET max_token_exp = MAX(max_token_exp, ?1) WHERE kid = ?2",
                params![exp, kid],
            )
            .map_err(q)?;
            Ok(())
        })
        .await
    }

    async fn revoke_playback(
        &self,
        jti: &str,
        org_id: &str,
        exp: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let (jti, org_id) = (jti.to_owned(), org_id.to_owned());
        self.tx(move |tx| {
            // Revoking twice is the same permanent fact: keep the first row.
            tx.execute(
                "INSERT OR IGNORE INTO revoked_playback (jti, org_id, exp, revoked_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![jti, org_id, exp, now],
            )
            .map_err(q)?;
            log_change(tx, &Change::PlaybackRevoked(jti))
        })
        .await
    }

    async fn playback_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let jti = jti.to_owned();
        self.with(move |conn| {
            conn.query_row(
                "SELECT 1 FROM revoked_playback WHERE jti = ?1",
                params![jti],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(q)
        })
        .await
    }
    // ---- end playback -----------------------------------------------------

    async fn set_webhook(&self, org_id: &str, url: Option<&str>) -> Result<(), StoreError> {
        self.update_one(
            "UPDATE orgs SET webhook = ?1 WHERE id = ?2",
            url.map(str::to_owned).into(),
            org_id,
            None,
        )
        .await
    }

    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        self.tx(move |tx| insert_user(tx, user)).await
    }

    async fn create_users(&self, users: Vec<NewUser>) -> Result<Vec<User>, StoreError> {
        self.tx(move |tx| users.into_iter().map(|u| insert_user(tx, u)).collect())
            .await
    }

    async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.one(
            format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
            id.to_owned(),
            user_row,
        )
        .await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.one(
            format!("SELECT {USER_COLS} FROM users WHERE email = ?1"),
            email.to_owned(),
            user_row,
        )
        .await
    }

    async fn list_users(&self, org_id: &str, role: Option<&str>) -> Result<Vec<User>, StoreError> {
        let org_id = org_id.to_owned();
        let role = role.map(str::to_owned);
        self.with(move |c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {USER_COLS} FROM users WHERE org_id = ?1 AND (?2 IS NULL OR role = ?2) ORDER BY created_at, email"
                ))
                .map_err(q)?;
            let rows = stmt.query_map(params![org_id, role], user_row).map_err(q)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(q)
        })
        .await
    }

    async fn set_role(
        &self,
        user_id: &str,
        role: &str,
        new_token_key: &[u8],
    ) -> Result<User, StoreError> {
        let (user_id, role, key) = (user_id.to_owned(), role.to_owned(), new_token_key.to_vec());
        self.tx(move |tx| {
            let user = user_tx(tx, &user_id)?;
            guard_last_admin(tx, &user, Some(&role))?;
            tx.execute(
                "UPDATE users SET role = ?1, token_key = ?2 WHERE id = ?3",
                params![role, key, user_id],
            )
            .map_err(q)?;
            log_change(tx, &Change::User(user_id.clone()))?;
            user_tx(tx, &user_id)
        })
        .await
    }

    async fn set_token_key(&self, user_id: &str, new_token_key: &[u8]) -> Result<User, StoreError> {
        let (user_id, key) = (user_id.to_owned(), new_token_key.to_vec());
        self.tx(move |tx| {
            let n = tx
                .execute(
                    "UPDATE users SET token_key = ?1 WHERE id = ?2",
                    params![key, user_id],
                )
                .map_err(q)?;
            if n == 0 {
                return Err(StoreError::NotFound(user_id));
            }
            log_change(tx, &Change::User(user_id.clone()))?;
            user_tx(tx, &user_id)
        })
        .await
    }

    async fn delete_user(&self, user_id: &str) -> Result<User, StoreError> {
        let user_id = user_id.to_owned();
        self.tx(move |tx| {
            let user = user_tx(tx, &user_id)?;
            guard_last_admin(tx, &user, None)?;
            tx.execute("DELETE FROM users WHERE id = ?1", [&user_id])
                .map_err(q)?;
            log_change(tx, &Change::User(user_id))?;
            Ok(user)
        })
        .await
    }

    async fn set_password(&self, user_id: &str, password_hash: &str) -> Result<(), StoreError> {
        self.update_one(
            "UPDATE users SET password_hash = ?1 WHERE id = ?2",
            password_hash.to_owned().into(),
            user_id,
            None,
        )
        .await
    }

    async fn append_audit(&self, r: NewAudit) -> Result<(), StoreError> {
        self.tx(move |tx| {
            tx.execute(
                "INSERT INTO audit (org_id, actor, action, target, outcome, at, request_id, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![r.org_id, r.actor, r.action, r.target, r.outcome, now(), r.request_id, r.detail],
            )
            .map_err(q)?;
            Ok(())
        })
        .await
    }

    async fn create_invite(&self, invite: NewInvite) -> Result<String, StoreError> {
        self.tx(move |tx| {
            let id = uuid::Uuid::new_v4().to_string();
            tx.execute(
                "INSERT INTO invites (id, org_id, token_hash, role, created_by, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![id, invite.org_id, invite.token_hash.to_vec(), invite.role, invite.created_by, now(), invite.expires_at],
            )
            .map_err(q)?;
            Ok(id)
        })
        .await
    }

    async fn accept_invite(
        &self,
        token_hash: &[u8; 32],
        at: i64,
        user: NewUser,
    ) -> Result<User, StoreError> {
        let hash = token_hash.to_vec();
        self.tx(move |tx| {
            let row: Option<(String, String, String, i64, Option<i64>)> = tx
                .query_row(
                    "SELECT id, org_id, role, expires_at, used_at FROM invites WHERE token_hash = ?1",
                    [&hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()
                .map_err(q)?;
            let Some((id, org_id, role, expires_at, used_at)) = row else {
                return Err(StoreError::InviteRefused("unknown"));
            };
            if used_at.is_some() {
                return Err(StoreError::InviteRefused("already used"));
            }
            if at >= expires_at {
                return Err(StoreError::InviteRefused("expired"));
            }
            let created = insert_user(tx, NewUser { org_id, role, ..user })?;
            tx.execute("UPDATE invites SET used_at = ?1, used_by = ?2 WHERE id = ?3", params![at, created.id, id])
                .map_err(q)?;
            Ok(created)
        })
        .await
    }

    async fn create_password_reset(&self, reset: NewPasswordReset) -> Result<String, StoreError> {
        self.tx(move |tx| {
            let id = uuid::Uuid::new_v4().to_string();
            tx.execute(
                "INSERT INTO password_resets (id, org_id, user_id, token_hash, created_by, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![id, reset.org_id, reset.user_id, reset.token_hash.to_vec(), reset.created_by, now(), reset.expires_at],
            )
            .map_err(q)?;
            Ok(id)
        })
        .await
    }

    async fn use_password_reset(
        &self,
        token_hash: &[u8; 32],
        at: i64,
        password_hash: &str,
        new_token_key: &[u8],
    ) -> Result<User, StoreError> {
        let (hash, password_hash, key) = (
            token_hash.to_vec(),
            password_hash.to_owned(),
            new_token_key.to_vec(),
        );
        self.tx(move |tx| {
            let row: Option<(String, String, i64, Option<i64>)> = tx
                .query_row(
                    "SELECT id, user_id, expires_at, used_at FROM password_resets WHERE token_hash = ?1",
                    [&hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(q)?;
            let Some((id, user_id, expires_at, used_at)) = row else {
                return Err(StoreError::ResetRefused("unknown"));
            };
            if used_at.is_some() {
                return Err(StoreError::ResetRefused("already used"));
            }
            if at >= expires_at {
                return Err(StoreError::ResetRefused("expired"));
            }
            let n = tx
                .execute(
                    "UPDATE users SET password_hash = ?1, token_key = ?2 WHERE id = ?3",
                    params![password_hash, key, user_id],
                )
                .map_err(q)?;
            if n == 0 {
                return Err(StoreError::ResetRefused("for a user who no longer exists"));
            }
            // The renewed tokenKey must reach every follower of the change log.
            log_change(tx, &Change::User(user_id.clone()))?;
            tx.execute(
                "UPDATE password_resets SET used_at = ?1 WHERE id = ?2",
                params![at, id],
            )
            .map_err(q)?;
            user_tx(tx, &user_id)
        })
        .await
    }

    async fn list_audit(
        &self,
        org_id: &str,
        f: &AuditFilter,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let org_id = org_id.to_owned();
        let f = f.clone();
        self.with(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT id, org_id, actor, action, target, outcome, at, request_id, detail FROM audit \
                     WHERE org_id = ?1 AND (?2 IS NULL OR target = ?2) AND (?3 IS NULL OR actor = ?3) \
                     AND (?4 IS NULL OR action = ?4) ORDER BY id DESC LIMIT ?5",
                )
                .map_err(q)?;
            let limit = if f.limit == 0 { 1000 } else { f.limit };
            let rows = stmt
                .query_map(params![org_id, f.target, f.actor, f.action, limit], |r| {
                    Ok(AuditRecord {
                        id: r.get(0)?,
                        org_id: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        outcome: r.get(5)?,
                        at: ts(r.get(6)?),
                        request_id: r.get(7)?,
                        detail: r.get(8)?,
                    })
                })
                .map_err(q)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(q)
        })
        .await
    }

    async fn changes_after(&self, after: i64, limit: u32) -> Result<ChangePage, StoreError> {
        self.with(move |c| {
            let (oldest, head): (Option<i64>, Option<i64>) = c
                .prepare_cached("SELECT MIN(seq), MAX(seq) FROM change_log")
                .and_then(|mut st| st.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
                .map_err(q)?;
            let mut st = c
                .prepare_cached(
                    "SELECT seq, change, at_ms FROM change_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(q)?;
            let entries = st
                .query_map(params![after, limit], |r| {
                    Ok(LoggedChange {
                        seq: r.get(0)?,
                        change: Change::decode(&r.get::<_, String>(1)?),
                        at_ms: r.get(2)?,
                    })
                })
                .map_err(q)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(q)?;
            Ok(ChangePage {
                entries,
                oldest,
                head: head.unwrap_or(0),
            })
        })
        .await
    }

    async fn prune_changes(&self, now_ms: i64) -> Result<u64, StoreError> {
        use super::changelog::{FORGET_REPLICA_MS, RETENTION_MS};
        self.tx(move |tx| {
            let n = tx
                .execute(
                    "DELETE FROM change_log WHERE at_ms < ?1 \
                     AND seq < (SELECT MAX(seq) FROM change_log)",
                    [now_ms.saturating_sub(RETENTION_MS)],
                )
                .map_err(q)?;
            tx.execute(
                "DELETE FROM replicas WHERE seen_at_ms < ?1",
                [now_ms.saturating_sub(FORGET_REPLICA_MS)],
            )
            .map_err(q)?;
            Ok(n as u64)
        })
        .await
    }

    async fn heartbeat(&self, id: &str, applied: i64, now_ms: i64) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.tx(move |tx| {
            tx.execute(
                "INSERT INTO replicas (id, applied, seen_at_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET applied = excluded.applied, seen_at_ms = excluded.seen_at_ms",
                params![id, applied, now_ms],
            )
            .map_err(q)?;
            Ok(())
        })
        .await
    }

    async fn replicas(&self) -> Result<Vec<ReplicaBeat>, StoreError> {
        self.with(|c| {
            let mut st = c
                .prepare_cached("SELECT id, applied, seen_at_ms FROM replicas ORDER BY id")
                .map_err(q)?;
            let rows = st
                .query_map([], |r| {
                    Ok(ReplicaBeat {
                        id: r.get(0)?,
                        applied: r.get(1)?,
                        seen_at_ms: r.get(2)?,
                    })
                })
                .map_err(q)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(q)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::SqliteStore;

    /// A commit (and the revocation it records) must be on disk before the
    /// answer: `synchronous = FULL` in WAL mode (2), not NORMAL (1).
    #[tokio::test]
    async fn commits_are_synced_to_disk_before_they_return() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db").display().to_string();
        let store = SqliteStore::open(&path).await.unwrap();
        let (sync, journal): (i64, String) = store
            .with(|c| {
                c.query_row("PRAGMA synchronous", [], |r| r.get(0))
                    .and_then(|s| c.query_row("PRAGMA journal_mode", [], |r| Ok((s, r.get(0)?))))
                    .map_err(super::q)
            })
            .await
            .unwrap();
        assert_eq!(sync, 2, "synchronous must be FULL");
        assert_eq!(journal, "wal");
    }

    /// The connection's page cache is bounded at 512 KiB (a negative
    /// cache_size is KiB), not SQLite's 2 MiB default: resident set.
    #[tokio::test]
    async fn the_page_cache_is_bounded_at_512_kib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db").display().to_string();
        let store = SqliteStore::open(&path).await.unwrap();
        let size: i64 = store
            .with(|c| {
                c.query_row("PRAGMA cache_size", [], |r| r.get(0))
                    .map_err(super::q)
            })
            .await
            .unwrap();
        assert_eq!(size, -512);
    }
}
