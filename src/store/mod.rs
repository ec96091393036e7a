//! Durable state behind one trait: organisations, users (role, tokenKey, status),
//! invites, playback keys and revocations, and the audit log. The embedded SQLite
//! file is the default; PostgreSQL (`postgres://` URL) is for several replicas.
//!
//! Every write is one transaction. The caller drops its own cache entries after
//! a write that changes what a credential may do (role, tokenKey, deletion, key
//! rotation); a shared store also announces the change to every other replica
//! (`Store::subscribe`).

pub mod audit;
pub mod changelog;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

pub use changelog::{ChangePage, LoggedChange, ReplicaBeat};
use time::OffsetDateTime;

// Clone: one failed read is handed to every request waiting on it (`single_flight`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store query failed: {0}")]
    Query(String),
    #[error("store migration failed: {0}")]
    Migration(String),
    #[error("`{0}` already exists")]
    Duplicate(String),
    #[error("`{0}` not found")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    /// An invite token that is unknown, already used or expired.
    #[error("invite {0}")]
    InviteRefused(&'static str),
    /// A password-reset token that is unknown, already used or expired, or
    /// whose user is gone.
    #[error("password reset {0}")]
    ResetRefused(&'static str),
}

/// An organisation as stored. Keys are stored as SHA-256 hashes only.
#[derive(Debug, Clone)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub api_key_hash: [u8; 32],
    pub player_key: String,
    pub webhook: Option<String>,
    pub created_at: OffsetDateTime,
}

#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub org_id: String,
    pub email: String,
    pub role: String,
    /// 32 random bytes; the per-user secret of the token derivation.
    pub token_key: Vec<u8>,
    pub created_at: OffsetDateTime,
    pub password_hash: Option<String>,
}

/// Written out by hand so a logged or printed user never shows its token key
/// or password hash.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("token_key", &"[redacted]")
            .field("created_at", &self.created_at)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub org_id: String,
    pub email: String,
    pub role: String,
    pub password_hash: Option<String>,
}

/// One audit record: who did what to whom, when, with which outcome.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub org_id: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub request_id: String,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct NewAudit {
    pub org_id: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub request_id: String,
    pub detail: String,
}

/// An invite to create: who may join which organisation with which role, until when.
#[derive(Debug, Clone)]
pub struct NewInvite {
    pub org_id: String,
    pub role: String,
    pub token_hash: [u8; 32],
    pub created_by: String,
    pub expires_at: i64,
}

/// A password reset to create: which user may set a new password until
/// when, with a token stored only as a hash.
#[derive(Debug, Clone)]
pub struct NewPasswordReset {
    pub org_id: String,
    pub user_id: String,
    pub token_hash: [u8; 32],
    pub created_by: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub target: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub limit: u32,
}

/// A freshly created organisation with its keys in clear text (shown once;
/// `Debug` prints them redacted).
#[derive(Clone)]
pub struct CreatedOrg {
    pub org: Org,
    pub api_key: String,
    pub player_key: String,
}

/// An organisation's Ed25519 playback signing key (see `authn::playback_token`).
#[derive(Clone)]
pub struct PlaybackKey {
    pub kid: String,
    pub org_id: String,
    /// The 32-byte Ed25519 seed.
    pub private_key: Vec<u8>,
    /// The 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub max_token_exp: i64,
}

/// Written out by hand so the signing seed never reaches a log.
impl std::fmt::Debug for PlaybackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaybackKey")
            .field("kid", &self.kid)
            .field("org_id", &self.org_id)
            .field("private_key", &"[redacted]")
            .field("public_key", &hex::encode(&self.public_key))
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .field("max_token_exp", &self.max_token_exp)
            .finish()
    }
}

pub type SharedStore = Arc<dyn Store>;

/// A change made through any replica that cached credentials must follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A user's tokenKey, role or existence changed (or the user was created).
    User(String),
    /// An organisation's API key or player key was replaced.
    OrgKeys(String),
    /// A playback token was revoked.
    PlaybackRevoked(String),
    /// Changes may have been missed (the notification connection was lost and
    /// is back): everything cached must go.
    Resync,
}

impl Change {
    /// The notification payload: a one-letter kind, `:`, the id.
    pub fn encode(&self) -> String {
        match self {
            Change::User(id) => format!("u:{id}"),
            Change::OrgKeys(id) => format!("o:{id}"),
            Change::PlaybackRevoked(jti) => format!("p:{jti}"),
            Change::Resync => "*".to_owned(),
        }
    }

