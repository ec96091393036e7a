//! `rolegate demo`: everything a newcomer needs to see allow and deny within a
//! minute. It starts an example stream API on loopback, rolegate in front of it
//! on a throwaway SQLite file, creates one organisation with one user per role,
//! and prints their tokens and curl lines to paste.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Args;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::{overrides, CliError, ListenArgs};
use crate::app;
use crate::config::Settings;
use crate::store::NewUser;

#[derive(Debug, Clone, Default, Args)]
pub struct DemoArgs {
    /// Exit after this many seconds (default: run until Ctrl-C)
    #[arg(long, value_name = "SECONDS")]
    pub exit_after: Option<u64>,
    #[command(flatten)]
    pub listen: ListenArgs,
}

type Streams = Arc<Mutex<HashMap<String, Vec<Value>>>>;

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// The example stream API: streams per organisation (taken from the identity
/// headers rolegate sets), in memory.
async fn example_api(streams: Streams, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let org = header("x-rolegate-org-id");
    let caller = json!({"user": header("x-rolegate-user-id"), "role": header("x-rolegate-role"), "org": org});
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut all = match streams.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let list = all.entry(org).or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["stream"]) => {
            reply(StatusCode::OK, json!({"data": list, "caller": caller}))
        }
        (&Method::POST, ["stream"]) => {
            let req_body: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
            let s = json!({
                "id": format!("stream-{}", list.len() + 1),
                "state": "created",
                "tags": req_body.get("tags").cloned().unwrap_or(json!([])),
            });
            list.push(s.clone());
            reply(StatusCode::CREATED, json!({"data": s, "caller": caller}))
        }
        (&Method::GET, ["stream", id]) => match list.iter().find(|s| s["id"] == *id) {
            Some(s) => reply(StatusCode::OK, json!({"data": s, "caller": caller})),
            None => reply(
                StatusCode::NOT_FOUND,
                json!({"error": {"code": 3404, "message": "Stream not found"}}),
            ),
        },
        (&Method::DELETE, ["stream", id]) => {
            let before = list.len();
            list.retain(|s| s["id"] != *id);
            if list.len() < before {
                reply(
                    StatusCode::OK,
                    json!({"data": {"id": id, "state": "deleted"}, "caller": caller}),
                )
            } else {
                reply(
                    StatusCode::NOT_FOUND,
                    json!({"error": {"code": 3404, "message": "Stream not found"}}),
                )
            }
        }
        _ => reply(
            StatusCode::OK,
            json!({"data": null, "method": method.as_str(), "path": path, "caller": caller}),
        ),
    }
}

