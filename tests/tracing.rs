//! OpenTelemetry traces: a real rolegate exports over OTLP/gRPC to a collector
//! the test starts (tonic serving the generated `TraceService`), and the test
//! reads back what arrived: the stage structure and parent ids, the
//! attributes (and no credential in any of them), the trust rule for a
//! caller's `traceparent`, the `traceparent` the upstream saw, and nothing at
//! all with the setting off.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::net::TcpListener;

use crate::support::{tok, Echo, Options, Sidecar};

/// A span as received, with the service that sent it.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    span: Span,
}

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<Got>>>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in &request.get_ref().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    got.push(Got {
                        service: service.clone(),
                        span: span.clone(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// An OTLP/gRPC collector on loopback that keeps every span it is sent.
struct Collector {
    addr: SocketAddr,
    sink: Sink,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = Sink::default();
        let svc = TraceServiceServer::new(sink.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let svc = TowerToHyperService::new(svc.clone());
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .http2_only()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Collector { addr, sink, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Got> {
        self.sink.0.lock().unwrap().clone()
    }

    /// Wait (bounded) until the request with this id has its server span and
    /// `stages` spans of its trace besides.
    async fn request(&self, request_id: &str, stages: usize) -> Trace {
        self.trace(request_id, stages, |s| {
            attr(s, "rolegate.request_id").as_deref() == Some(request_id)
        })
        .await
    }

    /// Wait (bounded) for a server span of `door` whose trace has `stages`
    /// more spans, and return that trace.
    async fn door(&self, door: &str, stages: usize) -> Trace {
        self.trace(door, stages, |s| {
            s.kind == SpanKind::Server as i32 && attr(s, "rolegate.door").as_deref() == Some(door)
        })
        .await
    }

    /// Poll until a span that `is_root` has `stages` more spans in its
    /// trace; 15 s at most.
    async fn trace(&self, what: &str, stages: usize, is_root: impl Fn(&Span) -> bool) -> Trace {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let all = self.spans();
            for root in all.iter().filter(|g| is_root(&g.span)) {
                let spans: Vec<Got> = all
                    .iter()
                    .filter(|g| g.span.trace_id == root.span.trace_id)
                    .cloned()
                    .collect();
                if spans.len() > stages {
                    return Trace {
                        root: root.clone(),
                        spans,
                    };
                }
            }
            assert!(
                Instant::now() < deadline,
                "{what}: spans did not arrive; got {all:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request's spans.
struct Trace {
    root: Got,
    spans: Vec<Got>,
}

impl Trace {
    fn named(&self, name: &str) -> &Span {
        let found: Vec<&Got> = self.spans.iter().filter(|g| g.span.name == name).collect();
        assert_eq!(found.len(), 1, "one `{name}` span: {:#?}", self.spans);
        &found[0].span
    }

    fn has(&self, name: &str) -> bool {
        self.spans.iter().any(|g| g.span.name == name)
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A rolegate exporting to `collector`; `trusted`: loopback is a trusted proxy.
async fn traced(echo: &Echo, collector: &Collector, trusted: bool) -> Sidecar {
    let mut config = format!(
        "otel_endpoint = \"{}\"\notel_service_name = \"rolegate-test\"\n",
        collector.url()
    );
    if trusted {
        config.push_str("trusted_proxies = [\"127.0.0.1\"]\n");
    }
    Sidecar::with(Options {
        upstream: Some(echo.url()),
        config,
        ..Default::default()
    })
    .await
}

/// Send every span ended so far (the exporter batches every few seconds).
async fn flush(sc: &Sidecar) {
    let state = sc.state.clone();
    tokio::task::spawn_blocking(move || state.otel.as_ref().unwrap().flush())
        .await
        .unwrap();
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn caller_traceparent() -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
}

/// An allowed `GET /stream/s-1` by an admin, sent with the caller's
/// `traceparent` and a `tracestate`; its request id.
async fn get_with_caller_trace(sc: &Sidecar) -> String {
    let org = sc.org("acme").await;
    let user = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let token = sc.token(&user.id).await;
    let tp = caller_traceparent();
    let r = sc
        .send(
            "GET",
            "/stream/s-1",
            &[
                tok(&token),
                ("traceparent", &tp),
                ("tracestate", "vendor=abc"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.headers["x-request-id"].to_str().unwrap().to_owned()
}

/// The upstream's `traceparent`: (trace id, parent span id).
fn upstream_parent(echo: &Echo) -> (String, String) {
    let seen = echo.last().unwrap();
    let tp = seen.headers.get("traceparent").unwrap().to_str().unwrap();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn a_request_is_a_server_span_with_a_child_span_per_stage() {
    let collector = Collector::start().await;
    let echo = Echo::start().await;
    let sc = traced(&echo, &collector, false).await;
    let org = sc.org("acme").await;
    let user = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let token = sc.token(&user.id).await;

    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = sc.send("GET", "/stream/s-1234", &[tok(&token)], None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        ids.push(r.headers["x-request-id"].to_str().unwrap().to_owned());
    }
    flush(&sc).await;

    for (n, id) in ids.iter().enumerate() {
        let t = collector.request(id, 4).await;
        let root = &t.root.span;
        assert_eq!(t.root.service, "rolegate-test");
        assert_eq!(root.kind, SpanKind::Server as i32);
        assert!(root.parent_span_id.is_empty(), "a new trace: no parent");
        assert_eq!(root.name, "GET /stream/{id}");
        assert_eq!(attr(root, "http.route").as_deref(), Some("/stream/{id}"));
        assert_eq!(attr(root, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(
            attr(root, "http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(attr(root, "rolegate.door").as_deref(), Some("proxy"));
        assert_eq!(attr(root, "rolegate.decision").as_deref(), Some("allow"));
        assert_eq!(attr(root, "rolegate.reason"), None);

        let credential = t.named("credential");
        let cache = t.named("cache");
        let decision = t.named("decision");
        let upstream = t.named("upstream");
        assert_eq!(credential.parent_span_id, root.span_id);
        assert_eq!(
            cache.parent_span_id, credential.span_id,
            "the lookup is part of the credential stage"
        );
        assert_eq!(decision.parent_span_id, root.span_id);
        assert_eq!(upstream.parent_span_id, root.span_id);
        assert_eq!(upstream.kind, SpanKind::Client as i32);
        assert_eq!(
            attr(credential, "rolegate.credential").as_deref(),
            Some("token")
        );
        // The first request reads the store, the second finds the user cached.
        let expected = if n == 0 { "miss" } else { "hit" };
        assert_eq!(attr(cache, "rolegate.cache").as_deref(), Some(expected));
        assert_eq!(
            attr(decision, "rolegate.action").as_deref(),
            Some("getStream")
        );
        assert_eq!(
            attr(decision, "rolegate.decision").as_deref(),
            Some("allow")
        );
        assert_eq!(
            attr(upstream, "http.response.status_code").as_deref(),
            Some("200")
        );
        // Stages lie within the request's span.
        for s in [credential, cache, decision, upstream] {
            assert!(s.start_time_unix_nano >= root.start_time_unix_nano);
            assert!(s.end_time_unix_nano <= root.end_time_unix_nano);
        }
    }

    // The upstream's parent is the (last) request's upstream span.
    let t = collector.request(&ids[1], 4).await;
    let (trace, parent) = upstream_parent(&echo);
    assert_eq!(trace, hex(&t.root.span.trace_id));
    assert_eq!(parent, hex(&t.named("upstream").span_id));

    // No credential, and not the raw path's id, in any attribute of any span.
    for g in collector.spans() {
        for a in &g.span.attributes {
            let v = a
                .value
                .as_ref()
                .and_then(|v| text(v.value.as_ref()?))
                .unwrap_or_default();
            assert!(!v.contains(&token), "{}: a token in a span", a.key);
            assert!(!v.contains("s-1234"), "{}: the raw path in a span", a.key);
            assert!(!v.to_ascii_lowercase().contains("bearer"), "{}", a.key);
        }
    }
    sc.stop().await;
}

#[tokio::test]
async fn a_deny_carries_its_status_and_reason_and_has_no_upstream_span() {
    let collector = Collector::start().await;
    let echo = Echo::start().await;
    let sc = traced(&echo, &collector, false).await;
    let org = sc.org("acme").await;
    let user = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let token = sc.token(&user.id).await;
    let r = sc.send("DELETE", "/stream/s-1", &[tok(&token)], None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    let bad = sc
        .send(
            "GET",
            "/stream/s-1",
            &[("x-bintu-token", "not-a-token")],
            None,
        )
        .await;
    assert_eq!(bad.status, 401);
    let bad_id = bad.headers["x-request-id"].to_str().unwrap().to_owned();
    flush(&sc).await;

    let t = collector.request(&id, 3).await;
    let root = &t.root.span;
    assert_eq!(root.name, "DELETE /stream/{id}");
    assert_eq!(
        attr(root, "http.response.status_code").as_deref(),
        Some("403")
    );
    assert_eq!(attr(root, "rolegate.decision").as_deref(), Some("deny"));
    assert_eq!(
        attr(root, "rolegate.reason").as_deref(),
        Some("policy_deny")
    );
    assert_eq!(
        attr(t.named("decision"), "rolegate.decision").as_deref(),
        Some("deny")
    );
    assert!(!t.has("upstream"), "nothing was forwarded");
    assert_eq!(echo.count(), 0);

    // A credential that does not verify: the request's span says why, and
    // the credential stage is there; no route was matched, none decided.
    let t = collector.request(&bad_id, 0).await;
    assert_eq!(
        attr(&t.root.span, "http.response.status_code").as_deref(),
        Some("401")
    );
    assert_eq!(
        attr(&t.root.span, "rolegate.decision").as_deref(),
        Some("error")
    );
    assert!(attr(&t.root.span, "rolegate.reason").is_some());
    for g in collector.spans() {
        for a in &g.span.attributes {
            let v = a
                .value
                .as_ref()
                .and_then(|v| text(v.value.as_ref()?))
                .unwrap_or_default();
            assert!(
                !v.contains(&token) && !v.contains("not-a-token"),
                "{}",
                a.key
            );
        }
    }
    sc.stop().await;
}

#[tokio::test]
async fn a_trusted_peers_traceparent_is_the_parent_and_reaches_the_upstream() {
    let collector = Collector::start().await;
    let echo = Echo::start().await;
    let sc = traced(&echo, &collector, true).await;
    let id = get_with_caller_trace(&sc).await;
    // The drain sends the last spans: no flush here.
    sc.stop().await;

    let t = collector.request(&id, 4).await;
    assert_eq!(hex(&t.root.span.trace_id), CALLER_TRACE);
    assert_eq!(hex(&t.root.span.parent_span_id), CALLER_SPAN);
    let (trace, parent) = upstream_parent(&echo);
    assert_eq!(trace, CALLER_TRACE);
    assert_eq!(parent, hex(&t.named("upstream").span_id));
    let seen = echo.last().unwrap();
    assert_eq!(seen.headers.get_all("traceparent").iter().count(), 1);
    assert_eq!(seen.headers["tracestate"], "vendor=abc");
}

#[tokio::test]
async fn an_untrusted_peers_traceparent_is_ignored_and_a_new_trace_starts() {
    let collector = Collector::start().await;
    let echo = Echo::start().await;
    let sc = traced(&echo, &collector, false).await;
    let id = get_with_caller_trace(&sc).await;
    sc.stop().await;

    let t = collector.request(&id, 4).await;
    assert_ne!(hex(&t.root.span.trace_id), CALLER_TRACE);
    assert!(t.root.span.parent_span_id.is_empty());
    // The upstream is told rolegate's trace, not the caller's claim.
    let (trace, parent) = upstream_parent(&echo);
    assert_eq!(trace, hex(&t.root.span.trace_id));
    assert_eq!(parent, hex(&t.named("upstream").span_id));
    let seen = echo.last().unwrap();
    assert!(seen.headers.get("tracestate").is_none());
}

#[tokio::test]
async fn with_tracing_off_nothing_is_exported_and_trace_headers_pass_through() {
    let collector = Collector::start().await;
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    assert!(sc.state.otel.is_none());
    get_with_caller_trace(&sc).await;
    let tp = caller_traceparent();
    sc.stop().await;
    let seen = echo.last().unwrap();
    assert_eq!(seen.headers["traceparent"], tp.as_str());
    assert_eq!(seen.headers["tracestate"], "vendor=abc");
    // The collector is up and would have been reachable; nothing arrived.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(collector.spans().is_empty());
}

impl Collector {
    /// Every attribute value of every span received.
    fn values(&self) -> Vec<(String, String)> {
        self.spans()
            .iter()
            .flat_map(|g| g.span.attributes.clone())
            .map(|a| {
                let v = a
                    .value
                    .as_ref()
                    .and_then(|v| text(v.value.as_ref()?))
                    .unwrap_or_default();
                (a.key, v)
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ext_authz_check_is_a_trace_under_a_trusted_envoys_traceparent() {
    use envoy_types::pb::envoy::config::core::v3::address::Address;
    use envoy_types::pb::envoy::config::core::v3::{
        Address as EnvoyAddress, HeaderMap as EnvoyHeaderMap, HeaderValue as EnvoyHeaderValue,
        SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

    let collector = Collector::start().await;
    let echo = Echo::start().await;
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: format!(
            "ext_authz_listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\notel_endpoint = \"{}\"\n",
            collector.url()
        ),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let user = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let token = sc.token(&user.id).await;
    let mut client = AuthorizationClient::connect(sc.ext_authz.clone().unwrap())
        .await
        .unwrap();
    let check = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(EnvoyAddress {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: "192.0.2.10".to_owned(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    path: "/stream/s-1".to_owned(),
                    host: "api.test".to_owned(),
                    protocol: "HTTP/1.1".to_owned(),
                    header_map: Some(EnvoyHeaderMap {
                        headers: vec![EnvoyHeaderValue {
                            key: "x-bintu-token".to_owned(),
                            raw_value: token.as_bytes().to_vec(),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let mut req = tonic::Request::new(check);
    req.metadata_mut()
        .insert("traceparent", caller_traceparent().parse().unwrap());
    let resp = client.check(req).await.unwrap().into_inner();
    assert_eq!(resp.status.unwrap().code, 0, "allowed");
    sc.stop().await;

    let t = collector.door("ext_authz", 3).await;
    let root = &t.root.span;
    assert_eq!(hex(&root.trace_id), CALLER_TRACE);
    assert_eq!(hex(&root.parent_span_id), CALLER_SPAN);
    assert_eq!(root.name, "GET /stream/{id}");
    assert_eq!(attr(root, "rolegate.decision").as_deref(), Some("allow"));
    assert!(attr(root, "rolegate.request_id").is_some_and(|id| id.len() == 20));
    assert_eq!(t.named("credential").parent_span_id, root.span_id);
    assert_eq!(
        t.named("cache").parent_span_id,
        t.named("credential").span_id
    );
    assert_eq!(t.named("decision").parent_span_id, root.span_id);
    assert!(!t.has("upstream"), "Envoy forwards, not rolegate");
    for (k, v) in collector.values() {
        assert!(!v.contains(&token), "{k}: a token in a span");
    }
}

#[tokio::test]
async fn an_authzen_request_is_a_span_named_after_its_endpoint() {
    const PEP: &str = "pep-secret-for-traces-0123456789abcdef0123";
    let collector = Collector::start().await;
    let echo = Echo::start().await;
    let pep_dir = tempfile::tempdir().unwrap();
    let pep_file = pep_dir.path().join("pep.tokens");
    std::fs::write(&pep_file, format!("{PEP}\n")).unwrap();
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: format!(
            "authzen_listen = \"127.0.0.1:0\"\nauthzen_pep_token_file = \"{}\"\notel_endpoint = \"{}\"\n",
            pep_file.display(),
            collector.url()
        ),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let user = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let token = sc.token(&user.id).await;
    let body = serde_json::json!({
        "subject": {"type": "token", "id": token},
        "action": {"name": "GET"},
        "resource": {"type": "route", "id": "/stream/s-1"}
    });
    let auth = format!("Bearer {PEP}");
    let r = crate::support::send(
        sc.authzen.as_ref().unwrap(),
        "POST",
        "/access/v1/evaluation",
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("traceparent", &caller_traceparent()),
        ],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["decision"], true);
    sc.stop().await;

    let t = collector.door("authzen", 3).await;
    let root = &t.root.span;
    assert_eq!(root.name, "POST /access/v1/evaluation");
    assert_eq!(
        attr(root, "http.route").as_deref(),
        Some("/access/v1/evaluation")
    );
    assert_eq!(attr(root, "rolegate.decision").as_deref(), Some("answered"));
    // The PEP is not a trusted proxy here: its traceparent starts nothing.
    assert_ne!(hex(&root.trace_id), CALLER_TRACE);
    let decision = t.named("decision");
    assert_eq!(
        attr(decision, "http.route").as_deref(),
        Some("/stream/{id}")
    );
    assert_eq!(
        attr(decision, "rolegate.decision").as_deref(),
        Some("allow")
    );
    for (k, v) in collector.values() {
        assert!(
            !v.contains(&token) && !v.contains(PEP),
            "{k}: a credential in a span"
        );
    }
}

#[tokio::test]
async fn an_absent_collector_costs_spans_not_requests_and_the_drain_stays_bounded() {
    let echo = Echo::start().await;
    let nowhere = crate::support::free_port();
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: format!("otel_endpoint = \"http://127.0.0.1:{nowhere}\"\n"),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let user = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let token = sc.token(&user.id).await;
    for _ in 0..20 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            sc.send("GET", "/stream/s-1", &[tok(&token)], None),
        )
        .await
        .expect("a request is not held up by the exporter");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(echo.count(), 20);
    // The export is refused; the drain's flush gives up within its bound.
    tokio::time::timeout(Duration::from_secs(20), sc.stop())
        .await
        .expect("the drain ends");
}
