//! The parsers on the request path, proven over generated inputs rather than a
//! handful of examples: path normalisation, the proxy's target, credential
//! extraction, token parsing, route matching, the query parser and the route
//! decision. Each property states what its function promises for every input.
//!
//! Case counts: each property runs its own default number of cases, small
//! enough that the whole file takes seconds in a debug build. With
//! `ROLEGATE_FUZZ_CASES=N` every property runs N cases instead, in batches with
//! fresh random seeds, and stops early (passing, and saying how far it got)
//! once `ROLEGATE_FUZZ_SECONDS` (per property, default 60) have passed: that is
//! the bounded fuzz run of `scripts/fuzz`. (Counts are set here, so proptest's
//! own `PROPTEST_CASES` does not apply.)
//!
//! A failing case is shrunk to a minimal input, printed, and its seed written
//! to `tests/proptest-regressions/properties.txt`; every later run replays the
//! seeds in that file first. Commit the file with the fix.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Uri};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseResult, TestRunner};
use serde_json::json;

use rolegate::authn::credential::{self, Credential, CredentialKind, MAX_CREDENTIAL_LEN};
use rolegate::authn::principal::Caller;
use rolegate::authn::token::{self, TokenError, TokenSettings, VerifyKey, API_TOKEN_TYP};
use rolegate::authz::decide::{decide_action, principal_entity};
use rolegate::authz::entities::{self, RequestFacts};
use rolegate::authz::routes::{ResourceId, RouteTable};
use rolegate::authz::{PolicySnapshot, PolicySource, PolicyStore};
use rolegate::request::path::{normalize, PathError};
use rolegate::request::query::{Ambiguous, Query};

use crate::support::repo;

// === the runner ===

/// Where failing seeds are kept (replayed first by every run).
const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/proptest-regressions/properties.txt"
);

/// Cases per runner in a fuzz run: the granularity of its time bound.
const FUZZ_BATCH: u64 = 2_000;

/// The fuzz run's settings, if one was asked for: cases per property and the
/// time bound per property.
fn fuzz_settings() -> Option<(u64, Duration)> {
    let cases = std::env::var("ROLEGATE_FUZZ_CASES").ok()?;
    let cases: u64 = cases
        .parse()
        .unwrap_or_else(|_| panic!("ROLEGATE_FUZZ_CASES=`{cases}` is not a number"));
    let seconds: u64 = match std::env::var("ROLEGATE_FUZZ_SECONDS") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("ROLEGATE_FUZZ_SECONDS=`{s}` is not a number")),
        Err(_) => 60,
    };
    Some((cases, Duration::from_secs(seconds)))
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        // Shrinking a failure is bounded too (milliseconds).
        max_shrink_time: 60_000,
        ..Config::default()
    }
}

/// Check `property` over `cases` values of `strategy` (or the fuzz run's
/// count and time bound); a failure panics with the minimal failing input.
fn check<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> TestCaseResult,
) {
    let Some((total, bound)) = fuzz_settings() else {
        if let Err(e) = TestRunner::new(config(cases)).run(&strategy, &property) {
            panic!("property `{name}`: {e}");
        }
        return;
    };
    let started = Instant::now();
    let mut ran = 0u64;
    while ran < total && started.elapsed() < bound {
        let batch = (total - ran).min(FUZZ_BATCH);
        if let Err(e) = TestRunner::new(config(batch as u32)).run(&strategy, &property) {
            panic!("property `{name}` after {ran} fuzz cases: {e}");
        }
        ran += batch;
    }
    let stopped = if ran < total {
        " (time bound reached)"
    } else {
        ""
    };
    eprintln!(
        "fuzz {name}: {ran} cases in {:.1} s{stopped}",
        started.elapsed().as_secs_f64()
    );
}

// === shared strategies ===

/// Arbitrary bytes read as Latin-1: every byte value, as a char.
fn latin1(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(|b| b.into_iter().map(char::from).collect())
}

/// Path pieces a path may hold and that normalisation must keep or resolve:
/// dots, empties, sub-delimiters, encodings that are allowed.
const PATH_PIECES: &[&str] = &[
    "", ".", "..", "...", "a.b", "%20", "%41", "%7e", "%252e", "%25", "\"", "{", "}", "|", "^",
    "*", "@", ":", "+", "~", "!", "$", "&", "'", "(", ")", ",", "=", "[", "]",
];

/// Pieces that must be refused wherever they stand: encodings of separators
/// and dots (both cases), malformed and overlong encodings, parameters,
/// control, non-ASCII and the characters a URI path cannot hold.
const HOSTILE_PIECES: &[&str] = &[
    ".%2e", "%2e", "%2E", "%2e%2e", "%2f", "%2F", "%5c", "%5C", "%00", "%7f", "%C0%AF", "%c0%ae",
    "%", "%2", "%zz", ";", ";a=b", "\\", "\t", " ", "?", "#", "<", ">", "`", "é", "\u{7f}", "\0",
];

fn path_segment() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        8 => "[a-z0-9_~-]{1,5}",
        4 => select(PATH_PIECES).prop_map(str::to_owned),
        1 => select(HOSTILE_PIECES).prop_map(str::to_owned),
    ];
    prop::collection::vec(piece, 1..3).prop_map(|p| p.concat())
}

/// Request-path-like strings: segments with dots, empties and odd bytes,
/// behind a leading `/` (mostly), with or without a trailing slash.
fn path_like() -> impl Strategy<Value = String> {
    (
        select(&["/", "/", "/", "//", "", "./", "a/", "/./", "/../"][..]),
        prop::collection::vec(path_segment(), 0..8),
        select(&["", "", "/", "//", "/.", "/.."][..]),
    )
        .prop_map(|(lead, segs, trail)| format!("{lead}{}{trail}", segs.join("/")))
}

