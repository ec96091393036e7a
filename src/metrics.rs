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
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

/// The timed stages of a request.
#[derive(Clone, Copy, Debug)]
pub enum Stage {
    Credential,
    Cache,
    Decision,
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
    allow_forwarded: Counter,
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
        let allow_forwarded = requests
            .get_or_create(&DecisionLabels {
                decision: "allow",
                reason: Reason::Forwarded.as_str(),
            })
            .clone();
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
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests by decision and reason",
            m.requests.clone(),
        );
        registry.register(
            "authzen_evaluations",
            "AuthZEN evaluations by decision and reason",
            m.authzen_evaluations.clone(),
        );
        registry.register(
            "stage_seconds",
            "Time spent per request stage (credential, cache, decision, upstream)",
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
            "Change notifications received from the store",
            m.store_notifications.clone(),
        );
        registry.register(
            "cache_resyncs",
            "Whole-cache clears because store changes may have been missed (listener reconnected, or fell behind)",
            m.cache_resyncs.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn count(&self, decision: &'static str, reason: Reason) {
        self.requests
            .get_or_create(&DecisionLabels {
                decision,
                reason: reason.as_str(),
            })
            .inc();
    }

    /// One AuthZEN evaluation, allowed or denied for `reason`.
    pub fn count_evaluation(&self, allowed: bool, reason: Reason) {
        self.authzen_evaluations
            .get_or_create(&DecisionLabels {
                decision: if allowed { "allow" } else { "deny" },
                reason: reason.as_str(),
            })
            .inc();
    }

    /// `count("allow", "forwarded")` for the hottest outcome, without the lookup.
    pub fn count_forwarded(&self) {
        self.allow_forwarded.inc();
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
