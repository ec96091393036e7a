//! The audit log: the one writer every admin change goes through, and the
//! endpoint that lists the records.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{caller_org, query_param, RequestCtx};
use crate::error::{json_response, ApiError, LocalBody};
use crate::reason::Reason;
use crate::state::AppState;
use crate::store::{AuditFilter, NewAudit};

/// Write the audit record of an admin change made by the caller of `ctx`.
pub async fn audit(
    state: &AppState,
    ctx: &RequestCtx,
    action: &str,
    target: &str,
    outcome: &str,
    detail: &str,
) {
    record(
        state,
        NewAudit {
            org_id: ctx.caller.org().unwrap_or("").to_owned(),
            actor: ctx.caller.actor(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: outcome.to_owned(),
            request_id: ctx.request_id().to_owned(),
            detail: detail.to_owned(),
        },
    )
    .await;
}

/// The one writer of audit records, with one failure rule: the record is
/// written after the change it records, which has already committed; if the
/// write fails, the change stands (answering an error would tell the admin it
/// did not happen), the record is logged in full at error level so it is not
/// lost, and `rolegate_audit_write_failures_total` counts it for alerting.
/// Every record is also logged at info level. The CLI follows the same rule
/// (`store::audit::write`).
pub async fn record(state: &AppState, record: NewAudit) {
    if !crate::store::audit::write(state.store.as_ref(), record).await {
        state.metrics.audit_write_failures.inc();
    }
}

pub async fn audit_list(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let filter = AuditFilter {
        target: query_param(&req, "user")?,
        actor: query_param(&req, "actor")?,
        action: query_param(&req, "action")?,
        limit: match query_param(&req, "limit")? {
            None => 0,
            Some(l) => l.parse().map_err(|_| {
                ApiError::bad_param(
                    Reason::InvalidParameter,
                    "limit",
                    "must be a whole number from 0 to 4294967295",
                )
            })?,
        },
    };
    let records = state.store.list_audit(caller_org(ctx)?, &filter).await?;
    Ok(json_response(StatusCode::OK, &json!({ "data": records })))
}
