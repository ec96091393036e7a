//! The registry of live (upgraded) connections: whose credential opened each
//! one, so a change that revokes that credential closes it.
//!
//! The change-log follower ([`Live::apply`]) hands every change it applies
//! here after dropping the cached principal; each connection it affects is
//! told why it is cut, through a one-shot channel its relay task watches.
//! Which changes cut which connections:
//!
//! | opened with        | cut by                                                        |
//! |--------------------|---------------------------------------------------------------|
//! | a user's API token | a change of that user (tokenKey renewal, role change, deletion); its `exp` (the relay's own timer) |
//! | the org API key    | a rotation of the org's keys                                  |
//! | the org player key | a rotation of the org's keys                                  |
//! | a playback token   | its revocation (revocable tokens); its `exp` (the relay's own timer) |
//! | no credential      | nothing: there is nothing to revoke                           |
//!
//! Every logged user change renews the tokenKey or removes the user, so a
//! user change always ends the tokens opened under the previous generation;
//! playback tokens survive their issuer's changes (the seeds' rule).
//!
//! A change can land between the decision that allowed an upgrade and the
//! connection's registration. Every applied change bumps an epoch and is kept
//! in a short list of recent changes: the pipeline reads the epoch before it
//! decides, and [`Live::register`] refuses a connection when a change applied
//! since then concerns its credential (or when the list no longer reaches
//! back that far: fail closed). The follower drops the cache before it bumps
//! the epoch, so a decision that read a stale cache entry always sees a newer
//! epoch here.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

use crate::authn::credential::CredentialKind;
use crate::decision::Allowed;
use crate::metrics::{CutLabels, Metrics};
use crate::store::Change;

/// Changes remembered for the registration check; a registration whose
/// decision is older than all of them is refused.
const RECENT: usize = 1024;

/// Whose credential holds a connection open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    User(Arc<str>),
    /// The org API key or player key of this organisation.
    OrgKey(Arc<str>),
    /// A playback token: revocable ones by their `jti`.
    Playback {
        jti: Option<Arc<str>>,
    },
    Anonymous,
}

impl Holder {
    /// The holder an allow decision names.
    pub fn of(allowed: &Allowed) -> Holder {
        if let Some(p) = allowed.playback() {
            return Holder::Playback {
                jti: p.revocable.then(|| p.jti.clone()),
            };
        }
        let caller = allowed.caller();
        match (caller.kind, &caller.user_id, caller.shared_org()) {
            (CredentialKind::UserToken, Some(u), _) => Holder::User(u.clone()),
            (CredentialKind::ApiKey | CredentialKind::PlayerKey, _, Some(o)) => {
                Holder::OrgKey(o.clone())
            }
            _ => Holder::Anonymous,
        }
    }

    /// Why `change` cuts a connection of this holder, if it does.
    fn cut_by(&self, change: &Change) -> Option<Cut> {
        match (self, change) {
            (Holder::User(u), Change::User(id)) if **u == **id => Some(Cut::Revoked),
            (Holder::OrgKey(o), Change::OrgKeys(id)) if **o == **id => Some(Cut::KeyRotated),
            (Holder::Playback { jti: Some(j) }, Change::PlaybackRevoked(id)) if **j == **id => {
                Some(Cut::PlaybackRevoked)
            }
            // Anything may have changed: every credential the store can
            // revoke is cut (fail closed); playback tokens only by jti.
            (Holder::User(_) | Holder::OrgKey(_), Change::Resync) => Some(Cut::Resync),
            _ => None,
        }
    }
}

/// Why rolegate closes a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The user's tokenKey was renewed, their role changed, or they were deleted.
    Revoked,
    KeyRotated,
    PlaybackRevoked,
    /// The playback token's `exp` passed.
    Expired,
    /// The change log was missed: the credential cannot be vouched for.
    Resync,
    /// No frame either way for the idle timeout.
    Idle,
    Shutdown,
}

