//! The ext_authz gRPC service called directly, with tonic's client, the way
//! Envoy calls it (`encode_raw_headers`: each header occurrence on its own):
//! the hostile cases of proxy mode give the proxy's answers, identity
//! headers are set and client-sent copies removed, a `CheckRequest` that
//! describes no request fails closed, and over the route table the decisions
//! agree with the proxy's for the same callers.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{
    Address as EnvoyAddress, HeaderMap as EnvoyHeaderMap, HeaderValue as EnvoyHeaderValue,
    SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use serde_json::Value;
use tonic::transport::Channel;

use crate::support::{metric, send, Echo, Options, Sidecar};

const CLIENT: &str = "192.0.2.10";

/// A sidecar with the ext_authz listener on, and a client for it.
async fn sidecar(extra: &str) -> (Echo, Sidecar, AuthorizationClient<Channel>) {
    let echo = Echo::start().await;
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: format!("ext_authz_listen = \"127.0.0.1:0\"\n{extra}"),
        ..Default::default()
    })
    .await;
    let url = sc.ext_authz.clone().expect("the ext_authz listener is on");
    let client = AuthorizationClient::connect(url).await.unwrap();
    (echo, sc, client)
}

/// A CheckRequest as Envoy builds it with `encode_raw_headers: true`.
fn request(method: &str, target: &str, headers: &[(&str, &str)], source: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(EnvoyAddress {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: source.to_owned(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "envoy-request-id".to_owned(),
                    method: method.to_owned(),
                    path: target.to_owned(),
                    host: "api.test".to_owned(),
                    scheme: "http".to_owned(),
                    protocol: "HTTP/1.1".to_owned(),
                    header_map: Some(EnvoyHeaderMap {
                        headers: headers
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

/// What rolegate answered, in the terms of the tests.
#[derive(Debug)]
enum Answer {
    Ok {
        set: HashMap<String, String>,
        remove: Vec<String>,
    },
    Denied {
        grpc: i32,
        status: i32,
        headers: HashMap<String, String>,
        body: Value,
    },
}

impl Answer {
    fn set(&self) -> &HashMap<String, String> {
        match self {
            Answer::Ok { set, .. } => set,
            other => panic!("expected OK, got {other:?}"),
        }
    }

    fn remove(&self) -> &[String] {
        match self {
            Answer::Ok { remove, .. } => remove,
            other => panic!("expected OK, got {other:?}"),
        }
    }

    /// The HTTP status and `userinfo.reason` of a denied answer.
    fn denied(&self) -> (i32, String) {
        match self {
            Answer::Denied { status, body, .. } => (
                *status,
                body["error"]["userinfo"]["reason"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            ),
            other => panic!("expected a denied answer, got {other:?}"),
        }
    }
}

async fn ask(client: &mut AuthorizationClient<Channel>, req: CheckRequest) -> Answer {
    let resp = client.check(req).await.expect("an answer").into_inner();
    let grpc = resp.status.as_ref().map_or(-1, |s| s.code);
    match resp.http_response.expect("an HTTP response") {
        HttpResponse::OkResponse(ok) => {
            assert_eq!(grpc, 0, "OK answers carry the OK status");
            let mut set = HashMap::new();
            for h in ok.headers {
                let hv = h.header.unwrap();
                assert_eq!(
                    h.append_action, 2,
                    "{} must overwrite (OVERWRITE_IF_EXISTS_OR_ADD)",
                    hv.key
                );
                assert!(
                    set.insert(hv.key.clone(), hv.value).is_none(),
                    "{} set twice",
                    hv.key
                );
            }
            Answer::Ok {
                set,
                remove: ok.headers_to_remove,
            }
        }
        HttpResponse::DeniedResponse(d) => {
            assert_ne!(grpc, 0, "a denied answer with status OK would allow");
            let headers = d
                .headers
                .into_iter()
                .map(|h| {
                    let hv = h.header.unwrap();
                    (hv.key, hv.value)
                })
                .collect();
            Answer::Denied {
                grpc,
                status: d.status.map_or(0, |s| s.code),
                headers,
                body: serde_json::from_str(&d.body).unwrap_or(Value::Null),
            }
        }
        HttpResponse::ErrorResponse(e) => panic!("unexpected error response {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_request_gets_the_proxys_identity_headers_and_loses_what_the_proxy_strips() {
    let (echo, sc, mut client) = sidecar("").await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let t = sc.token(&u.id).await;

    let a = ask(
        &mut client,
        request(
            "GET",
            "/stream?quantity=3",
            &[
                ("x-bintu-token", &t),
                // Client-sent identity claims: overwritten when rolegate sets
                // the name, removed otherwise.
                ("x-rolegate-role", "nanoAdmin"),
                ("x-rolegate-user-id", "someone-else"),
                ("x-forwarded-for", "1.2.3.4"),
                ("x-request-id", "chosen-by-the-client"),
                ("x-user-id", "admin"),
                ("x-forwarded-host", "evil.test"),
                ("x-original-url", "/organisation/apikey"),
                ("x_rolegate_role", "nanoAdmin"),
                ("proxy-authorization", "Basic Zm9vOmJhcg=="),
                ("accept", "application/json"),
            ],
            CLIENT,
        ),
    )
    .await;
    let set = a.set();
    assert_eq!(set["x-rolegate-user-id"], u.id);
    assert_eq!(set["x-rolegate-org-id"], org.org.id);
    assert_eq!(set["x-rolegate-role"], "nanoReadOnly");
    assert_eq!(set["x-rolegate-credential"], "token");
    assert_eq!(set["x-forwarded-for"], CLIENT);
    // The scheme and host Envoy says the request came with, not the
    // client's `X-Forwarded-Host`.
    assert_eq!(set["x-forwarded-proto"], "http");
    assert_eq!(set["x-forwarded-host"], "api.test");
    // Envoy's own id for the request (`http.id`), not the client's field.
    assert_eq!(set["x-request-id"], "envoy-request-id");
    let mut remove = a.remove().to_vec();
    remove.sort();
    assert_eq!(
        remove,
        [
            "proxy-authorization",
            "x-bintu-token",
            "x-original-url",
            "x-user-id",
            "x_rolegate_role",
        ],
        "exactly what the proxy strips, minus what is set"
    );

    // The API key: no user, so a client-sent user id is removed, not set.
    let a = ask(
        &mut client,
        request(
            "GET",
            "/tag",
            &[
                ("x-bintu-apikey", &org.api_key),
                ("x-rolegate-user-id", "someone"),
            ],
            CLIENT,
        ),
    )
    .await;
    assert_eq!(a.set()["x-rolegate-credential"], "apikey");
    assert_eq!(a.set()["x-rolegate-role"], "nanoAdmin");
    assert!(!a.set().contains_key("x-rolegate-user-id"));
    for gone in ["x-bintu-apikey", "x-rolegate-user-id"] {
        assert!(a.remove().iter().any(|r| r == gone), "{gone}: {a:?}");
    }
    // `Authorization: Bearer` is a credential too.
    let bearer = format!("Bearer {t}");
    let a = ask(
        &mut client,
        request("GET", "/stream", &[("authorization", &bearer)], CLIENT),
    )
    .await;
    assert_eq!(a.set()["x-rolegate-user-id"], u.id);
    assert!(a.remove().iter().any(|r| r == "authorization"));

    // Counted as the proxy counts, under the ext_authz door; the proxy's own
    // counter did not move.
    assert_eq!(
        metric(
            &sc,
            "rolegate_requests_total{decision=\"allow\",reason=\"forwarded\",door=\"ext_authz\"}"
        )
        .await,
        3.0
    );
    assert_eq!(
        metric(
            &sc,
            "rolegate_requests_total{decision=\"allow\",reason=\"forwarded\",door=\"proxy\"}"
        )
        .await,
        0.0
    );
    assert_eq!(echo.count(), 0, "ext_authz never forwards itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_credentials_keeps_the_credential_as_the_proxy_does() {
    let (_echo, sc, mut client) = sidecar("forward_credentials = true\n").await;
    let org = sc.org("acme").await;
    let a = ask(
        &mut client,
        request("GET", "/tag", &[("x-bintu-apikey", &org.api_key)], CLIENT),
    )
    .await;
    assert!(!a.remove().iter().any(|r| r == "x-bintu-apikey"), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_carry_the_platforms_status_body_and_request_id() {
    let (_echo, sc, mut client) = sidecar("").await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let t = sc.token(&u.id).await;

    // Policy deny: 403, PERMISSION_DENIED, the platform's body.
    let a = ask(
        &mut client,
        request("DELETE", "/stream/s1", &[("x-bintu-token", &t)], CLIENT),
    )
    .await;
    let Answer::Denied {
        grpc,
        status,
        headers,
        body,
    } = &a
    else {
        panic!("{a:?}")
    };
    assert_eq!((*grpc, *status), (7, 403));
    assert_eq!(body["error"]["code"], 2001);
    assert_eq!(body["error"]["userinfo"]["reason"], "policy_deny");
    assert!(headers["content-type"].starts_with("application/json"));
    assert_eq!(headers["x-request-id"], "envoy-request-id");
    assert!(!headers.keys().any(|k| k.starts_with("x-rolegate-")));

    // No credential: 401 with the challenge.
    let a = ask(&mut client, request("GET", "/stream", &[], CLIENT)).await;
    let Answer::Denied {
        grpc,
        status,
        headers,
        body,
    } = &a
    else {
        panic!("{a:?}")
    };
    assert_eq!((*grpc, *status), (16, 401));
    assert_eq!(body["error"]["userinfo"]["reason"], "credential_required");
    assert!(headers["www-authenticate"].starts_with("Bearer"));

    // No route.
    let a = ask(
        &mut client,
        request("GET", "/nope", &[("x-bintu-token", &t)], CLIENT),
    )
    .await;
    assert_eq!(a.denied(), (403, "no_route".to_owned()));

    // rolegate's own endpoints are not answered through ext_authz.
    let a = ask(
        &mut client,
        request(
            "PUT",
            "/user/tokenkey",
            &[("x-bintu-apikey", &org.api_key)],
            CLIENT,
        ),
    )
    .await;
    assert_eq!(a.denied(), (403, "not_forwardable".to_owned()));

    // CONNECT is refused as in proxy mode.
    let a = ask(
        &mut client,
        request("CONNECT", "/stream", &[("x-bintu-token", &t)], CLIENT),
    )
    .await;
    assert_eq!(a.denied().0, 403);

    // The deny is counted under the ext_authz door.
    assert_eq!(
        metric(
            &sc,
            "rolegate_requests_total{decision=\"deny\",reason=\"policy_deny\",door=\"ext_authz\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &sc,
            "rolegate_requests_total{decision=\"error\",reason=\"credential_required\",door=\"ext_authz\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_normalisation_would_change_is_refused() {
    let (_echo, sc, mut client) = sidecar("").await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let t = sc.token(&admin.id).await;
    for target in [
        "/stream/../tag",
        "/stream/%2e%2e/tag",
        "/stream/%2E%2E/tag",
        "//stream",
        "/stream//s1",
        "/./stream",
        "/stream/s1/.",
        "/stream%2fs1",
        "/stream%5cs1",
        "/stream/%00",
        "/stream/%C0%AF",
        "/stream/%zz",
        "stream",
        "/../stream",
    ] {
        let a = ask(
            &mut client,
            request("GET", target, &[("x-bintu-token", &t)], CLIENT),
        )
        .await;
        let (status, reason) = a.denied();
        assert_eq!(status, 400, "{target}: {a:?}");
        assert!(reason.starts_with("path_"), "{target}: {reason}");
    }
    // The same path in normal form is allowed.
    let a = ask(
        &mut client,
        request("GET", "/tag", &[("x-bintu-token", &t)], CLIENT),
    )
    .await;
    assert_eq!(a.set()["x-rolegate-role"], "nanoAdmin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_forged_credentials_are_refused() {
    let (_echo, sc, mut client) = sidecar("").await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let t = sc.token(&admin.id).await;

    // (what, header fields, status, reason; "" for any reason)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, i32, &'a str);
    let cases: Vec<Case> = vec![
        (
            "the token twice",
            vec![("x-bintu-token", t.clone()), ("x-bintu-token", t.clone())],
            401,
            "duplicate_credential_header",
        ),
        (
            "token and API key",
            vec![
                ("x-bintu-token", t.clone()),
                ("x-bintu-apikey", org.api_key.clone()),
            ],
            401,
            "multiple_credentials",
        ),
        (
            "token and bearer",
            vec![
                ("x-bintu-token", t.clone()),
                ("authorization", format!("Bearer {t}")),
            ],
            401,
            "multiple_credentials",
        ),
        (
            "two tokens joined as Envoy joins repeated fields without encode_raw_headers",
            vec![("x-bintu-token", format!("{t},{t}"))],
            401,
            "",
        ),
        (
            "not a token",
            vec![("x-bintu-token", "not-a-token".to_owned())],
            401,
            "",
        ),
        ("alg none", vec![("x-bintu-token", alg_none(&t))], 401, ""),
        (
            "flipped signature",
            vec![("x-bintu-token", flipped(&t))],
            401,
            "",
        ),
        (
            "payload edited without re-signing",
            vec![("x-bintu-token", edited(&t))],
            401,
            "",
        ),
        (
            "unknown API key",
            vec![("x-bintu-apikey", "no-such-key".to_owned())],
            401,
            "unknown_api_key",
        ),
        (
            "Basic scheme",
            vec![("authorization", "Basic YTpi".to_owned())],
            401,
            "unsupported_auth_scheme",
        ),
    ];
    for (what, headers, status, reason) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = ask(&mut client, request("GET", "/stream", &h, CLIENT)).await;
        let (got, why) = a.denied();
        assert_eq!(got, status, "{what}: {a:?}");
        if reason.is_empty() {
            assert!(!why.is_empty(), "{what}: {a:?}");
        } else {
            assert_eq!(why, reason, "{what}");
        }
    }
}

/// The token with its header replaced by `{"alg":"none",…}` and no signature.
fn alg_none(t: &str) -> String {
    let parts: Vec<&str> = t.split('.').collect();
    let mut header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    header["alg"] = "none".into();
    format!(
        "{}.{}.",
        B64.encode(serde_json::to_vec(&header).unwrap()),
        parts[1]
    )
}

fn flipped(t: &str) -> String {
    let mut bytes = t.as_bytes().to_vec();
    let i = bytes.len() - 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

fn edited(t: &str) -> String {
    let parts: Vec<&str> = t.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    payload["exp"] = (payload["exp"].as_u64().unwrap() + 3600).into();
    format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(serde_json::to_vec(&payload).unwrap()),
        parts[2]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_overrides_and_bad_heads_are_refused() {
    let (_echo, sc, mut client) = sidecar("").await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let t = sc.token(&admin.id).await;
    // (method, target, extra header fields, reason)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "GET",
            "/stream/s1",
            &[("x-http-method-override", "DELETE")],
            "method_override",
        ),
        (
            "POST",
            "/stream",
            &[("x-http-method", "DELETE")],
            "method_override",
        ),
        (
            "POST",
            "/stream",
            &[("x-method-override", "PUT")],
            "method_override",
        ),
        ("POST", "/stream?_method=DELETE", &[], "method_override"),
        ("POST", "/stream?%5Fmethod=DELETE", &[], "method_override"),
        (
            "GET",
            "/stream",
            &[("host", "a"), ("host", "b")],
            "duplicate_host",
        ),
        ("GET", "/stream", &[("host", "a/b@c")], "bad_host"),
    ];
    for (method, target, extra, reason) in cases {
        let mut h: Vec<(&str, &str)> = vec![("x-bintu-token", &t)];
        h.extend_from_slice(extra);
        let a = ask(&mut client, request(method, target, &h, CLIENT)).await;
        assert_eq!(
            a.denied(),
            (400, (*reason).to_owned()),
            "{method} {target} {extra:?}"
        );
    }
    // A header field that no HTTP parser would have passed on.
    let a = ask(
        &mut client,
        request(
            "GET",
            "/stream",
            &[("x-bintu-token", &t), ("bad name", "1")],
            CLIENT,
        ),
    )
    .await;
    assert_eq!(a.denied(), (400, "bad_header_field".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_above_the_limit_is_refused_as_the_proxy_refuses_it() {
    let (_echo, sc, mut client) = sidecar("max_body_bytes = 1024").await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let t = sc.token(&admin.id).await;
    let ask_with = |len: &'static str| {
        request(
            "POST",
            "/stream",
            &[("x-bintu-token", &t), ("content-length", len)],
            CLIENT,
        )
    };
    assert!(matches!(
        ask(&mut client, ask_with("1024")).await,
        Answer::Ok { .. }
    ));
    for len in ["1025", "99999999999999999999", "12x"] {
        assert_eq!(
            ask(&mut client, ask_with(len)).await.denied(),
            (413, "payload_too_large".to_owned()),
            "content-length {len}"
        );
    }
    // The proxy answers the same request the same way.
    let body = "x".repeat(1025);
    let resp = sc
        .send("POST", "/stream", &[("x-bintu-token", &t)], Some(&body))
        .await;
    assert_eq!(resp.status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_request_that_describes_no_request_fails_closed() {
    let (_echo, sc, mut client) = sidecar("").await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let t = sc.token(&admin.id).await;
    let whole = request("GET", "/stream", &[("x-bintu-token", &t)], CLIENT);

    let mut no_http = whole.clone();
    no_http
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http = None;
    let mut no_source = whole.clone();
    no_source.attributes.as_mut().unwrap().source = None;
    let mut pipe_source = whole.clone();
    pipe_source.attributes.as_mut().unwrap().source = Some(Peer {
        address: Some(EnvoyAddress {
            address: Some(Address::SocketAddress(SocketAddress {
                address: "/run/envoy.sock".to_owned(),
                ..Default::default()
            })),
        }),
        ..Default::default()
    });
    let mut no_method = whole.clone();
    http_of(&mut no_method).method.clear();
    let mut no_path = whole.clone();
    http_of(&mut no_path).path.clear();

    for (what, req, names) in [
        ("no attributes", CheckRequest::default(), "attributes"),
        ("no request.http", no_http, "attributes.request.http"),
        ("no source", no_source, "attributes.source.address"),
        (
            "a source that is no IP",
            pipe_source,
            "attributes.source.address",
        ),
        ("no method", no_method, "attributes.request.http.method"),
        ("no path", no_path, "attributes.request.http.path"),
    ] {
        let err = client.check(req).await.expect_err(what);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}");
        assert!(err.message().contains(names), "{what}: {}", err.message());
    }
    assert_eq!(
        metric(
            &sc,
            "rolegate_requests_total{decision=\"error\",reason=\"malformed_check_request\",door=\"ext_authz\"}"
        )
        .await,
        6.0
    );
    // The whole request is still allowed: the refusals were about the shape.
    let a = ask(&mut client, whole).await;
    assert_eq!(a.set()["x-rolegate-user-id"], admin.id);
}

fn http_of(req: &mut CheckRequest) -> &mut HttpRequest {
    req.attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    let (_echo, sc, mut client) = sidecar("trusted_proxies = [\"10.0.0.0/8\"]\n").await;
    let org = sc.org("acme").await;
    let key = org.api_key.as_str();
    let xff = "1.1.1.1, 203.0.113.9";
    // From a trusted load balancer in front of Envoy: the rightmost untrusted entry.
    let a = ask(
        &mut client,
        request(
            "GET",
            "/tag",
            &[("x-bintu-apikey", key), ("x-forwarded-for", xff)],
            "10.1.2.3",
        ),
    )
    .await;
    assert_eq!(a.set()["x-forwarded-for"], "203.0.113.9");
    // From anyone else: the source address, whatever the field says.
    let a = ask(
        &mut client,
        request(
            "GET",
            "/tag",
            &[("x-bintu-apikey", key), ("x-forwarded-for", xff)],
            CLIENT,
        ),
    )
    .await;
    assert_eq!(a.set()["x-forwarded-for"], CLIENT);
}

/// Every route of the shipped table, for four callers: ext_authz allows
/// exactly what the proxy forwards, and refuses the rest with its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_agree_with_the_proxy_over_the_route_table() {
    let (echo, sc, mut client) = sidecar("").await;
    let org = sc.org("acme").await;
    let other = sc.org("other").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let ro = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let stranger = sc.user(&other, "x@other.test", "nanoAdmin").await;
    let admin_t = sc.token(&admin.id).await;
    let ro_t = sc.token(&ro.id).await;
    let stranger_t = sc.token(&stranger.id).await;
    let callers: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("admin", vec![("x-bintu-token", admin_t.as_str())]),
        ("read-only", vec![("x-bintu-token", ro_t.as_str())]),
        ("api key", vec![("x-bintu-apikey", org.api_key.as_str())]),
        ("other org", vec![("x-bintu-token", stranger_t.as_str())]),
        ("anonymous", vec![]),
    ];

    let table: toml::Value = toml::from_str(
        &std::fs::read_to_string(crate::support::repo().join("policies/routes.toml")).unwrap(),
    )
    .unwrap();
    let routes = table["route"].as_array().unwrap();
    assert!(routes.len() > 20);
    let mut compared = 0;
    for route in routes {
        let method = route["method"].as_str().unwrap();
        let path = route["path"]
            .as_str()
            .unwrap()
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    admin.id.as_str()
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for (who, headers) in &callers {
            let before = echo.count();
            let proxy = send(&sc.base, method, &path, headers, Some("{}")).await;
            let forwarded = echo.count() > before;
            let a = ask(&mut client, request(method, &path, headers, "127.0.0.1")).await;
            match &a {
                Answer::Ok { .. } => assert!(
                    forwarded,
                    "{who} {method} {path}: ext_authz allows, the proxy answered {} {}",
                    proxy.status, proxy.body
                ),
                Answer::Denied { .. } if forwarded => {
                    panic!("{who} {method} {path}: the proxy forwarded, ext_authz {a:?}")
                }
                // rolegate's own endpoints: the proxy answers them itself;
                // ext_authz refuses them all.
                Answer::Denied { .. } if !proxy.status.is_client_error() => {
                    assert_eq!(
                        a.denied(),
                        (403, "not_forwardable".to_owned()),
                        "{who} {method} {path}"
                    )
                }
                Answer::Denied { .. } => {
                    let (status, reason) = a.denied();
                    if reason != "not_forwardable" {
                        assert_eq!(
                            (status, reason.as_str()),
                            (i32::from(proxy.status.as_u16()), proxy.reason().as_str()),
                            "{who} {method} {path}"
                        );
                    }
                }
            }
            compared += 1;
        }
    }
    assert!(compared > 100, "{compared}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_request_id_is_kept_only_when_it_is_a_plain_id() {
    let (_echo, sc, mut client) = sidecar("").await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let t = sc.token(&u.id).await;

    let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let too_long = "a".repeat(65);
    for (id, kept) in [
        (uuid, true),
        ("", false),
        ("has space", false),
        ("line\nbreak", false),
        ("semi;colon", false),
        (too_long.as_str(), false),
    ] {
        let mut req = request("GET", "/stream", &[("x-bintu-token", &t)], CLIENT);
        if let Some(http) = req
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            http.id = id.to_owned();
        }
        let a = ask(&mut client, req).await;
        let got = &a.set()["x-request-id"];
        if kept {
            assert_eq!(got, id);
        } else {
            // rolegate's own: 20 hex digits
            assert_eq!(got.len(), 20, "{id:?} -> {got}");
            assert!(
                got.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id:?} -> {got}"
            );
        }
    }
}
