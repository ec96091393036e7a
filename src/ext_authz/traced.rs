//! The ext_authz door with traces on (`otel_endpoint`): one server span per
//! Check, named after the route it decides, its parent the Check's
//! `traceparent` (Envoy's, in the gRPC metadata) only when Envoy's address is
//! in `trusted_proxies`. The answer is recorded where it is counted
//! ([`super::check`], through `otel::answered`).

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};

use super::AttributeError;
use crate::otel::Tracing;
use crate::request::client_addr;
use crate::state::AppState;

pub(super) async fn check(
    otel: &Tracing,
    state: &Arc<AppState>,
    request: &tonic::Request<CheckRequest>,
) -> Result<CheckResponse, AttributeError> {
    // The listener puts the connection's peer in the extensions; without it
    // (another transport), no caller is trusted.
    let trusted = request
        .extensions()
        .get::<SocketAddr>()
        .is_some_and(|peer| client_addr::is_trusted(peer.ip(), &state.settings.trusted_proxies));
    let headers = request.metadata().clone().into_headers();
    let method = request
        .get_ref()
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .map_or("", |h| h.method.as_str());
    let span = otel.request(method, &headers, trusted, "");
    let answer = span.scope(super::check(state, request.get_ref())).await;
    span.end();
    answer
}
