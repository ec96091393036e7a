//! Prometheus metrics, served by the ops listener.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::reason::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: &'static str,
    pub reason: &'static str,
    /// The front door the request came through ([`Door`]).
    pub door: &'static str,
}

/// The front doors a request can come through, for the `door` label of
/// `rolegate_requests_total` and the `door` field of the deny log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// The data listener: proxied requests and rolegate's own endpoints.
    Proxy,
    /// The forward-auth endpoint (nginx `auth_request`, Traefik ForwardAuth).
    ForwardAuth,
    /// Envoy's ext_authz gRPC service.
    ExtAuthz,
    /// The AuthZEN evaluation API (gateway profile).
    Authzen,
}

impl Door {
    const ALL: [Door; 4] = [
        Door::Proxy,
        Door::ForwardAuth,
        Door::ExtAuthz,
        Door::Authzen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Door::Proxy => "proxy",
            Door::ForwardAuth => "forward_auth",
            Door::ExtAuthz => "ext_authz",
            Door::Authzen => "authzen",
        }
    }
}

/// Why rolegate closed a relayed WebSocket (`rolegate_websocket_cuts_total`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CutLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

/// The timed stages of a request.
#[derive(Clone, Copy, Debug)]
pub enum Stage {
    /// The credential read, verified, and its principal found.
    Credential,
    /// A principal lookup the store answered (a miss, or one joined to
    /// another request's read); hits are not timed apart.
    Cache,
    /// The route's match, the resource's organisation and the Cedar decision.
    Decision,
    /// The forwarded request, until the upstream's response head.
    Upstream,
}

impl Stage {
    const ALL: [Stage; 4] = [
        Stage::Credential,
        Stage::Cache,
        Stage::Decision,
        Stage::Upstream,
    ];