/// Any input a parser might be handed: structured, arbitrary Unicode, or bytes.
fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => path_like(),
        1 => any::<String>(),
        1 => latin1(48).prop_map(|s| format!("/{s}")),
    ]
}

// === request::path::normalize ===

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// The bytes a normalised path may hold, restated from the module's rules:
/// visible ASCII that an origin-form path carries as itself (no `\`, `;`,
/// and none of `?`, `#`, `<`, `>`, `` ` `` that a URI path cannot hold), and
/// percent-encodings of visible ASCII other than `/`, `\`, `.`.
fn clean(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return false;
                };
                let decoded = h * 16 + l;
                if !(0x20..0x7f).contains(&decoded) || matches!(decoded, b'/' | b'\\' | b'.') {
                    return false;
                }
                i += 3;
            }
            b'\\' | b';' | b'?' | b'#' | b'<' | b'>' | b'`' => return false,
            0x21..=0x7e => i += 1,
            _ => return false,
        }
    }
    true
}

/// The segments of a path, empties dropped.
fn segments(p: &str) -> Vec<&str> {
    p.split('/').filter(|s| !s.is_empty()).collect()
}

/// Dot-segment removal as RFC 3986 §5.2.4 describes it, except that `..`
/// above the root is an error (not clamped) and empty segments are dropped.
fn resolve(p: &str) -> Result<String, PathError> {
    let mut stack: Vec<&str> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                stack.pop().ok_or(PathError::AboveRoot)?;
            }
            s => stack.push(s),
        }
    }
    Ok(format!("/{}", stack.join("/")))
}

/// `out` is in normal form: what is matched, decided and forwarded.
fn assert_normal_form(out: &str) -> TestCaseResult {
    prop_assert!(out.starts_with('/'), "{out:?} is not absolute");
    prop_assert!(!out.contains("//"), "{out:?} has an empty segment");
    prop_assert!(
        out == "/" || !out.ends_with('/'),
        "{out:?} has a trailing slash"
    );
    prop_assert!(
        segments(out).iter().all(|s| *s != "." && *s != ".."),
        "{out:?} has a dot segment"
    );
    prop_assert!(clean(out), "{out:?} holds a byte or encoding it must not");
    // Accepted by the HTTP library as a path, and read back as exactly itself
    // (no query, no fragment cut off): what the upstream request line carries.
    let pq = http::uri::PathAndQuery::try_from(out);
    prop_assert!(pq.is_ok(), "{out:?} is not a URI path: {pq:?}");
    if let Ok(pq) = pq {
        prop_assert_eq!(pq.path(), out);
        prop_assert_eq!(pq.query(), None);
    }
    let uri = Uri::try_from(out);
    prop_assert!(uri.is_ok(), "{out:?} is not a URI: {uri:?}");
    if let Ok(uri) = uri {
        prop_assert_eq!(uri.path(), out);
    }
    Ok(())
}

#[test]
fn path_normalisation_is_total_idempotent_and_sound() {
    check("path::normalize", 4096, any_path(), |raw| {
        let result = normalize(&raw);
        // What the rules say, restated independently: not absolute, then a
        // forbidden byte or encoding, then climbing above the root.
        let expected = if !raw.starts_with('/') {
            Err(Some(PathError::NotAbsolute))
        } else if !clean(&raw) {
            Err(None) // one of the byte-level refusals
        } else {
            resolve(&raw).map_err(Some)
        };
        match (&result, &expected) {
            (Ok(out), Ok(model)) => prop_assert_eq!(out.as_ref(), model.as_str()),
            (Err(e), Err(Some(model))) => prop_assert_eq!(e, model),
            (Err(e), Err(None)) => prop_assert!(
                matches!(
                    e,
                    PathError::EncodedSeparator
                        | PathError::BadEncoding
                        | PathError::ForbiddenCharacter
                ),
                "{raw:?}: {e:?}"
            ),
            _ => prop_assert!(false, "{raw:?}: got {result:?}, expected {expected:?}"),
        }
        let Ok(out) = result else {
            return Ok(());
        };
        assert_normal_form(&out)?;
        // Idempotent, and a normal path comes back borrowed (no copy).
        let again = normalize(&out);
        prop_assert!(
            matches!(again, Ok(Cow::Borrowed(s)) if s == out.as_ref()),
            "normalize({out:?}) = {again:?}"
        );
        // Borrowed exactly when the input was already normal.
        prop_assert_eq!(matches!(out, Cow::Borrowed(_)), out.as_ref() == raw);
        // Segments are kept verbatim and in order; only empty and dot
        // segments, and the segments `..` removed, are gone.
        let kept = segments(&out);
        let plain: Vec<&str> = segments(&raw)
            .into_iter()
            .filter(|s| *s != "." && *s != "..")
            .collect();
        let ups = segments(&raw).iter().filter(|s| **s == "..").count();
        prop_assert_eq!(kept.len() + ups, plain.len());
        let mut rest = plain.iter();
        prop_assert!(
            kept.iter().all(|k| rest.any(|p| p == k)),
            "{kept:?} is not a subsequence of {plain:?}"
        );
        if ups == 0 {
            prop_assert_eq!(kept, plain);
        }
        Ok(())
    });
}