    /// Parse a payload; anything unrecognised asks for a resync (fail safe:
    /// dropping the cache costs a few store reads, keeping a stale entry could
    /// let a revoked credential through).
    pub fn decode(payload: &str) -> Change {
        match payload.split_once(':') {
            Some(("u", id)) if !id.is_empty() => Change::User(id.to_owned()),
            Some(("o", id)) if !id.is_empty() => Change::OrgKeys(id.to_owned()),
            Some(("p", jti)) if !jti.is_empty() => Change::PlaybackRevoked(jti.to_owned()),
            _ => Change::Resync,
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and `/status` (`sqlite`, `postgres`).
    fn kind(&self) -> &'static str;
    /// Cheap round trip used by readiness.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The doorbell: rings when a change was logged anywhere, so followers
    /// read the log at once instead of at their next poll. `None`: the store
    /// has none (the embedded file; its followers rely on the poll).
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }

    async fn create_org(&self, name: &str) -> Result<CreatedOrg, StoreError>;
    async fn org(&self, id: &str) -> Result<Option<Org>, StoreError>;
    async fn org_by_name(&self, name: &str) -> Result<Option<Org>, StoreError>;
    async fn org_by_api_key_hash(&self, hash: &[u8; 32]) -> Result<Option<Org>, StoreError>;
    async fn org_by_player_key(&self, key: &str) -> Result<Option<Org>, StoreError>;
    /// Replace the API key; returns the new key in clear text.
    async fn rotate_api_key(&self, org_id: &str) -> Result<String, StoreError>;
    /// Replace the player key; returns the new key.
    async fn rotate_player_key(&self, org_id: &str) -> Result<String, StoreError>;
    async fn set_webhook(&self, org_id: &str, url: Option<&str>) -> Result<(), StoreError>;

    // ---- playback signing keys and revoked playback tokens (issue 6) --------
    /// Every playback key, of one organisation or of all (JWKS), active and retired.
    async fn playback_keys(&self, org_id: Option<&str>) -> Result<Vec<PlaybackKey>, StoreError>;
    /// One playback key by `kid` (verification path).
    async fn playback_key(&self, kid: &str) -> Result<Option<PlaybackKey>, StoreError>;
    /// Store `key` as the org's active key. With `rotate` the current active key
    /// is retired; without it an existing active key wins (lazy creation race)
    /// and is returned instead.
    async fn put_playback_key(
        &self,
        key: PlaybackKey,
        rotate: bool,
    ) -> Result<PlaybackKey, StoreError>;
    /// Raise the key's `max_token_exp` so JWKS keeps it while its tokens live.
    async fn extend_playback_key(&self, kid: &str, exp: i64) -> Result<(), StoreError>;
    async fn revoke_playback(
        &self,
        jti: &str,
        org_id: &str,
        exp: i64,
        now: i64,
    ) -> Result<(), StoreError>;
    async fn playback_revoked(&self, jti: &str) -> Result<bool, StoreError>;
    // ---- end playback -----------------------------------------------------

    async fn create_user(&self, user: NewUser) -> Result<User, StoreError>;
    /// Create many users in one transaction (bootstrapping, benchmarks).
    async fn create_users(&self, users: Vec<NewUser>) -> Result<Vec<User>, StoreError>;
    async fn user(&self, id: &str) -> Result<Option<User>, StoreError>;
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    async fn list_users(&self, org_id: &str, role: Option<&str>) -> Result<Vec<User>, StoreError>;
    /// Change a user's role and renew their tokenKey in one transaction. Refuses
    /// (StoreError::Refused) to demote the organisation's last nanoAdmin.
    async fn set_role(
        &self,
        user_id: &str,
        role: &str,
        new_token_key: &[u8],
    ) -> Result<User, StoreError>;
    /// Renew a user's tokenKey.
    async fn set_token_key(&self, user_id: &str, new_token_key: &[u8]) -> Result<User, StoreError>;
    /// Delete a user. Refuses to delete the organisation's last nanoAdmin.
    async fn delete_user(&self, user_id: &str) -> Result<User, StoreError>;
    async fn set_password(&self, user_id: &str, password_hash: &str) -> Result<(), StoreError>;

    async fn append_audit(&self, record: NewAudit) -> Result<(), StoreError>;
    // --- invites ---------------------------------------------------------------
    /// Store an invite (its token only as a hash) for `role` in `org_id`.
    async fn create_invite(&self, invite: NewInvite) -> Result<String, StoreError>;
    /// Accept an invite and create its user, in one transaction. Refuses
    /// (`InviteRefused`) a token that is unknown, used or expired: nothing is created.
    async fn accept_invite(
        &self,
        token_hash: &[u8; 32],
        now: i64,
        user: NewUser,
    ) -> Result<User, StoreError>;

    // --- password resets -------------------------------------------------------
    /// Store a single-use password reset (its token only as a hash).
    async fn create_password_reset(&self, reset: NewPasswordReset) -> Result<String, StoreError>;
    /// Use a password reset, in one transaction: mark it used, set the user's
    /// password hash and renew their tokenKey (every API token they hold dies).
    /// Refuses (`ResetRefused`) a token that is unknown, used or expired, or
    /// whose user was deleted: nothing changes.
    async fn use_password_reset(
        &self,
        token_hash: &[u8; 32],
        at: i64,
        password_hash: &str,
        new_token_key: &[u8],
    ) -> Result<User, StoreError>;
    async fn list_audit(
        &self,
        org_id: &str,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    // --- the change log (see `changelog`) ------------------------------------
    /// Up to `limit` log entries with a sequence number above `after`, in order,
    /// with the oldest retained and the newest sequence number.
    async fn changes_after(&self, after: i64, limit: u32) -> Result<ChangePage, StoreError>;
    /// Drop entries older than `changelog::RETENTION_MS` (never the newest
    /// one, so the head stays known) and heartbeats of long-gone replicas.
    async fn prune_changes(&self, now_ms: i64) -> Result<u64, StoreError>;
    /// Record that replica `id` has applied the log up to `applied`.
    async fn heartbeat(&self, id: &str, applied: i64, now_ms: i64) -> Result<(), StoreError>;
    /// Every replica's last heartbeat (pruned after `changelog::FORGET_REPLICA_MS`).
    async fn replicas(&self) -> Result<Vec<ReplicaBeat>, StoreError>;
}

/// The role that may never disappear from an organisation.
pub const ADMIN_ROLE: &str = "nanoAdmin";

/// 32 bytes from the OS CSPRNG, for tokenKeys and keys.
pub fn random_key() -> Vec<u8> {
    use rand::RngCore;
    let mut k = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut k);
    k
}

/// A random key as URL-safe text (API keys, player keys, invite tokens).
pub fn random_token(prefix: &str) -> String {
    use base64::Engine;
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_key())
    )
}