impl Cut {
    /// The `reason` label of `rolegate_websocket_cuts_total`.
    pub fn label(self) -> &'static str {
        match self {
            Cut::Revoked => "revoked",
            Cut::KeyRotated => "key_rotated",
            Cut::PlaybackRevoked => "playback_revoked",
            Cut::Expired => "expired",
            Cut::Resync => "resync",
            Cut::Idle => "idle",
            Cut::Shutdown => "shutdown",
        }
    }
}

/// Why a connection could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("the credential changed after the decision")]
    Revoked,
    #[error("too many live connections")]
    Full,
    #[error("shutting down")]
    ShuttingDown,
}

struct Entry {
    holder: Holder,
    cut: oneshot::Sender<Cut>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    /// The last [`RECENT`] applied changes, with the epoch each one made.
    recent: VecDeque<(u64, Change)>,
    shutting_down: bool,
}

/// The live connections of this process.
pub struct Live {
    inner: Mutex<Inner>,
    /// Changes applied so far; written under the lock, read without it.
    epoch: AtomicU64,
    max: usize,
    metrics: Arc<Metrics>,
    /// Relays running (registered, or cut and still closing).
    running: AtomicUsize,
    /// Signalled whenever a relay ends (for the drain).
    ended: Notify,
}

/// A registered connection: unregistered when dropped.
pub struct Registration {
    live: Arc<Live>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.live.lock().conns.remove(&self.id);
        let left = self.live.running.fetch_sub(1, Ordering::AcqRel) - 1;
        self.live.metrics.websocket_open.set(left as i64);
        self.live.ended.notify_waiters();
    }
}

