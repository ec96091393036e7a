//! The ops listener (loopback by default): `/live`, `/ready`, `/metrics`,
//! `/status` and `POST /reload`. It runs on the same runtime as the data
//! listener but shares nothing on its path, so probes stay cheap.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::error::{empty_response, json_response, LocalBody};
use crate::state::AppState;

/// How long a readiness probe waits for the store before calling it unhealthy.
const STORE_PING_TIMEOUT: Duration = Duration::from_secs(2);

async fn store_health(state: &AppState) -> Result<(), String> {
    match tokio::time::timeout(STORE_PING_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("store did not answer in time".to_owned()),
    }
}

/// This replica's place in the change log, and every replica's last heartbeat.
async fn change_log_status(state: &AppState) -> serde_json::Value {
    use crate::store::changelog::LIVE_MS;
    let now = crate::clock::unix_now_ms();
    let progress = &state.follower;
    let replicas = match state.store.replicas().await {
        Ok(beats) => json!(beats
            .into_iter()
            .map(|b| json!({
                "id": b.id,
                "applied": b.applied,
                "heartbeat_age_ms": now - b.seen_at_ms,
                "live": now - b.seen_at_ms < LIVE_MS,
            }))
            .collect::<Vec<_>>()),
        Err(e) => json!({ "error": e.to_string() }),
    };
    json!({
        "replica_id": progress.replica_id(),
        "applied": progress.applied(),
        "head": progress.head(),
        "lag_seconds": progress.lag_ms(now) as f64 / 1000.0,
        "replicas": replicas,
    })
}

pub async fn route(state: &AppState, req: Request<Incoming>) -> Response<LocalBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => json_response(StatusCode::OK, &json!({"status": "live"})),
        (&Method::GET, "/ready") => {
            if !state.is_ready() {
                return json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "starting"}),
                );
            }
            match store_health(state).await {
                Ok(()) => json_response(StatusCode::OK, &json!({"status": "ready"})),
                Err(e) => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "store_unavailable", "error": e}),
                ),
            }
        }
        (&Method::GET, "/metrics") => {
            let mut resp = Response::new(http_body_util::Full::new(bytes::Bytes::from(
                state.metrics.encode(),
            )));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        (&Method::GET, "/status") => {
            let snap = state.policies.current();
            let store = store_health(state).await;
            let last_error = state.last_reload_error.lock().ok().and_then(|e| e.clone());
            json_response(
                StatusCode::OK,
                &json!({
                    "ready": state.is_ready(),
                    "policy": {
                        "version": snap.version,
                        "digest": snap.digest,
                        "loaded_at": snap.loaded_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                        "last_reload_error": last_error,
                        "roles": snap.roles.keys().collect::<Vec<_>>(),
                    },
                    "shadow": state.shadow.as_ref().map(|s| {
                        let c = s.current();
                        json!({"version": c.version, "digest": c.digest})
                    }),
                    "store": {
                        "kind": state.store.kind(),
                        "healthy": store.is_ok(),
                        "error": store.err(),
                    },
                    "cache": { "users": state.cache.len() },
                    "change_log": change_log_status(state).await,
                }),
            )
        }
        (&Method::POST, "/reload") => match state.reload() {
            Ok(version) => json_response(
                StatusCode::OK,
                &json!({"reloaded": true, "version": version}),
            ),
            Err(e) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"reloaded": false, "version": state.policies.current().version, "error": e.to_string()}),
            ),
        },
        (_, "/live" | "/ready" | "/metrics" | "/status" | "/reload") => {
            empty_response(StatusCode::METHOD_NOT_ALLOWED)
        }
        _ => empty_response(StatusCode::NOT_FOUND),
    }
}