/// SHA-256 of a key, the only form in which API keys are stored.
pub fn key_hash(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

pub(crate) fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

pub(crate) fn ts(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A new organisation with fresh keys, ready to insert.
pub(crate) fn new_org(name: String) -> CreatedOrg {
    let api_key = random_token("ak_");
    let player_key = random_token("pk_");
    CreatedOrg {
        org: Org {
            id: uuid::Uuid::new_v4().to_string(),
            name,
            api_key_hash: key_hash(&api_key),
            player_key: player_key.clone(),
            webhook: None,
            created_at: ts(now()),
        },
        api_key,
        player_key,
    }
}

/// A new user with a fresh id and tokenKey, ready to insert.
pub(crate) fn new_user(u: NewUser) -> User {
    User {
        id: uuid::Uuid::new_v4().to_string(),
        org_id: u.org_id,
        email: u.email,
        role: u.role,
        token_key: random_key(),
        created_at: ts(now()),
        password_hash: u.password_hash,
    }
}

/// Whether changing `user` to `new_role` (`None`: deleting them) could remove
/// their organisation's last nanoAdmin, so the admins must be counted first.
pub(crate) fn touches_admin(user: &User, new_role: Option<&str>) -> bool {
    user.role == ADMIN_ROLE && new_role != Some(ADMIN_ROLE)
}

/// The refusal when `admins` (counted with `user` among them) is the last one.
pub(crate) fn refuse_last_admin(admins: i64) -> Result<(), StoreError> {
    if admins <= 1 {
        return Err(StoreError::Refused(
            "the organisation's last nanoAdmin cannot be demoted or deleted".to_owned(),
        ));
    }
    Ok(())
}

/// Open the store a location names: a `postgres://` URL or a SQLite file path
/// (optionally prefixed `sqlite://`).
pub async fn open(location: &str) -> Result<SharedStore, StoreError> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::PostgresStore::open(location).await?));
    }
    let path = location.strip_prefix("sqlite://").unwrap_or(location);
    Ok(Arc::new(sqlite::SqliteStore::open(path).await?))
}

/// A store location fit for messages: the password of a URL replaced.
pub fn redact(location: &str) -> String {
    match location.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => location.to_owned(),
        },
        None => location.to_owned(),
    }
}

impl std::fmt::Debug for CreatedOrg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedOrg")
            .field("org", &self.org)
            .field("api_key", &"[redacted]")
            .field("player_key", &"[redacted]")
            .finish()
    }
}
