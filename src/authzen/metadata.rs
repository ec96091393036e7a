//! The Policy Decision Point metadata document,
//! `GET /.well-known/authzen-configuration`: where the evaluation endpoints
//! are. It names no search endpoints (rolegate offers none) and no
//! capabilities: parameters without a value are omitted, as the
//! specification requires. Served without a PEP credential, like other
//! discovery documents: it holds nothing but these URLs.

use serde::Serialize;

pub const PATH: &str = "/.well-known/authzen-configuration";
pub const EVALUATION_PATH: &str = "/access/v1/evaluation";
pub const EVALUATIONS_PATH: &str = "/access/v1/evaluations";

#[derive(Debug, Serialize)]
pub struct Metadata {
    pub policy_decision_point: String,
    pub access_evaluation_endpoint: String,
    pub access_evaluations_endpoint: String,
}

impl Metadata {
    /// The document for the PDP identified by `pdp` (a URL without a trailing `/`).
    pub fn new(pdp: &str) -> Self {
        Metadata {
            policy_decision_point: pdp.to_owned(),
            access_evaluation_endpoint: format!("{pdp}{EVALUATION_PATH}"),
            access_evaluations_endpoint: format!("{pdp}{EVALUATIONS_PATH}"),
        }
    }
}