    fn label(self) -> &'static str {
        match self {
            Stage::Credential => "credential",
            Stage::Cache => "cache",
            Stage::Decision => "decision",
            Stage::Upstream => "upstream",
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<DecisionLabels, Counter>,
    /// AuthZEN evaluations by decision and reason (one per evaluation, so a
    /// batch cut short by its semantic counts only what was evaluated).
    pub authzen_evaluations: Family<DecisionLabels, Counter>,
    pub stage_seconds: Family<StageLabels, Histogram>,
    /// One handle per stage, taken from `stage_seconds` at start-up: an
    /// observation then skips the family's lock and label hashing, which
    /// the request path would otherwise pay four times per request.
    stages: [Histogram; 4],
    /// `allow`/`forwarded` per door, taken from `requests` at start-up: the
    /// hottest outcome skips the family's lock and label hashing.
    allow_forwarded: [Counter; 4],
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_joined: Counter,
    pub reloads: Counter,
    pub reload_failures: Counter,
    pub shadow_disagreements: Counter,
    /// Audit records the store did not take (the change they record stands).
    pub audit_write_failures: Counter,
    pub shadow_reload_failures: Counter,
    pub policy_version: Gauge,
    pub store_notifications: Counter,
    pub cache_resyncs: Counter,
    /// Change-log entries this replica applied to its caches.
    pub changes_applied: Counter,
    /// The change-log position this replica has applied.
    pub change_log_applied: Gauge,
    /// Seconds since this replica last confirmed it had applied the whole log.
    pub change_log_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Whole-cache clears because the lag passed `max_change_lag_secs`.
    pub stale_cache_clears: Counter,
    /// WebSocket connections relayed now.
    pub websocket_open: Gauge,
    /// WebSocket upgrades relayed since start-up.
    pub websocket_upgrades: Counter,
    /// WebSocket connections rolegate closed itself, by reason.
    pub websocket_cuts: Family<CutLabels, Counter>,
}

fn stage_histogram() -> Histogram {
    // 1 µs … ~4 s in powers of four: the decision stages live at the bottom,
    // the upstream at the top.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1e-6, 4.0, 12,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rolegate");
        let requests = Family::<DecisionLabels, Counter>::default();
        let stage_seconds = Family::<StageLabels, Histogram>::new_with_constructor(
            stage_histogram as fn() -> Histogram,
        );
        let stages = Stage::ALL.map(|s| {
            stage_seconds
                .get_or_create(&StageLabels { stage: s.label() })
                .clone()
        });
        let allow_forwarded = Door::ALL.map(|door| {
            requests
                .get_or_create(&DecisionLabels {
                    decision: "allow",
                    reason: Reason::Forwarded.as_str(),
                    door: door.as_str(),
                })
                .clone()
        });
        let m = Metrics {
            requests,
            authzen_evaluations: Family::default(),
            stage_seconds,
            stages,
            allow_forwarded,
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_joined: Counter::default(),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
            shadow_disagreements: Counter::default(),
            audit_write_failures: Counter::default(),
            shadow_reload_failures: Counter::default(),
            policy_version: Gauge::default(),
            store_notifications: Counter::default(),
            cache_resyncs: Counter::default(),
            changes_applied: Counter::default(),
            change_log_applied: Gauge::default(),
            change_log_lag_seconds: Gauge::default(),
            stale_cache_clears: Counter::default(),
            websocket_open: Gauge::default(),
            websocket_upgrades: Counter::default(),
            websocket_cuts: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests by decision, reason and front door",
            m.requests.clone(),
        );
        registry.register(
            "authzen_evaluations",
            "AuthZEN evaluations by decision and reason",
            m.authzen_evaluations.clone(),
        );
        registry.register(
            "stage_seconds",
            "Time spent per request stage: credential, cache (principal lookups the store answered; hits are counted in cache_hits), decision, upstream",
            m.stage_seconds.clone(),
        );
        registry.register("cache_hits", "Principal cache hits", m.cache_hits.clone());
        registry.register(
            "cache_misses",
            "Principal cache misses (store reads)",
            m.cache_misses.clone(),
        );
        registry.register(
            "cache_joined",
            "Principal cache misses answered by another request's store read",
            m.cache_joined.clone(),
        );
        registry.register(
            "policy_reloads",
            "Successful policy reloads",
            m.reloads.clone(),
        );
        registry.register(
            "policy_reload_failures",
            "Policy reloads refused (old set kept)",
            m.reload_failures.clone(),
        );
        registry.register(
            "shadow_disagreements",
            "Requests where the shadow policy set decided differently from the live set",
            m.shadow_disagreements.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Audit records that could not be written (logged at error level instead)",
            m.audit_write_failures.clone(),
        );
        registry.register(
            "shadow_reload_failures",
            "Shadow policy reloads refused (the previous shadow set kept)",
            m.shadow_reload_failures.clone(),
        );
        registry.register(
            "policy_version",
            "Version of the live policy set",
            m.policy_version.clone(),
        );
        registry.register(
            "store_notifications",
            "Change notifications (doorbells) heard from the store: a change was logged, read the log now",
            m.store_notifications.clone(),
        );
        registry.register(
            "cache_resyncs",
            "Whole-cache clears because the change log was pruned past this replica's position",
            m.cache_resyncs.clone(),
        );
        registry.register(
            "changes_applied",
            "Change-log entries applied to this replica's caches",
            m.changes_applied.clone(),
        );
        registry.register(
            "change_log_applied",
            "The change-log position this replica has applied",
            m.change_log_applied.clone(),
        );
        registry.register(
            "change_log_lag_seconds",
            "Seconds since this replica last confirmed it had applied the whole change log",
            m.change_log_lag_seconds.clone(),
        );
        registry.register(
            "stale_cache_clears",
            "Whole-cache clears because the change-log lag passed max_change_lag_secs",
            m.stale_cache_clears.clone(),
        );
        registry.register(
            "websocket_open",
            "WebSocket connections relayed now",
            m.websocket_open.clone(),
        );
        registry.register(
            "websocket_upgrades",
            "WebSocket upgrades relayed (answered 101) since start-up",
            m.websocket_upgrades.clone(),
        );
        registry.register(
            "websocket_cuts",
            "WebSocket connections rolegate closed itself: revoked, key_rotated, playback_revoked, expired, resync, idle, shutdown",
            m.websocket_cuts.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn count(&self, door: Door, decision: &'static str, reason: Reason) {
        self.requests
            .get_or_create(&DecisionLabels {
                decision,
                reason: reason.as_str(),
                door: door.as_str(),
            })
            .inc();
    }

    /// One AuthZEN evaluation, allowed or denied for `reason`.
    pub fn count_evaluation(&self, allowed: bool, reason: Reason) {
        self.authzen_evaluations
            .get_or_create(&DecisionLabels {
                decision: if allowed { "allow" } else { "deny" },
                reason: reason.as_str(),
                door: Door::Authzen.as_str(),
            })
            .inc();
    }

    /// `count(door, "allow", "forwarded")` for the hottest outcome, without the lookup.
    pub fn count_forwarded(&self, door: Door) {
        self.allow_forwarded[door as usize].inc();
    }

    pub fn observe(&self, stage: Stage, seconds: f64) {
        self.stages[stage as usize].observe(seconds);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
