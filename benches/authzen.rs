//! An AuthZEN evaluation's decision path, with the shipped policies and a
//! SQLite store: parsing the request body and deciding it, in the gateway
//! profile (the proxy's `Decider::decide`, token remembered and principal
//! cached, as for a caller's second request) and the Cedar profile (a user by
//! id, cached), beside `Decider::decide` alone for the same request (what the
//! door adds), and a batch of ten.
//! Run: `cargo bench --bench authzen`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use rolegate::authzen::mapping::{self, Asker};
use rolegate::authzen::{batch, wire};
use rolegate::config::{Overrides, Settings};
use rolegate::decision::Question;
use rolegate::store::NewUser;

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
    let asker = Asker {
        pep_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        request_id: &request_id,
    };

    let gateway = serde_json::json!({
        "subject": {"type": "token", "id": token},
        "action": {"name": "GET"},
        "resource": {"type": "route", "id": "/stream/s-1"}
    })
    .to_string();
    let cedar = serde_json::json!({
        "subject": {"type": "user", "id": user.id},
        "action": {"name": "getStream"},
        "resource": {"type": "Stream", "id": "s-1"}
    })
    .to_string();
    let evaluate = |body: &str| {
        let ev = wire::single(body.as_bytes()).unwrap();
        let answer = rt.block_on(mapping::evaluate(&state, &ev, &asker)).unwrap();
        assert!(answer.allowed, "{answer:?}");
        serde_json::to_vec(&batch::decision(&answer)).unwrap()
    };
    // Warm: the token remembered, the principal and the decision cached.
    evaluate(&gateway);
    evaluate(&cedar);

    c.bench_function("authzen: gateway profile (parse, decide, answer)", |b| {
        b.iter(|| black_box(evaluate(black_box(&gateway))))
    });
    c.bench_function("authzen: cedar profile (parse, decide, answer)", |b| {
        b.iter(|| black_box(evaluate(black_box(&cedar))))
    });

    let mut headers = HeaderMap::new();
    headers.insert("x-bintu-token", HeaderValue::from_str(&token).unwrap());
    c.bench_function("authzen: Decider::decide alone (the proxy's share)", |b| {
        b.iter(|| {
            let q = Question {
                method: "GET",
                path: "/stream/s-1",
                query: None,
                headers: &headers,
                client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                request_id: &request_id,
                door: rolegate::metrics::Door::Proxy,
            };
            black_box(rt.block_on(state.decider.decide(&q)).is_ok())
        })
    });

    let items: Vec<serde_json::Value> = (0..10)
        .map(|i| serde_json::json!({"resource": {"type": "route", "id": format!("/stream/s-{i}")}}))
        .collect();
    let ten = serde_json::json!({
        "subject": {"type": "token", "id": token},
        "action": {"name": "GET"},
        "evaluations": items
    })
    .to_string();
    c.bench_function("authzen: batch of 10, gateway profile", |b| {
        b.iter(|| {
            let wire::Batch::Many { items, semantic } = wire::batch(ten.as_bytes()).unwrap() else {
                panic!("not a batch")
            };
            let out = rt.block_on(batch::run(&state, &items, semantic, &asker));
            assert_eq!(out.len(), 10);
            black_box(serde_json::to_vec(&wire::Decisions { evaluations: out }).unwrap())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
