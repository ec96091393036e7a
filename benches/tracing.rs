//! What traces cost on the request path: `Decider::decide` for a cached
//! caller's allowed request (credential, cache, route, decision) with traces
//! off, with them on (the request's server span around it and the stage
//! spans inside, handed to an exporter that drops them, so the figure is the
//! span work and not a collector), and off again in a process where a tracer
//! has started (the stage hooks' flag set: what a request costs when traces
//! are off for it but on elsewhere in the process, as in these benchmarks).
//! Run: `cargo bench --bench tracing`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use rolegate::config::{Overrides, Settings};
use rolegate::decision::Question;
use rolegate::metrics::Door;
use rolegate::otel::{TraceSettings, Tracing};
use rolegate::store::NewUser;

/// An exporter that drops every span: the cost measured is rolegate's and
/// the SDK's, not a network's.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let overrides = Overrides {
        store: Some(dir.path().join("b.db").display().to_string()),
        policies_dir: Some(root.join("policies")),
        schema_dir: Some(root.join("schema")),
        ..Default::default()
    };
    let env: std::collections::HashMap<String, String> = [(
        "ROLEGATE_MASTER_SECRET".to_owned(),
        "bench-master-secret-0123456789abcdef0123".to_owned(),
    )]
    .into();
    let settings = Settings::resolve(&overrides, &env, false).unwrap();
    assert!(settings.otel.is_none());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = rt.block_on(rolegate::app::build(settings.clone())).unwrap();
    let org = rt.block_on(state.store.create_org("acme")).unwrap();
    let user = rt
        .block_on(state.store.create_user(NewUser {
            org_id: org.org.id.clone(),
            email: "op@acme.example".to_owned(),
            role: "nanoUser".to_owned(),
            password_hash: None,
        }))
        .unwrap();
    let token = rolegate::authn::token::mint_for_user(
        &settings.token_settings(),
        &settings.master_secret,
        &user,
        rolegate::clock::unix_now(),
    )
    .unwrap();
    let request_id = HeaderValue::from_static("bench");
    let mut headers = HeaderMap::new();
    headers.insert("x-bintu-token", HeaderValue::from_str(&token).unwrap());
    let question = || Question {
        method: "GET",
        path: "/stream/s-1",
        query: None,
        headers: &headers,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        request_id: &request_id,
        door: Door::Proxy,
    };
    let decide = || rt.block_on(state.decider.decide(&question())).is_ok();
    // Warm: the token remembered, the principal and the decision cached.
    assert!(decide());

    // First, before any tracer exists in this process.
    c.bench_function("tracing: decide, off", |b| b.iter(|| black_box(decide())));

    let tracing = rt.block_on(async {
        Tracing::with_exporter(
            &TraceSettings {
                endpoint: "http://127.0.0.1:4317".to_owned(),
                service_name: "bench".to_owned(),
                sample_ratio: 1.0,
            },
            Discard,
        )
    });
    c.bench_function(
        "tracing: decide, on (request span + 3 stage spans, exporter discards)",
        |b| {
            b.iter(|| {
                let span = tracing.request("GET", &headers, false, "bench");
                let ok = rt.block_on(span.scope(state.decider.decide(&question())));
                span.finish(rolegate::otel::Answer {
                    door: Door::Proxy,
                    status: 200,
                    decision: "allow",
                    reason: None,
                });
                black_box(ok.is_ok())
            })
        },
    );
    c.bench_function("tracing: decide, off (a tracer started elsewhere)", |b| {
        b.iter(|| black_box(decide()))
    });
    rt.block_on(tracing.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
