//! One request's spans: the door's server span ([`RequestSpan`]) and the
//! stage spans under it ([`stage`]), which find their request through a
//! task-local scope. Outside a traced request every hook is a no-op.

use std::cell::RefCell;
use std::future::Future;

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanKind, SpanRef, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::trace::SdkTracer;

use super::{propagation, Tracing};
use crate::metrics::Door;

tokio::task_local! {
    static SCOPE: Scope;
}

/// What the stage hooks of one request need: the tracer, the request's span,
/// and the innermost stage open now (the parent of the next one).
struct Scope {
    tracer: SdkTracer,
    root: Context,
    current: RefCell<Context>,
    /// Whether the matched route names the request's span (not when the door
    /// named it after its own endpoint: an AuthZEN batch decides many routes).
    route_names: bool,
}

/// The stages of the request path that get a span of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageName {
    /// The credential read and verified, the principal found (holds `Cache`).
    Credential,
    /// The principal lookup through the cache in front of the store.
    Cache,
    /// The route's Cedar decision (through the decision cache).
    Decision,
    /// The forwarded request, until the upstream's response head.
    Upstream,
}

impl StageName {
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Credential => "credential",
            StageName::Cache => "cache",
            StageName::Decision => "decision",
            StageName::Upstream => "upstream",
        }
    }
}

/// A request's server span, held by the door for the request's lifetime.
pub struct RequestSpan {
    tracer: SdkTracer,
    cx: Context,
    route_names: bool,
}

impl Tracing {
    /// Open a request's span. Its parent is the caller's `traceparent` only
    /// when `trusted` (the peer is in `trusted_proxies`); from anyone else
    /// the header is ignored and a new trace starts, so a client cannot
    /// attach rolegate's spans to a trace of its choosing.
    pub fn request(
        &self,
        method: &str,
        headers: &HeaderMap,
        trusted: bool,
        request_id: &str,
    ) -> RequestSpan {
        let parent = if trusted {
            propagation::extract(headers)
        } else {
            Context::new()
        };
        let mut attributes = vec![KeyValue::new("http.request.method", method.to_owned())];
        if !request_id.is_empty() {
            attributes.push(KeyValue::new("rolegate.request_id", request_id.to_owned()));
        }
        let span = self
            .tracer
            .span_builder(method.to_owned())
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        RequestSpan {
            tracer: self.tracer.clone(),
            cx: Context::new().with_span(span),
            route_names: true,
        }
    }
}

impl RequestSpan {
    /// Name the span after the door's own endpoint (`POST /access/v1/evaluation`);
    /// the routes it decides then stay on the decision spans.
    pub fn endpoint(mut self, method: &str, path: &'static str) -> Self {
        let span = self.cx.span();
        span.update_name(format!("{method} {path}"));
        span.set_attribute(KeyValue::new("http.route", path));
        self.route_names = false;
        self
    }

    /// Run `f` (the door's request path) with this span as its stages' parent.
    pub fn scope<F: Future>(&self, f: F) -> impl Future<Output = F::Output> {
        SCOPE.scope(
            Scope {
                tracer: self.tracer.clone(),
                root: self.cx.clone(),
                current: RefCell::new(self.cx.clone()),
                route_names: self.route_names,
            },
            f,
        )
    }

    /// End the span with the answer.
    pub fn finish(&self, answer: Answer) {
        let span = self.cx.span();
        record(&span, &answer);
        span.end();
    }

    /// End the span as [`answered`] left it.
    pub fn end(&self) {
        self.cx.span().end();
    }
}

/// Name the request's span after the matched route: its method and template
/// (`GET /stream/{id}`), never the path with its ids. (A door that named the
/// span after its own endpoint keeps that name.)
pub fn route(method: &str, template: &str) {
    if !super::active() {
        return;
    }
    let _ = SCOPE.try_with(|s| {
        if s.route_names {
            let span = s.root.span();
            span.update_name(format!("{method} {template}"));
            span.set_attribute(KeyValue::new("http.route", template.to_owned()));
        }
    });
}

/// How a door answered a request, as its span tells it.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    /// The door that took the request.
    pub door: Door,
    pub status: u16,
    /// `allow`, `deny` (a 403) or `error`; `answered` for an AuthZEN request.
    pub decision: &'static str,
    /// The reason code, for anything but an allow.
    pub reason: Option<&'static str>,
}

fn record(span: &SpanRef<'_>, a: &Answer) {
    span.set_attribute(KeyValue::new("rolegate.door", a.door.as_str()));
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(a.status),
    ));
    span.set_attribute(KeyValue::new("rolegate.decision", a.decision));
    if let Some(r) = a.reason {
        span.set_attribute(KeyValue::new("rolegate.reason", r));
    }
    if a.status >= 500 {
        span.set_status(Status::error(a.decision));
    }
}

/// Record a door's answer on the request's span, for a door that answers
/// inside the scope (ext_authz, which makes its request id there too); see
/// [`RequestSpan::finish`].
pub fn answered(request_id: &HeaderValue, answer: Answer) {
    if !super::active() {
        return;
    }
    let _ = SCOPE.try_with(|s| {
        let span = s.root.span();
        span.set_attribute(KeyValue::new(
            "rolegate.request_id",
            request_id.to_str().unwrap_or("").to_owned(),
        ));
        record(&span, &answer);
    });
}

/// A stage's span, ended when dropped; a no-op outside a traced request.
#[must_use = "the stage's span ends when this is dropped"]
pub struct Stage(Option<Open>);

struct Open {
    cx: Context,
    parent: Context,
}

/// Open a stage's span under the innermost stage open now (or the request's
/// span). Off, this is one load of a flag.
pub fn stage(name: StageName) -> Stage {
    if !super::active() {
        return Stage(None);
    }
    Stage(SCOPE.try_with(|s| open(s, name)).ok())
}

fn open(s: &Scope, name: StageName) -> Open {
    let parent = s.current.borrow().clone();
    let kind = if name == StageName::Upstream {
        SpanKind::Client
    } else {
        SpanKind::Internal
    };
    let span = s
        .tracer
        .span_builder(name.as_str())
        .with_kind(kind)
        .start_with_context(&s.tracer, &parent);
    let cx = parent.with_span(span);
    *s.current.borrow_mut() = cx.clone();
    Open { cx, parent }
}

impl Stage {
    /// Set an attribute (values are codes, kinds and numbers: never a credential).
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        if let Some(o) = &self.0 {
            o.cx.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// [`Stage::set`] for a borrowed string, copied only when traced.
    pub fn set_str(&self, key: &'static str, value: &str) {
        if let Some(o) = &self.0 {
            o.cx.span()
                .set_attribute(KeyValue::new(key, value.to_owned()));
        }
    }

    /// Mark the stage failed.
    pub fn fail(&self, why: &'static str) {
        if let Some(o) = &self.0 {
            o.cx.span().set_status(Status::error(why));
        }
    }

    /// Write this stage's span as the request's `traceparent` (replacing the
    /// caller's): the upstream's spans become its children. Untraced, the
    /// headers are left as they are.
    pub fn propagate(&self, headers: &mut HeaderMap) {
        if let Some(o) = &self.0 {
            propagation::inject(&o.cx, headers);
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(o) = self.0.take() {
            o.cx.span().end();
            let _ = SCOPE.try_with(|s| *s.current.borrow_mut() = o.parent);
        }
    }
}
