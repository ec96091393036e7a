//! The OpenAPI description of rolegate's own endpoints (`openapi/rolegate.json`)
//! against what rolegate serves: every local-endpoint route of the live route
//! table (and forward-auth) is documented and nothing else is, with the same
//! path template; every ops endpoint likewise; the document the ops listener
//! serves is the file; the reason codes it lists are the code's.
//! (schemathesis checks the answers themselves: `scripts/api-fuzz`.)

use std::collections::BTreeSet;

use http::StatusCode;
use serde_json::Value;

use rolegate::authz::routes::{Endpoint, Handler};
use rolegate::reason::Reason;

use crate::support::{repo, send, Echo, Options, Sidecar};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn file() -> String {
    std::fs::read_to_string(repo().join("openapi/rolegate.json")).unwrap()
}

fn document() -> Value {
    serde_json::from_str(&file()).unwrap()
}

/// One documented operation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Operation {
    method: String,
    path: String,
    id: String,
}

/// The operations on the data listener (the document's default server) and on
/// the ops listener (paths whose own `servers` name it).
fn operations(doc: &Value) -> (Vec<Operation>, Vec<Operation>) {
    let ops_url = doc["paths"]["/live"]["servers"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut data, mut ops) = (Vec::new(), Vec::new());
    for (path, item) in doc["paths"].as_object().unwrap() {
        let on_ops = match item.get("servers") {
            None => false,
            Some(s) => {
                assert_eq!(s[0]["url"], ops_url.as_str(), "{path}: unknown server");
                true
            }
        };
        for m in METHODS {
            if let Some(op) = item.get(m) {
                let o = Operation {
                    method: m.to_ascii_uppercase(),
                    path: path.clone(),
                    id: op["operationId"].as_str().unwrap_or("").to_owned(),
                };
                if on_ops {
                    ops.push(o);
                } else {
                    data.push(o);
                }
            }
        }
    }
    (data, ops)
}

fn pairs(ops: &[Operation]) -> BTreeSet<(String, String)> {
    ops.iter()
        .map(|o| (o.method.clone(), o.path.clone()))
        .collect()
}

/// A concrete path for a template: every `{param}` filled in.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|s| if s.starts_with('{') { "no-such-id" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_document_lists_exactly_the_live_local_routes() {
    let echo = Echo::start().await;
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: "trusted_proxies = [\"127.0.0.1/32\"]\n".to_owned(),
        ..Default::default()
    })
    .await;
    let doc = document();
    let (data, _) = operations(&doc);

    let snapshot = sc.state.policies.current();
    let mut live = BTreeSet::new();
    let mut endpoints = BTreeSet::new();
    for route in snapshot.routes.routes() {
        let Handler::Local(endpoint) = route.handler else {
            continue;
        };
        endpoints.insert(endpoint.name());
        live.insert((route.method.clone(), route.template.clone()));
        // The operation id is the route's Cedar action: one name for one thing.
        let op = data
            .iter()
            .find(|o| o.method == route.method && o.path == route.template);
        assert_eq!(
            op.map(|o| o.id.as_str()),
            Some(route.action.as_str()),
            "{} {}",
            route.method,
            route.template
        );
    }
    live.insert(("GET".to_owned(), rolegate::forward_auth::PATH.to_owned()));
    assert_eq!(pairs(&data), live, "documented vs routed");
    // Every endpoint rolegate has code for is reached by a shipped route, so
    // the comparison above covers each of them.
    let all: BTreeSet<&str> = Endpoint::ALL.iter().map(|(_, n)| *n).collect();
    assert_eq!(endpoints, all);

    // And the running sidecar routes each documented operation: asked without
    // a credential, none is answered "no route".
    for o in &data {
        let r = sc.send(&o.method, &concrete(&o.path), &[], None).await;
        assert_ne!(
            r.reason(),
            "no_route",
            "{} {}: {} {}",
            o.method,
            o.path,
            r.status,
            r.body
        );
        assert!(
            r.status.is_client_error() || r.status.is_success(),
            "{} {}: {}",
            o.method,
            o.path,
            r.status
        );
    }
    // A method the document does not list for a documented path is not routed.
    let r = sc.send("PATCH", "/organisation", &[], None).await;
    assert_eq!(
        (r.status, r.reason().as_str()),
        (StatusCode::FORBIDDEN, "no_route")
    );
}

#[tokio::test]
async fn the_document_lists_exactly_the_ops_endpoints() {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    let (_, ops) = operations(&document());
    let served: BTreeSet<(String, String)> = rolegate::ops::ENDPOINTS
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(pairs(&ops), served);
    for o in &ops {
        let r = send(&sc.ops, &o.method, &o.path, &[], None).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{} {}: {}",
            o.method,
            o.path,
            r.body
        );
        // Another method on the path: 405 naming the documented one.
        let other = if o.method == "GET" { "DELETE" } else { "GET" };
        let r = send(&sc.ops, other, &o.path, &[], None).await;
        assert_eq!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{other} {}",
            o.path
        );
        assert_eq!(r.headers["allow"], o.method.as_str(), "{other} {}", o.path);
    }
    let r = send(&sc.ops, "GET", "/no-such-path", &[], None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_ops_listener_serves_the_document_as_shipped() {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    let r = sc.ops_get("/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/json; charset=utf-8");
    assert_eq!(r.body, file(), "the served document differs from the file");
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn the_documented_reason_codes_are_the_codes_rolegate_gives() {
    let doc = document();
    let documented: BTreeSet<&str> = doc["components"]["schemas"]["Reason"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // The allow labels name outcomes of allowed requests (a metrics label),
    // never the reason of an error body.
    let allows = [Reason::Forwarded, Reason::Local, Reason::ForwardAuth];
    let codes: BTreeSet<&str> = Reason::ALL
        .iter()
        .filter(|r| !allows.contains(r))
        .map(|r| r.as_str())
        .collect();
    assert_eq!(documented, codes);
}

#[test]
fn every_data_listener_operation_documents_the_refusals_before_its_handler() {
    // Whatever the operation, the data listener's pipeline can refuse the
    // request before its handler runs: a bad target or head (400), no valid
    // credential (401), a deny (403), a declared body over the limit (413), not
    // ready or no store (503). Each must be in the document, in ApiError shape.
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if item.get("servers").is_some() {
            continue;
        }
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            for status in ["400", "401", "403", "413", "503"] {
                let resp = &op["responses"][status];
                assert!(!resp.is_null(), "{m} {path}: no {status}");
                let text = resp.to_string();
                assert!(
                    text.contains("#/components/responses/") || text.contains("ApiError"),
                    "{m} {path} {status}: not the platform's error shape"
                );
            }
        }
    }
}
