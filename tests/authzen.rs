//! The AuthZEN 1.0 evaluation API (`authzen_listen`): the specification's
//! evaluation and evaluations examples adapted to rolegate's entities, the
//! three batch semantics, the metadata document, the PEP's credential, the
//! transport's errors and request ids, and agreement with the proxy over the
//! whole permission matrix.

use serde_json::{json, Value};

use crate::support::{self, send, Echo, Options, Reply, Sidecar};
use rolegate::authz::routes::{Handler, ResourceId};
use rolegate::store::CreatedOrg;

/// The PEP's bearer secret, as written to `authzen_pep_token_file`.
const PEP: &str = "pep-secret-0123456789abcdef0123456789abcdef";
/// The X-Request-ID of the specification's HTTPS examples.
const SPEC_REQUEST_ID: &str = "bfe9eb29-ab87-4ca3-be83-a1d5d8305716";

/// A sidecar with the AuthZEN listener on, and an organisation with one
/// user per role.
struct World {
    sc: Sidecar,
    echo: Echo,
    az: String,
    acme: CreatedOrg,
    other: CreatedOrg,
    admin: rolegate::store::User,
    operator: rolegate::store::User,
    observer: rolegate::store::User,
    outsider: rolegate::store::User,
    _pep_dir: tempfile::TempDir,
}

async fn world(extra: &str) -> World {
    let echo = Echo::start().await;
    let pep_dir = tempfile::tempdir().unwrap();
    let pep_file = pep_dir.path().join("pep.tokens");
    // Two accepted credentials: rolling one needs no gap.
    std::fs::write(
        &pep_file,
        format!("old-pep-secret-0123456789abcdef0123456789\n{PEP}\n"),
    )
    .unwrap();
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: format!(
            "authzen_listen = \"127.0.0.1:0\"\nauthzen_pep_token_file = \"{}\"\n{extra}",
            pep_file.display()
        ),
        ..Default::default()
    })
    .await;
    let az = sc.authzen.clone().expect("authzen listener");
    let acme = sc.org("acme").await;
    let other = sc.org("globex").await;
    let admin = sc.user(&acme, "admin@acme.example", "nanoAdmin").await;
    let operator = sc.user(&acme, "operator@acme.example", "nanoUser").await;
    let observer = sc.user(&acme, "alice@acme.example", "nanoReadOnly").await;
    let outsider = sc.user(&other, "bob@globex.example", "nanoAdmin").await;
    World {
        sc,
        echo,
        az,
        acme,
        other,
        admin,
        operator,
        observer,
        outsider,
        _pep_dir: pep_dir,
    }
}