#[test]
fn a_path_climbing_above_the_root_is_refused() {
    // Paths of plain segments and `..` only: refused exactly when, read left
    // to right, the `..` outnumber the segments before them.
    let step = prop_oneof![Just(".."), Just("a"), Just("."), Just("")];
    check(
        "path::normalize above root",
        2048,
        prop::collection::vec(step, 0..10),
        |steps| {
            let raw = format!("/{}", steps.join("/"));
            let mut depth = 0i32;
            let mut climbs = false;
            for s in &steps {
                match *s {
                    ".." if depth == 0 => climbs = true,
                    ".." => depth -= 1,
                    "a" => depth += 1,
                    _ => {}
                }
            }
            let result = normalize(&raw);
            if climbs {
                prop_assert_eq!(result, Err(PathError::AboveRoot), "{}", raw);
            } else {
                let out = result.map_err(|e| TestCaseError::fail(format!("{raw:?}: {e:?}")))?;
                prop_assert_eq!(segments(&out).len() as i32, depth);
            }
            Ok(())
        },
    );
}

// === proxy::target: the path matched is the path forwarded ===

/// A query string: printable, with the characters that separate and encode.
fn query_like() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9=&%+./?_-]{0,16}",
        1 => latin1(16),
    ]
}

#[test]
fn the_path_matched_is_the_path_forwarded() {
    let forms = select(
        &[
            "",
            "",
            "http://upstream.example",
            "https://upstream.example:8443",
            "http://user@h",
        ][..],
    );
    let strategy = (forms, any_path(), prop::option::of(query_like()));
    check("proxy::target", 4096, strategy, |(form, path, query)| {
        let raw = match &query {
            Some(q) => format!("{form}{path}?{q}"),
            None => format!("{form}{path}"),
        };
        // Only what the HTTP library accepts as a request target reaches rolegate.
        let Ok(uri) = Uri::try_from(raw.as_str()) else {
            return Ok(());
        };
        let target = match rolegate::proxy::target(&uri) {
            Ok(t) => t,
            Err(_) => {
                // Refused exactly when the path does not normalise.
                prop_assert!(normalize(uri.path()).is_err(), "{raw:?} refused");
                return Ok(());
            }
        };
        prop_assert_eq!(Ok(target.path.clone()), normalize(uri.path()));
        prop_assert_eq!(target.query, uri.query());
        // What goes upstream is the decided path, then nothing or the query as sent.
        let pq: &str = &target.path_and_query;
        let rest = pq.strip_prefix(target.path.as_ref());
        prop_assert!(
            rest.is_some(),
            "{raw:?}: forwarded {pq:?} does not start with the decided path {:?}",
            target.path
        );
        let expected_rest = uri.query().map_or(String::new(), |q| format!("?{q}"));
        prop_assert_eq!(rest, Some(expected_rest.as_str()), "{:?}", raw);
        // And the upstream's own parser reads that same path and query back.
        let sent = Uri::try_from(pq);
        prop_assert!(sent.is_ok(), "{raw:?}: forwarded {pq:?} is not a URI");
        if let Ok(sent) = sent {
            prop_assert_eq!(sent.path(), target.path.as_ref());
            prop_assert_eq!(sent.query(), uri.query());
        }
        Ok(())
    });
}

// === authn::credential::extract ===

const CREDENTIAL_HEADERS: [&str; 4] = [
    credential::TOKEN_HEADER,
    "authorization",
    credential::API_KEY_HEADER,
    credential::PLAYER_KEY_HEADER,
];

/// The credential headers (some spelled in upper case: names are
/// case-insensitive) and look-alikes that carry no credential.
const HEADER_NAMES: &[&str] = &[
    "x-bintu-token",
    "X-BINTU-TOKEN",
    "authorization",
    "Authorization",
    "x-bintu-apikey",
    "X-Bintu-ApiKey",
    "x-bintu-playerkey",
    "x-bintu-tokens",
    "x-bintu-token-2",
    "proxy-authorization",
    "x-api-key",
    "cookie",
    "content-type",
];

/// A credential value that is valid as it stands: visible ASCII, no spaces.
fn plain_credential() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~+/=-]{1,40}"
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => plain_credential().prop_map(String::into_bytes),
        3 => (select(&["Bearer ", "bearer ", "BEARER  ", "Basic ", "Bearer", "Token ", "Bearer\t", ""][..]), plain_credential())
            .prop_map(|(s, v)| format!("{s}{v}").into_bytes()),
        1 => select(&["", " ", "\t", "Bearer ", "Bearer  ", " tok ", "a b"][..]).prop_map(|s| s.as_bytes().to_vec()),
        // Every byte a header value may hold: HTAB, visible ASCII, space, obs-text.
        2 => prop::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..24),
        1 => (0usize..3).prop_map(|extra| vec![b'k'; MAX_CREDENTIAL_LEN - 1 + extra]),
    ]
}

/// The fields of a header map, in order; names lowercased as the map stores them.
fn header_fields() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec(
        (
            select(HEADER_NAMES).prop_map(str::to_ascii_lowercase),
            header_value(),
        ),
        0..5,
    )
}

/// A credential as an owned value, to compare results from different maps.
fn owned(c: &Credential<'_>) -> (CredentialKind, Option<String>) {
    match c {
        Credential::UserToken(v) | Credential::ApiKey(v) | Credential::PlayerKey(v) => {
            (c.kind(), Some((*v).to_owned()))
        }
        Credential::Anonymous => (CredentialKind::Anonymous, None),
    }
}

