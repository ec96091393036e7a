//! The OpenID AuthZEN Authorization API 1.0 (evaluation endpoints): a front
//! door for policy enforcement points that are not proxies, on its own
//! listener (`authzen_listen`, off by default).
//!
//! ```text
//! PEP ─► PEP credential ─► JSON ─► evaluation(s) ─┬─ resource.type "route" ─► Decider::decide (the proxy's path)
//!        (pep)             (wire)  (batch)        └─ any other type ──────► authz::decide::decide_action (Cedar)
//!                                                  (mapping)
//! ```
//!
//! - `POST /access/v1/evaluation`, `POST /access/v1/evaluations` (the three
//!   semantics), `GET /.well-known/authzen-configuration`;
//! - the PEP authenticates with a bearer secret (`pep`); the subject of an
//!   evaluation is whoever the PEP asks about;
//! - a deny is `200 {"decision": false}` with its reason in `context`; HTTP
//!   errors are for the request itself (401 PEP, 400 shape, 413 size, 5xx);
//! - a PEP's `X-Request-ID` is echoed; without one, rolegate's own is sent.

pub mod batch;
pub mod handlers;
pub mod mapping;
pub mod metadata;
pub mod pep;
mod traced;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::error::{ApiError, LocalBody};
use crate::reason::Reason;
use crate::request::REQUEST_ID_NAME;
use crate::state::AppState;

use mapping::Asker;

/// The AuthZEN listener's door: the shared state and the PDP identifier.
pub struct Door {
    state: Arc<AppState>,
    pdp: String,
}

impl Door {
    /// `bound` is the listener's address, the identifier when `authzen_pdp_url` names none.
    pub fn new(state: Arc<AppState>, bound: SocketAddr) -> Self {
        let pdp = state
            .settings
            .authzen
            .as_ref()
            .and_then(|a| a.pdp_url.clone())
            .unwrap_or_else(|| format!("http://{bound}"));
        Door { state, pdp }
    }

    /// The PDP identifier the metadata document announces.
    pub fn pdp(&self) -> &str {
        &self.pdp
    }

    /// One request. Never panics; every failure is answered through `ApiError`.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<LocalBody> {
        let request_id = match request_id(&req) {
            Ok(Some(id)) => id,
            Ok(None) => self.state.next_request_id(),
            Err(e) => return e.into_response(Some(&self.state.next_request_id())),
        };
        let result = match &self.state.otel {
            None => self.route(req, peer, &request_id).await,
            Some(otel) => Box::pin(self.route_traced(otel, req, peer, &request_id)).await,
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                let (status, _, reason) = e.parts();
                if status.is_server_error() {
                    tracing::warn!(request_id = request_id.to_str().unwrap_or(""), error = %e, "authzen request failed");
                } else {
                    tracing::debug!(request_id = request_id.to_str().unwrap_or(""), reason = %reason, "authzen request refused");
                }
                e.into_response(Some(&request_id))
            }
        };
        resp.headers_mut().insert(REQUEST_ID_NAME, request_id);
        resp
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        request_id: &HeaderValue,
    ) -> Result<Response<LocalBody>, ApiError> {
        let state = &self.state;
        if !state.is_ready() {
            return Err(ApiError::NotReady);
        }
        let asker = Asker {
            pep_ip: peer.ip(),
            request_id,
        };
        match (req.method(), req.uri().path()) {
            (&Method::GET, metadata::PATH) => Ok(handlers::metadata(&self.pdp)),
            (&Method::POST, metadata::EVALUATION_PATH) => {
                handlers::evaluation(state, req, &asker).await
            }
            (&Method::POST, metadata::EVALUATIONS_PATH) => {
                handlers::evaluations(state, req, &asker).await
            }
            _ => Err(ApiError::NotFound(Reason::NoSuchEndpoint)),
        }
    }
}

/// The PEP's `X-Request-ID`, echoed as sent. Sent twice it names no one
/// request: a 400.
fn request_id(req: &Request<Incoming>) -> Result<Option<HeaderValue>, ApiError> {
    let mut values = req.headers().get_all(REQUEST_ID_NAME).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => Ok(Some(v.clone())),
        (Some(_), Some(_)) => Err(ApiError::bad_param(
            Reason::AmbiguousParameter,
            "x-request-id",
            "X-Request-ID sent more than once",
        )),
    }
}
