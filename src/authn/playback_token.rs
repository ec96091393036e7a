//! Secure playback tokens: viewer-facing JWTs an organisation issues for its
//! streams, verified offline by edges (JWKS) and by rolegate on the guarded
//! playback prefix. This file is the token format and its verification; the
//! endpoints that issue and revoke tokens are in `api::playback`, the guarded
//! prefix in `proxy::playback`, and the `play` decision in `authz::play`.
//!
//! Signing algorithm: EdDSA (Ed25519). Chosen over ES256 and RS256 because the
//! keys are 32 bytes (a JWKS entry is one short `x`), signatures are
//! deterministic (no nonce to get wrong, unlike ECDSA), verification is fast
//! on edges, and it avoids the RSA crate's timing advisory (RUSTSEC-2023-0071).
//!
//! Playback tokens are independent of the issuing user: they carry the org and
//! are signed with the org's playback key, so role changes, tokenKey renewal
//! or deletion of the issuer never invalidate them (only `exp` or, for
//! revocable tokens, revocation does). Revocation is checked in the store on
//! every guarded request, so it is consistent across restarts and replicas.

use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use std::net::IpAddr;

use std::borrow::Cow;

use http::HeaderMap;
use ipnet::IpNet;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::unix_now;
use crate::request::query::Query;
use crate::store::{PlaybackKey, Store, StoreError};

/// The `typ` only playback tokens carry; API tokens use `bintu-api+jwt`.
pub const TYP: &str = "playback+jwt";

/// Audience disjoint from API tokens', so neither kind validates as the other.
pub const AUD: &str = "playback";

pub const ISS: &str = "rolegate";

/// Clock skew tolerated between issuer, rolegate and viewers. Kept small: the
/// issuer and rolegate share a clock, and `exp` is a hard promise to the org.
pub const LEEWAY: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PlaybackError {
    #[error("jwt expired")]
    Expired,
    #[error("jwt not active")]
    NotYetValid,
    #[error("jwt malformed")]
    Malformed,
    #[error("invalid signature")]
    BadSignature,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("not a playback token")]
    WrongType,
    #[error("jwt revoked")]
    Revoked,
    #[error("more than one playback token in the request")]
    Ambiguous,
    #[error("signing key: {0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PlaybackError {
    /// The token service's error code for `/playback/token/verify`.
    pub fn code(&self) -> u32 {
        match self {
            PlaybackError::Expired => 1002,
            // The token service has no revoked code: a revoked token is invalid.
            _ => 2004,
        }
    }
}

/// Claims of a playback token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub org: String,
    pub jti: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub revocable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groupid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orgawide: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(rename = "forceDisconnect", default)]
    pub force_disconnect: bool,
}

/// What a verified playback token grants: the facts deciding `play` reads.
/// Borrowed from [`Claims`] on the guarded prefix; `rolegate test` builds one
/// from a case, so both decide through [`crate::authz::play::decide_play`].
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    pub org: &'a str,
    pub streams: Option<&'a [String]>,
    pub groupid: Option<&'a str>,
    pub orgawide: bool,
    pub ip: Option<&'a [String]>,
    pub domain: Option<&'a str>,
}

impl Claims {
    pub fn grant(&self) -> Grant<'_> {
        Grant {
            org: &self.org,
            streams: self.streams.as_deref(),
            groupid: self.groupid.as_deref(),
            orgawide: self.orgawide == Some(true),
            ip: self.ip.as_deref(),
            domain: self.domain.as_deref(),
        }
    }
}

pub fn new_key(org_id: &str) -> Result<PlaybackKey, PlaybackError> {
    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
    Ok(PlaybackKey {
        kid: format!("pb_{}", uuid::Uuid::new_v4().simple()),
        org_id: org_id.to_owned(),
        private_key: signing.to_bytes().to_vec(),
        public_key: signing.verifying_key().to_bytes().to_vec(),
        created_at: i64::try_from(unix_now()).unwrap_or(i64::MAX),
        retired_at: None,
        max_token_exp: 0,
    })
}

pub fn encoding_key(key: &PlaybackKey) -> Result<EncodingKey, PlaybackError> {
    let seed: [u8; 32] = key
        .private_key
        .as_slice()
        .try_into()
        .map_err(|_| PlaybackError::Key("bad stored seed".to_owned()))?;
    let der = SigningKey::from_bytes(&seed)
        .to_pkcs8_der()
        .map_err(|e| PlaybackError::Key(e.to_string()))?;
    Ok(EncodingKey::from_ed_der(der.as_bytes()))
}

pub fn parse_ip(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Verify signature, type, audience and (with `check_time`) nbf/exp; returns
/// the claims. Revocation is checked by the caller where it matters.
pub async fn decode(
    store: &dyn Store,
    token: &str,
    check_time: bool,
) -> Result<Claims, PlaybackError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| PlaybackError::Malformed)?;
    if header.typ.as_deref() != Some(TYP) {
        return Err(PlaybackError::WrongType);
    }
    if header.alg != Algorithm::EdDSA {
        return Err(PlaybackError::Malformed);
    }
    let kid = header.kid.ok_or(PlaybackError::Malformed)?;
    let key = store
        .playback_key(&kid)
        .await?
        .ok_or(PlaybackError::UnknownKey)?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&[AUD]);
    v.set_issuer(&[ISS]);
    v.leeway = LEEWAY;
    v.validate_exp = check_time;
    v.validate_nbf = check_time;
    v.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
    let dk = DecodingKey::from_ed_der(&key.public_key);
    let data = jsonwebtoken::decode::<Claims>(token, &dk, &v).map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => PlaybackError::Expired,
        ErrorKind::ImmatureSignature => PlaybackError::NotYetValid,
        ErrorKind::InvalidSignature => PlaybackError::BadSignature,
        _ => PlaybackError::Malformed,
    })?;
    // A key signs only its own org's tokens; anything else is forged.
    if data.claims.org != key.org_id {
        return Err(PlaybackError::BadSignature);
    }
    Ok(data.claims)
}

/// Full check used by verify and the guarded prefix.
pub async fn validate(store: &dyn Store, token: &str) -> Result<Claims, PlaybackError> {
    let claims = decode(store, token, true).await?;
    if claims.revocable && store.playback_revoked(&claims.jti).await? {
        return Err(PlaybackError::Revoked);
    }
    Ok(claims)
}

/// The playback token of a viewer request: `?token=`, `?jwtoken=` or a
/// bearer `Authorization`. Exactly one of them: a request that carries two
/// (or one parameter twice) is ambiguous and gets no token at all.
pub fn request_token<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<Option<Cow<'a, str>>, PlaybackError> {
    let q = Query::new(query);
    let token = q.single("token").map_err(|_| PlaybackError::Ambiguous)?;
    let jwtoken = q.single("jwtoken").map_err(|_| PlaybackError::Ambiguous)?;
    let mut bearers = headers.get_all(http::header::AUTHORIZATION).iter();
    let bearer = match (bearers.next(), bearers.next()) {
        (None, _) => None,
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(Cow::Borrowed),
        (Some(_), Some(_)) => return Err(PlaybackError::Ambiguous),
    };
    match (token, jwtoken, bearer) {
        (t, None, None) | (None, t, None) | (None, None, t) => Ok(t),
        _ => Err(PlaybackError::Ambiguous),
    }
}
