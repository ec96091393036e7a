//! Passwords: the one argon2 hasher (the CLI, invites and password resets all
//! hash here), verification that costs the same whether or not the account
//! exists, and the throttle on failed logins.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Minimum password length for accounts created through invites.
pub const MIN_PASSWORD_LEN: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("password hashing was interrupted")]
    Interrupted,
}

/// An argon2id hash (PHC string, random salt) of `password`. Slow on purpose:
/// call [`hash_off_thread`] from async code.
pub fn hash(password: &[u8]) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// [`hash`] on the blocking pool, so the runtime's threads keep serving.
pub async fn hash_off_thread(password: String) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || hash(password.as_bytes()))
        .await
        .map_err(|_| PasswordError::Interrupted)?
}

/// A real hash (of a random password) to verify against when the email is
/// unknown, so that an unknown email costs the same time as a wrong password.
fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| hash(&crate::store::random_key()).unwrap_or_default())
        .clone()
}

/// Whether `password` matches `hash`; an account without a hash (or none at
/// all) never matches, after the same work as one that does.
pub async fn verify(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(dummy_hash);
        // argon2's verify compares the digests in constant time.
        let ok = PasswordHash::new(&hash)
            .map(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && known
    })
    .await
    .unwrap_or(false)
}

/// Failed attempts allowed per window before logins answer 429.
const MAX_FAILURES: u32 = 5;
const THROTTLE_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// Failed logins per (email, client address), forgotten after the window.
pub struct LoginThrottle {
    failures: moka::sync::Cache<String, u32>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(THROTTLE_WINDOW)
                .build(),
        }
    }
}

impl LoginThrottle {
    fn key(email: &str, client: std::net::IpAddr) -> String {
        format!("{}\0{client}", email.to_ascii_lowercase())
    }

    /// Too many recent failures for this email from this address.
    pub fn is_blocked(&self, email: &str, client: std::net::IpAddr) -> bool {
        self.failures.get(&Self::key(email, client)).unwrap_or(0) >= MAX_FAILURES
    }

    pub fn failed(&self, email: &str, client: std::net::IpAddr) {
        let key = Self::key(email, client);
        let n = self.failures.get(&key).unwrap_or(0) + 1;
        self.failures.insert(key, n);
    }

    pub fn succeeded(&self, email: &str, client: std::net::IpAddr) {
        self.failures.invalidate(&Self::key(email, client));
    }
}
