//! Who may ask: the policy enforcement point authenticates with a bearer
//! secret (`Authorization: Bearer <secret>`), one of those in
//! `authzen_pep_token_file`. A dedicated secret rather than a user's token
//! or the organisation's API key: a PEP asks about every organisation's
//! callers, which no rolegate principal may do, and its secret must not
//! open the stream API if it leaks.
//!
//! The presented secret is hashed (SHA-256) and compared with every
//! configured digest in constant time (`subtle`), without stopping at the
//! first match, so timing tells nothing of the secrets or of which matched.

use http::header::AUTHORIZATION;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::reason::Reason;

/// Why a PEP is refused (both 401: the PEP did not authenticate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PepError {
    #[error("no PEP credential")]
    Missing,
    #[error("PEP credential not accepted")]
    Invalid,
}

impl From<PepError> for ApiError {
    fn from(e: PepError) -> Self {
        ApiError::UnknownPrincipal(match e {
            PepError::Missing => Reason::PepCredentialRequired,
            PepError::Invalid => Reason::PepCredentialInvalid,
        })
    }
}

/// Check the request's PEP credential against the accepted digests.
pub fn authenticate(headers: &HeaderMap, accepted: &[[u8; 32]]) -> Result<(), PepError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(PepError::Missing);
    };
    if values.next().is_some() {
        return Err(PepError::Invalid);
    }
    let value = value.to_str().map_err(|_| PepError::Invalid)?;
    let (scheme, secret) = value.split_once(' ').ok_or(PepError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(PepError::Invalid);
    }
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(PepError::Invalid);
    }
    let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let matched = accepted
        .iter()
        .fold(subtle::Choice::from(0), |any, d| any | d.ct_eq(&presented));
    if bool::from(matched) {
        Ok(())
    } else {
        Err(PepError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use http::HeaderValue;

    fn digest(s: &str) -> [u8; 32] {
        Sha256::digest(s.as_bytes()).into()
    }

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_a_configured_bearer_secret_passes() {
        let accepted = [digest("old-secret"), digest("new-secret")];
        assert_eq!(
            authenticate(&with(&["Bearer new-secret"]), &accepted),
            Ok(())
        );
        assert_eq!(
            authenticate(&with(&["bearer old-secret"]), &accepted),
            Ok(())
        );
        assert_eq!(authenticate(&with(&[]), &accepted), Err(PepError::Missing));
        for bad in [
            &["Bearer other"][..],
            &["Basic new-secret"],
            &["Bearer "],
            &["new-secret"],
            &["Bearer new-secret", "Bearer new-secret"],
        ] {
            assert_eq!(
                authenticate(&with(bad), &accepted),
                Err(PepError::Invalid),
                "{bad:?}"
            );
        }
    }
}
