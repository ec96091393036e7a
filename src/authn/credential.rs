//! Which credential a request carries: exactly one of a user token
//! (`X-BINTU-TOKEN` or `Authorization: Bearer`), the organisation's API key
//! (`X-BINTU-APIKEY`), its player key (`X-BINTU-PLAYERKEY`), or none.
//!
//! Two different credentials, or one header sent twice, is refused: there is no
//! "first one wins" for an attacker to exploit.

use crate::reason::Reason;
use http::header::{HeaderName, AUTHORIZATION};
use http::{HeaderMap, HeaderValue};

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

// The credential headers, in the order their errors take precedence.
static NAMES: [HeaderName; 4] = [
    HeaderName::from_static(TOKEN_HEADER),
    AUTHORIZATION,
    HeaderName::from_static(API_KEY_HEADER),
    HeaderName::from_static(PLAYER_KEY_HEADER),
];
const TOKEN: usize = 0;
const BEARER: usize = 1;
const API_KEY: usize = 2;
const PLAYER_KEY: usize = 3;

/// What one pass over the headers found of each credential header: its
/// first value and whether it came again.
type Seen<'a> = [(Option<&'a HeaderValue>, bool); 4];

/// One pass over the headers instead of a lookup per credential header: a
/// lookup hashes the name, and four of them cost more than walking the few
/// headers a request has.
fn seen(headers: &HeaderMap) -> Seen<'_> {
    let mut seen: Seen<'_> = [(None, false); 4];
    for (name, value) in headers {
        if let Some(slot) = NAMES.iter().position(|n| n == name) {
            let (first, again) = &mut seen[slot];
            if first.is_some() {
                *again = true;
            } else {
                *first = Some(value);
            }
        }
    }
    seen
}

/// The single value of a credential header, refusing repeats.
fn single<'a>(seen: &Seen<'a>, slot: usize) -> Result<Option<&'a str>, CredentialError> {
    let (first, again) = seen[slot];
    let Some(first) = first else {
        return Ok(None);
    };
    if again {
        return Err(CredentialError::Duplicate(NAMES[slot].as_str()));
    }
    let s = first
        .to_str()
        .map_err(|_| CredentialError::Malformed)?
        // A header value's only whitespace is spaces and tabs (RFC 9110
        // §5.5): the ASCII trim is exact, and skips `char` decoding.
        .trim_ascii();
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
    let seen = seen(headers);
    let token = single(&seen, TOKEN)?;
    let bearer = match single(&seen, BEARER)? {
        None => None,
        Some(v) => {
            // The scheme is the text up to the first space: `Bearer` in any
            // case. Compared as a 7-byte prefix, scheme and space together,
            // which is the same test as splitting at the first space; the
            // split's character search cost more than the comparison.
            let rest = match v.get(..7) {
                Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => &v[7..],
                _ => return Err(CredentialError::UnsupportedScheme),
            };
            let rest = rest.trim_ascii();
            if rest.is_empty() {
                return Err(CredentialError::Malformed);
            }
            Some(rest)
        }
    };
    let api_key = single(&seen, API_KEY)?;
    let player_key = single(&seen, PLAYER_KEY)?;

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
        // The scheme is everything up to the first space, in any case.
        for v in ["Bearer", "Bearertoken", "Bearer\tt", "Bear t", "Bearers t"] {
            assert_eq!(
                extract(&headers(&[("authorization", v)])),
                Err(CredentialError::UnsupportedScheme),
                "{v}"
            );
        }
        assert_eq!(
            extract(&headers(&[("authorization", "bEaReR   t ")])),
            Ok(Credential::UserToken("t"))
        );
        // Trimmed first: a scheme with nothing after it.
        assert_eq!(
            extract(&headers(&[("authorization", "Bearer  ")])),
            Err(CredentialError::UnsupportedScheme)
        );
        assert_eq!(
            extract(&headers(&[("x-bintu-token", " ")])),
            Err(CredentialError::Malformed)
        );
    }
}
