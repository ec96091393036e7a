//! The shared store: PostgreSQL, for several replicas. Same tables and the same
//! transaction boundaries as the embedded store; two additions make it safe to
//! share:
//!
//! - every write that changes what a cached credential may do appends to the
//!   change log (`store::changelog`) and sends `pg_notify` inside its
//!   transaction, so both happen exactly when (and only if) it commits; each
//!   replica LISTENs on one dedicated connection and reads the log at once
//!   when it hears the doorbell (`app::follower`), and on its poll otherwise;
//! - writes that guard an invariant across rows (the last nanoAdmin) lock the
//!   organisation row first, so concurrent changes through different replicas
//!   serialise instead of both passing the check.
//!
//! Connections come from a small pool with short timeouts: when the server is
//! unreachable a cache miss fails within seconds as `Unavailable` (503), and
//! the pool reconnects by itself once it is back.
//!
//! TLS follows the URL's `sslmode`: `prefer` (the default) uses it when the
//! server offers it, `require` insists, `disable` never tries. A server
//! certificate is always verified (chain and host name), against the system's
//! CA roots or the PEM bundle named by `SSL_CERT_FILE` (or `SSL_CERT_DIR`):
//! unlike libpq's `require`, there is no unverified TLS.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    key_hash, new_org, new_user, now, random_token, refuse_last_admin, touches_admin, ts,
    AuditFilter, AuditRecord, Change, ChangePage, CreatedOrg, LoggedChange, NewAudit, NewInvite,
    NewPasswordReset, NewUser, Org, PlaybackKey, ReplicaBeat, Store, StoreError, User, ADMIN_ROLE,
};

/// The notification channel every replica listens on.
const CHANNEL: &str = "rolegate_changes";
/// Key of the advisory lock that serialises migrations of replicas starting at once.
const MIGRATION_LOCK: i64 = 0x726f_6c65_6761_7465; // "rolegate"
/// Key of the advisory lock every change-log append takes (until its
/// transaction ends), so sequence numbers are assigned in commit order.
const CHANGE_LOG_LOCK: i64 = 0x726f_6c65_6c6f_6721; // "rolelog!"
/// How long a request waits for a connection (or to open one) before 503.
const POOL_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const POOL_SIZE: usize = 16;
/// The listener checks its connection this often, so a silently dead one is
/// noticed (and the cache cleared) within this bound plus TCP timeouts.
const LISTENER_HEARTBEAT: Duration = Duration::from_secs(5);
const RECONNECT_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Announcements buffered per replica before the consumer counts as lagging
/// (a lagging consumer just reads the log: see `app::follower`).
const CHANGE_BUFFER: usize = 4096;

/// Schema migrations, applied in order; `rolegate_migrations` records which ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    api_key_hash BYTEA NOT NULL UNIQUE,
    player_key TEXT NOT NULL UNIQUE,
    webhook TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    email TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    token_key BYTEA NOT NULL,
    password_hash TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX users_org ON users(org_id, role);
CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY,
    org_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_org ON audit(org_id, id);
"#,
    r#"
CREATE TABLE invites (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    token_hash BYTEA NOT NULL UNIQUE,
    role TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    used_by TEXT
);
CREATE INDEX invites_org ON invites(org_id);
"#,
    r#"
