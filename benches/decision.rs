//! The decision path, piece by piece, with the shipped policies:
//! credential parse, token verification (and recognising a remembered token),
//! cache hit, route match, Cedar decision (evaluated, cached, and for a caller
//! never seen before), and all of them together; and the Cedar decision again with 100 custom roles
//! loaded beside the shipped ones (how cost grows with the policy count).
//! Run: `cargo bench --bench decision`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use rolegate::authn::cache::{CacheSettings, PrincipalCache};
use rolegate::authn::credential::{self, CredentialKind};
use rolegate::authn::token;
use rolegate::authz::entities::{self, RequestFacts};
use rolegate::authz::{PolicySource, PolicyStore};
use rolegate::store::{NewUser, SharedStore};

const MASTER: &[u8] = b"bench-master-secret-0123456789abcdef0123";

/// A copy of the shipped policies plus `n` custom roles, each a role file and a
/// catalogue entry, granting `read` plus one other group, as an operator adds them.
fn with_custom_roles(root: &std::path::Path, n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(root.join("policies")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
    }
    let mut catalogue = std::fs::read_to_string(root.join("policies/roles.toml")).unwrap();
    let groups = ["operate", "disrupt", "administer"];
    for i in 0..n {
        let name = format!("custom{i:03}");
        catalogue.push_str(&format!(
            "\n[roles.{name}]\ntitle = \"Custom {i}\"\ndescription = \"Generated for the benchmark\"\naudiences = [\"bintu\"]\n"
        ));
        std::fs::write(
            dir.path().join(format!("{name}.cedar")),
            format!(
                "@id(\"{name}\")\npermit (\n  principal in Role::\"{name}\",\n  action in [Action::\"read\", Action::\"{}\"],\n  resource\n);\n",
                groups[i % groups.len()]
            ),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("roles.toml"), catalogue).unwrap();
    dir
}

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let policies = PolicyStore::open(PolicySource {
        policies_dir: root.join("policies"),
        schema_dir: root.join("schema"),
    })
    .unwrap();
    let custom_dir = with_custom_roles(&root, 100);
    let custom = PolicyStore::open(PolicySource {
        policies_dir: custom_dir.path().to_path_buf(),
        schema_dir: root.join("schema"),
    })
    .unwrap()
    .current();
    assert_eq!(custom.roles.len(), snap_roles(&policies) + 100);
    let snap = policies.current();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = rt
        .block_on(rolegate::store::open(
            &dir.path().join("b.db").display().to_string(),
        ))
        .unwrap();
    let org = rt.block_on(store.create_org("bench")).unwrap();
    let user = rt
        .block_on(store.create_user(NewUser {
            org_id: org.org.id.clone(),
            email: "b@bench.test".into(),
            role: "nanoUser".into(),
            password_hash: None,
        }))
        .unwrap();
    let settings = token::TokenSettings {
        issuer: "rolegate".into(),
        audience: "bintu".into(),
        ttl_secs: 3600,
        leeway_secs: 30,
    };
    let secret = token::derive_secret(MASTER, &user.id, &user.token_key);
    let now = rolegate::clock::unix_now();
    let t = token::mint(&settings, &user.id, &secret, now).unwrap();
    let key = token::VerifyKey::new(&secret);
    let cache = PrincipalCache::new(
        store.clone(),
        Arc::from(MASTER),
        CacheSettings {
            ttl: std::time::Duration::from_secs(600),
            capacity: 1000,
            negative_ttl: std::time::Duration::from_secs(10),
            negative_capacity: 1000,
        },
    );
    rt.block_on(cache.user(&user.id)).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("x-bintu-token", HeaderValue::from_str(&t).unwrap());

    c.bench_function("credential_parse", |b| {
        b.iter(|| credential::extract(black_box(&headers)).unwrap())
    });
    c.bench_function("token_verify", |b| {
        b.iter(|| {
            let parsed = token::parse(black_box(&t)).unwrap();
            token::verify(&parsed, &key, &settings, parsed.kid(), now).unwrap()
        })
    });
    // The request path's usual case: the token the user's cache entry
    // remembers (the first `verify` verifies it in full and remembers it).
    let entry = rt.block_on(cache.user(&user.id)).unwrap().value.unwrap();
    entry
        .verify(&token::parse(&t).unwrap(), &settings, now)
        .unwrap();
    c.bench_function("token_recognised", |b| {
        b.iter(|| {
            let parsed = token::parse(black_box(&t)).unwrap();
            entry.verify(&parsed, &settings, now).unwrap()
        })
    });
    c.bench_function("cache_hit", |b| {
        b.iter(|| rt.block_on(cache.user(black_box(&user.id))).unwrap())
    });
    c.bench_function("route_match", |b| {
        b.iter(|| {
            snap.routes
                .find(black_box("DELETE"), black_box("/stream/abc"))
                .unwrap()
                .route
                .index
        })
    });
    let facts = RequestFacts {
        method: "GET",
        path: "/stream/abc",
        credential: CredentialKind::UserToken,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        tag_filter: false,
    };
    let action = snap.action("getStream").unwrap().clone();
    let cached = rt.block_on(cache.user(&user.id)).unwrap().value.unwrap();
    let caller =
        rolegate::authn::principal::Caller::user(cached.id.clone(), cached.membership.clone());
    // What the request path does for a decision it has not made before:
    // principal, resource and context are built; Cedar decides.
    c.bench_function("cedar_decision", |b| {
        b.iter(|| {
            let r = entities::resource("Stream", "abc", &org.org.id);
            snap.decide_as(
                Some("nanoUser"),
                rolegate::authz::decide::principal_entity(&caller),
                &action,
                r,
                snap.context(&facts),
            )
            .allowed
        })
    });
    // What the proxy does for a decision it has made before: the snapshot's
    // decision cache answers (key built from the request's strings).
    let decide = |snap: &rolegate::authz::PolicySnapshot| {
        rolegate::authz::decide::decide_action(
            snap,
            &caller,
            "getStream",
            "Stream",
            "abc",
            &org.org.id,
            &facts,
        )
        .allowed
    };
    assert!(decide(&snap));
    c.bench_function("decision_cached", |b| b.iter(|| decide(black_box(&snap))));
    // A caller never seen before: 100,000 distinct users, each in their own
    // organisation, each asking for their own stream, decided through the
    // proxy's `decide_action`. Ids no policy names are abstracted in the
    // decision key, so after the first caller of this shape, every new one is
    // answered from the cache instead of evaluating Cedar.
    let strangers: Vec<(rolegate::authn::principal::Caller, String, String)> = (0..100_000)
        .map(|i| {
            let org = format!("org-{i:06}");
            (
                rolegate::authn::principal::Caller::user_in(
                    &format!("user-{i:06}"),
                    &org,
                    "nanoUser",
                ),
                format!("stream-{i:06}"),
                org,
            )
        })
        .collect();
    let mut next = 0usize;
    c.bench_function("decision_new_caller", |b| {
        b.iter(|| {
            let (caller, stream, org) = &strangers[next % strangers.len()];
            next += 1;
            rolegate::authz::decide::decide_action(
                &snap,
                caller,
                "getStream",
                "Stream",
                stream,
                org,
                &facts,
            )
            .allowed
        })
    });
    // The same decision with 100 custom roles loaded (104 more policies).
    let custom_action = custom.action("getStream").unwrap().clone();
    c.bench_function("cedar_decision_100_custom_roles", |b| {
        b.iter(|| {
            let r = entities::resource("Stream", "abc", &org.org.id);
            custom
                .decide_as(
                    Some("nanoUser"),
                    rolegate::authz::decide::principal_entity(&caller),
                    &custom_action,
                    r,
                    custom.context(&facts),
                )
                .allowed
        })
    });
    // A custom role's own member, for the same request.
    let member = entities::user(&user.id, "custom001", &org.org.id);
    assert!(
        custom
            .decide_as(
                Some("custom001"),
                member.clone(),
                &custom_action,
                entities::resource("Stream", "abc", &org.org.id),
                custom.context(&facts),
            )
            .allowed
    );
    c.bench_function("cedar_decision_custom_role_member", |b| {
        b.iter(|| {
            let r = entities::resource("Stream", "abc", &org.org.id);
            custom
                .decide_as(
                    Some("custom001"),
                    member.clone(),
                    &custom_action,
                    r,
                    custom.context(&facts),
                )
                .allowed
        })
    });
    c.bench_function("entities_build", |b| {
        b.iter(|| {
            (
                entities::user(&user.id, "nanoUser", &org.org.id),
                entities::resource("Stream", "abc", &org.org.id),
            )
        })
    });
    c.bench_function("context_build", |b| {
        b.iter(|| snap.context(black_box(&facts)))
    });
    // Every attribute, `client_ip` (an `ipaddr` extension value) included: what
    // a policy set that reads them all pays.
    c.bench_function("context_build_all_attributes", |b| {
        b.iter(|| entities::context(black_box(&facts), entities::ContextNeeds::ALL))
    });
    let p0 = entities::user(&user.id, "nanoUser", &org.org.id);
    let r0 = entities::resource("Stream", "abc", &org.org.id);
    let c0 = snap.context(&facts);
    c.bench_function("cedar_evaluate_only", |b| {
        b.iter(|| {
            snap.decide_as(
                Some("nanoUser"),
                p0.clone(),
                &action,
                r0.clone(),
                c0.clone(),
            )
            .allowed
        })
    });
    c.bench_function("x_entities_only", |b| {
        b.iter(|| cedar_policy::Entities::from_entities([p0.clone(), r0.clone()], None).unwrap())
    });
    c.bench_function("x_request_only", |b| {
        b.iter(|| {
            cedar_policy::Request::new(p0.uid(), action.clone(), r0.uid(), c0.clone(), None)
                .unwrap()
        })
    });
    let ents = cedar_policy::Entities::from_entities([p0.clone(), r0.clone()], None).unwrap();
    let req =
        cedar_policy::Request::new(p0.uid(), action.clone(), r0.uid(), c0.clone(), None).unwrap();
    let authz = cedar_policy::Authorizer::new();
    c.bench_function("x_is_authorized_only", |b| {
        b.iter(|| authz.is_authorized(&req, &snap.policies, &ents))
    });
    c.bench_function("decision_path", |b| {
        b.iter(|| {
            let cred = credential::extract(&headers).unwrap();
            let credential::Credential::UserToken(tok) = cred else {
                unreachable!()
            };
            let parsed = token::parse(tok).unwrap();
            let u = rt
                .block_on(cache.user(parsed.kid()))
                .unwrap()
                .value
                .unwrap();
            token::verify(&parsed, &u.key, &settings, &u.id, now).unwrap();
            let m = snap.routes.find("GET", "/stream/abc").unwrap();
            let action = snap.action(&m.route.action).unwrap();
            let r = entities::resource(
                &m.route.resource_type,
                m.resource_id().unwrap(),
                &u.membership.org,
            );
            assert!(
                snap.decide_as(
                    u.membership.role.as_deref(),
                    rolegate::authz::decide::principal_entity(
                        &rolegate::authn::principal::Caller::user(
                            u.id.clone(),
                            u.membership.clone(),
                        )
                    ),
                    action,
                    r,
                    snap.context(&facts)
                )
                .allowed
            );
        })
    });
}

fn snap_roles(p: &PolicyStore) -> usize {
    p.current().roles.len()
}

criterion_group!(benches, bench);
criterion_main!(benches);
