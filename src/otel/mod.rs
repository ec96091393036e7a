//! OpenTelemetry traces, opt-in by the `otel_endpoint` setting: one span per
//! request with a child span per stage (credential, cache, decision,
//! upstream), exported over OTLP/gRPC, W3C `traceparent` accepted from
//! trusted peers and propagated to the upstream.
//!
//! ```text
//! GET /stream/{id}            (server span, one per request: the door's hook)
//! ├── credential              (the credential verified; the principal found)
//! │   └── cache               (the principal lookup: hit, miss or joined)
//! ├── decision                (the route's Cedar decision, through the decision cache)
//! └── upstream                (client span: the forwarded request; its id is the
//!                              upstream's `traceparent` parent)
//! ```
//!
//! Zero cost when off: with the setting absent no provider or exporter
//! exists, the doors take the untraced branch of one `Option`, and each stage
//! hook ([`stage`]) is one relaxed load of a flag that only a started
//! [`Tracing`] sets. With it on, a request's spans reach its stages through a
//! task-local scope ([`RequestSpan::scope`]) rather than a new argument on
//! every function of the decision core.
//!
//! No credential ever enters a span: attributes are the method, the route's
//! template (never the raw path with its ids), the status, the door, the
//! decision and its reason code, the credential's kind and the cache outcome.

mod export;
mod propagation;
mod request;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter};
use opentelemetry_sdk::Resource;

pub use request::{answered, route, stage, Answer, RequestSpan, Stage, StageName};

/// Default `otel_service_name`.
pub const DEFAULT_SERVICE_NAME: &str = "rolegate";
/// Default `otel_sample_ratio`: every request that starts a trace is sampled.
pub const DEFAULT_SAMPLE_RATIO: f64 = 1.0;
/// How long one export may take before it is abandoned: a slow collector
/// costs dropped spans, never a slow request (export runs off the request path).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the drain waits for the last spans to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Set once a [`Tracing`] starts in this process; until then the stage hooks
/// return at once without looking for a request scope.
static ACTIVE: AtomicBool = AtomicBool::new(false);

pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// The `otel_*` settings; present only when `otel_endpoint` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// The OTLP/gRPC collector, `http://host:port`.
    pub endpoint: String,
    pub service_name: String,
    /// Share of new traces recorded, 0.0..=1.0. A trusted caller's
    /// `traceparent` carries its own sampling decision, which is followed.
    pub sample_ratio: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("OTLP exporter for `{endpoint}`: {message}")]
    Exporter { endpoint: String, message: String },
    #[error("OTLP exporter needs a Tokio runtime to start in")]
    NoRuntime,
}

/// A started tracer provider: the exporter, its batch processor (a thread of
/// its own) and the tracer the request path uses.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Tracing {
    /// Start exporting to the settings' OTLP/gRPC endpoint. Must be called
    /// inside the Tokio runtime that will carry the exporter's connection.
    pub fn start(settings: &TraceSettings) -> Result<Tracing, TraceError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TraceError::NoRuntime);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TraceError::Exporter {
                endpoint: settings.endpoint.clone(),
                message: e.to_string(),
            })?;
        let exporter = export::Watched::new(exporter, settings.endpoint.clone());
        Ok(Self::with_exporter(settings, exporter))
    }

    /// Start with any exporter (the benchmarks use one that drops spans).
    pub fn with_exporter(settings: &TraceSettings, exporter: impl SpanExporter + 'static) -> Self {
        let ratio = if settings.sample_ratio >= 1.0 {
            Sampler::AlwaysOn
        } else {
            Sampler::TraceIdRatioBased(settings.sample_ratio)
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(ratio)))
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("rolegate");
        ACTIVE.store(true, Ordering::Relaxed);
        Tracing { provider, tracer }
    }

    /// Send every span ended so far. Blocks: call it off the async workers.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "trace flush failed");
        }
    }

    /// Flush and stop the exporter (the drain's last step). The processor's
    /// thread blocks on the export, so it runs on a blocking thread.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "trace exporter shutdown"),
            Err(e) => tracing::warn!(error = %e, "trace exporter shutdown"),
        }
    }
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracing")
    }
}
