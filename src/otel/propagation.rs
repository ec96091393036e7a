//! W3C Trace Context on `http::HeaderMap`: reading a trusted caller's
//! `traceparent`/`tracestate`, and writing the upstream span's onto the
//! forwarded request. The parsing and formatting are the SDK's
//! (`TraceContextPropagator`); this file only adapts the header map and adds
//! the two rules rolegate keeps: a header sent twice is no parent at all, and
//! an empty `tracestate` is not sent.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;

pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

struct Read<'a>(&'a HeaderMap);

impl Extractor for Read<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let mut values = self.0.get_all(key).iter();
        let first = values.next()?;
        // Two values are ambiguous: no parent rather than a guess.
        if values.next().is_some() {
            return None;
        }
        first.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct Write<'a>(&'a mut HeaderMap);

impl Injector for Write<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The caller's trace context as a parent, or an empty context (a new trace).
pub(crate) fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract_with_context(&Context::new(), &Read(headers))
}

/// Replace whatever trace context the request carries with `cx`'s span.
pub(crate) fn inject(cx: &Context, headers: &mut HeaderMap) {
    headers.remove(TRACEPARENT);
    headers.remove(TRACESTATE);
    TraceContextPropagator::new().inject_context(cx, &mut Write(headers));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use opentelemetry::trace::TraceContextExt;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn one_traceparent_is_a_remote_parent() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(PARENT));
        let cx = extract(&h);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn a_repeated_or_malformed_traceparent_is_no_parent() {
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, HeaderValue::from_static(PARENT));
        h.append(TRACEPARENT, HeaderValue::from_static(PARENT));
        assert!(!extract(&h).span().span_context().is_valid());
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-zz-00f067aa0ba902b7-01"),
        );
        assert!(!extract(&h).span().span_context().is_valid());
    }

    #[test]
    fn injection_replaces_the_callers_context_and_skips_an_empty_state() {
        let mut from = HeaderMap::new();
        from.insert(TRACEPARENT, HeaderValue::from_static(PARENT));
        let cx = extract(&from);
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-11111111111111111111111111111111-2222222222222222-01"),
        );
        h.insert(TRACESTATE, HeaderValue::from_static("k=v"));
        inject(&cx, &mut h);
        assert_eq!(h.get(TRACEPARENT).unwrap(), PARENT);
        assert!(h.get(TRACESTATE).is_none());
    }
}
