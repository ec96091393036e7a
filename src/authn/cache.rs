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
//!
//! Memory: a cached user is about 280 bytes (the README's performance
//! section has the table; `benches/cached_users.rs` measures it and fails
//! above its bound). The users are kept in quick_cache, whose entries sit
//! inline in its tables, rather than moka (about 380 bytes of bookkeeping per
//! entry: key and entry boxes, access and write-order nodes, a lock); the
//! TTL is a timestamp in the entry, checked on every hit. Organisation and
//! role are shared values ([`Interner`]); the verification key is the 32
//! bytes of the derived secret; the remembered token is a digest.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::authn::interner::{Interner, Membership};
use crate::authn::single_flight::{Flights, Source};
use crate::authn::token::{
    ApiToken, SecretDeriver, TokenError, TokenSettings, VerifiedToken, VerifyKey,
};
use crate::store::{key_hash, SharedStore, StoreError, User};

/// What the request path knows about a user. Kept to 96 bytes (its heap
/// block, with the `Arc` counts, is then 128 bytes with glibc's rounding;
/// `size_of` is asserted in the tests).
pub struct CachedUser {
    /// Also the cache's key (one allocation for both).
    pub id: Arc<str>,
    /// Organisation and role, shared with every user who has both.
    pub membership: Arc<Membership>,
    pub key: VerifyKey,
    /// When the entry was made, in milliseconds on the cache's clock (the TTL).
    born_ms: u64,
    /// The first token that verified with `key` (see [`VerifiedToken`]).
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
        if let Some(memo) = VerifiedToken::new(token.as_str(), window) {
            let _ = self.verified.set(memo);
        }
        Ok(())
    }
}

/// What the request path knows about an organisation key: the organisation
/// it acts in and the role it acts as (an API key `nanoAdmin`, a player key
/// none), with their header values, built once per cached key.
#[derive(Debug, Clone)]
pub struct CachedKey {
    pub membership: Arc<Membership>,
}

#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    pub ttl: Duration,
    pub capacity: u64,
    pub negative_ttl: Duration,
    pub negative_capacity: u64,
}

/// The users, by id: quick_cache with the TTL kept in the entries.
type Users = quick_cache::sync::Cache<Arc<str>, Arc<CachedUser>>;

#[derive(Clone)]
pub struct PrincipalCache {
    users: Arc<Users>,
    /// The clock of the entries' `born_ms`.
    started: Instant,
    /// `settings.ttl` in milliseconds, as entries' ages are compared with it.
    ttl_ms: u64,
    /// When expired entries were last swept out (ms on the same clock).
    swept_ms: Arc<AtomicU64>,
    /// Organisation ids and role names, one copy each.
    shared: Arc<Interner>,
    /// Key ids known not to name a user: bounded apart from `users`, so a flood
    /// of made-up ids cannot evict real entries.
    unknown_users: Cache<Arc<str>, ()>,
    api_keys: Cache<[u8; 32], Option<CachedKey>>,
    player_keys: Cache<Arc<str>, Option<CachedKey>>,
    store: SharedStore,
    /// Keyed with the master secret once (see [`SecretDeriver`]).
    secrets: SecretDeriver,
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
    /// How long the store read (or the wait for another request's) took;
    /// `None` when the cache answered, which reads no clock for it.
    pub waited: Option<Duration>,
}

