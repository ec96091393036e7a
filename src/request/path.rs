//! Request-path normalisation: done once, before route matching, and the
//! normalised path is exactly what is forwarded upstream (so the path that was
//! authorized is the path the upstream acts on).
//!
//! Rules, in the spirit of Envoy's edge settings (`normalize_path`,
//! `merge_slashes`, reject escaped slashes):
//! - the path must start with `/`; repeated slashes are merged;
//! - `.` segments are dropped and `..` removes the previous segment; `..` above
//!   the root is rejected;
//! - a trailing slash is dropped (`/stream/` is `/stream`);
//! - percent-encodings of `/`, `\`, `.` and NUL, malformed encodings, raw
//!   backslashes, `;` parameters and control characters are rejected, because
//!   servers disagree on how to read them;
//! - so are the characters a URI path cannot hold as themselves (`?`, `#`,
//!   `<`, `>`, `` ` ``): a path that normalises is one the upstream's URI
//!   parser reads back unchanged (`/a#/admin` is `/a` to some, not to others);
//! - other percent-encodings stay as sent (stream names may contain them).

use crate::reason::Reason;
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path does not start with `/`")]
    NotAbsolute,
    #[error("path climbs above the root")]
    AboveRoot,
    #[error("path contains an encoded separator or dot")]
    EncodedSeparator,
    #[error("path contains a malformed percent-encoding")]
    BadEncoding,
    #[error("path contains a forbidden character")]
    ForbiddenCharacter,
}

impl PathError {
    pub fn reason(&self) -> Reason {
        match self {
            PathError::NotAbsolute => Reason::PathNotAbsolute,
            PathError::AboveRoot => Reason::PathAboveRoot,
            PathError::EncodedSeparator => Reason::PathEncodedSeparator,
            PathError::BadEncoding => Reason::PathBadEncoding,
            PathError::ForbiddenCharacter => Reason::PathForbiddenCharacter,
        }
    }
}

/// Normalise a request path (without its query). Returns the path to match
/// and forward: borrowed when it was normal already, as most paths are.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    check_bytes(raw.as_bytes())?;
    // Fast path: most paths are already normal; avoid building segments.
    if is_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in raw.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(raw.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

fn is_normal(raw: &str) -> bool {
    if raw == "/" {
        return true;
    }
    if raw.ends_with('/') {
        return false;
    }
    raw[1..]
        .split('/')
        .all(|s| !s.is_empty() && s != "." && s != "..")
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn check_bytes(bytes: &[u8]) -> Result<(), PathError> {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                    return Err(PathError::BadEncoding);
                };
                let (Some(h), Some(l)) = (hex(h), hex(l)) else {
                    return Err(PathError::BadEncoding);
                };
                let decoded = h * 16 + l;
                // Encoded separators, dots and NUL change the meaning of the path
                // depending on who decodes it; non-ASCII bytes are where overlong
                // UTF-8 tricks (`%C0%AF`) live. Both are refused.
                if matches!(decoded, b'/' | b'\\' | b'.' | 0) {
                    return Err(PathError::EncodedSeparator);
                }
                if !(0x20..0x7f).contains(&decoded) {
                    return Err(PathError::BadEncoding);
                }
                i += 3;
            }
            b'\\' | b';' | b'?' | b'#' | b'<' | b'>' | b'`' => {
                return Err(PathError::ForbiddenCharacter)
            }
            b if b < 0x21 || b == 0x7f || b >= 0x80 => return Err(PathError::ForbiddenCharacter),
            _ => i += 1,
        }
    }
    Ok(())
}

/// Whether a query string filters by tag (`tags[]=…`, `tags=…`), a fact policies can use.
pub fn query_has_tag_filter(query: Option<&str>) -> bool {
    super::query::Query::new(query).has_value(&["tags", "tags[]", "tag"])
}

/// Whether `path` (normalised) is under the guarded playback `prefix`, where
/// requests carry a playback token and the decision core decides `play`.
pub fn is_under_prefix(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_pass_through() {
        for p in ["/", "/stream", "/stream/abc", "/stream/a%20b/options"] {
            assert_eq!(normalize(p).as_deref(), Ok(p));
        }
    }

    #[test]
    fn dot_segments_and_slashes_are_resolved() {
        assert_eq!(normalize("/api/../stream").as_deref(), Ok("/stream"));
        assert_eq!(normalize("//stream").as_deref(), Ok("/stream"));
        assert_eq!(normalize("/./stream/").as_deref(), Ok("/stream"));
        assert_eq!(normalize("/stream/x/..").as_deref(), Ok("/stream"));
        assert_eq!(normalize("/..").unwrap_err(), PathError::AboveRoot);
        assert_eq!(normalize("stream").unwrap_err(), PathError::NotAbsolute);
    }

    #[test]
    fn confusing_encodings_are_rejected() {
        for p in [
            "/api/%2e%2e/admin",
            "/api/%2E%2E/admin",
            "/api%2fadmin",
            "/api%5cadmin",
            "/a%00b",
            "/a%C0%AFb",
            "/a%zz",
            "/a%2",
            "/a\\b",
            "/a;x=1",
            "/a#/admin",
            "/a?b",
            "/a<b>",
            "/a`b",
        ] {
            assert!(normalize(p).is_err(), "{p} should be rejected");
        }
        // A double-encoded dot is an opaque literal after our single decode-free pass.
        assert_eq!(normalize("/stream/%252e").as_deref(), Ok("/stream/%252e"));
    }

    #[test]
    fn tag_filter_is_detected() {
        assert!(query_has_tag_filter(Some("tags[]=a")));
        assert!(query_has_tag_filter(Some("quantity=5&tags%5B%5D=x")));
        assert!(!query_has_tag_filter(Some("tags[]=")));
        assert!(!query_has_tag_filter(Some("quantity=5")));
        assert!(!query_has_tag_filter(None));
    }
}
