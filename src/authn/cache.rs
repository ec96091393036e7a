//! The tokenKey cache: moka in front of the store.
//!
//! Per user it holds what a decision needs: the current role, the organisation
//! and the verification key derived from the current tokenKey, so a cache hit
//! does no store I/O and no key derivation. The role used for a decision always
//! comes from here (or the store), never from a token claim.
//!
//! Staleness is bounded three ways: local writes invalidate the entry at once,
//! replicas invalidate on change notifications, and a TTL bounds what a lost
//! notification can cost. Unknown key ids are cached as negative answers
//! (bounded in count, short-lived, dropped when a user with that id is created)
//! so a flood of made-up `kid`s does not become a flood of store queries.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use moka::sync::Cache;

use crate::authn::single_flight::{Flights, Source};
use crate::authn::token::{
    derive_secret, ApiToken, TokenError, TokenSettings, VerifiedToken, VerifyKey,
};
use crate::store::{key_hash, SharedStore, StoreError, User};

/// What the request path knows about a user.
pub struct CachedUser {
    pub id: Arc<str>,
    pub org: Arc<str>,
    pub role: Arc<str>,
    pub key: VerifyKey,
    /// The first token that verified with `key` (see [`VerifiedToken`]); a
    /// few hundred bytes per cached user who has made a request.
    verified: OnceLock<VerifiedToken>,
}

impl CachedUser {
    /// Check an API token whose `kid` named this user: the remembered token
    /// needs only its clock checked; any other is verified in full (MAC,
    /// claims, clock) and, if it is the first to pass, remembered.
    pub fn verify(
        &self,
        token: &ApiToken<'_>,
        settings: &TokenSettings,
        now: u64,
    ) -> Result<(), TokenError> {
        if let Some(window) = self
            .verified
            .get()
            .and_then(|memo| memo.window_of(token.as_str()))
        {
            return window.check_time(settings, now);
        }
        let window = crate::authn::token::verify(token, &self.key, settings, &self.id, now)?;
        let _ = self
            .verified
            .set(VerifiedToken::new(token.as_str(), window));
        Ok(())
    }
}

/// What the request path knows about an organisation key.
#[derive(Debug, Clone)]
pub struct CachedKey {
    pub org: Arc<str>,
}

#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    pub ttl: Duration,
    pub capacity: u64,
    pub negative_ttl: Duration,
    pub negative_capacity: u64,
}

#[derive(Clone)]
pub struct PrincipalCache {
    users: Cache<Arc<str>, Arc<CachedUser>>,
    /// Key ids known not to name a user: bounded apart from `users`, so a flood
    /// of made-up ids cannot evict real entries.
    unknown_users: Cache<Arc<str>, ()>,
    api_keys: Cache<[u8; 32], Option<CachedKey>>,
    player_keys: Cache<Arc<str>, Option<CachedKey>>,
    store: SharedStore,
    master: Arc<[u8]>,
    settings: CacheSettings,
    /// Bumped by every invalidation. A miss that read the store while an
    /// invalidation ran may hold the value from before the change: it is not
    /// kept (see `keep_if_current`), or the TTL would be its only bound.
    epoch: Arc<AtomicU64>,
    /// Store reads under way, one per key (see `single_flight`).
    user_reads: Arc<Flights<Arc<str>, UserRead>>,
    api_key_reads: Arc<Flights<[u8; 32], KeyRead>>,
    player_key_reads: Arc<Flights<Arc<str>, KeyRead>>,
}

type UserRead = Result<Option<Arc<CachedUser>>, StoreError>;
type KeyRead = Result<Option<CachedKey>, StoreError>;

/// Result of a lookup through the cache.
pub struct Lookup<T> {
    pub value: Option<T>,
    pub source: Source,
}