impl PrincipalCache {
    pub fn new(store: SharedStore, master: Arc<[u8]>, settings: CacheSettings) -> Self {
        // Key lookups cache `None` too, with the (shorter) negative lifetime.
        let expiry = NegativeExpiry {
            positive: settings.ttl,
            negative: settings.negative_ttl,
        };
        PrincipalCache {
            users: Arc::new(Users::new(
                usize::try_from(settings.capacity).unwrap_or(usize::MAX),
            )),
            started: Instant::now(),
            ttl_ms: u64::try_from(settings.ttl.as_millis()).unwrap_or(u64::MAX),
            swept_ms: Arc::default(),
            shared: Arc::default(),
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
            secrets: SecretDeriver::new(&master),
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
        let secret = self.secrets.derive(&u.id, &u.token_key);
        Arc::new(CachedUser {
            id: Arc::from(u.id.as_str()),
            membership: self.shared.membership(&u.org_id, &u.role),
            key: VerifyKey::new(&secret),
            born_ms: self.now_ms(),
            verified: OnceLock::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// `now` on the entries' clock, in milliseconds.
    fn ms_at(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    fn is_fresh(&self, user: &CachedUser, now_ms: u64) -> bool {
        now_ms.saturating_sub(user.born_ms) < self.ttl_ms
    }

    /// The cached entry of a user, if there is one within its TTL at `now`.
    /// An expired one is dropped (unless a newer entry has replaced it
    /// meanwhile).
    fn cached_user(&self, id: &str, now: Instant) -> Option<Arc<CachedUser>> {
        let user = self.users.get(id)?;
        if self.is_fresh(&user, self.ms_at(now)) {
            return Some(user);
        }
        self.users.remove_if(id, |v| Arc::ptr_eq(v, &user));
        None
    }

    /// Drop every expired entry, at most once per TTL (called on a miss):
    /// entries of users who stopped calling would otherwise hold their memory
    /// until evicted for capacity.
    fn sweep(&self) {
        let now = self.now_ms();
        let last = self.swept_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < self.ttl_ms
            || self
                .swept_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.users.retain(|_, user| self.is_fresh(user, now));
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
                waited: None,
            });
        }
        let started = Instant::now();
        let seen = self.epoch();
        let (read, source) = flights
            .get(key(), seen, || cached().map(Ok), || read(seen))
            .await;
        Ok(Lookup {
            value: read?,
            source,
            waited: Some(started.elapsed()),
        })
    }

    /// The user a token's `kid` names. `None`: no such user (possibly a cached answer).
    pub async fn user(&self, id: &str) -> Result<Lookup<Arc<CachedUser>>, StoreError> {
        self.user_at(id, Instant::now()).await
    }

    /// [`PrincipalCache::user`], with entries' ages read at `now` (the
    /// request's start, which its caller has read already).
    pub async fn user_at(
        &self,
        id: &str,
        now: Instant,
    ) -> Result<Lookup<Arc<CachedUser>>, StoreError> {
        let cached = || match self.cached_user(id, now) {
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
                        self.sweep();
                        let entry = self.entry(&u);
                        self.users.insert(entry.id.clone(), entry.clone());
                        self.keep_if_current(seen, || {
                            self.users.remove(id);
                        });
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
                        membership: Arc::new(Membership::new(
                            Arc::from(o.id.as_str()),
                            Some(Arc::from(crate::store::ADMIN_ROLE)),
                        )),
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
                    membership: Arc::new(Membership::new(Arc::from(o.id.as_str()), None)),
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
        self.users.remove(id);
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
        self.users.clear();
        self.unknown_users.invalidate_all();
        self.invalidate_keys();
    }

    /// Entries currently cached (approximate; for metrics).
    pub fn len(&self) -> u64 {
        u64::try_from(self.users.len()).unwrap_or(u64::MAX)
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
    use crate::store::NewUser;

    async fn store_with_users(n: usize) -> (tempfile::TempDir, SharedStore, Vec<User>) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(&dir.path().join("c.db").display().to_string())
            .await
            .unwrap();
        let org = store.create_org("o").await.unwrap().org.id;
        let users = store
            .create_users(
                (0..n)
                    .map(|i| NewUser {
                        org_id: org.clone(),
                        email: format!("u{i}@c.test"),
                        role: "nanoUser".into(),
                        password_hash: None,
                    })
                    .collect(),
            )
            .await
            .unwrap();
        (dir, store, users)
    }

    fn cache_with_ttl(store: SharedStore, ttl: Duration) -> PrincipalCache {
        PrincipalCache::new(
            store,
            Arc::from(&b"master"[..]),
            CacheSettings {
                ttl,
                capacity: 100,
                negative_ttl: ttl,
                negative_capacity: 100,
            },
        )
    }

    /// Entries share one copy of their organisation and role, and the id
    /// string is the cache key's own.
    #[test]
    fn an_entry_fits_a_128_byte_heap_block() {
        // glibc gives a request of n bytes a block of (n + 8) rounded up to
        // 16; the `Arc` counts add 16: 96 bytes are the most that fit 128.
        assert!(std::mem::size_of::<CachedUser>() <= 96);
    }

    #[tokio::test]
    async fn users_share_organisation_and_role_values() {
        let (_dir, store, users) = store_with_users(3).await;
        let cache = cache_with_ttl(store, Duration::from_secs(60));
        let a = cache.user(&users[0].id).await.unwrap().value.unwrap();
        let b = cache.user(&users[1].id).await.unwrap().value.unwrap();
        assert!(Arc::ptr_eq(&a.membership, &b.membership));
        let m = &a.membership;
        assert_eq!(
            (&*m.org, m.role.as_deref()),
            (users[0].org_id.as_str(), Some("nanoUser"))
        );
        assert_eq!(&*b.id, users[1].id.as_str());
        // The entry struct stays within its budget (README, performance).
        assert!(std::mem::size_of::<CachedUser>() <= 120);
    }

    /// An entry past its TTL is not answered from the cache: the store is
    /// read again; and entries of users who stopped calling are swept out
    /// by a later miss.
    #[tokio::test]
    async fn expired_entries_are_read_again_and_swept() {
        let (_dir, store, users) = store_with_users(3).await;
        let cache = cache_with_ttl(store, Duration::from_millis(200));
        for u in &users[..2] {
            let first = cache.user(&u.id).await.unwrap();
            assert_eq!(first.source, Source::Read);
        }
        assert_eq!(
            cache.user(&users[0].id).await.unwrap().source,
            Source::Cached
        );
        assert_eq!(cache.len(), 2);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(cache.user(&users[0].id).await.unwrap().source, Source::Read);
        // That miss swept users[1]'s expired entry out.
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.user(&users[1].id).await.unwrap().source, Source::Read);
        assert_eq!(cache.user(&users[2].id).await.unwrap().source, Source::Read);
        assert_eq!(cache.len(), 3);
    }

    /// The remembered token skips the MAC but never the clock, and any other
    /// token, remembered or not, is verified in full.
    #[test]
    fn a_cached_user_checks_the_remembered_token_by_its_clock_and_others_in_full() {
        let settings = settings();
        let user = CachedUser {
            id: Arc::from("u1"),
            membership: Arc::new(Membership::new(
                Arc::from("o1"),
                Some(Arc::from("nanoUser")),
            )),
            key: VerifyKey::new(&secret()),
            born_ms: 0,
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