fn header_map(fields: &[(String, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

#[test]
fn exactly_one_credential_or_an_error() {
    check("credential::extract", 4096, header_fields(), |fields| {
        let map = header_map(&fields);
        let result = credential::extract(&map);
        // Only the credential headers count: the same map without the
        // look-alikes gives the same answer.
        let only: Vec<(String, Vec<u8>)> = fields
            .iter()
            .filter(|(n, _)| CREDENTIAL_HEADERS.contains(&n.as_str()))
            .cloned()
            .collect();
        let only_map = header_map(&only);
        let without_noise = credential::extract(&only_map);
        prop_assert_eq!(
            result.as_ref().map(owned),
            without_noise.as_ref().map(owned)
        );
        let present: Vec<(&str, &HeaderValue)> = CREDENTIAL_HEADERS
            .iter()
            .flat_map(|n| map.get_all(*n).iter().map(move |v| (*n, v)))
            .collect();
        match present.as_slice() {
            [] => prop_assert_eq!(result, Ok(Credential::Anonymous)),
            [(name, value)] => {
                let bytes = value.as_bytes();
                // A valid value as it stands is returned exactly as sent.
                let plain = |b: &[u8]| {
                    !b.is_empty()
                        && b.len() <= MAX_CREDENTIAL_LEN
                        && b.iter().all(|c| c.is_ascii_graphic())
                };
                let expected_valid = match *name {
                    "authorization" => {
                        bytes.len() > 7
                            && bytes[..7].eq_ignore_ascii_case(b"bearer ")
                            && plain(&bytes[7..])
                            && bytes.len() <= MAX_CREDENTIAL_LEN
                    }
                    _ => plain(bytes),
                };
                let kind = match *name {
                    credential::API_KEY_HEADER => CredentialKind::ApiKey,
                    credential::PLAYER_KEY_HEADER => CredentialKind::PlayerKey,
                    _ => CredentialKind::UserToken,
                };
                match &result {
                    Ok(c) => {
                        prop_assert_eq!(c.kind(), kind);
                        let (_, v) = owned(c);
                        let v = v.unwrap_or_default();
                        // What is returned is the value (or the bearer
                        // token), trimmed: visible ASCII (blanks only inside), never empty.
                        prop_assert!(
                            !v.is_empty()
                                && v.bytes()
                                    .all(|c| c.is_ascii_graphic() || c == b' ' || c == b'\t')
                        );
                        prop_assert_eq!(v.trim(), v.as_str());
                        prop_assert!(value.to_str().is_ok_and(|s| s.contains(v.as_str())));
                        if expected_valid {
                            let sent = value.to_str().unwrap_or_default();
                            let sent = if *name == "authorization" {
                                &sent[7..]
                            } else {
                                sent
                            };
                            prop_assert_eq!(v.as_str(), sent);
                        }
                    }
                    Err(e) => prop_assert!(!expected_valid, "{name}: {value:?} refused: {e:?}"),
                }
            }
            // Two credentials, or one header twice: always refused, never "first wins".
            _ => prop_assert!(result.is_err(), "{present:?} gave {result:?}"),
        }
        Ok(())
    });
}

// === authn::token::parse ===

/// Longest key id a token may carry (documented in `authn::token`: user ids are UUIDs).
const MAX_KID_LEN: usize = 64;

fn kid_ok(kid: &str) -> bool {
    (1..=MAX_KID_LEN).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn settings() -> TokenSettings {
    TokenSettings {
        issuer: "rolegate".into(),
        audience: "bintu".into(),
        ttl_secs: 3600,
        leeway_secs: 30,
    }
}

const NOW: u64 = 1_700_000_000;

/// A token header as JSON: the fields parse judges, each right, wrong or absent.
fn token_header() -> impl Strategy<Value = serde_json::Value> {
    let alg = prop_oneof![
        3 => Just(Some("HS256")),
        1 => prop::option::of(select(&["hs256", "none", "HS512", "RS256", ""][..])),
    ];
    let typ = prop_oneof![
        3 => Just(Some(API_TOKEN_TYP)),
        1 => prop::option::of(select(&["JWT", "bintu-play+jwt", ""][..])),
    ];
    let kid = prop_oneof![
        6 => "[A-Za-z0-9_-]{0,70}".prop_map(Some),
        1 => "[A-Za-z0-9_./ %\\\\é-]{0,10}".prop_map(Some),
        1 => Just(None),
    ];
    let padding = prop::option::weighted(0.2, 0usize..600);
    (alg, typ, kid, padding).prop_map(|(alg, typ, kid, padding)| {
        let mut h = serde_json::Map::new();
        if let Some(a) = alg {
            h.insert("alg".into(), json!(a));
        }
        if let Some(t) = typ {
            h.insert("typ".into(), json!(t));
        }
        if let Some(k) = kid {
            h.insert("kid".into(), json!(k));
        }
        if let Some(n) = padding {
            h.insert("x".into(), json!("x".repeat(n)));
        }
        serde_json::Value::Object(h)
    })
}

/// A base64url segment, or something that looks like one but is not.
fn segment_like() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9_-]{0,40}",
        1 => "[A-Za-z0-9+/=_ .-]{0,12}",
        1 => latin1(8),
    ]
}

/// A token as it might arrive: the header JSON encoded (or mis-encoded),
/// payload and signature segments, and sometimes too few or too many dots.
fn token_like() -> impl Strategy<Value = (String, Option<serde_json::Value>)> {
    let encoding = select(&["b64url", "b64url", "b64url", "padded", "standard", "raw"][..]);
    let rest = prop_oneof![
        4 => prop::collection::vec(segment_like(), 2),
        1 => prop::collection::vec(segment_like(), 0..4),
    ];
    (token_header(), encoding, rest).prop_map(|(header, encoding, rest)| {
        let text = header.to_string();
        let seg = match encoding {
            "b64url" => B64.encode(&text),
            "padded" => base64::engine::general_purpose::URL_SAFE.encode(&text),
            "standard" => base64::engine::general_purpose::STANDARD.encode(&text),
            _ => text,
        };
        let mut parts = vec![seg];
        parts.extend(rest);
        (parts.join("."), Some(header))
    })
}

#[test]
fn token_parsing_is_total_and_strict() {
    let strategy = prop_oneof![
        4 => token_like(),
        1 => any::<String>().prop_map(|s| (s, None)),
        1 => latin1(64).prop_map(|s| (s, None)),
    ];
    check("token::parse", 4096, strategy, |(raw, header)| {
        let result = token::parse(&raw);
        let parts: Vec<&str> = raw.split('.').collect();
        if let Ok(t) = &result {
            // Three segments, the first one base64url (no padding) over a
            // header of an API token whose kid is a plausible id.
            prop_assert_eq!(parts.len(), 3);
            prop_assert_eq!(t.as_str(), raw.as_str());
            prop_assert!(kid_ok(t.kid()), "kid {:?}", t.kid());
            let decoded = B64.decode(parts[0]);
            prop_assert!(decoded.is_ok(), "header segment {:?}", parts[0]);
            let h: serde_json::Value = serde_json::from_slice(&decoded.unwrap_or_default())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&h["alg"], "HS256");
            prop_assert_eq!(&h["typ"], API_TOKEN_TYP);
            prop_assert_eq!(&h["kid"], t.kid());
        }
        if parts.len() != 3
            || !parts[0]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            prop_assert_eq!(result.err(), Some(TokenError::Malformed));
            return Ok(());
        }
        // A header we built: the outcome is exactly what its fields say.
        if let Some(h) = header {
            let fits = B64.decode(parts[0]).is_ok_and(|d| d.len() <= 512);
            // `alg` is required (a header without one is no JWS header);
            // then the algorithm and type are pinned, then the kid checked.
            let expected = if !fits || !h.get("alg").is_some_and(|a| a.is_string()) {
                Err(TokenError::Malformed)
            } else if h.get("alg").and_then(|a| a.as_str()) != Some("HS256")
                || h.get("typ").and_then(|t| t.as_str()) != Some(API_TOKEN_TYP)
            {
                Err(TokenError::WrongType)
            } else {
                match h.get("kid").and_then(|k| k.as_str()) {
                    Some(k) if kid_ok(k) => Ok(k.to_owned()),
                    _ => Err(TokenError::BadKeyId),
                }
            };
            prop_assert_eq!(result.map(|t| t.kid().to_owned()), expected, "{:?}", h);
        }
        Ok(())
    });
}

