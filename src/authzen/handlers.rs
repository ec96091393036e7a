//! The HTTPS JSON binding: the two evaluation endpoints and the metadata
//! document. A request is checked in this order: the PEP's credential (401),
//! the media type (400), the body's size (413, refused before reading when
//! declared) and shape (400); then each evaluation is decided.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use crate::error::{ApiError, LocalBody};
use crate::reason::Reason;
use crate::state::AppState;

use super::batch;
use super::mapping::{self, Asker};
use super::metadata::Metadata;
use super::wire::{self, Batch, Decisions, WireError};

/// Largest request body: a batch of the most evaluations allowed fits with
/// room to spare; the general `max_body_bytes` lowers it further if smaller.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        let reason = match e {
            WireError::Missing(_) | WireError::Shape(_) => Reason::MissingParameter,
            WireError::TooMany => Reason::TooManyEvaluations,
            WireError::NotAnObject | WireError::Syntax | WireError::Type { .. } => {
                Reason::InvalidBody
            }
        };
        ApiError::bad_param(reason, "body", e.to_string())
    }
}

/// A 200 with a JSON body, typed `application/json` as the binding requires.
fn json<T: Serialize>(body: &T) -> Response<LocalBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn metadata(pdp: &str) -> Response<LocalBody> {
    let mut resp = json(&Metadata::new(pdp));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    resp
}

/// The request's media type must be `application/json` (parameters such as
/// `charset` aside).
fn check_media_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let is_json = match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().is_ok_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        }),
        _ => false,
    };
    if is_json {
        Ok(())
    } else {
        Err(ApiError::bad_param(
            Reason::UnsupportedMediaType,
            "content-type",
            "Content-Type must be application/json",
        ))
    }
}

/// The body, refusing more than the limit (by its declared length before
/// reading anything, else while reading).
async fn read_body(state: &AppState, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = MAX_BODY_BYTES.min(state.settings.max_body_bytes);
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge);
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    Ok(Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?
        .to_bytes())
}

/// What every evaluation endpoint checks before parsing.
async fn accept(state: &AppState, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let digests = state
        .settings
        .authzen
        .as_ref()
        .map_or(&[][..], |a| a.pep_token_digests.as_slice());
    super::pep::authenticate(req.headers(), digests)?;
    check_media_type(req.headers())?;
    read_body(state, req).await
}

/// `POST /access/v1/evaluation`: one decision. A fault is an HTTP error
/// here: the one evaluation is the whole request.
pub async fn evaluation(
    state: &AppState,
    req: Request<Incoming>,
    asker: &Asker<'_>,
) -> Result<Response<LocalBody>, ApiError> {
    let body = accept(state, req).await?;
    let ev = wire::single(&body)?;
    one(state, &ev, asker).await
}

async fn one(
    state: &AppState,
    ev: &wire::Evaluation,
    asker: &Asker<'_>,
) -> Result<Response<LocalBody>, ApiError> {
    let answer = mapping::evaluate(state, ev, asker).await?;
    state
        .metrics
        .count_evaluation(answer.allowed, answer.reason);
    Ok(json(&batch::decision(&answer)))
}

/// `POST /access/v1/evaluations`: a decision per evaluation, under the
/// requested semantic; without evaluations, the single request's answer.
pub async fn evaluations(
    state: &AppState,
    req: Request<Incoming>,
    asker: &Asker<'_>,
) -> Result<Response<LocalBody>, ApiError> {
    let body = accept(state, req).await?;
    match wire::batch(&body)? {
        Batch::Single(ev) => one(state, &ev, asker).await,
        Batch::Many { items, semantic } => {
            let evaluations = batch::run(state, &items, semantic, asker).await;
            Ok(json(&Decisions { evaluations }))
        }
    }
}
