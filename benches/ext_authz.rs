//! A Check call, with the shipped policies and a SQLite store: what rolegate
//! spends per request when Envoy asks it.
//!
//! - `ext_authz_check_allow`: a `CheckRequest` (a token, a dozen header
//!   fields as Envoy sends them) through `ext_authz::check`: reading the
//!   attributes, the proxy's request checks, the decision (cache hit, route,
//!   cached Cedar decision) and the OK answer with the fields to set and remove;
//! - `ext_authz_check_deny`: the same for a policy deny (the denied answer
//!   with the platform's body);
//! - `ext_authz_grpc_roundtrip`: the allow again, over gRPC on loopback with
//!   tonic's client against rolegate's ext_authz listener (HTTP/2 framing,
//!   protobuf both ways), as Envoy calls it.
//!
//! Run: `cargo bench --bench ext_authz`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{
    Address as EnvoyAddress, HeaderMap as EnvoyHeaderMap, HeaderValue as EnvoyHeaderValue,
    SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use rolegate::config::{Overrides, Settings};
use rolegate::store::NewUser;

const MASTER: &str = "bench-master-secret-0123456789abcdef0123";

/// A CheckRequest as Envoy sends one for a browser-like client.
fn check_request(method: &str, path: &str, token: &str) -> CheckRequest {
    let fields = [
        ("host", "api.example.test"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("x-bintu-token", token),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
        ("x-envoy-expected-rq-timeout-ms", "15000"),
        ("cookie", "session=abc; theme=dark"),
        ("referer", "https://dashboard.example.test/streams"),
    ];
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(EnvoyAddress {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: "203.0.113.7".to_owned(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    host: "api.example.test".to_owned(),
                    protocol: "HTTP/1.1".to_owned(),
                    header_map: Some(EnvoyHeaderMap {
                        headers: fields
                            .iter()
                            .map(|(k, v)| EnvoyHeaderValue {
                                key: (*k).to_owned(),
                                raw_value: v.as_bytes().to_vec(),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("master.secret"), MASTER).unwrap();
    let config = dir.path().join("rolegate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\next_authz_listen = \"127.0.0.1:0\"\n\
             store = \"{}\"\nmaster_secret_file = \"master.secret\"\npolicies_dir = \"{}\"\nschema_dir = \"{}\"\n",
            dir.path().join("b.db").display(),
            root.join("policies").display(),
            root.join("schema").display(),
        ),
    )
    .unwrap();
    let overrides = Overrides {
        config: Some(config),
        ..Default::default()
    };
    let env: std::collections::HashMap<String, String> = Default::default();
    let settings = Settings::resolve(&overrides, &env, false).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let state = rt.block_on(rolegate::app::build(settings.clone())).unwrap();
    let running = rt.block_on(rolegate::app::start(state.clone())).unwrap();
    let org = rt.block_on(state.store.create_org("bench")).unwrap();
    let user = rt
        .block_on(state.store.create_user(NewUser {
            org_id: org.org.id.clone(),
            email: "b@bench.test".into(),
            role: "nanoReadOnly".into(),
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
    let allow = check_request("GET", "/stream?quantity=3", &token);
    let deny = check_request("DELETE", "/stream/s1", &token);
    // Warm the principal cache and the decision cache, and check the answers.
    let first = rt
        .block_on(rolegate::ext_authz::check(&state, &allow))
        .unwrap();
    assert!(matches!(
        first.http_response,
        Some(HttpResponse::OkResponse(_))
    ));
    let denied = rt
        .block_on(rolegate::ext_authz::check(&state, &deny))
        .unwrap();
    assert!(matches!(
        denied.http_response,
        Some(HttpResponse::DeniedResponse(_))
    ));

    c.bench_function("ext_authz_check_allow", |b| {
        b.iter(|| {
            rt.block_on(rolegate::ext_authz::check(&state, black_box(&allow)))
                .unwrap()
        })
    });
    c.bench_function("ext_authz_check_deny", |b| {
        b.iter(|| {
            rt.block_on(rolegate::ext_authz::check(&state, black_box(&deny)))
                .unwrap()
        })
    });

    let url = format!("http://{}", running.ext_authz_addr.unwrap());
    let mut client = rt.block_on(AuthorizationClient::connect(url)).unwrap();
    c.bench_function("ext_authz_grpc_roundtrip", |b| {
        b.iter(|| {
            let resp = rt
                .block_on(client.check(black_box(allow.clone())))
                .unwrap()
                .into_inner();
            assert_eq!(resp.status.map(|s| s.code), Some(0));
        })
    });
    drop(client);
    rt.block_on(running.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