impl Live {
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Live {
            inner: Mutex::new(Inner::default()),
            epoch: AtomicU64::new(0),
            max,
            metrics,
            running: AtomicUsize::new(0),
            ended: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The registry holds no invariant a panic could break half-way.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Read before deciding a request that may be upgraded.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// How many relays are running.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Register a connection of `holder` whose decision was taken at `seen`
    /// (an [`Live::epoch`] read before deciding). The receiver resolves
    /// when the connection must be cut.
    pub fn register(
        self: &Arc<Self>,
        holder: Holder,
        seen: u64,
    ) -> Result<(Registration, oneshot::Receiver<Cut>), RegisterError> {
        let mut inner = self.lock();
        if inner.shutting_down {
            return Err(RegisterError::ShuttingDown);
        }
        if self.running.load(Ordering::Acquire) >= self.max {
            return Err(RegisterError::Full);
        }
        let now = self.epoch.load(Ordering::Acquire);
        if now > seen {
            // Changes seen+1..=now were applied after the decision began.
            let reaches_back = inner.recent.front().is_some_and(|(e, _)| *e <= seen + 1);
            if !reaches_back {
                return Err(RegisterError::Revoked);
            }
            let concerned = inner
                .recent
                .iter()
                .filter(|(e, _)| *e > seen)
                .any(|(_, c)| holder.cut_by(c).is_some());
            if concerned {
                return Err(RegisterError::Revoked);
            }
        }
        let (tx, rx) = oneshot::channel();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.conns.insert(id, Entry { holder, cut: tx });
        let running = self.running.fetch_add(1, Ordering::AcqRel) + 1;
        drop(inner);
        self.metrics.websocket_open.set(running as i64);
        Ok((
            Registration {
                live: self.clone(),
                id,
            },
            rx,
        ))
    }

    /// Cut every connection `change` concerns. Called by the change-log
    /// follower after it has dropped what the change makes stale.
    pub fn apply(&self, change: &Change) {
        let mut inner = self.lock();
        let epoch = self.epoch.load(Ordering::Acquire) + 1;
        if inner.recent.len() >= RECENT {
            inner.recent.pop_front();
        }
        inner.recent.push_back((epoch, change.clone()));
        self.epoch.store(epoch, Ordering::Release);
        let doomed: Vec<(u64, Cut)> = inner
            .conns
            .iter()
            .filter_map(|(id, e)| e.holder.cut_by(change).map(|c| (*id, c)))
            .collect();
        for (id, cut) in doomed {
            if let Some(entry) = inner.conns.remove(&id) {
                self.metrics
                    .websocket_cuts
                    .get_or_create(&CutLabels {
                        reason: cut.label(),
                    })
                    .inc();
                let _ = entry.cut.send(cut);
            }
        }
    }

    /// Count a cut the relay decided itself (expiry, idle).
    pub fn count_cut(&self, cut: Cut) {
        self.metrics
            .websocket_cuts
            .get_or_create(&CutLabels {
                reason: cut.label(),
            })
            .inc();
    }

    /// Refuse new connections and cut every open one (close code 1001);
    /// then wait up to `grace` for their relays to finish closing.
    pub async fn drain(&self, grace: Duration) {
        {
            let mut inner = self.lock();
            inner.shutting_down = true;
            let all: Vec<Entry> = inner.conns.drain().map(|(_, e)| e).collect();
            for e in all {
                self.count_cut(Cut::Shutdown);
                let _ = e.cut.send(Cut::Shutdown);
            }
        }
        let _ = tokio::time::timeout(grace, self.relays_ended()).await;
    }

    /// Resolves when no relay is running.
    async fn relays_ended(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(max: usize) -> Arc<Live> {
        Live::new(max, Arc::new(Metrics::new()))
    }

    fn user(id: &str) -> Holder {
        Holder::User(Arc::from(id))
    }

    #[test]
    fn a_change_cuts_only_the_connections_of_its_credential() {
        let l = live(10);
        let (_a, mut a) = l.register(user("u1"), 0).unwrap();
        let (_b, mut b) = l.register(user("u2"), 0).unwrap();
        let (_p, mut p) = l
            .register(
                Holder::Playback {
                    jti: Some(Arc::from("j1")),
                },
                0,
            )
            .unwrap();
        let (_k, mut k) = l.register(Holder::OrgKey(Arc::from("o1")), 0).unwrap();
        l.apply(&Change::User("u1".into()));
        assert_eq!(a.try_recv(), Ok(Cut::Revoked));
        assert!(b.try_recv().is_err());
        // The seeds' rule: the issuer's change leaves playback connections be.
        assert!(p.try_recv().is_err());
        l.apply(&Change::OrgKeys("o2".into()));
        assert!(k.try_recv().is_err());
        l.apply(&Change::OrgKeys("o1".into()));
        assert_eq!(k.try_recv(), Ok(Cut::KeyRotated));
        l.apply(&Change::PlaybackRevoked("j1".into()));
        assert_eq!(p.try_recv(), Ok(Cut::PlaybackRevoked));
        l.apply(&Change::Resync);
        assert_eq!(b.try_recv(), Ok(Cut::Resync));
    }

    #[test]
    fn a_change_between_the_decision_and_the_registration_refuses_it() {
        let l = live(10);
        let seen = l.epoch();
        l.apply(&Change::User("someone-else".into()));
        assert!(l.register(user("u1"), seen).is_ok());
        l.apply(&Change::User("u1".into()));
        assert_eq!(
            l.register(user("u1"), seen).err(),
            Some(RegisterError::Revoked)
        );
        // Decided after the change: fine.
        assert!(l.register(user("u1"), l.epoch()).is_ok());
    }

    #[test]
    fn a_decision_older_than_the_remembered_changes_is_refused() {
        let l = live(10);
        let seen = l.epoch();
        for i in 0..=RECENT {
            l.apply(&Change::User(format!("other-{i}")));
        }
        assert_eq!(
            l.register(user("u1"), seen).err(),
            Some(RegisterError::Revoked)
        );
    }

    #[test]
    fn the_cap_and_the_drain_refuse_new_connections() {
        let l = live(1);
        let first = l.register(Holder::Anonymous, 0).unwrap();
        assert_eq!(
            l.register(Holder::Anonymous, 0).err(),
            Some(RegisterError::Full)
        );
        drop(first);
        assert_eq!(l.running(), 0);
        let (_r, mut rx) = l.register(Holder::Anonymous, 0).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(l.drain(Duration::from_millis(10)));
        assert_eq!(rx.try_recv(), Ok(Cut::Shutdown));
        assert_eq!(
            l.register(Holder::Anonymous, 0).err(),
            Some(RegisterError::ShuttingDown)
        );
    }
}