#[test]
fn a_minted_token_parses_back_with_its_kid() {
    let user_ids = prop_oneof![
        4 => "[A-Za-z0-9_-]{1,64}",
        1 => "[A-Za-z0-9_./ -]{0,70}",
    ];
    check(
        "token::mint round trip",
        512,
        (user_ids, any::<[u8; 32]>()),
        |(user_id, secret)| {
            let s = settings();
            let minted = token::mint(&s, &user_id, &secret, NOW)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            match token::parse(&minted) {
                Ok(t) => {
                    prop_assert!(kid_ok(&user_id));
                    prop_assert_eq!(t.kid(), user_id.as_str());
                    let key = VerifyKey::new(&secret);
                    prop_assert!(token::verify(&t, &key, &s, &user_id, NOW).is_ok());
                }
                Err(e) => {
                    prop_assert!(!kid_ok(&user_id), "{user_id:?}: {e:?}");
                    prop_assert_eq!(e, TokenError::BadKeyId);
                }
            }
            Ok(())
        },
    );
}

#[test]
fn a_changed_token_never_verifies() {
    // One character of a minted token replaced, inserted or removed (any
    // segment, any character, base64url or not): parse or verify refuses it.
    let edit = (
        any::<Index>(),
        0u8..3,
        select(
            &[
                'A', 'B', 'a', '0', '-', '_', '+', '/', '=', '.', ' ', '%', 'é',
            ][..],
        ),
    );
    let secret = token::derive_secret(b"master-secret-for-properties-0001", "u-1", &[7; 32]);
    let minted = token::mint(&settings(), "u-1", &secret, NOW).unwrap();
    let key = VerifyKey::new(&secret);
    check("token tampering", 2048, edit, |(at, op, c)| {
        let mut chars: Vec<char> = minted.chars().collect();
        let i = at.index(chars.len());
        match op {
            0 => chars[i] = c,
            1 => chars.insert(i, c),
            _ => {
                chars.remove(i);
            }
        }
        let changed: String = chars.into_iter().collect();
        if changed == minted {
            return Ok(());
        }
        if let Ok(t) = token::parse(&changed) {
            let verified = token::verify(&t, &key, &settings(), "u-1", NOW);
            prop_assert!(verified.is_err(), "{changed:?} verified");
        }
        Ok(())
    });
}

// === authz::routes::RouteTable ===

fn shipped_routes() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let src = std::fs::read_to_string(repo().join("policies/routes.toml")).unwrap();
        RouteTable::parse("routes.toml", &src).unwrap()
    })
}

fn is_param(template_segment: &str) -> bool {
    template_segment.starts_with('{') && template_segment.ends_with('}')
}

/// Whether a template matches a path on its own: same number of segments,
/// each literal equal.
fn template_matches(template: &str, path: &str) -> bool {
    let (t, p) = (segments(template), segments(path));
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| is_param(t) || t == p)
}