impl World {
    async fn post_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let auth = format!("Bearer {PEP}");
        let mut all = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        all.extend_from_slice(headers);
        send(&self.az, "POST", path, &all, Some(&body.to_string())).await
    }

    async fn evaluation(&self, body: Value) -> Reply {
        self.post_with("/access/v1/evaluation", &body, &[]).await
    }

    async fn evaluations(&self, body: Value) -> Reply {
        self.post_with("/access/v1/evaluations", &body, &[]).await
    }

    /// The `decision` of each evaluation of a 200 batch answer.
    async fn decisions(&self, body: Value) -> Vec<bool> {
        let r = self.evaluations(body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["evaluations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["decision"].as_bool().unwrap())
            .collect()
    }
}

/// The evaluations counted so far (`rolegate_authzen_evaluations_total`, all labels).
async fn evaluations_counted(sc: &Sidecar) -> f64 {
    sc.ops_get("/metrics")
        .await
        .body
        .lines()
        .filter(|l| l.starts_with("rolegate_authzen_evaluations_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn user(u: &rolegate::store::User) -> Value {
    json!({"type": "user", "id": u.id})
}

/// The specification's Access Evaluation example (and its HTTPS binding
/// with `X-Request-ID`): "can Alice read account 123" as "may the observer
/// (by email) get stream 123".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_specifications_evaluation_example() {
    let w = world("").await;
    let request = json!({
        "subject": {"type": "user", "id": "alice@acme.example"},
        "resource": {"type": "Stream", "id": "123"},
        "action": {"name": "getStream", "properties": {"method": "GET"}},
        "context": {"time": "1985-10-26T01:22-07:00"}
    });
    let r = w
        .post_with(
            "/access/v1/evaluation",
            &request,
            &[("x-request-id", SPEC_REQUEST_ID)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["x-request-id"], SPEC_REQUEST_ID);
    let d = r.json();
    assert_eq!(d["decision"], true);
    assert_eq!(d["context"]["reason"], "policy_allow");
    // Not an admin: no policy ids.
    assert!(d["context"].get("policies").is_none(), "{d}");

    // The same subject may not delete it: a 200 with `decision: false`.
    let mut deny = request.clone();
    deny["action"] = json!({"name": "deleteStream"});
    let d = w.evaluation(deny).await.json();
    assert_eq!(
        d,
        json!({"decision": false, "context": {"reason": "policy_deny"}})
    );

    // An admin may, and sees which policy decided; a stream of another
    // organisation is refused by tenant isolation, which an admin sees too.
    let mut admin = request.clone();
    admin["subject"] = user(&w.admin);
    admin["action"] = json!({"name": "deleteStream"});
    let d = w.evaluation(admin.clone()).await.json();
    assert_eq!(d["decision"], true);
    assert_eq!(d["context"]["policies"], json!(["nanoAdmin"]));
    admin["resource"]["properties"] = json!({"org": w.other.org.id});
    let d = w.evaluation(admin).await.json();
    assert_eq!(d["decision"], false);
    assert_eq!(d["context"]["policies"], json!(["tenant-isolation"]));
}

/// The Access Evaluations examples: three requests without defaults; with a
/// default subject and context; with a default action the third overrides;
/// and the HTTPS response example, where one evaluation failed and one was denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_specifications_evaluations_examples() {
    let w = world("").await;
    let alice = json!({"type": "user", "id": "alice@acme.example"});
    let time = json!({"time": "2024-05-31T15:22-07:00"});
    let read = |id: &str| {
        json!({"subject": alice, "action": {"name": "getStream"},
               "resource": {"type": "Stream", "id": id}, "context": time})
    };
    // No default values.
    let no_defaults = json!({"evaluations": [read("boxcarring"), read("subject-search"), read("resource-search")]});
    assert_eq!(w.decisions(no_defaults).await, [true, true, true]);

    // A single subject and context.
    let shared = json!({
        "subject": alice, "context": time,
        "evaluations": [
            {"action": {"name": "getStream"}, "resource": {"type": "Stream", "id": "boxcarring"}},
            {"action": {"name": "getStream"}, "resource": {"type": "Stream", "id": "subject-search"}},
            {"action": {"name": "getStream"}, "resource": {"type": "Stream", "id": "resource-search"}}
        ]
    });
    assert_eq!(w.decisions(shared).await, [true, true, true]);

    // A default action ("can_read"), overridden by the third ("can_edit"),
    // which the observer may not do.
    let overridden = json!({
        "subject": alice, "context": time, "action": {"name": "getStream"},
        "evaluations": [
            {"resource": {"type": "Stream", "id": "boxcarring"}},
            {"resource": {"type": "Stream", "id": "subject-search"}},
            {"action": {"name": "setStreamTags"}, "resource": {"type": "Stream", "id": "resource-search"}}
        ]
    });
    let r = w
        .post_with(
            "/access/v1/evaluations",
            &overridden,
            &[("x-request-id", SPEC_REQUEST_ID)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-request-id"], SPEC_REQUEST_ID);
    assert_eq!(r.headers["content-type"], "application/json");
    let body = r.json();
    assert!(body.get("decision").is_none(), "{body}");
    let got: Vec<Value> = body["evaluations"].as_array().unwrap().clone();
    assert_eq!(got[0]["decision"], true);
    assert_eq!(got[1]["decision"], true);
    assert_eq!(
        got[2],
        json!({"decision": false, "context": {"reason": "policy_deny"}})
    );

    // The HTTPS response example: permitted; an error in the second
    // evaluation (here: it names no resource); a deny with its reason.
    let mixed = json!({
        "subject": alice, "context": time, "action": {"name": "getStream"},
        "evaluations": [
            {"resource": {"type": "Stream", "id": "boxcarring"}},
            {"action": {"name": "getStream"}},
            {"action": {"name": "deleteStream"}, "resource": {"type": "Stream", "id": "resource-search"}}
        ]
    });
    let got = w.evaluations(mixed).await.json()["evaluations"].clone();
    assert_eq!(
        got[0],
        json!({"decision": true, "context": {"reason": "policy_allow"}})
    );
    assert_eq!(got[1]["decision"], false);
    assert_eq!(got[1]["context"]["reason"], "invalid_evaluation");
    assert_eq!(got[1]["context"]["error"]["status"], 400);
    assert!(got[1]["context"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("resource"));
    assert_eq!(
        got[2],
        json!({"decision": false, "context": {"reason": "policy_deny"}})
    );

    // Without evaluations (absent or empty) it is the single request.
    for evaluations in [json!(null), json!([])] {
        let mut single = read("boxcarring");
        if !evaluations.is_null() {
            single["evaluations"] = evaluations;
        }
        let d = w.evaluations(single).await.json();
        assert_eq!(
            d,
            json!({"decision": true, "context": {"reason": "policy_allow"}})
        );
    }
}

/// `execute_all`, `deny_on_first_deny` and `permit_on_first_permit` on the
/// specification's example (documents 1 and 3 readable, 2 not), and the
/// short-circuits evaluating nothing after the one that decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_evaluation_semantics() {
    let w = world("").await;
    let docs = |semantic: Option<&str>| {
        let mut body = json!({
            "subject": {"type": "user", "id": "alice@acme.example"},
            "action": {"name": "getStream"},
            "evaluations": [
                {"resource": {"type": "Stream", "id": "1"}},
                // Another organisation's stream: tenant isolation denies it.
                {"resource": {"type": "Stream", "id": "2", "properties": {"org": w.other.org.id}}},
                {"resource": {"type": "Stream", "id": "3"}}
            ]
        });
        if let Some(s) = semantic {
            body["options"] = json!({"evaluations_semantic": s, "another_option": "value"});
        }
        body
    };
    let mut counted = evaluations_counted(&w.sc).await;
    for (semantic, expected) in [
        (None, &[true, false, true][..]),
        (Some("execute_all"), &[true, false, true]),
        (Some("deny_on_first_deny"), &[true, false]),
        (Some("permit_on_first_permit"), &[true]),
    ] {
        assert_eq!(w.decisions(docs(semantic)).await, expected, "{semantic:?}");
        // Exactly the evaluations answered were made.
        let now = evaluations_counted(&w.sc).await;
        assert_eq!(now - counted, expected.len() as f64, "{semantic:?}");
        counted = now;
    }

    // With no permit, permit_on_first_permit answers every evaluation; a
    // failed evaluation is a deny that stops deny_on_first_deny.
    let none = json!({
        "subject": user(&w.observer),
        "action": {"name": "deleteStream"},
        "options": {"evaluations_semantic": "permit_on_first_permit"},
        "evaluations": [{"resource": {"type": "Stream", "id": "1"}}, {"resource": {"type": "Stream", "id": "2"}}]
    });
    assert_eq!(w.decisions(none).await, [false, false]);
    let failing = json!({
        "subject": user(&w.observer),
        "action": {"name": "getStream"},
        "options": {"evaluations_semantic": "deny_on_first_deny"},
        "evaluations": [{"resource": {"type": "Stream", "id": "1"}}, {"subject": {"type": "user"}}, {"resource": {"type": "Stream", "id": "3"}}]
    });
    assert_eq!(w.decisions(failing).await, [true, false]);
    // An unknown semantic is a bad request, not a guess.
    let r = w
        .evaluations(json!({"evaluations": [{}], "options": {"evaluations_semantic": "majority"}}))
        .await;
    assert_eq!(r.status, 400);
}

/// The metadata document: the identifier and both evaluation endpoints;
/// nothing rolegate does not offer (search, capabilities); no PEP
/// credential needed to read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_document() {
    let w = world("authzen_pdp_url = \"https://pdp.acme.example/\"\n").await;
    let r = send(
        &w.az,
        "GET",
        "/.well-known/authzen-configuration",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(
        r.json(),
        json!({
            "policy_decision_point": "https://pdp.acme.example",
            "access_evaluation_endpoint": "https://pdp.acme.example/access/v1/evaluation",
            "access_evaluations_endpoint": "https://pdp.acme.example/access/v1/evaluations"
        })
    );
    // Without `authzen_pdp_url`: the listener's own address.
    let plain = world("").await;
    let doc = send(
        &plain.az,
        "GET",
        "/.well-known/authzen-configuration",
        &[],
        None,
    )
    .await
    .json();
    assert_eq!(doc["policy_decision_point"], plain.az.as_str());
    assert_eq!(
        doc["access_evaluations_endpoint"],
        format!("{}/access/v1/evaluations", plain.az)
    );
    // The endpoints it names answer there.
    let d = plain
        .post_with(
            "/access/v1/evaluation",
            &json!({"subject": user(&plain.operator), "action": {"name": "createStream"}, "resource": {"type": "OrgResource", "id": "streams"}}),
            &[],
        )
        .await;
    assert_eq!(d.json()["decision"], true, "{}", d.body);
    // Anything else is a 404.
    for (method, path) in [
        ("GET", "/.well-known/authzen-configuration/tenant1"),
        ("GET", "/access/v1/evaluation"),
        ("POST", "/access/v1/search/subject"),
        ("GET", "/stream"),
    ] {
        let r = send(
            &plain.az,
            method,
            path,
            &[("authorization", &format!("Bearer {PEP}"))],
            None,
        )
        .await;
        assert_eq!(r.status, 404, "{method} {path}");
    }
}

/// A PEP without the credential, or with a wrong one (a user's API token,
/// the organisation's API key included), is refused with a 401 and the
/// platform's error body; the evaluation is not made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pep_without_the_credential_is_refused() {
    let w = world("").await;
    let body = json!({"subject": user(&w.admin), "action": {"name": "getStream"}, "resource": {"type": "Stream", "id": "1"}}).to_string();
    let token = w.sc.token(&w.admin.id).await;
    let before = evaluations_counted(&w.sc).await;
    for path in ["/access/v1/evaluation", "/access/v1/evaluations"] {
        for (auth, reason) in [
            (None, "pep_credential_required"),
            (Some(format!("Bearer {PEP}x")), "pep_credential_invalid"),
            (Some(format!("Bearer {token}")), "pep_credential_invalid"),
            (
                Some(format!("Bearer {}", w.acme.api_key)),
                "pep_credential_invalid",
            ),
            (Some(format!("Basic {PEP}")), "pep_credential_invalid"),
        ] {
            let mut headers = vec![
                ("content-type", "application/json"),
                ("x-request-id", "req-401"),
            ];
            if let Some(a) = &auth {
                headers.push(("authorization", a.as_str()));
            }
            let r = send(&w.az, "POST", path, &headers, Some(&body)).await;
            assert_eq!(r.status, 401, "{path} {auth:?}");
            assert_eq!(r.reason(), reason, "{path} {auth:?}");
            assert_eq!(r.json()["error"]["code"], 4002);
            assert!(r.headers.contains_key("www-authenticate"));
            assert_eq!(r.headers["x-request-id"], "req-401");
        }
    }
    assert_eq!(evaluations_counted(&w.sc).await, before);
    // The other configured credential is accepted too.
    let r = send(
        &w.az,
        "POST",
        "/access/v1/evaluation",
        &[
            ("content-type", "application/json"),
            (
                "authorization",
                "Bearer old-pep-secret-0123456789abcdef0123456789",
            ),
        ],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The transport's errors: a request the specification calls invalid is a
/// 400 (the certification scenario's cases), a body over the limit a 413;
/// the PEP's `X-Request-ID` is echoed on every answer, and one is sent when
/// the PEP sent none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_and_request_ids() {
    let w = world("").await;
    let ok = json!({"subject": {"type": "user", "id": "alice@acme.example"}, "action": {"name": "getStream"}, "resource": {"type": "Stream", "id": "record-1"}});
    let mut cases: Vec<Value> = Vec::new();
    for member in ["subject", "action", "resource"] {
        let mut c = ok.clone();
        c.as_object_mut().unwrap().remove(member);
        cases.push(c);
    }
    for (member, field) in [
        ("subject", "type"),
        ("subject", "id"),
        ("action", "name"),
        ("resource", "type"),
        ("resource", "id"),
    ] {
        let mut c = ok.clone();
        c[member].as_object_mut().unwrap().remove(field);
        cases.push(c);
    }
    let mut c = ok.clone();
    c["subject"] = json!("alice");
    cases.push(c);
    let mut c = ok.clone();
    c["action"]["name"] = json!(123);
    cases.push(c);
    let mut c = ok.clone();
    c["subject"]["properties"] = json!("not an object");
    cases.push(c);
    for path in ["/access/v1/evaluation", "/access/v1/evaluations"] {
        for c in &cases {
            let r = w.post_with(path, c, &[("x-request-id", "bad-1")]).await;
            assert_eq!(r.status, 400, "{path} {c}");
            assert_eq!(r.headers["x-request-id"], "bad-1");
            assert_eq!(r.json()["error"]["code"], 1002);
        }
    }
    let auth = format!("Bearer {PEP}");
    for (content_type, body, reason) in [
        (Some("text/plain"), ok.to_string(), "unsupported_media_type"),
        (None, ok.to_string(), "unsupported_media_type"),
        (
            Some("application/json"),
            "{\"subject\":".to_owned(),
            "invalid_body",
        ),
        (Some("application/json"), String::new(), "invalid_body"),
        (Some("application/json"), "[1,2]".to_owned(), "invalid_body"),
    ] {
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(t) = content_type {
            headers.push(("content-type", t));
        }
        let r = send(
            &w.az,
            "POST",
            "/access/v1/evaluation",
            &headers,
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 400, "{content_type:?} {body}");
        assert_eq!(r.reason(), reason);
    }
    // `application/json; charset=utf-8` is JSON.
    let r = send(
        &w.az,
        "POST",
        "/access/v1/evaluation",
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json; charset=utf-8"),
        ],
        Some(&ok.to_string()),
    )
    .await;
    assert_eq!(r.status, 200);
    // Unknown members are ignored.
    let mut extra = ok.clone();
    extra["foo"] = json!("bar");
    extra["futureField"] = json!({"nested": true});
    assert_eq!(w.evaluation(extra).await.json()["decision"], true);

    // Over a MiB: refused by its declared length before it is read.
    let big = json!({"subject": {"type": "user", "id": "x".repeat(1024 * 1024)}, "action": {"name": "getStream"}, "resource": {"type": "Stream", "id": "1"}});
    let r = w.evaluation(big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.reason(), "payload_too_large");
    // Too many evaluations in one batch.
    let many: Vec<Value> = (0..1025).map(|_| json!({})).collect();
    let r = w.evaluations(json!({"subject": ok["subject"], "action": ok["action"], "resource": ok["resource"], "evaluations": many})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.reason(), "too_many_evaluations");

    // A request id: echoed as sent; generated when absent; two are ambiguous.
    let r = w
        .post_with(
            "/access/v1/evaluation",
            &ok,
            &[("x-request-id", SPEC_REQUEST_ID)],
        )
        .await;
    assert_eq!(r.headers["x-request-id"], SPEC_REQUEST_ID);
    let r = w.evaluation(ok.clone()).await;
    assert!(!r.headers["x-request-id"].is_empty());
    let r = w
        .post_with(
            "/access/v1/evaluation",
            &ok,
            &[("x-request-id", "a"), ("x-request-id", "b")],
        )
        .await;
    assert_eq!(r.status, 400);
    let r = send(
        &w.az,
        "GET",
        "/.well-known/authzen-configuration",
        &[("x-request-id", "meta-1")],
        None,
    )
    .await;
    assert_eq!(r.headers["x-request-id"], "meta-1");
}

/// The Cedar profile's doubts are denies with a reason; the subject's role
/// is the store's current one, so a role change applies to the next evaluation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cedar_profile_denies_any_doubt_and_follows_role_changes() {
    let w = world("").await;
    let ask = |subject: Value, action: &str, resource: Value| json!({"subject": subject, "action": {"name": action}, "resource": resource});
    let stream = json!({"type": "Stream", "id": "s1"});
    for (body, reason) in [
        (
            ask(
                json!({"type": "user", "id": "nobody"}),
                "getStream",
                stream.clone(),
            ),
            "unknown_user",
        ),
        (
            ask(
                json!({"type": "user", "id": "nobody@acme.example"}),
                "getStream",
                stream.clone(),
            ),
            "unknown_user",
        ),
        (
            ask(
                json!({"type": "group", "id": "admins"}),
                "getStream",
                stream.clone(),
            ),
            "unknown_subject_type",
        ),
        (
            ask(user(&w.admin), "read", stream.clone()),
            "unknown_action",
        ),
        (
            ask(user(&w.admin), "can_read", stream.clone()),
            "unknown_action",
        ),
        (
            ask(
                user(&w.admin),
                "getStream",
                json!({"type": "document", "id": "1"}),
            ),
            "unknown_resource_type",
        ),
        (
            ask(
                user(&w.admin),
                "getStream",
                json!({"type": "Stream", "id": "s1", "properties": {"org": 7}}),
            ),
            "invalid_parameter",
        ),
        (
            ask(
                json!({"type": "user", "id": w.admin.id, "properties": {"ip_address": "not-an-ip"}}),
                "getStream",
                stream.clone(),
            ),
            "invalid_parameter",
        ),
    ] {
        let d = w.evaluation(body.clone()).await.json();
        assert_eq!(d["decision"], false, "{body}");
        assert_eq!(d["context"]["reason"], reason, "{body}");
    }
    // A user of another organisation is not the admin's to delete; their own is.
    let d = w
        .evaluation(ask(
            user(&w.admin),
            "deleteUser",
            json!({"type": "User", "id": w.outsider.id}),
        ))
        .await
        .json();
    assert_eq!(d["decision"], false);
    assert_eq!(d["context"]["policies"], json!(["tenant-isolation"]));
    let d = w
        .evaluation(ask(
            user(&w.admin),
            "deleteUser",
            json!({"type": "User", "id": w.observer.id}),
        ))
        .await
        .json();
    assert_eq!(d["decision"], true);

    // The operator may create streams, until demoted; then at once not.
    let create = ask(
        user(&w.operator),
        "createStream",
        json!({"type": "OrgResource", "id": "streams"}),
    );
    assert_eq!(w.evaluation(create.clone()).await.json()["decision"], true);
    let admin_token = w.sc.token(&w.admin.id).await;
    let r =
        w.sc.send(
            "PUT",
            "/user/permission",
            &[
                support::tok(&admin_token),
                ("content-type", "application/json"),
            ],
            Some(&json!({"userId": w.operator.id, "permission": "nanoReadOnly"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(w.evaluation(create).await.json()["decision"], false);
}

/// The gateway profile under hostile input, as the proxy: a forged or
/// renewed token, two credentials, a path normalisation would change, a
/// method override: each a deny with the proxy's reason and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_profile_applies_the_proxys_rules() {
    let w = world("").await;
    let token = w.sc.token(&w.operator.id).await;
    let route = |subject: Value, method: &str, path: &str, context: Value| json!({"subject": subject, "action": {"name": method}, "resource": {"type": "route", "id": path}, "context": context});
    let bearer = json!({"type": "token", "id": token});
    let d = w
        .evaluation(route(bearer.clone(), "GET", "/stream/s1", json!({})))
        .await
        .json();
    assert_eq!(
        d,
        json!({"decision": true, "context": {"reason": "policy_allow", "status": 200}})
    );
    // The credential in the original request's headers instead.
    let in_headers = route(
        json!({"type": "anonymous", "id": "gateway-request-17"}),
        "GET",
        "/stream/s1",
        json!({"headers": {"authorization": format!("Bearer {token}")}}),
    );
    assert_eq!(w.evaluation(in_headers).await.json()["decision"], true);

    // One character of the signature changed (not its last, whose low bits
    // base64 may not use): a well-formed token with a wrong MAC.
    let at = token.rfind('.').unwrap() + 3;
    let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
    for (body, reason, status) in [
        (
            route(
                json!({"type": "token", "id": forged}),
                "GET",
                "/stream/s1",
                json!({}),
            ),
            "token_bad_signature",
            401,
        ),
        (
            route(
                bearer.clone(),
                "GET",
                "/stream/s1",
                json!({"headers": {"x-bintu-apikey": w.acme.api_key}}),
            ),
            "multiple_credentials",
            401,
        ),
        (
            route(
                json!({"type": "anonymous", "id": "-"}),
                "GET",
                "/stream/s1",
                json!({"headers": {"x-bintu-token": [token.clone(), token.clone()]}}),
            ),
            "duplicate_credential_header",
            401,
        ),
        (
            route(bearer.clone(), "GET", "/stream//s1", json!({})),
            "path_not_normal",
            400,
        ),
        (
            route(bearer.clone(), "GET", "/stream/%2e%2e/tag", json!({})),
            "path_encoded_separator",
            400,
        ),
        (
            route(
                bearer.clone(),
                "GET",
                "/stream/s1",
                json!({"headers": {"x-http-method-override": "DELETE"}}),
            ),
            "method_override",
            400,
        ),
        (
            route(
                bearer.clone(),
                "GET",
                "/stream/s1?_method=DELETE",
                json!({}),
            ),
            "method_override",
            400,
        ),
        (
            route(bearer.clone(), "DELETE", "/stream/s1", json!({})),
            "policy_deny",
            403,
        ),
        (
            route(bearer.clone(), "GET", "/nowhere", json!({})),
            "no_route",
            403,
        ),
        (
            route(bearer.clone(), "get", "/stream/s1", json!({})),
            "no_route",
            403,
        ),
        (
            route(bearer.clone(), "GET", "/user", json!({})),
            "not_forwardable",
            403,
        ),
        (
            route(
                json!({"type": "anonymous", "id": "-"}),
                "GET",
                "/stream/s1",
                json!({}),
            ),
            "credential_required",
            401,
        ),
        (
            route(
                json!({"type": "user", "id": w.operator.id}),
                "GET",
                "/stream/s1",
                json!({}),
            ),
            "unknown_subject_type",
            0,
        ),
    ] {
        let d = w.evaluation(body.clone()).await.json();
        assert_eq!(d["decision"], false, "{body}");
        assert_eq!(d["context"]["reason"], reason, "{body}");
        if status != 0 {
            assert_eq!(d["context"]["status"], status, "{body}");
        }
    }
    // A path encoding normalisation refuses: the reason the proxy gives.
    let proxy =
        w.sc.send("GET", "/stream/%2e%2e/tag", &[support::tok(&token)], None)
            .await;
    assert_eq!(proxy.reason(), "path_encoded_separator");

    // A tokenKey renewal bites on the next evaluation.
    let admin_token = w.sc.token(&w.admin.id).await;
    let r =
        w.sc.send(
            "PUT",
            "/user/tokenkey",
            &[
                support::tok(&admin_token),
                ("content-type", "application/json"),
            ],
            Some(&json!({"userId": w.operator.id}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = w
        .evaluation(route(bearer, "GET", "/stream/s1", json!({})))
        .await
        .json();
    assert_eq!(d["decision"], false);
    assert_eq!(d["context"]["status"], 401);
    assert_eq!(
        w.echo.count(),
        0,
        "an evaluation never reaches the upstream"
    );
}

/// One caller of the permission matrix: as an AuthZEN subject and as the
/// credential header the proxy reads.
struct Caller<'a> {
    name: String,
    subject: Value,
    header: Option<(&'static str, String)>,
    user: Option<&'a rolegate::store::User>,
}

/// The gateway profile's decision equals what the proxy does, over the
/// whole permission matrix: every route of the table × each role's token,
/// the API key, the player key and no credential. Upstream routes are sent
/// through the proxy (allowed: the echo saw it; denied: the same status and
/// reason); rolegate's own routes are not forwardable, and where Cedar
/// denies them the proxy gives the same deny. For users, the Cedar profile
/// on the route's action and resource agrees too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_decisions_agree_with_the_proxy_over_the_permission_matrix() {
    let w = world("").await;
    let snapshot = w.sc.state.policies.current();
    let routes = snapshot.routes.routes().to_vec();
    let mut callers: Vec<Caller> = Vec::new();
    for u in [&w.admin, &w.operator, &w.observer] {
        let t = w.sc.token(&u.id).await;
        callers.push(Caller {
            name: u.role.clone(),
            subject: json!({"type": "token", "id": t}),
            header: Some(("x-bintu-token", t)),
            user: Some(u),
        });
    }
    for (kind, header, key) in [
        ("apikey", "x-bintu-apikey", &w.acme.api_key),
        ("playerkey", "x-bintu-playerkey", &w.acme.player_key),
    ] {
        callers.push(Caller {
            name: kind.to_owned(),
            subject: json!({"type": kind, "id": key}),
            header: Some((header, key.clone())),
            user: None,
        });
    }
    callers.push(Caller {
        name: "anonymous".to_owned(),
        subject: json!({"type": "anonymous", "id": "anonymous"}),
        header: None,
        user: None,
    });

    // A concrete path per route: users by a real id of the organisation.
    let concrete = |template: &str, resource_type: &str| -> (String, String) {
        let id = if resource_type == "User" {
            w.observer.id.clone()
        } else {
            "r-1".to_owned()
        };
        let path = template
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    id.as_str()
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        (path, id)
    };
    let (mut allowed, mut denied, mut local) = (0, 0, 0);
    for caller in &callers {
        let (name, subject) = (&caller.name, &caller.subject);
        let hdrs: Vec<(&str, &str)> = caller
            .header
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        let evaluations: Vec<Value> = routes
            .iter()
            .map(|r| {
                let (path, _) = concrete(&r.template, &r.resource_type);
                json!({"action": {"name": r.method}, "resource": {"type": "route", "id": path}})
            })
            .collect();
        let r = w
            .evaluations(json!({"subject": subject, "evaluations": evaluations}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let answers = r.json()["evaluations"].as_array().unwrap().clone();
        assert_eq!(answers.len(), routes.len());
        for (route, answer) in routes.iter().zip(&answers) {
            let (path, id) = concrete(&route.template, &route.resource_type);
            let what = format!("{name}: {} {path}", route.method);
            let decision = answer["decision"].as_bool().unwrap();
            let reason = answer["context"]["reason"].as_str().unwrap().to_owned();
            let cedar_allowed = decision || reason == "not_forwardable";
            if route.handler == Handler::Upstream {
                let seen = w.echo.count();
                let body = (route.method != "GET" && route.method != "DELETE").then_some("{}");
                let proxy = w.sc.send(&route.method, &path, &hdrs, body).await;
                let forwarded = w.echo.count() == seen + 1;
                assert_eq!(
                    decision, forwarded,
                    "{what}: authzen {answer}, proxy {} {}",
                    proxy.status, proxy.body
                );
                assert_eq!(answer["context"]["status"], proxy.status.as_u16(), "{what}");
                if !forwarded {
                    assert_eq!(reason, proxy.reason(), "{what}");
                    denied += 1;
                } else {
                    allowed += 1;
                }
            } else {
                assert!(
                    !decision,
                    "{what}: rolegate's own routes are not forwardable"
                );
                local += 1;
                if reason != "not_forwardable" {
                    // Denied before any endpoint runs: safe to ask the proxy.
                    let proxy = w.sc.send(&route.method, &path, &hdrs, Some("{}")).await;
                    assert_eq!(answer["context"]["status"], proxy.status.as_u16(), "{what}");
                    assert_eq!(reason, proxy.reason(), "{what}");
                }
            }
            // The Cedar profile, for users, on the route's action and resource.
            if let (Some(u), false) = (caller.user, route.resource_id == ResourceId::Target) {
                let resource_id = match &route.resource_id {
                    ResourceId::Fixed(f) => f.clone(),
                    _ => id.clone(),
                };
                let d = w
                    .evaluation(json!({"subject": user(u), "action": {"name": route.action},
                        "resource": {"type": route.resource_type, "id": resource_id}}))
                    .await
                    .json();
                assert_eq!(d["decision"], cedar_allowed, "{what}: cedar profile {d}");
            }
        }
    }
    assert_eq!(allowed + denied + local, routes.len() * callers.len());
    assert!(
        allowed >= 30 && denied >= 30 && local > 0,
        "{allowed} allowed, {denied} denied, {local} local"
    );
}

/// Who the PEP's settings let in, and what stops start-up.
#[test]
fn a_bad_authzen_setting_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "too-short\n").unwrap();
    let good = dir.path().join("good");
    std::fs::write(&good, format!("{PEP}\n")).unwrap();
    for (env, setting) in [
        (
            vec![("ROLEGATE_AUTHZEN_LISTEN", "not-an-address")],
            "authzen_listen",
        ),
        (
            vec![("ROLEGATE_AUTHZEN_LISTEN", "127.0.0.1:0")],
            "authzen_pep_token_file",
        ),
        (
            vec![
                ("ROLEGATE_AUTHZEN_LISTEN", "127.0.0.1:0"),
                ("ROLEGATE_AUTHZEN_PEP_TOKEN_FILE", short.to_str().unwrap()),
            ],
            "authzen_pep_token_file",
        ),
        (
            vec![
                ("ROLEGATE_AUTHZEN_LISTEN", "127.0.0.1:0"),
                ("ROLEGATE_AUTHZEN_PEP_TOKEN_FILE", good.to_str().unwrap()),
                ("ROLEGATE_AUTHZEN_PDP_URL", "https://pdp.example/tenant?x=1"),
            ],
            "authzen_pdp_url",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rolegate"))
            .args([
                "serve",
                "--upstream",
                "http://127.0.0.1:9",
                "--store",
                dir.path().join("db").to_str().unwrap(),
            ])
            .current_dir(support::repo())
            .env("ROLEGATE_MASTER_SECRET", support::MASTER_SECRET)
            .env("ROLEGATE_LOG_FORMAT", "text")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{env:?}: {}",
            support::text(&out)
        );
        assert!(
            support::text(&out).contains(&format!("setting `{setting}`")),
            "{env:?}: {}",
            support::text(&out)
        );
    }
}

/// On the guarded playback prefix the gateway profile decides as the proxy
/// does there: with the viewer's playback token (as the subject, or in the
/// query), for the streams it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_profile_decides_the_playback_prefix_as_the_proxy() {
    let w = world("playback_prefix = \"/playback\"\n").await;
    let api = w.sc.token(&w.operator.id).await;
    let r =
        w.sc.send(
            "POST",
            "/playback/token",
            &[support::tok(&api)],
            Some(&json!({"streams": ["s1"]}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.json()["data"]["token"].as_str().unwrap().to_owned();
    let viewer = json!({"type": "playback", "id": t});
    let anonymous = json!({"type": "anonymous", "id": "viewer"});
    for (subject, path, query) in [
        (&viewer, "/playback/s1/index.m3u8", None),
        (&viewer, "/playback/s2/index.m3u8", None),
        (
            &anonymous,
            "/playback/s1/index.m3u8",
            Some(format!("token={t}")),
        ),
        (&anonymous, "/playback/s1/index.m3u8", None),
    ] {
        let id = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        let d = w
            .evaluation(json!({"subject": subject, "action": {"name": "GET"}, "resource": {"type": "route", "id": id}}))
            .await
            .json();
        let bearer = format!("Bearer {t}");
        let headers: Vec<(&str, &str)> = if subject["type"] == "playback" {
            vec![("authorization", bearer.as_str())]
        } else {
            vec![]
        };
        let seen = w.echo.count();
        let proxy = w.sc.send("GET", &id, &headers, None).await;
        let forwarded = w.echo.count() == seen + 1;
        assert_eq!(d["decision"], forwarded, "{id}: {d} vs {}", proxy.status);
        assert_eq!(d["context"]["status"], proxy.status.as_u16(), "{id}");
        if !forwarded {
            assert_eq!(d["context"]["reason"], proxy.reason(), "{id}");
        }
    }
    assert_eq!(
        w.echo.count(),
        2,
        "the proxy forwarded the two allowed plays"
    );
}
