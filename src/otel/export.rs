//! The exporter as rolegate runs it: the OTLP exporter, with its failures
//! told in rolegate's log. The SDK's own diagnostics are compiled out (its
//! `internal-logs` feature is off), so without this a collector that is down
//! or misnamed would lose every span in silence. Only changes are logged
//! (the first failure, then the recovery), not every batch: an absent
//! collector is one line, not one per export interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

#[derive(Debug)]
pub(crate) struct Watched<E> {
    inner: E,
    endpoint: String,
    failing: AtomicBool,
}

impl<E> Watched<E> {
    pub(crate) fn new(inner: E, endpoint: String) -> Self {
        Watched {
            inner,
            endpoint,
            failing: AtomicBool::new(false),
        }
    }
}

impl<E: SpanExporter> SpanExporter for Watched<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                endpoint = %self.endpoint,
                spans,
                error = %e,
                "trace export failed; spans are dropped until the collector answers"
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "trace export works again")
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
