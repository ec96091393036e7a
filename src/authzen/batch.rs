//! The Access Evaluations semantics: every evaluation (`execute_all`), or
//! stop at the first deny (`deny_on_first_deny`, a failed item counts as a
//! deny) or the first permit (`permit_on_first_permit`). Evaluations run in
//! order, one at a time, so a short-circuit never starts the ones after it.

use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::reason::Reason;
use crate::state::AppState;

use super::mapping::{self, Answer, Asker};
use super::wire::{Decision, Evaluation, Semantic, WireError};

/// The Decision an answer is written as: the reason code always; the status
/// the proxy would answer (gateway profile); the policies for admins.
pub fn decision(answer: &Answer) -> Decision {
    let mut context = Map::new();
    context.insert("reason".to_owned(), Value::from(answer.reason.as_str()));
    if let Some(status) = answer.status {
        context.insert("status".to_owned(), Value::from(status));
    }
    if let Some(policies) = &answer.policies {
        context.insert("policies".to_owned(), json!(policies));
    }
    Decision {
        decision: answer.allowed,
        context,
    }
}

/// A deny for an evaluation that could not be made: the reason and, in the
/// specification's shape, the error with its status.
fn failed(reason: Reason, status: u16, message: &str) -> Decision {
    let mut context = Map::new();
    context.insert("reason".to_owned(), Value::from(reason.as_str()));
    context.insert(
        "error".to_owned(),
        json!({ "status": status, "message": message }),
    );
    Decision {
        decision: false,
        context,
    }
}

/// Evaluate the items of a batch under `semantic`, in order.
pub async fn run(
    state: &AppState,
    items: &[Result<Evaluation, WireError>],
    semantic: Semantic,
    asker: &Asker<'_>,
) -> Vec<Decision> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let d = match item {
            Err(e) => {
                state
                    .metrics
                    .count_evaluation(false, Reason::InvalidEvaluation);
                failed(Reason::InvalidEvaluation, 400, &e.to_string())
            }
            Ok(ev) => match mapping::evaluate(state, ev, asker).await {
                Ok(answer) => {
                    state
                        .metrics
                        .count_evaluation(answer.allowed, answer.reason);
                    decision(&answer)
                }
                Err(fault) => {
                    let (status, _, reason) = fault.parts();
                    tracing::warn!(request_id = asker.request_id.to_str().unwrap_or(""), error = %fault, "authzen evaluation failed");
                    state.metrics.count_evaluation(false, reason);
                    failed(reason, status.as_u16(), &fault_message(&fault))
                }
            },
        };
        let stop = match semantic {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !d.decision,
            Semantic::PermitOnFirstPermit => d.decision,
        };
        out.push(d);
        if stop {
            break;
        }
    }
    out
}

/// What a PEP is told of a fault: the kind, not the detail (that is logged).
fn fault_message(e: &ApiError) -> String {
    let (_, _, reason) = e.parts();
    match reason {
        Reason::StoreUnavailable | Reason::NotReady => "Service temporarily unavailable".to_owned(),
        _ => "Internal error".to_owned(),
    }
}
