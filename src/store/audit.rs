//! Writing one audit record, logged whatever happens (see `api::audit::record`
//! for the rule every writer follows).

use super::{NewAudit, Store};

/// Append `record`; `false` when the store refused or was unreachable, after
/// logging the record in full at error level. Never a token, key or password:
/// records hold ids, actions and outcomes only.
pub async fn write(store: &dyn Store, record: NewAudit) -> bool {
    tracing::info!(
        org = %record.org_id,
        actor = %record.actor,
        action = %record.action,
        target = %record.target,
        outcome = %record.outcome,
        request_id = %record.request_id,
        detail = %record.detail,
        "audit"
    );
    let logged = (
        record.org_id.clone(),
        record.actor.clone(),
        record.action.clone(),
        record.target.clone(),
        record.outcome.clone(),
    );
    match store.append_audit(record).await {
        Ok(()) => true,
        Err(e) => {
            let (org, actor, action, target, outcome) = logged;
            tracing::error!(error = %e, org, actor, action, target, outcome, "audit record could not be written; the change it records stands");
            false
        }
    }
}