/// Check `find(method, path)` on `table` against every route, matched alone.
fn check_find(table: &RouteTable, method: &str, path: &str) -> TestCaseResult {
    let found = table.find(method, path);
    let matching: Vec<usize> = table
        .routes()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method == method && template_matches(&r.template, path))
        .map(|(i, _)| i)
        .collect();
    let Some(m) = found else {
        prop_assert!(
            matching.is_empty(),
            "{method} {path}: no match, but {:?} match",
            matching
                .iter()
                .map(|&i| &table.routes()[i].template)
                .collect::<Vec<_>>()
        );
        return Ok(());
    };
    prop_assert_eq!(&m.route.method, method);
    prop_assert!(template_matches(&m.route.template, path));
    // The parameters, put back into the template, give the path again.
    let mut params = m.params.iter();
    let rebuilt: Vec<String> = segments(&m.route.template)
        .into_iter()
        .map(|t| {
            if is_param(t) {
                // A missing parameter or one out of order shows as `?`.
                match params.next() {
                    Some((name, value)) if *name == &t[1..t.len() - 1] => (*value).to_owned(),
                    _ => "?".to_owned(),
                }
            } else {
                t.to_owned()
            }
        })
        .collect();
    prop_assert!(params.next().is_none(), "more params than the template has");
    // Each parameter names one value.
    let mut names: Vec<&str> = m.params.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    prop_assert!(names.windows(2).all(|w| w[0] != w[1]), "{:?}", m.params);
    prop_assert_eq!(format!("/{}", rebuilt.join("/")), path);
    if let ResourceId::Param(p) = &m.route.resource_id {
        prop_assert!(
            m.resource_id().is_some(),
            "{} has no `{}`",
            m.route.template,
            p
        );
    }
    // Exactly one route is the answer: every other route that matches is less
    // specific (a parameter where the chosen one has a literal, first), never
    // equally so.
    let shape = |t: &str| segments(t).into_iter().map(is_param).collect::<Vec<bool>>();
    let chosen = shape(&m.route.template);
    for &i in &matching {
        let other = &table.routes()[i];
        if Arc::ptr_eq(other, m.route) {
            continue;
        }
        let theirs = shape(&other.template);
        prop_assert!(
            chosen < theirs,
            "{method} {path}: chose {}, but {} matches and is {}",
            m.route.template,
            other.template,
            if chosen == theirs {
                "as specific (ambiguous)"
            } else {
                "more specific"
            }
        );
    }
    Ok(())
}

/// Words that occur in the shipped templates, and some that do not.
fn route_words(table: &RouteTable) -> Vec<String> {
    let mut words: Vec<String> = table
        .routes()
        .iter()
        .flat_map(|r| segments(&r.template).into_iter().map(str::to_owned))
        .filter(|s| !is_param(s))
        .collect();
    words.extend(["x".into(), "abc".into(), "%41".into(), "..".into()]);
    words.sort();
    words.dedup();
    words
}

#[test]
fn shipped_routes_match_at_most_one_route_and_give_the_path_back() {
    let table = shipped_routes();
    let words = route_words(table);
    let mut methods: Vec<String> = table.routes().iter().map(|r| r.method.clone()).collect();
    methods.extend(["PATCH".into(), "HEAD".into(), "get".into()]);
    methods.sort();
    methods.dedup();
    let value = prop_oneof![
        1 => "[A-Za-z0-9._~%-]{1,8}",
        1 => select(words.clone()),
    ];
    let strategy = (
        select(methods),
        any::<Index>(),
        prop::collection::vec(value, 8),
        0u8..4,
        any_path(),
    );
    check(
        "RouteTable::find (shipped)",
        2048,
        strategy,
        |(method, route, values, mode, random)| {
            // A path built from a template (its parameters filled with values or
            // with words that are literals elsewhere), one segment more or
            // fewer, or any path at all.
            let template = &table.routes()[route.index(table.routes().len())].template;
            let mut segs: Vec<String> = segments(template)
                .iter()
                .zip(&values)
                .map(|(t, v)| {
                    if is_param(t) {
                        v.clone()
                    } else {
                        (*t).to_owned()
                    }
                })
                .collect();
            match mode {
                1 => segs.push(values[7].clone()),
                2 => {
                    segs.pop();
                }
                _ => {}
            }
            let raw = if mode == 3 {
                random
            } else {
                format!("/{}", segs.join("/"))
            };
            let Ok(path) = normalize(&raw) else {
                return Ok(());
            };
            check_find(table, &method, &path)?;
            // A route matches the path built from its own template (when
            // normalisation left that path as it was).
            if mode == 0 && path == raw {
                let m = table.find(
                    &table.routes()[route.index(table.routes().len())].method,
                    &path,
                );
                prop_assert!(m.is_some(), "{template} does not match {path}");
            }
            Ok(())
        },
    );
}