CREATE TABLE playback_keys (
    seq BIGSERIAL UNIQUE,
    kid TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    private_key BYTEA NOT NULL,
    public_key BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT,
    max_token_exp BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX playback_keys_org ON playback_keys(org_id);
CREATE TABLE revoked_playback (
    jti TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    exp BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);
"#,
    // 4: the change log and the replicas' heartbeats (`store::changelog`).
    r#"
CREATE TABLE change_log (
    seq BIGSERIAL PRIMARY KEY,
    change TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX change_log_at ON change_log(at_ms);
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    applied BIGINT NOT NULL,
    seen_at_ms BIGINT NOT NULL
);
"#,
    r#"
CREATE TABLE password_resets (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX password_resets_user ON password_resets(user_id);
"#,
];

const ORG_COLS: &str = "id, name, api_key_hash, player_key, webhook, created_at";
const USER_COLS: &str = "id, org_id, email, role, token_key, password_hash, created_at";
const KEY_COLS: &str =
    "kid, org_id, private_key, public_key, created_at, retired_at, max_token_exp";

pub struct PostgresStore {
    pool: Pool,
    changes: broadcast::Sender<Change>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// The error and its causes on one line ("error performing TLS handshake:
/// invalid peer certificate: UnknownIssuer"); the driver keeps the cause apart.
fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Map a driver error: lost or refused connections are `Unavailable` (503 on
/// the request path), constraint violations `Duplicate`, the rest `Query`.
fn pg(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => {
            StoreError::Duplicate(e.as_db_error().map_or_else(
                || "row".to_owned(),
                |d| d.constraint().unwrap_or("row").to_owned(),
            ))
        }
        Some(c)
            if c.code().starts_with("08")
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW =>
        {
            StoreError::Unavailable(describe(&e))
        }
        Some(_) => StoreError::Query(describe(&e)),
        // No SQLSTATE: the connection itself failed (closed, I/O, TLS, timeout).
        None => StoreError::Unavailable(describe(&e)),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn hash32(v: Vec<u8>) -> [u8; 32] {
    let mut out = [0u8; 32];
    if v.len() == 32 {
        out.copy_from_slice(&v);
    }
    out
}

fn org_row(r: &Row) -> Result<Org, StoreError> {
    Ok(Org {
        id: r.try_get(0).map_err(pg)?,
        name: r.try_get(1).map_err(pg)?,
        api_key_hash: hash32(r.try_get(2).map_err(pg)?),
        player_key: r.try_get(3).map_err(pg)?,
        webhook: r.try_get(4).map_err(pg)?,
        created_at: ts(r.try_get(5).map_err(pg)?),
    })
}

fn user_row(r: &Row) -> Result<User, StoreError> {
    Ok(User {
        id: r.try_get(0).map_err(pg)?,
        org_id: r.try_get(1).map_err(pg)?,
        email: r.try_get(2).map_err(pg)?,
        role: r.try_get(3).map_err(pg)?,
        token_key: r.try_get(4).map_err(pg)?,
        password_hash: r.try_get(5).map_err(pg)?,
        created_at: ts(r.try_get(6).map_err(pg)?),
    })
}

fn key_row(r: &Row) -> Result<PlaybackKey, StoreError> {
    Ok(PlaybackKey {
        kid: r.try_get(0).map_err(pg)?,
        org_id: r.try_get(1).map_err(pg)?,
        private_key: r.try_get(2).map_err(pg)?,
        public_key: r.try_get(3).map_err(pg)?,
        created_at: r.try_get(4).map_err(pg)?,
        retired_at: r.try_get(5).map_err(pg)?,
        max_token_exp: r.try_get(6).map_err(pg)?,
    })
}

fn audit_row(r: &Row) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        id: r.try_get(0).map_err(pg)?,
        org_id: r.try_get(1).map_err(pg)?,
        actor: r.try_get(2).map_err(pg)?,
        action: r.try_get(3).map_err(pg)?,
        target: r.try_get(4).map_err(pg)?,
        outcome: r.try_get(5).map_err(pg)?,
        at: ts(r.try_get(6).map_err(pg)?),
        request_id: r.try_get(7).map_err(pg)?,
        detail: r.try_get(8).map_err(pg)?,
    })
}

/// Log `change` and ring the doorbell, both taking effect when (and only if)
/// the surrounding transaction commits. The advisory lock makes appends
/// follow commit order: a transaction that took a sequence number before
/// another commits before the other can take one, so a follower reading
/// "after N" never skips an entry that commits late. Call it last before the
/// commit (it holds the lock until then).
async fn announce(tx: &tokio_postgres::Transaction<'_>, change: Change) -> Result<(), StoreError> {
    let payload = change.encode();
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHANGE_LOG_LOCK])
        .await
        .map_err(pg)?;
    tx.execute(
        "INSERT INTO change_log (change, at_ms) VALUES ($1, $2)",
        &[&payload, &crate::clock::unix_now_ms()],
    )
    .await
    .map_err(pg)?;
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .await
        .map_err(pg)?;
    Ok(())
}

