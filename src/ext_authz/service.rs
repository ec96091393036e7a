//! The gRPC service: tonic's generated `Authorization` server (from
//! `envoy-types`) around [`check`](super::check). It is a plain HTTP/2
//! service, so the application serves it on rolegate's own accept loop
//! (`app::listener`: connection cap, drain) rather than tonic's transport.
//!
//! Why `envoy-types`: it ships Envoy's protobuf types and the tonic service
//! stub pre-generated and released in step with Envoy's API, so the build
//! needs neither `protoc` nor a vendored copy of Envoy's `.proto` tree, and
//! the types are the ones Envoy's own documentation names.

use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use crate::state::AppState;

/// The `envoy.service.auth.v3.Authorization` service on rolegate's state.
pub struct ExtAuthz {
    state: Arc<AppState>,
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let answer = match &self.state.otel {
            None => super::check(&self.state, request.get_ref()).await,
            Some(otel) => Box::pin(super::traced::check(otel, &self.state, &request)).await,
        };
        answer
            .map(Response::new)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

/// The service as an HTTP service (`tower::Service<http::Request<_>>`).
pub fn server(state: Arc<AppState>) -> AuthorizationServer<ExtAuthz> {
    AuthorizationServer::new(ExtAuthz { state })
}