/// Serve the example stream API on `listener` until the task is dropped.
pub async fn serve_example_api(listener: TcpListener) {
    let streams: Streams = Arc::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let streams = streams.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let streams = streams.clone();
                async move { Ok::<_, Infallible>(example_api(streams, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A demo set-up step failed.
fn demo_error(msg: impl std::fmt::Display) -> CliError {
    CliError::Demo(msg.to_string())
}

pub fn run(config: Option<&Path>, args: &DemoArgs) -> Result<(), CliError> {
    super::runtime(None)?.block_on(demo(config, args))
}

async fn demo(config: Option<&Path>, args: &DemoArgs) -> Result<(), CliError> {
    crate::telemetry::init();
    let upstream = TcpListener::bind("127.0.0.1:0").await.map_err(demo_error)?;
    let upstream_addr: SocketAddr = upstream.local_addr().map_err(demo_error)?;
    tokio::spawn(serve_example_api(upstream));

    let dir = std::env::temp_dir().join(format!("rolegate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(demo_error)?;
    let secret_file = dir.join("master.secret");
    let secret = hex::encode(crate::store::random_key());
    std::fs::write(&secret_file, &secret).map_err(demo_error)?;

    let mut o = overrides(config);
    args.listen.apply(&mut o);
    o.upstream = Some(format!("http://{upstream_addr}"));
    o.store = Some(dir.join("rolegate.db").display().to_string());
    o.master_secret_file = Some(secret_file);
    let settings =
        Settings::resolve(&o, &crate::config::ProcessEnv, true).map_err(CliError::DemoConfig)?;

    let state = app::build(settings.clone()).await.map_err(demo_error)?;
    let org = state.store.create_org("demo").await.map_err(demo_error)?;
    let mut tokens = Vec::new();
    // One password for the three demo users, new each run, to sign in to the dashboard.
    let password = crate::store::random_token("demo-");
    let password_hash = crate::authn::password::hash_off_thread(password.clone())
        .await
        .map_err(demo_error)?;
    for (role, email) in [
        ("nanoAdmin", "admin@demo.example"),
        ("nanoUser", "operator@demo.example"),
        ("nanoReadOnly", "observer@demo.example"),
    ] {
        let user = state
            .store
            .create_user(NewUser {
                org_id: org.org.id.clone(),
                email: email.to_owned(),
                role: role.to_owned(),
                password_hash: Some(password_hash.clone()),
            })
            .await
            .map_err(demo_error)?;
        let token = super::token::mint(&settings, &user)?;
        tokens.push((role, email, user.id, token));
    }
    let running = app::start(state).await.map_err(demo_error)?;
    let base = format!("http://{}", running.data_addr);
    let token_of = |role: &str| {
        tokens
            .iter()
            .find(|t| t.0 == role)
            .map(|t| t.3.clone())
            .unwrap_or_default()
    };

    let mut out = String::new();
    out.push_str(&format!(
        "\nrolegate demo is running\n  sidecar:        {base}\n  ops:            http://{}  (/ready /metrics /status)\n  example API:    http://{upstream_addr}  (the upstream)\n  store:          {}\n\n",
        running.ops_addr,
        dir.join("rolegate.db").display()
    ));
    if let Some(prefix) = &settings.dashboard_prefix {
        out.push_str(&format!(
            "Dashboard (user management): {base}{prefix}/\n  sign in as any user below with the password {password}\n\n"
        ));
    }
    out.push_str("Users of organisation `demo`:\n");
    for (role, email, id, _) in &tokens {
        out.push_str(&format!("  {role:<13} {email:<24} {id}\n"));
    }
    out.push_str(&format!(
        "\nOrganisation API key (acts as nanoAdmin): {}\n\n",
        org.api_key
    ));
    out.push_str("Paste these:\n\n");
    out.push_str(&format!(
        "  export ADMIN='{}'\n  export OPERATOR='{}'\n  export OBSERVER='{}'\n\n",
        token_of("nanoAdmin"),
        token_of("nanoUser"),
        token_of("nanoReadOnly")
    ));
    out.push_str(&format!(
        "  # allow: the operator creates a stream (201)\n  curl -i -X POST -H \"X-BINTU-TOKEN: $OPERATOR\" -d '{{\"tags\":[\"demo\"]}}' {base}/stream\n\n\
         # allow: the observer lists streams (200)\n  curl -i -H \"X-BINTU-TOKEN: $OBSERVER\" {base}/stream\n\n\
         # deny: the observer may not delete a stream (403, code 2001)\n  curl -i -X DELETE -H \"X-BINTU-TOKEN: $OBSERVER\" {base}/stream/stream-1\n\n\
         # deny: the operator may not either (stop/lock/delete are nanoAdmin only)\n  curl -i -X DELETE -H \"X-BINTU-TOKEN: $OPERATOR\" {base}/stream/stream-1\n\n\
         # allow: the admin may (200)\n  curl -i -X DELETE -H \"Authorization: Bearer $ADMIN\" {base}/stream/stream-1\n\n\
         # no credential: 401\n  curl -i {base}/stream\n\n"
    ));
    out.push_str("Press Ctrl-C to stop.\n");
    // Listening before the prompt: a signal right after it must stop cleanly.
    let signal = super::serve::shutdown_signal();
    // One write, errors ignored: a reader that stops early (`| head`) must
    // not turn into a panic (println! panics on a closed pipe).
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }

    match args.exit_after {
        Some(secs) => {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(secs)) => {}
                _ = signal => {}
            }
        }
        None => signal.await,
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