async fn insert_user(tx: &tokio_postgres::Transaction<'_>, u: NewUser) -> Result<User, StoreError> {
    let user = new_user(u);
    tx.execute(
        &format!("INSERT INTO users ({USER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
        &[
            &user.id,
            &user.org_id,
            &user.email,
            &user.role,
            &user.token_key,
            &user.password_hash,
            &user.created_at.unix_timestamp(),
        ],
    )
    .await
    .map_err(|e| match pg(e) {
        StoreError::Duplicate(_) => StoreError::Duplicate(format!("user `{}`", user.email)),
        other => other,
    })?;
    // Not announced: the id is a fresh random UUID, so no replica can hold a
    // "no such user" for it that would need dropping (and announcing would
    // evict nothing but cost a store read on each replica).
    Ok(user)
}

async fn user_tx(tx: &tokio_postgres::Transaction<'_>, id: &str) -> Result<User, StoreError> {
    let row = tx
        .query_opt(
            &format!("SELECT {USER_COLS} FROM users WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(pg)?
        .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    user_row(&row)
}

/// Lock the user's organisation row and read the user: every change that
/// counts the organisation's admins runs under this lock, so two replicas
/// demoting the last two admins at once cannot both succeed.
async fn lock_user(tx: &tokio_postgres::Transaction<'_>, id: &str) -> Result<User, StoreError> {
    let org: Option<String> = tx
        .query_opt("SELECT org_id FROM users WHERE id = $1", &[&id])
        .await
        .map_err(pg)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(pg)?;
    let Some(org) = org else {
        return Err(StoreError::NotFound(id.to_owned()));
    };
    tx.execute("SELECT 1 FROM orgs WHERE id = $1 FOR UPDATE", &[&org])
        .await
        .map_err(pg)?;
    user_tx(tx, id).await
}

async fn guard_last_admin(
    tx: &tokio_postgres::Transaction<'_>,
    user: &User,
    new_role: Option<&str>,
) -> Result<(), StoreError> {
    if !touches_admin(user, new_role) {
        return Ok(());
    }
    let admins: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM users WHERE org_id = $1 AND role = $2",
            &[&user.org_id, &ADMIN_ROLE],
        )
        .await
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    refuse_last_admin(admins)
}

async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    let m = |e: tokio_postgres::Error| StoreError::Migration(e.to_string());
    let tx = client.transaction().await.map_err(m)?;
    // Replicas starting together queue here; the first applies, the rest see it done.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(m)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS rolegate_migrations (
             version INTEGER PRIMARY KEY,
             applied_at BIGINT NOT NULL
         )",
    )
    .await
    .map_err(m)?;
    let done: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM rolegate_migrations",
            &[],
        )
        .await
        .map_err(m)?
        .try_get(0)
        .map_err(m)?;
    if done as usize > MIGRATIONS.len() {
        return Err(StoreError::Migration(format!(
            "the database is at schema version {done}, newer than this rolegate ({}); upgrade rolegate",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
        let version = (i + 1) as i32;
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Migration(format!("migration {version}: {e}")))?;
        tx.execute(
            "INSERT INTO rolegate_migrations (version, applied_at) VALUES ($1, $2)",
            &[&version, &now()],
        )
        .await
        .map_err(m)?;
    }
    tx.commit().await.map_err(m)
}

/// The TLS connector: ring as the provider, the system's (or `SSL_CERT_FILE`'s) roots.
fn tls() -> Result<MakeRustlsConnect, StoreError> {
    let found = rustls_native_certs::load_native_certs();
    if !found.errors.is_empty() {
        tracing::debug!(
            errors = found.errors.len(),
            "some CA certificates could not be loaded"
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Unavailable(format!("TLS set-up failed: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

impl PostgresStore {
    /// Connect, migrate, and start listening for other replicas' changes.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        // The URL's own error text can echo the password: never include it.
        let mut config = tokio_postgres::Config::from_str(url).map_err(|_| {
            StoreError::Unavailable(
                "not a valid PostgreSQL URL (postgres://user:password@host:port/database)"
                    .to_owned(),
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("rolegate");
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));

        let tls = tls()?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut client = pool.get().await.map_err(pool_err)?;
        migrate(&mut client).await?;
        drop(client);

        let (changes, mut first) = broadcast::channel(CHANGE_BUFFER);
        let mut listen = config;
        listen.application_name("rolegate-listener");
        let listener = tokio::spawn(listen_forever(listen, tls, changes.clone()));
        // Not open until it hears changes: a replica that served from its
        // cache without listening would act on revoked credentials until the
        // TTL. The first subscription announces itself with a `Resync`.
        match tokio::time::timeout(POOL_TIMEOUT, first.recv()).await {
            Ok(Ok(_)) => {}
            _ => {
                listener.abort();
                return Err(StoreError::Unavailable(
                    "cannot LISTEN for changes from other replicas".to_owned(),
                ));
            }
        }
        Ok(PostgresStore {
            pool,
            changes,
            listener,
        })
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    async fn opt<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        row: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await.map_err(pg)?;
        c.query_opt(&stmt, params)
            .await
            .map_err(pg)?
            .as_ref()
            .map(row)
            .transpose()
    }

    async fn all<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        row: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await.map_err(pg)?;
        c.query(&stmt, params)
            .await
            .map_err(pg)?
            .iter()
            .map(row)
            .collect()
    }

    /// Run one UPDATE on a row that must exist, announcing `change` with it.
    async fn update_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        id: &str,
        change: Option<Change>,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        if tx.execute(sql, params).await.map_err(pg)? == 0 {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        if let Some(change) = change {
            announce(&tx, change).await?;
        }
        tx.commit().await.map_err(pg)
    }
}

/// Keep one connection LISTENing and forward what it hears. After every
/// (re)subscription a `Resync` goes out first: whatever happened while the
/// connection was down was not heard, so caches must start over.
async fn listen_forever(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    out: broadcast::Sender<Change>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&config, tls.clone(), &out).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => tracing::warn!(
                error = %describe(&e),
                retry_ms = backoff.as_millis() as u64,
                "store change listener disconnected; caches are cleared when it is back"
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_MAX_BACKOFF);
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    tls: MakeRustlsConnect,
    out: &broadcast::Sender<Change>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls).await?;
    let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    // The connection object does the socket I/O; polling its messages drives it.
    let io = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if heard_tx.send(Change::decode(n.payload())).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    let result = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        let _ = out.send(Change::Resync);
        tracing::info!("listening for store changes");
        let mut heartbeat = tokio::time::interval(LISTENER_HEARTBEAT);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                heard = heard.recv() => match heard {
                    // No receivers (no running server) is not an error.
                    Some(change) => { let _ = out.send(change); }
                    None => return Ok(()),
                },
                _ = heartbeat.tick() => { client.simple_query("").await?; }
            }
        }
    }
    .await;
    drop(client);
    match io.await {
        Ok(Err(e)) => Err(e),
        _ => result,
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(pg)?;
        Ok(())
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    async fn create_org(&self, name: &str) -> Result<CreatedOrg, StoreError> {
        let created = new_org(name.to_owned());
        let org = &created.org;
        let c = self.client().await?;
        c.execute(
            &format!("INSERT INTO orgs ({ORG_COLS}) VALUES ($1, $2, $3, $4, NULL, $5)"),
            &[
                &org.id,
                &org.name,
                &org.api_key_hash.as_slice(),
                &org.player_key,
                &org.created_at.unix_timestamp(),
            ],
        )
        .await
        .map_err(|e| match pg(e) {
            StoreError::Duplicate(_) => {
                StoreError::Duplicate(format!("organisation `{}`", org.name))
            }
            other => other,
        })?;
        Ok(created)
    }

    async fn org(&self, id: &str) -> Result<Option<Org>, StoreError> {
        let sql = format!("SELECT {ORG_COLS} FROM orgs WHERE id = $1");
        self.opt(&sql, &[&id], org_row).await
    }

    async fn org_by_name(&self, name: &str) -> Result<Option<Org>, StoreError> {
        let sql = format!("SELECT {ORG_COLS} FROM orgs WHERE name = $1");
        self.opt(&sql, &[&name], org_row).await
    }

    async fn org_by_api_key_hash(&self, hash: &[u8; 32]) -> Result<Option<Org>, StoreError> {
        let sql = format!("SELECT {ORG_COLS} FROM orgs WHERE api_key_hash = $1");
        self.opt(&sql, &[&hash.as_slice()], org_row).await
    }

    async fn org_by_player_key(&self, key: &str) -> Result<Option<Org>, StoreError> {
        let sql = format!("SELECT {ORG_COLS} FROM orgs WHERE player_key = $1");
        self.opt(&sql, &[&key], org_row).await
    }

    async fn rotate_api_key(&self, org_id: &str) -> Result<String, StoreError> {
        let key = random_token("ak_");
        self.update_one(
            "UPDATE orgs SET api_key_hash = $1 WHERE id = $2",
            &[&key_hash(&key).as_slice(), &org_id],
            org_id,
            Some(Change::OrgKeys(org_id.to_owned())),
        )
        .await?;
        Ok(key)
    }

    async fn rotate_player_key(&self, org_id: &str) -> Result<String, StoreError> {
        let key = random_token("pk_");
        self.update_one(
            "UPDATE orgs SET player_key = $1 WHERE id = $2",
            &[&key, &org_id],
            org_id,
            Some(Change::OrgKeys(org_id.to_owned())),
        )
        .await?;
        Ok(key)
    }

    async fn set_webhook(&self, org_id: &str, url: Option<&str>) -> Result<(), StoreError> {
        self.update_one(
            "UPDATE orgs SET webhook = $1 WHERE id = $2",
            &[&url, &org_id],
            org_id,
            None,
        )
        .await
    }

    async fn playback_keys(&self, org_id: Option<&str>) -> Result<Vec<PlaybackKey>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLS} FROM playback_keys \
             WHERE $1::TEXT IS NULL OR org_id = $1 ORDER BY created_at, seq"
        );
        self.all(&sql, &[&org_id], key_row).await
    }

    async fn playback_key(&self, kid: &str) -> Result<Option<PlaybackKey>, StoreError> {
        let sql = format!("SELECT {KEY_COLS} FROM playback_keys WHERE kid = $1");
        self.opt(&sql, &[&kid], key_row).await
    }

    async fn put_playback_key(
        &self,
        key: PlaybackKey,
        rotate: bool,
    ) -> Result<PlaybackKey, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // One active key per organisation: serialise creators on the org row.
        tx.execute(
            "SELECT 1 FROM orgs WHERE id = $1 FOR UPDATE",
            &[&key.org_id],
        )
        .await
        .map_err(pg)?;
        if !rotate {
            let existing = tx
                .query_opt(
                    &format!(
                        "SELECT {KEY_COLS} FROM playback_keys \
                         WHERE org_id = $1 AND retired_at IS NULL"
                    ),
                    &[&key.org_id],
                )
                .await
                .map_err(pg)?;
            if let Some(row) = existing {
                return key_row(&row);
            }
        }
        tx.execute(
            "UPDATE playback_keys SET retired_at = $1 WHERE org_id = $2 AND retired_at IS NULL",
            &[&key.created_at, &key.org_id],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO playback_keys (kid, org_id, private_key, public_key, created_at, \
             retired_at, max_token_exp) VALUES ($1, $2, $3, $4, $5, NULL, 0)",
            &[
                &key.kid,
                &key.org_id,
                &key.private_key,
                &key.public_key,
                &key.created_at,
            ],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(key)
    }

    async fn extend_playback_key(&self, kid: &str, exp: i64) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "UPDATE playback_keys SET max_token_exp = GREATEST(max_token_exp, $1) WHERE kid = $2",
                &[&exp, &kid],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn revoke_playback(
        &self,
        jti: &str,
        org_id: &str,
        exp: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Revoking twice is the same permanent fact: keep the first row.
        tx.execute(
            "INSERT INTO revoked_playback (jti, org_id, exp, revoked_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING",
            &[&jti, &org_id, &exp, &now],
        )
        .await
        .map_err(pg)?;
        announce(&tx, Change::PlaybackRevoked(jti.to_owned())).await?;
        tx.commit().await.map_err(pg)
    }

    async fn playback_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        Ok(self
            .opt(
                "SELECT 1 FROM revoked_playback WHERE jti = $1",
                &[&jti],
                |_| Ok(()),
            )
            .await?
            .is_some())
    }

    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let user = insert_user(&tx, user).await?;
        tx.commit().await.map_err(pg)?;
        Ok(user)
    }

    async fn create_users(&self, users: Vec<NewUser>) -> Result<Vec<User>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            out.push(insert_user(&tx, u).await?);
        }
        tx.commit().await.map_err(pg)?;
        Ok(out)
    }

    async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE id = $1");
        self.opt(&sql, &[&id], user_row).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE email = $1");
        self.opt(&sql, &[&email], user_row).await
    }

    async fn list_users(&self, org_id: &str, role: Option<&str>) -> Result<Vec<User>, StoreError> {
        let sql = format!(
            "SELECT {USER_COLS} FROM users WHERE org_id = $1 \
             AND ($2::TEXT IS NULL OR role = $2) ORDER BY created_at, email"
        );
        self.all(&sql, &[&org_id, &role], user_row).await
    }

    async fn set_role(
        &self,
        user_id: &str,
        role: &str,
        new_token_key: &[u8],
    ) -> Result<User, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let user = lock_user(&tx, user_id).await?;
        guard_last_admin(&tx, &user, Some(role)).await?;
        tx.execute(
            "UPDATE users SET role = $1, token_key = $2 WHERE id = $3",
            &[&role, &new_token_key, &user_id],
        )
        .await
        .map_err(pg)?;
        announce(&tx, Change::User(user_id.to_owned())).await?;
        let user = user_tx(&tx, user_id).await?;
        tx.commit().await.map_err(pg)?;
        Ok(user)
    }

    async fn set_token_key(&self, user_id: &str, new_token_key: &[u8]) -> Result<User, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                &format!("UPDATE users SET token_key = $1 WHERE id = $2 RETURNING {USER_COLS}"),
                &[&new_token_key, &user_id],
            )
            .await
            .map_err(pg)?
            .ok_or_else(|| StoreError::NotFound(user_id.to_owned()))?;
        announce(&tx, Change::User(user_id.to_owned())).await?;
        tx.commit().await.map_err(pg)?;
        user_row(&row)
    }

    async fn delete_user(&self, user_id: &str) -> Result<User, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let user = lock_user(&tx, user_id).await?;
        guard_last_admin(&tx, &user, None).await?;
        tx.execute("DELETE FROM users WHERE id = $1", &[&user_id])
            .await
            .map_err(pg)?;
        announce(&tx, Change::User(user_id.to_owned())).await?;
        tx.commit().await.map_err(pg)?;
        Ok(user)
    }

    async fn set_password(&self, user_id: &str, password_hash: &str) -> Result<(), StoreError> {
        self.update_one(
            "UPDATE users SET password_hash = $1 WHERE id = $2",
            &[&password_hash, &user_id],
            user_id,
            None,
        )
        .await
    }

    async fn append_audit(&self, r: NewAudit) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO audit (org_id, actor, action, target, outcome, at, request_id, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &r.org_id,
                    &r.actor,
                    &r.action,
                    &r.target,
                    &r.outcome,
                    &now(),
                    &r.request_id,
                    &r.detail,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn create_invite(&self, invite: NewInvite) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.client()
            .await?
            .execute(
                "INSERT INTO invites (id, org_id, token_hash, role, created_by, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &id,
                    &invite.org_id,
                    &invite.token_hash.as_slice(),
                    &invite.role,
                    &invite.created_by,
                    &now(),
                    &invite.expires_at,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(id)
    }

    async fn accept_invite(
        &self,
        token_hash: &[u8; 32],
        at: i64,
        user: NewUser,
    ) -> Result<User, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // FOR UPDATE: two replicas accepting the same invite at once queue
        // here, and the second sees it used.
        let row = tx
            .query_opt(
                "SELECT id, org_id, role, expires_at, used_at FROM invites \
                 WHERE token_hash = $1 FOR UPDATE",
                &[&token_hash.as_slice()],
            )
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            return Err(StoreError::InviteRefused("unknown"));
        };
        let id: String = row.try_get(0).map_err(pg)?;
        let org_id: String = row.try_get(1).map_err(pg)?;
        let role: String = row.try_get(2).map_err(pg)?;
        let expires_at: i64 = row.try_get(3).map_err(pg)?;
        let used_at: Option<i64> = row.try_get(4).map_err(pg)?;
        if used_at.is_some() {
            return Err(StoreError::InviteRefused("already used"));
        }
        if at >= expires_at {
            return Err(StoreError::InviteRefused("expired"));
        }
        let created = insert_user(
            &tx,
            NewUser {
                org_id,
                role,
                ..user
            },
        )
        .await?;
        tx.execute(
            "UPDATE invites SET used_at = $1, used_by = $2 WHERE id = $3",
            &[&at, &created.id, &id],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(created)
    }

    async fn create_password_reset(&self, reset: NewPasswordReset) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.client()
            .await?
            .execute(
                "INSERT INTO password_resets (id, org_id, user_id, token_hash, created_by, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &id,
                    &reset.org_id,
                    &reset.user_id,
                    &reset.token_hash.as_slice(),
                    &reset.created_by,
                    &now(),
                    &reset.expires_at,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(id)
    }

    async fn use_password_reset(
        &self,
        token_hash: &[u8; 32],
        at: i64,
        password_hash: &str,
        new_token_key: &[u8],
    ) -> Result<User, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // FOR UPDATE: two replicas using the same link at once queue here,
        // and the second sees it used.
        let row = tx
            .query_opt(
                "SELECT id, user_id, expires_at, used_at FROM password_resets \
                 WHERE token_hash = $1 FOR UPDATE",
                &[&token_hash.as_slice()],
            )
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            return Err(StoreError::ResetRefused("unknown"));
        };
        let id: String = row.try_get(0).map_err(pg)?;
        let user_id: String = row.try_get(1).map_err(pg)?;
        let expires_at: i64 = row.try_get(2).map_err(pg)?;
        let used_at: Option<i64> = row.try_get(3).map_err(pg)?;
        if used_at.is_some() {
            return Err(StoreError::ResetRefused("already used"));
        }
        if at >= expires_at {
            return Err(StoreError::ResetRefused("expired"));
        }
        let user = tx
            .query_opt(
                &format!(
                    "UPDATE users SET password_hash = $1, token_key = $2 WHERE id = $3 RETURNING {USER_COLS}"
                ),
                &[&password_hash, &new_token_key, &user_id],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::ResetRefused("for a user who no longer exists"))?;
        tx.execute(
            "UPDATE password_resets SET used_at = $1 WHERE id = $2",
            &[&at, &id],
        )
        .await
        .map_err(pg)?;
        announce(&tx, Change::User(user_id)).await?;
        tx.commit().await.map_err(pg)?;
        user_row(&user)
    }

    async fn list_audit(
        &self,
        org_id: &str,
        f: &AuditFilter,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = i64::from(if f.limit == 0 { 1000 } else { f.limit });
        self.all(
            "SELECT id, org_id, actor, action, target, outcome, at, request_id, detail FROM audit \
             WHERE org_id = $1 AND ($2::TEXT IS NULL OR target = $2) \
             AND ($3::TEXT IS NULL OR actor = $3) AND ($4::TEXT IS NULL OR action = $4) \
             ORDER BY id DESC LIMIT $5",
            &[&org_id, &f.target, &f.actor, &f.action, &limit],
            audit_row,
        )
        .await
    }

    async fn changes_after(&self, after: i64, limit: u32) -> Result<ChangePage, StoreError> {
        let c = self.client().await?;
        let bounds = c
            .prepare_cached("SELECT MIN(seq), MAX(seq) FROM change_log")
            .await
            .map_err(pg)?;
        let row = c.query_one(&bounds, &[]).await.map_err(pg)?;
        let oldest: Option<i64> = row.try_get(0).map_err(pg)?;
        let head: Option<i64> = row.try_get(1).map_err(pg)?;
        let page = c
            .prepare_cached(
                "SELECT seq, change, at_ms FROM change_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .await
            .map_err(pg)?;
        let entries = c
            .query(&page, &[&after, &i64::from(limit)])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| {
                Ok(LoggedChange {
                    seq: r.try_get(0).map_err(pg)?,
                    change: Change::decode(r.try_get::<_, &str>(1).map_err(pg)?),
                    at_ms: r.try_get(2).map_err(pg)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(ChangePage {
            entries,
            oldest,
            head: head.unwrap_or(0),
        })
    }

    async fn prune_changes(&self, now_ms: i64) -> Result<u64, StoreError> {
        use super::changelog::{FORGET_REPLICA_MS, RETENTION_MS};
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM change_log WHERE at_ms < $1 \
                 AND seq < (SELECT MAX(seq) FROM change_log)",
                &[&now_ms.saturating_sub(RETENTION_MS)],
            )
            .await
            .map_err(pg)?;
        c.execute(
            "DELETE FROM replicas WHERE seen_at_ms < $1",
            &[&now_ms.saturating_sub(FORGET_REPLICA_MS)],
        )
        .await
        .map_err(pg)?;
        Ok(n)
    }

    async fn heartbeat(&self, id: &str, applied: i64, now_ms: i64) -> Result<(), StoreError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO replicas (id, applied, seen_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET applied = EXCLUDED.applied, seen_at_ms = EXCLUDED.seen_at_ms",
            )
            .await
            .map_err(pg)?;
        c.execute(&st, &[&id, &applied, &now_ms])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn replicas(&self) -> Result<Vec<ReplicaBeat>, StoreError> {
        self.all(
            "SELECT id, applied, seen_at_ms FROM replicas ORDER BY id",
            &[],
            |r| {
                Ok(ReplicaBeat {
                    id: r.try_get(0).map_err(pg)?,
                    applied: r.try_get(1).map_err(pg)?,
                    seen_at_ms: r.try_get(2).map_err(pg)?,
                })
            },
        )
        .await
    }
}
