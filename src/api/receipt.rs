//! Receipts: a change to a user (renewal, role change, deletion) called with
//! `?wait=SECONDS` answers only once every live replica has applied it, or
//! the wait ran out, and says which replicas did and which did not
//! (`store::changelog`). Without `wait` the answer comes at once, as before.

use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use serde_json::Value;

use super::query_param;
use crate::error::ApiError;
use crate::reason::Reason;
use crate::state::AppState;
use crate::store::changelog;

/// The longest wait a caller may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// The `wait` parameter: seconds (fractions allowed), 0 to 30.
pub fn wait_param(req: &Request<Incoming>) -> Result<Option<Duration>, ApiError> {
    let Some(v) = query_param(req, "wait")? else {
        return Ok(None);
    };
    let secs: f64 = v
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && (0.0..=MAX_WAIT.as_secs_f64()).contains(s))
        .ok_or_else(|| {
            ApiError::bad_param(
                Reason::InvalidParameter,
                "wait",
                "Must be a number of seconds from 0 to 30",
            )
        })?;
    Ok(Some(Duration::from_secs_f64(secs)))
}

/// After a change this request wrote: wake this replica's follower and, when
/// asked to, wait for every live replica; the receipt as JSON.
pub async fn after_change(state: &AppState, wait: Option<Duration>) -> Option<Value> {
    state.follower.nudge();
    let wait = wait?;
    // The head now is at or after this request's entry: waiting for it is
    // waiting for this change (and perhaps a few later ones).
    let result = async {
        let seq = changelog::head(&state.store).await?;
        changelog::wait_for_replicas(&state.store, seq, wait).await
    }
    .await;
    Some(match result {
        Ok(receipt) => serde_json::to_value(receipt).unwrap_or(Value::Null),
        // The change stands; only its receipt is missing.
        Err(e) => serde_json::json!({ "error": e.to_string(), "complete": false }),
    })
}