impl PrincipalCache {
    pub fn new(store: SharedStore, master: Arc<[u8]>, settings: CacheSettings) -> Self {
        // Key lookups cache `None` too, with the (shorter) negative lifetime.
        let expiry = NegativeExpiry {
            positive: settings.ttl,
            negative: settings.negative_ttl,
        };
        PrincipalCache {
            users: Cache::builder()
                .max_capacity(settings.capacity)
                .time_to_live(settings.ttl)
                .build(),
            unknown_users: Cache::builder()
                .max_capacity(settings.negative_capacity)
                .time_to_live(settings.negative_ttl)
                .build(),
            api_keys: Cache::builder()
                .max_capacity(1024)
                .expire_after(expiry)
                .build(),
            player_keys: Cache::builder()
                .max_capacity(1024)
                .expire_after(expiry)
                .build(),
            store,
            master,
            settings,
            epoch: Arc::default(),
            user_reads: Arc::default(),
            api_key_reads: Arc::default(),
            player_key_reads: Arc::default(),
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Called after inserting what a store read returned: if an invalidation
    /// started since `seen`, drop the entry again. Insert-then-check (and
    /// bump-then-invalidate on the other side) leaves no interleaving in which
    /// a stale entry survives.
    fn keep_if_current(&self, seen: u64, drop_it: impl FnOnce()) {
        if self.epoch() != seen {
            drop_it();
        }
    }

    fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    pub fn settings(&self) -> CacheSettings {
        self.settings
    }

    fn entry(&self, u: &User) -> Arc<CachedUser> {
        let secret = derive_secret(&self.master, &u.id, &u.token_key);
        Arc::new(CachedUser {
            id: Arc::from(u.id.as_str()),
            org: Arc::from(u.org_id.as_str()),
            role: Arc::from(u.role.as_str()),
            key: VerifyKey::new(&secret),
            verified: OnceLock::new(),
        })
    }

    /// One lookup through a cache: `cached` answers from it (`Some(answer)`,
    /// the answer possibly "none"); on a miss, one store read per key at a
    /// time (`single_flight`) runs `read` with the invalidation epoch it
    /// started in, which `read` passes to `keep_if_current` after caching
    /// its answer.
    async fn look_up<K, T, Fut>(
        &self,
        flights: &Flights<K, Result<Option<T>, StoreError>>,
        key: impl FnOnce() -> K,
        cached: impl Fn() -> Option<Option<T>>,
        read: impl FnOnce(u64) -> Fut,
    ) -> Result<Lookup<T>, StoreError>
    where
        K: Hash + Eq + Clone,
        T: Clone,
        Fut: Future<Output = Result<Option<T>, StoreError>>,
    {
        if let Some(value) = cached() {
            return Ok(Lookup {
                value,
                source: Source::Cached,
            });
        }
        let seen = self.epoch();
        let (read, source) = flights
            .get(key(), seen, || cached().map(Ok), || read(seen))
            .await;
        Ok(Lookup {
            value: read?,
            source,
        })
    }

    /// The user a token's `kid` names. `None`: no such user (possibly a cached answer).
    pub async fn user(&self, id: &str) -> Result<Lookup<Arc<CachedUser>>, StoreError> {
        let cached = || match self.users.get(id) {
            Some(v) => Some(Some(v)),
            None => self.unknown_users.contains_key(id).then_some(None),
        };
        self.look_up(
            &self.user_reads,
            || Arc::from(id),
            cached,
            |seen| async move {
                Ok(match self.store.user(id).await? {
                    Some(u) => {
                        let entry = self.entry(&u);
                        self.users.insert(entry.id.clone(), entry.clone());
                        self.keep_if_current(seen, || self.users.invalidate(id));
                        Some(entry)
                    }
                    None => {
                        self.unknown_users.insert(Arc::from(id), ());
                        self.keep_if_current(seen, || self.unknown_users.invalidate(id));
                        None
                    }
                })
            },
        )
        .await
    }

    /// The organisation an API key belongs to.
    pub async fn api_key(&self, key: &str) -> Result<Lookup<CachedKey>, StoreError> {
        let hash = key_hash(key);
        let cached = || self.api_keys.get(&hash);
        self.look_up(
            &self.api_key_reads,
            || hash,
            cached,
            |seen| async move {
                let value = self
                    .store
                    .org_by_api_key_hash(&hash)
                    .await?
                    .map(|o| CachedKey {
                        org: Arc::from(o.id.as_str()),
                    });
                self.api_keys.insert(hash, value.clone());
                self.keep_if_current(seen, || self.api_keys.invalidate(&hash));
                Ok(value)
            },
        )
        .await
    }

    /// The organisation a player key belongs to.
    pub async fn player_key(&self, key: &str) -> Result<Lookup<CachedKey>, StoreError> {
        let cached = || self.player_keys.get(key);
        self.look_up(
            &self.player_key_reads,
            || Arc::from(key),
            cached,
            |seen| async move {
                let value = self.store.org_by_player_key(key).await?.map(|o| CachedKey {
                    org: Arc::from(o.id.as_str()),
                });
                self.player_keys.insert(Arc::from(key), value.clone());
                self.keep_if_current(seen, || self.player_keys.invalidate(key));
                Ok(value)
            },
        )
        .await
    }

    /// Drop what is cached for a user (after a change to them, or their creation,
    /// which must also clear a cached "unknown").
    pub fn invalidate_user(&self, id: &str) {
        self.bump();
        self.users.invalidate(id);
        self.unknown_users.invalidate(id);
    }

    /// Drop every cached organisation key (after a rotation). Keys are looked
    /// up by hash, so the old key's entry cannot be named directly.
    pub fn invalidate_keys(&self) {
        self.bump();
        self.api_keys.invalidate_all();
        self.player_keys.invalidate_all();
    }

    /// Drop everything (a replica that may have missed notifications).
    pub fn clear(&self) {
        self.bump();
        self.users.invalidate_all();
        self.unknown_users.invalidate_all();
        self.invalidate_keys();
    }

    /// Entries currently cached (approximate; for metrics).
    pub fn len(&self) -> u64 {
        self.users.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Positive entries live for the TTL, negative ones for the negative TTL.
#[derive(Clone, Copy)]
struct NegativeExpiry {
    positive: Duration,
    negative: Duration,
}

impl<K, T> moka::Expiry<K, Option<T>> for NegativeExpiry {
    fn expire_after_create(
        &self,
        _key: &K,
        value: &Option<T>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() {
            self.positive
        } else {
            self.negative
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::token::fixtures::{secret, settings, token};
    use crate::authn::token::parse;

    /// The remembered token skips the MAC but never the clock, and any other
    /// token, remembered or not, is verified in full.
    #[test]
    fn a_cached_user_checks_the_remembered_token_by_its_clock_and_others_in_full() {
        let settings = settings();
        let user = CachedUser {
            id: Arc::from("u1"),
            org: Arc::from("o1"),
            role: Arc::from("nanoUser"),
            key: VerifyKey::new(&secret()),
            verified: OnceLock::new(),
        };
        let now = 1_700_000_000;
        let first = token(now);
        assert_eq!(user.verify(&parse(&first).unwrap(), &settings, now), Ok(()));
        assert!(
            user.verified.get().is_some(),
            "the first token is not remembered"
        );
        // Remembered, but expired: refused.
        assert_eq!(
            user.verify(&parse(&first).unwrap(), &settings, now + 3600 + 31),
            Err(TokenError::Expired)
        );
        // A second valid token is verified in full and accepted; a forgery of
        // the same length (another signature) is refused.
        let second = token(now + 1);
        assert_ne!(first, second);
        assert_eq!(
            user.verify(&parse(&second).unwrap(), &settings, now + 1),
            Ok(())
        );
        let (signed, _) = first.rsplit_once('.').unwrap();
        let (_, other_sig) = second.rsplit_once('.').unwrap();
        let forged = format!("{signed}.{other_sig}");
        assert_eq!(
            user.verify(&parse(&forged).unwrap(), &settings, now),
            Err(TokenError::BadSignature)
        );
    }
}