#[test]
fn generated_route_tables_match_at_most_one_route() {
    let template = prop::collection::vec(select(&["a", "b", "{x}", "{y}"][..]), 0..4);
    let route = (select(&["GET", "POST"][..]), template);
    let strategy = (
        prop::collection::vec(route, 1..6),
        prop::collection::vec(
            (
                select(&["GET", "POST"][..]),
                prop::collection::vec(select(&["a", "b", "c"][..]), 0..4),
            ),
            8,
        ),
    );
    check(
        "RouteTable::parse + find (generated)",
        1024,
        strategy,
        |(routes, probes)| {
            let src: String = routes
                .iter()
                .map(|(method, segs)| {
                    format!(
                        "[[route]]\nmethod = \"{method}\"\npath = \"/{}\"\naction = \"a\"\nresource = \"OrgResource::streams\"\nhandler = \"upstream\"\n\n",
                        segs.join("/")
                    )
                })
                .collect();
            // Two routes of one method that match the same requests (the same
            // literals where both have literals, parameters elsewhere).
            let shape = |s: &[&str]| s.iter().map(|s| is_param(s)).collect::<Vec<bool>>();
            let clash = routes.iter().enumerate().any(|(i, (m, s))| {
                routes[..i].iter().any(|(m2, s2)| {
                    m == m2
                        && shape(s) == shape(s2)
                        && s.iter().zip(s2).all(|(a, b)| is_param(a) || a == b)
                })
            });
            // Or a template that names one parameter twice.
            let named_twice = routes.iter().any(|(_, s)| {
                s.iter()
                    .enumerate()
                    .any(|(i, a)| is_param(a) && s[..i].contains(a))
            });
            let table = RouteTable::parse("routes.toml", &src);
            prop_assert_eq!(
                table.is_err(),
                clash || named_twice,
                "{}{:?}",
                src,
                table.as_ref().err()
            );
            let Ok(table) = table else {
                return Ok(());
            };
            for (method, segs) in &probes {
                check_find(&table, method, &format!("/{}", segs.join("/")))?;
            }
            Ok(())
        },
    );
}

// === request::query::Query ===

/// `application/x-www-form-urlencoded` parsing as the WHATWG URL standard
/// describes it (§5.1): split on `&`, drop empty sequences, split at the
/// first `=`, `+` is a space, percent-decode bytes, then UTF-8 (lossily).
fn form_pairs(query: &str) -> Vec<(String, String)> {
    fn decode(s: &[u8]) -> String {
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'+' => out.push(b' '),
                b'%' => match (
                    s.get(i + 1).copied().and_then(hex),
                    s.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .as_bytes()
        .split(|b| *b == b'&')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (name, value) = match s.iter().position(|b| *b == b'=') {
                Some(i) => (&s[..i], &s[i + 1..]),
                None => (s, &[][..]),
            };
            (decode(name), decode(value))
        })
        .collect()
}

/// The names rolegate acts on, and ones near them.
const QUERY_NAMES: &[&str] = &["token", "tags", "tags[]", "tag", "role", "x", "", "to ken"];

/// A name as a client might spell it: each byte as itself or percent-encoded
/// (either case), a space as `+` or `%20`.
fn spelled(name: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(0u8..3, name.len()).prop_map(move |how| {
        name.bytes()
            .zip(how)
            .map(|(b, how)| match (b, how) {
                (b' ', 0) => "+".to_owned(),
                (_, 1) => format!("%{b:02X}"),
                (_, 2) => format!("%{b:02x}"),
                _ => char::from(b).to_string(),
            })
            .collect()
    })
}

fn query_string() -> impl Strategy<Value = String> {
    let name = select(QUERY_NAMES).prop_flat_map(spelled);
    let value = prop::option::of(prop_oneof![
        3 => "[a-zA-Z0-9 +%=._-]{0,6}",
        1 => Just(String::new()),
        1 => latin1(6),
    ]);
    let pair = (name, value).prop_map(|(n, v)| match v {
        Some(v) => format!("{n}={v}"),
        None => n,
    });
    prop_oneof![
        5 => prop::collection::vec(pair, 0..6).prop_map(|p| p.join("&")),
        1 => prop::collection::vec(pair_sep(), 0..6).prop_map(|p| p.concat()),
        1 => any::<String>(),
        1 => latin1(24),
    ]
}

/// Separators and fragments on their own: `&&`, `=`, stray `%`.
fn pair_sep() -> impl Strategy<Value = String> {
    select(
        &[
            "&", "&&", "=", "token", "token=", "=a", "%", "%7", "tags[]=v", "+",
        ][..],
    )
    .prop_map(str::to_owned)
}

#[test]
fn a_query_parameter_is_single_or_ambiguous() {
    let strategy = (query_string(), select(QUERY_NAMES), select(QUERY_NAMES));
    check("query::Query", 4096, strategy, |(raw, name, other)| {
        let pairs = form_pairs(&raw);
        let q = Query::new(Some(&raw));
        for n in [name, other] {
            let values: Vec<&str> = pairs
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .collect();
            let got = q.single(n);
            match values.as_slice() {
                [] => prop_assert_eq!(got, Ok(None)),
                [""] => prop_assert_eq!(got, Ok(None)),
                [v] => prop_assert_eq!(got, Ok(Some(Cow::Borrowed(*v)))),
                _ => prop_assert_eq!(got, Err(Ambiguous(n.to_owned()))),
            }
        }
        let expected = pairs
            .iter()
            .any(|(k, v)| !v.is_empty() && (k == name || k == other));
        prop_assert_eq!(q.has_value(&[name, other]), expected);
        prop_assert!(!Query::new(None).has_value(&[name]));
        Ok(())
    });
}

// === authz::decide::decide_action: one decision, or a deny ===

fn shipped_policies() -> &'static PolicyStore {
    static STORE: OnceLock<PolicyStore> = OnceLock::new();
    STORE.get_or_init(|| {
        PolicyStore::open(PolicySource {
            policies_dir: repo().join("policies"),
            schema_dir: repo().join("schema"),
        })
        .unwrap()
    })
}

/// A caller as rolegate builds one from each kind of credential: its kind,
/// user id, organisation and role (a user's role may be one the catalogue
/// does not know; an API key acts as nanoAdmin; a player key has no role).
#[derive(Debug, Clone)]
struct CallerSpec(u8, String, String, String);

