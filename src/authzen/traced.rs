//! The AuthZEN door with traces on (`otel_endpoint`): one server span per
//! HTTP request, named after the endpoint (a batch decides many routes; each
//! decision span names its own), its parent a `traceparent` only from a PEP
//! in `trusted_proxies`.

use std::net::SocketAddr;

use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use super::{metadata, Door};
use crate::error::{ApiError, LocalBody};
use crate::otel::Tracing;
use crate::request::client_addr;

impl Door {
    pub(super) async fn route_traced(
        &self,
        otel: &Tracing,
        req: Request<Incoming>,
        peer: SocketAddr,
        request_id: &HeaderValue,
    ) -> Result<Response<LocalBody>, ApiError> {
        let trusted = client_addr::is_trusted(peer.ip(), &self.state.settings.trusted_proxies);
        let endpoint = match (req.method(), req.uri().path()) {
            (&Method::GET, metadata::PATH) => metadata::PATH,
            (_, metadata::EVALUATION_PATH) => metadata::EVALUATION_PATH,
            (_, metadata::EVALUATIONS_PATH) => metadata::EVALUATIONS_PATH,
            _ => "unknown",
        };
        let span = otel
            .request(
                req.method().as_str(),
                req.headers(),
                trusted,
                request_id.to_str().unwrap_or(""),
            )
            .endpoint(req.method().as_str(), endpoint);
        let result = span.scope(self.route(req, peer, request_id)).await;
        // Each evaluation's decision is on its decision span; the request
        // itself was answered.
        span.finish(ApiError::trace_answer(
            crate::metrics::Door::Authzen,
            &result,
            "answered",
        ));
        result
    }
}
