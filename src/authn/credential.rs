//! Which credential a request carries: exactly one of a user token
//! (`X-BINTU-TOKEN` or `Authorization: Bearer`), the organisation's API key
//! (`X-BINTU-APIKEY`), its player key (`X-BINTU-PLAYERKEY`), or none.
//!
//! Two different credentials, or one header sent twice, is refused: there is no
//! "first one wins" for an attacker to exploit.

use crate::reason::Reason;
use http::header::{HeaderName, AUTHORIZATION};
use http::HeaderMap;

pub const TOKEN_HEADER: &str = "x-bintu-token";
pub const API_KEY_HEADER: &str = "x-bintu-apikey";
pub const PLAYER_KEY_HEADER: &str = "x-bintu-playerkey";

/// Longest credential value accepted; real tokens are a few hundred bytes.
pub const MAX_CREDENTIAL_LEN: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    UserToken,
    ApiKey,
    PlayerKey,
    Anonymous,
}

impl CredentialKind {
    /// The name policies see in `context.credential`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::UserToken => "token",
            CredentialKind::ApiKey => "apikey",
            CredentialKind::PlayerKey => "playerkey",
            CredentialKind::Anonymous => "anonymous",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    UserToken(&'a str),
    ApiKey(&'a str),
    PlayerKey(&'a str),
    Anonymous,
}

impl Credential<'_> {
    pub fn kind(&self) -> CredentialKind {
        match self {
            Credential::UserToken(_) => CredentialKind::UserToken,
            Credential::ApiKey(_) => CredentialKind::ApiKey,
            Credential::PlayerKey(_) => CredentialKind::PlayerKey,
            Credential::Anonymous => CredentialKind::Anonymous,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("more than one credential in the request")]
    Multiple,
    #[error("credential header `{0}` sent more than once")]
    Duplicate(&'static str),
    #[error("authorization scheme is not `Bearer`")]
    UnsupportedScheme,
    #[error("credential is empty or not visible ASCII")]
    Malformed,
    #[error("credential is too long")]
    TooLong,
}

impl CredentialError {
    pub fn reason(&self) -> Reason {
        match self {
            CredentialError::Multiple => Reason::MultipleCredentials,
            CredentialError::Duplicate(_) => Reason::DuplicateCredentialHeader,
            CredentialError::UnsupportedScheme => Reason::UnsupportedAuthScheme,
            CredentialError::Malformed => Reason::MalformedCredential,
            CredentialError::TooLong => Reason::CredentialTooLong,
        }
    }
}

// As `HeaderName`s: a lookup by `&str` parses and validates the name first,
// four times per request.
static TOKEN_NAME: HeaderName = HeaderName::from_static(TOKEN_HEADER);
static AUTHORIZATION_NAME: HeaderName = AUTHORIZATION;
static API_KEY_NAME: HeaderName = HeaderName::from_static(API_KEY_HEADER);
static PLAYER_KEY_NAME: HeaderName = HeaderName::from_static(PLAYER_KEY_HEADER);

/// The single value of a header, refusing repeats.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &'static HeaderName,
) -> Result<Option<&'a str>, CredentialError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CredentialError::Duplicate(name.as_str()));
    }
    let s = first
        .to_str()
        .map_err(|_| CredentialError::Malformed)?
        .trim();
    if s.is_empty() {
        return Err(CredentialError::Malformed);
    }
    if s.len() > MAX_CREDENTIAL_LEN {
        return Err(CredentialError::TooLong);
    }
    Ok(Some(s))
}

/// Extract the one credential of a request.
pub fn extract(headers: &HeaderMap) -> Result<Credential<'_>, CredentialError> {
    let token = single(headers, &TOKEN_NAME)?;
    let bearer = match single(headers, &AUTHORIZATION_NAME)? {
        None => None,
        Some(v) => {
            let (scheme, rest) = v
                .split_once(' ')
                .ok_or(CredentialError::UnsupportedScheme)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(CredentialError::UnsupportedScheme);
            }
            let rest = rest.trim();
            if rest.is_empty() {
                return Err(CredentialError::Malformed);
            }
            Some(rest)
        }
    };
    let api_key = single(headers, &API_KEY_NAME)?;
    let player_key = single(headers, &PLAYER_KEY_NAME)?;

    let present = [token, bearer, api_key, player_key]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if present > 1 {
        return Err(CredentialError::Multiple);
    }
    let found = if let Some(t) = token.or(bearer) {
        Credential::UserToken(t)
    } else if let Some(k) = api_key {
        Credential::ApiKey(k)
    } else if let Some(k) = player_key {
        Credential::PlayerKey(k)
    } else {
        Credential::Anonymous
    };
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn one_credential_of_each_kind() {
        assert_eq!(extract(&headers(&[])), Ok(Credential::Anonymous));
        assert_eq!(
            extract(&headers(&[("x-bintu-token", "t")])),
            Ok(Credential::UserToken("t"))
        );
        assert_eq!(
            extract(&headers(&[("authorization", "Bearer t")])),
            Ok(Credential::UserToken("t"))
        );
        assert_eq!(
            extract(&headers(&[("x-bintu-apikey", "k")])),
            Ok(Credential::ApiKey("k"))
        );
        assert_eq!(
            extract(&headers(&[("x-bintu-playerkey", "p")])),
            Ok(Credential::PlayerKey("p"))
        );
    }

    #[test]
    fn two_credentials_or_repeats_are_refused() {
        assert_eq!(
            extract(&headers(&[
                ("x-bintu-token", "t"),
                ("authorization", "Bearer t")
            ])),
            Err(CredentialError::Multiple)
        );
        assert_eq!(
            extract(&headers(&[("x-bintu-token", "t"), ("x-bintu-apikey", "k")])),
            Err(CredentialError::Multiple)
        );
        assert_eq!(
            extract(&headers(&[("x-bintu-token", "t"), ("x-bintu-token", "u")])),
            Err(CredentialError::Duplicate("x-bintu-token"))
        );
        assert_eq!(
            extract(&headers(&[("authorization", "Basic abc")])),
            Err(CredentialError::UnsupportedScheme)
        );
        assert_eq!(
            extract(&headers(&[("x-bintu-token", " ")])),
            Err(CredentialError::Malformed)
        );
    }
}