impl CallerSpec {
    fn caller(&self) -> Caller {
        let CallerSpec(kind, user, org, role) = self;
        match kind {
            0 => Caller::user_in(user, org, role),
            1 => Caller::api_key_of(org),
            2 => Caller::player_key_of(org),
            _ => Caller::anonymous(),
        }
    }
}

/// Ids: the few that policies and callers share (so that organisations
/// agree often enough for allows), and odd ones.
fn entity_id(common: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => select(common).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9:\"\\\\ _-]{0,8}",
    ]
}

fn caller(snapshot: &PolicySnapshot) -> impl Strategy<Value = CallerSpec> {
    let mut roles: Vec<String> = snapshot.roles.keys().cloned().collect();
    roles.extend(["nanoRoot".into(), String::new(), "nanoadmin".into()]);
    (
        0u8..4,
        entity_id(&["u-1", "u-2"]),
        entity_id(&["org-a", "org-a", "org-b"]),
        select(roles),
    )
        .prop_map(|(kind, user, org, role)| CallerSpec(kind, user, org, role))
}

#[derive(Debug, Clone)]
struct Asked {
    action: String,
    resource_type: String,
    resource_id: String,
    resource_org: String,
    method: String,
    path: String,
    /// The credential kind in the context: the caller's own, or another.
    credential: Option<u8>,
    client_ip: IpAddr,
    tag_filter: bool,
}

fn asked(snapshot: &PolicySnapshot) -> impl Strategy<Value = Asked> {
    // Mostly what a route asks (its action, resource type, and fixed id or
    // one from the path), sometimes any action of the schema on any type,
    // sometimes names the schema does not have.
    let routed: Vec<(String, String, String, Option<String>)> = snapshot
        .routes
        .routes()
        .iter()
        .map(|r| {
            let fixed = match &r.resource_id {
                ResourceId::Fixed(id) => Some(id.clone()),
                _ => None,
            };
            (
                r.action.clone(),
                r.resource_type.clone(),
                r.method.clone(),
                fixed,
            )
        })
        .collect();
    let actions: Vec<String> = snapshot
        .action_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let types: Vec<String> = routed
        .iter()
        .map(|r| r.1.clone())
        .chain(["User".into(), "Organisation".into(), "Anonymous".into()])
        .collect();
    let id = entity_id(&["s1", "u-1", "u-2", "streams", "org-a", ""]);
    let question = prop_oneof![
        4 => (select(routed), id.clone()).prop_map(|((action, ty, method, fixed), id)| {
            (action, ty, fixed.unwrap_or(id), method)
        }),
        1 => (select(actions), select(types), id.clone(), Just("GET".to_owned())),
        1 => (
            prop_oneof![Just("operate".to_owned()), "[a-zA-Z:\" ]{0,12}"],
            "[A-Za-z:\" ]{0,10}",
            id,
            select(&["GET", "get", ""][..]).prop_map(str::to_owned),
        ),
    ];
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ];
    (
        question,
        entity_id(&["org-a", "org-a", "org-b"]),
        path_like(),
        prop::option::weighted(0.2, 0u8..4),
        ip,
        any::<bool>(),
    )
        .prop_map(
            |(
                (action, resource_type, resource_id, method),
                resource_org,
                path,
                credential,
                client_ip,
                tag_filter,
            )| Asked {
                action,
                resource_type,
                resource_id,
                resource_org,
                method,
                path,
                credential,
                client_ip,
                tag_filter,
            },
        )
}

#[test]
fn every_question_gets_one_decision_or_a_deny() {
    let store = shipped_policies();
    let snapshot = store.current();
    let strategy = (caller(&snapshot), asked(&snapshot));
    check("decide_action", 1024, strategy, |(spec, a)| {
        let caller = spec.caller();
        let credential = match a.credential {
            Some(k) => {
                CallerSpec(k, String::new(), String::new(), String::new())
                    .caller()
                    .kind
            }
            None => caller.kind,
        };
        let facts = RequestFacts {
            method: &a.method,
            path: &a.path,
            credential,
            client_ip: a.client_ip,
            tag_filter: a.tag_filter,
        };
        let decide = || {
            decide_action(
                &snapshot,
                &caller,
                &a.action,
                &a.resource_type,
                &a.resource_id,
                &a.resource_org,
                &facts,
            )
        };
        let outcome = decide();
        // An action the schema does not declare is always a deny.
        let Some(action) = snapshot.action(&a.action) else {
            prop_assert!(!outcome.allowed, "unknown action {:?} allowed", a.action);
            prop_assert!(!outcome.errors.is_empty());
            return Ok(());
        };
        // Fail closed: an error is a deny; an allow names the policies behind it.
        if !outcome.errors.is_empty() {
            prop_assert!(!outcome.allowed, "{outcome:?}");
        }
        if outcome.allowed {
            prop_assert!(!outcome.policies.is_empty(), "{outcome:?}");
        }
        // One decision: asked again (now from the decision cache) the same,
        // and the same as evaluating the request afresh against every policy.
        let again = decide();
        prop_assert_eq!(again.allowed, outcome.allowed);
        let fresh = snapshot.decide(
            principal_entity(&caller),
            action,
            entities::resource(&a.resource_type, &a.resource_id, &a.resource_org),
            snapshot.context(&facts),
        );
        prop_assert_eq!(
            fresh.allowed,
            outcome.allowed,
            "fresh {:?}, decided {:?}",
            fresh,
            outcome
        );
        if outcome.errors.is_empty() {
            prop_assert_eq!(&fresh.policies, &outcome.policies);
        }
        Ok(())
    });
}
