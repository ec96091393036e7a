//! User API tokens ("bintu tokens"): HS256 JWTs whose signing secret is derived
//! from the master secret and the user's current tokenKey.
//!
//! `secret = HMAC-SHA256(master_secret, "rolegate/api-token/v1" 0 user_id 0 token_key)`
//!
//! The store therefore holds no signing secret, and renewing a user's tokenKey
//! invalidates every token of that user at once. The header's `kid` is the user
//! id, so the key is looked up before the signature is checked; the algorithm is
//! pinned (the header never chooses it) and `typ` is one no other token kind uses.
//! Time claims are checked here against an explicit clock and leeway, and every
//! claim is strictly typed (a string `exp` is a parse error, not a number).
//!
//! Minting uses jsonwebtoken. Verification is done here, with the `hmac` crate
//! for the MAC, because the request path verifies with the derived key it
//! caches per user ([`VerifyKey`]) and decodes the header once, into the three
//! fields that matter, instead of a full JOSE header twice. The checks are the
//! same: compact form, HS256 and our `typ` pinned, constant-time MAC
//! comparison, strictly typed claims.

use crate::reason::Reason;
use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The `typ` of an API token. Playback tokens use another.
pub const API_TOKEN_TYP: &str = "bintu-api+jwt";
/// Longest `kid` accepted; user ids are UUIDs.
const MAX_KID_LEN: usize = 64;

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub ttl_secs: u64,
    pub leeway_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token header is not that of an API token")]
    WrongType,
    #[error("token has no usable key id")]
    BadKeyId,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token claims are missing or mistyped")]
    BadClaims,
    #[error("token issuer is wrong")]
    WrongIssuer,
    #[error("token audience is wrong")]
    WrongAudience,
    #[error("token subject does not match its key id")]
    WrongSubject,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token signing failed")]
    Signing,
}

impl TokenError {
    pub fn reason(&self) -> Reason {
        match self {
            TokenError::Malformed => Reason::TokenMalformed,
            TokenError::WrongType => Reason::TokenWrongType,
            TokenError::BadKeyId => Reason::TokenBadKid,
            TokenError::BadSignature => Reason::TokenBadSignature,
            TokenError::BadClaims => Reason::TokenBadClaims,
            TokenError::WrongIssuer => Reason::TokenWrongIssuer,
            TokenError::WrongAudience => Reason::TokenWrongAudience,
            TokenError::WrongSubject => Reason::TokenWrongSubject,
            TokenError::Expired => Reason::TokenExpired,
            TokenError::NotYetValid => Reason::TokenNotYetValid,
            TokenError::Signing => Reason::TokenSigningFailed,
        }
    }
}

/// The claims of an API token. All are required; serde refuses other types.
/// Strings are `Cow` so verification reads them borrowed from the decoded
/// payload (no copy per request) and minting can own them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiClaims<'a> {
    #[serde(borrow)]
    pub iss: Cow<'a, str>,
    #[serde(borrow)]
    pub aud: Cow<'a, str>,
    #[serde(borrow)]
    pub sub: Cow<'a, str>,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    #[serde(borrow)]
    pub jti: Cow<'a, str>,
}

/// A user's verification key: their derived secret.
///
/// Kept as the 32 secret bytes, not as an HMAC context keyed with them: the
/// keyed context (192 bytes) spares two SHA-256 blocks per full verification,
/// and a cached user's requests are almost all answered by the remembered
/// token ([`VerifiedToken`]) without any MAC, so the context cost 160 bytes
/// per cached user to save about 0.3 µs once per token.
#[derive(Clone)]
pub struct VerifyKey([u8; 32]);

impl VerifyKey {
    pub fn new(secret: &[u8; 32]) -> Self {
        VerifyKey(*secret)
    }

    fn mac(&self) -> Hmac<Sha256> {
        match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        }
    }
}

/// Written out by hand so a logged entry never shows the secret.
impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyKey([redacted])")
    }
}

/// The header fields an API token is judged by; anything else in it is ignored.
/// Strings borrow from the decoded bytes unless they hold escapes (`Cow`).
#[derive(Deserialize)]
struct TokenHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default, borrow)]
    typ: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kid: Option<Cow<'a, str>>,
}

/// An API token whose form and header have been checked (compact JWS, HS256,
/// our `typ`, a plausible `kid`), but not yet its signature or claims. The
/// request path parses once: the kid finds the key, then [`verify`] checks the
/// rest with it.
pub struct ApiToken<'t> {
    /// The whole token, as presented.
    raw: &'t str,
    header: &'t str,
    payload: &'t str,
    signature: &'t str,
    /// The key id, checked to be 1..=MAX_KID_LEN ASCII characters, kept
    /// inline: parsing runs on every request and allocates nothing.
    kid: [u8; MAX_KID_LEN],
    kid_len: usize,
}

impl ApiToken<'_> {
    /// The key id (a user id), checked to be a plausible id so it never drives odd lookups.
    pub fn kid(&self) -> &str {
        // Checked to be ASCII when parsed; the fallback is never taken.
        std::str::from_utf8(&self.kid[..self.kid_len]).unwrap_or("")
    }

    /// The whole token, as presented.
    pub fn as_str(&self) -> &str {
        self.raw
    }
}

/// The `exp` a parsed token claims, read without checking anything: only
/// for a token that has already verified (the end of a connection it opened).
pub fn claimed_exp(token: &ApiToken<'_>) -> Option<u64> {
    #[derive(Deserialize)]
    struct Exp {
        exp: u64,
    }
    let payload = B64.decode(token.payload).ok()?;
    serde_json::from_slice::<Exp>(&payload).ok().map(|e| e.exp)
}

/// Largest decoded token header accepted (ours is under 100 bytes).
const MAX_HEADER_BYTES: usize = 512;

/// The header as `mint` writes it, up to the `kid` value:
/// `{"typ":"bintu-api+jwt","alg":"HS256","kid"` (42 bytes, whole 3-byte
/// groups) in base64url. Why: a header starting with these 56 characters
/// starts with those bytes, so only its tail (`:"<kid>"}`) is decoded and no
/// JSON parser runs; that was about 2,000 of the ~15,000 instructions
/// authorization adds to a request. Any other header takes the general path.
const MINTED_HEAD_B64: &str = "eyJ0eXAiOiJiaW50dS1hcGkrand0IiwiYWxnIjoiSFMyNTYiLCJraWQi";

/// Split a token and check its header. Nothing in it is trusted yet.
pub fn parse(token: &str) -> Result<ApiToken<'_>, TokenError> {
    let (header, payload, signature) = split(token).ok_or(TokenError::Malformed)?;
    let mut inline = [0u8; MAX_KID_LEN];
    let kid_len = match minted_kid(header, &mut inline) {
        Some(n) => n,
        None => {
            let mut bytes = [0u8; MAX_HEADER_BYTES];
            let n = B64
                .decode_slice(header, &mut bytes)
                .map_err(|_| TokenError::Malformed)?;
            let h: TokenHeader =
                serde_json::from_slice(&bytes[..n]).map_err(|_| TokenError::Malformed)?;
            if h.alg != "HS256" || h.typ.as_deref() != Some(API_TOKEN_TYP) {
                return Err(TokenError::WrongType);
            }
            let kid = h.kid.ok_or(TokenError::BadKeyId)?;
            if !plausible_kid(kid.as_bytes()) {
                return Err(TokenError::BadKeyId);
            }
            inline[..kid.len()].copy_from_slice(kid.as_bytes());
            kid.len()
        }
    };
    Ok(ApiToken {
        raw: token,
        header,
        payload,
        signature,
        kid: inline,
        kid_len,
    })
}

/// The three dot-separated parts of a compact JWS, or `None` for any other
/// number of parts. memchr finds the dots with SIMD: `str::split` walked the
/// ~380 bytes one at a time, about 1,000 instructions per request.
fn split(token: &str) -> Option<(&str, &str, &str)> {
    let b = token.as_bytes();
    let first = memchr::memchr(b'.', b)?;
    let second = first + 1 + memchr::memchr(b'.', &b[first + 1..])?;
    if memchr::memchr(b'.', &b[second + 1..]).is_some() {
        return None;
    }
    Some((
        &token[..first],
        &token[first + 1..second],
        &token[second + 1..],
    ))
}

/// The `kid` of a header exactly as `mint` writes it, copied into `out`,
/// found without a JSON parser; `None` when the header is written any other
/// way (the general path then decides). The result is the one the general
/// path would give: the tail is `:"` kid `"}` with a kid of plain id
/// characters, so there is no escape, duplicate field or other member it
/// could misread.
fn minted_kid(header: &str, out: &mut [u8; MAX_KID_LEN]) -> Option<usize> {
    let tail = header.strip_prefix(MINTED_HEAD_B64)?;
    let mut bytes = [0u8; MAX_KID_LEN + 8];
    let n = B64.decode_slice(tail, &mut bytes).ok()?;
    let kid = bytes[..n]
        .strip_prefix(b":\"")
        .and_then(|rest| rest.strip_suffix(b"\"}"))?;
    if !plausible_kid(kid) {
        return None;
    }
    out[..kid.len()].copy_from_slice(kid);
    Some(kid.len())
}

/// 1..=MAX_KID_LEN of `[A-Za-z0-9_-]`: a plausible user id, so a `kid`
/// never drives odd lookups.
fn plausible_kid(kid: &[u8]) -> bool {
    // Folded without an early exit, so the compiler tests 16 bytes at a
    // time: `all` took a byte at a time, ~350 instructions for a
    // 36-character id on every request.
    let id_chars = kid.iter().fold(true, |ok, &b| {
        ok & (b.is_ascii_alphanumeric() | (b == b'-') | (b == b'_'))
    });
    !kid.is_empty() && kid.len() <= MAX_KID_LEN && id_chars
}

/// Derive a user's signing secret from the master secret and their tokenKey.
pub fn derive_secret(master: &[u8], user_id: &str, token_key: &[u8]) -> [u8; 32] {
    SecretDeriver::new(master).derive(user_id, token_key)
}

/// [`derive_secret`] with the master secret's HMAC key schedule done once.
/// Why: keying HMAC-SHA256 hashes two blocks (the inner and outer pads), a
/// third of a derivation, and the request path derives on every cache miss.
#[derive(Clone)]
pub struct SecretDeriver(Hmac<Sha256>);

impl SecretDeriver {
    pub fn new(master: &[u8]) -> Self {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        SecretDeriver(match <Hmac<Sha256> as Mac>::new_from_slice(master) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        })
    }

    pub fn derive(&self, user_id: &str, token_key: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(b"rolegate/api-token/v1\0");
        mac.update(user_id.as_bytes());
        mac.update(b"\0");
        mac.update(token_key);
        mac.finalize().into_bytes().into()
    }
}

/// Written out by hand so a logged value never shows the keyed state.
impl std::fmt::Debug for SecretDeriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDeriver([redacted])")
    }
}

#[cold]
fn unreachable_hmac() -> Hmac<Sha256> {
    // HMAC-SHA256 takes keys of every length, so this is never reached; a fixed
    // zero key would still only produce secrets nobody holds tokens for.
    <Hmac<Sha256> as Mac>::new(&Default::default())
}

/// Mint an API token for `user_id`, signed with the secret derived from their tokenKey.
pub fn mint(
    settings: &TokenSettings,
    user_id: &str,
    secret: &[u8; 32],
    now: u64,
) -> Result<String, TokenError> {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some(API_TOKEN_TYP.to_owned());
    header.kid = Some(user_id.to_owned());
    let claims = ApiClaims {
        iss: Cow::Borrowed(&settings.issuer),
        aud: Cow::Borrowed(&settings.audience),
        sub: Cow::Borrowed(user_id),
        exp: now + settings.ttl_secs,
        nbf: now,
        iat: now,
        jti: Cow::Owned(uuid::Uuid::new_v4().simple().to_string()),
    };
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
        .map_err(|_| TokenError::Signing)
}

/// A fresh API token for a stored user, signed with the secret derived from
/// the master secret and the user's current tokenKey.
pub fn mint_for_user(
    settings: &TokenSettings,
    master_secret: &[u8],
    user: &crate::store::User,
    now: u64,
) -> Result<String, TokenError> {
    let secret = derive_secret(master_secret, &user.id, &user.token_key);
    mint(settings, &user.id, &secret, now)
}

/// The validity window of a token whose signature and claims verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub exp: u64,
    pub nbf: u64,
}

impl Verified {
    /// Whether the window holds at `now`, with the settings' leeway.
    pub fn check_time(&self, settings: &TokenSettings, now: u64) -> Result<(), TokenError> {
        if now > self.exp.saturating_add(settings.leeway_secs) {
            return Err(TokenError::Expired);
        }
        if self.nbf > now.saturating_add(settings.leeway_secs) {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }
}

/// A token that verified with one user's key, remembered beside that key
/// (one per cache entry). A client sends the same token on every request;
/// recognising it leaves only the clock to check, and skips decoding the
/// payload, parsing the claims and the MAC. The entry, and so this memo, is
/// replaced whenever the user's tokenKey or role changes, so it never
/// outlives the key it verified with.
///
/// The token is remembered by a 128-bit digest, not as its ~380 bytes: a
/// token is recognised when its digest is equal. The digest is POLYVAL (RFC
/// 8452), a polynomial over GF(2^128) evaluated at a key drawn at random when
/// the process starts, over the token's bytes and then its length. For two
/// different tokens the digests are equal only if the key is a root of their
/// difference, a nonzero polynomial (the length block keeps the encoding
/// one-to-one) whose degree is the longer token's number of blocks: at most
/// 257 of the 2^128 keys, for a credential of at most 4 KiB. No digest ever
/// leaves the process, so a client that holds the remembered token learns
/// nothing of the key but whether each token it sends is accepted: a forgery
/// succeeds with chance below 2^-119 per request (the HS256 MAC it stands in
/// for is 2^-256). A token recognised so is granted only what the remembered
/// one was: its window, and the entry's user and role. Why POLYVAL: hashing
/// the token is the largest single cost a cached request adds; SipHash-1-3
/// took about 1,100 instructions of it, POLYVAL's carry-less multiplications
/// take about 700. The window is kept in 32-bit seconds (good until 2106); a
/// token whose times do not fit is simply not remembered, and verified in
/// full each time.
pub(crate) struct VerifiedToken {
    digest: [u64; 2],
    exp: u32,
    nbf: u32,
}

/// The memo's digest of a token.
fn token_digest(token: &str) -> [u64; 2] {
    use polyval::universal_hash::UniversalHash;
    use polyval::{Block, Polyval};
    static KEYED: std::sync::OnceLock<Polyval> = std::sync::OnceLock::new();
    let mut h = KEYED
        .get_or_init(|| {
            // A zero key would make every digest zero (chance 2^-128).
            let mut key = [0u8; 16];
            while key == [0u8; 16] {
                key = rand::random();
            }
            Polyval::new(&key.into())
        })
        .clone();
    h.update_padded(token.as_bytes());
    let mut length = [0u8; 16];
    length[..8].copy_from_slice(&(token.len() as u64).to_le_bytes());
    h.update(&[Block::from(length)]);
    let tag: [u8; 16] = h.finalize().into();
    let tag = u128::from_le_bytes(tag);
    [tag as u64, (tag >> 64) as u64]
}

impl VerifiedToken {
    pub(crate) fn new(token: &str, window: Verified) -> Option<Self> {
        Some(VerifiedToken {
            digest: token_digest(token),
            exp: u32::try_from(window.exp).ok()?,
            nbf: u32::try_from(window.nbf).ok()?,
        })
    }

    /// The window of `token` if it is exactly the remembered one.
    pub(crate) fn window_of(&self, token: &str) -> Option<Verified> {
        let d = token_digest(token);
        // Without an early exit: timing tells nothing of the remembered digest.
        let diff = (d[0] ^ self.digest[0]) | (d[1] ^ self.digest[1]);
        (std::hint::black_box(diff) == 0).then_some(Verified {
            exp: u64::from(self.exp),
            nbf: u64::from(self.nbf),
        })
    }
}

/// Verify a parsed API token whose key id named `user_id`, with that user's key.
pub fn verify(
    token: &ApiToken<'_>,
    key: &VerifyKey,
    settings: &TokenSettings,
    user_id: &str,
    now: u64,
) -> Result<Verified, TokenError> {
    let signature = B64
        .decode(token.signature)
        .map_err(|_| TokenError::Malformed)?;
    let mut mac = key.mac();
    mac.update(token.header.as_bytes());
    mac.update(b".");
    mac.update(token.payload.as_bytes());
    // Constant-time comparison; a wrong length fails the same way.
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let payload = B64
        .decode(token.payload)
        .map_err(|_| TokenError::Malformed)?;
    let c: ApiClaims = serde_json::from_slice(&payload).map_err(|_| TokenError::BadClaims)?;
    if c.iss != settings.issuer {
        return Err(TokenError::WrongIssuer);
    }
    if c.aud != settings.audience {
        return Err(TokenError::WrongAudience);
    }
    if c.sub != user_id {
        return Err(TokenError::WrongSubject);
    }
    let window = Verified {
        exp: c.exp,
        nbf: c.nbf,
    };
    window.check_time(settings, now)?;
    Ok(window)
}

/// Test fixtures: token settings (1 h lifetime, 30 s leeway) and the secret
/// and a fresh token of user `u1`, minted at `now`.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn settings() -> TokenSettings {
        TokenSettings {
            issuer: "rolegate".into(),
            audience: "bintu".into(),
            ttl_secs: 3600,
            leeway_secs: 30,
        }
    }

    pub fn secret() -> [u8; 32] {
        derive_secret(b"master-secret-master-secret-0123", "u1", &[7; 32])
    }

    pub fn token(now: u64) -> String {
        match mint(&settings(), "u1", &secret(), now) {
            Ok(t) => t,
            Err(e) => panic!("minting failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{secret, settings, token};
    use super::*;

    #[test]
    fn round_trip_and_clock_boundaries() {
        let (s, secret) = (settings(), secret());
        let now = 1_700_000_000;
        let t = token(now);
        let parsed = parse(&t).unwrap();
        assert_eq!(parsed.kid(), "u1");
        let key = VerifyKey::new(&secret);
        assert!(verify(&parsed, &key, &s, "u1", now).is_ok());
        // exp = now + 3600; accepted up to exp + leeway, refused one second later.
        assert!(verify(&parsed, &key, &s, "u1", now + 3600 + 30).is_ok());
        assert_eq!(
            verify(&parsed, &key, &s, "u1", now + 3600 + 31),
            Err(TokenError::Expired)
        );
        // nbf = now; before it by more than the leeway is refused.
        assert_eq!(
            verify(&parsed, &key, &s, "u1", now - 31),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            verify(&parsed, &key, &s, "u2", now),
            Err(TokenError::WrongSubject)
        );
        let other = VerifyKey::new(&derive_secret(b"x", "u1", &[7; 32]));
        assert_eq!(
            verify(&parsed, &other, &s, "u1", now),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn secrets_depend_on_every_input() {
        let a = derive_secret(b"m", "u1", b"k");
        assert_ne!(a, derive_secret(b"m2", "u1", b"k"));
        assert_ne!(a, derive_secret(b"m", "u2", b"k"));
        assert_ne!(a, derive_secret(b"m", "u1", b"k2"));
        // The separator keeps (user, key) pairs from colliding.
        assert_ne!(
            derive_secret(b"m", "u1", b"2k"),
            derive_secret(b"m", "u12", b"k")
        );
    }

    #[test]
    fn a_remembered_token_is_recognised_only_exactly() {
        let s = settings();
        let now = 1_700_000_000;
        let t = token(now);
        let window = verify(
            &parse(&t).unwrap(),
            &VerifyKey::new(&secret()),
            &s,
            "u1",
            now,
        )
        .unwrap();
        assert_eq!(window.exp, now + 3600);
        let memo = VerifiedToken::new(&t, window).unwrap();
        assert_eq!(memo.window_of(&t), Some(window));
        // One character changed anywhere, or a prefix, is another token.
        let mut other = t.clone().into_bytes();
        let last = other.len() - 1;
        other[last] = if other[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(memo.window_of(std::str::from_utf8(&other).unwrap()), None);
        assert_eq!(memo.window_of(&t[..t.len() - 1]), None);
        // Zero bytes appended pad to the same blocks: the length block tells them apart.
        assert_ne!(token_digest("ab"), token_digest("ab\0"));
        assert_ne!(token_digest(""), token_digest("\0"));
        // Times past 2106 do not fit the memo: such a token is not remembered.
        let far = Verified {
            exp: u64::from(u32::MAX) + 1,
            nbf: now,
        };
        assert!(VerifiedToken::new(&t, far).is_none());
        // The clock is still checked on a recognised token.
        assert_eq!(
            window.check_time(&s, now + 3600 + 31),
            Err(TokenError::Expired)
        );
        assert_eq!(
            window.check_time(&s, now - 31),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn headers_are_bounded_and_kids_checked_without_allocation() {
        let token = |header: &str| format!("{}.e30.sig", B64.encode(header));
        let kid = |k: &str| {
            parse(&token(&format!(
                r#"{{"alg":"HS256","typ":"{API_TOKEN_TYP}","kid":"{k}"}}"#
            )))
            .map(|t| t.kid().to_owned())
        };
        let longest = "k".repeat(MAX_KID_LEN);
        assert_eq!(kid(&longest), Ok(longest.clone()));
        assert_eq!(kid(&format!("{longest}k")), Err(TokenError::BadKeyId));
        assert_eq!(kid("a/b"), Err(TokenError::BadKeyId));
        assert_eq!(kid(""), Err(TokenError::BadKeyId));
        // Escapes are decoded before the check: `\u0075\u0031` is "u1",
        // an escaped backslash is still a backslash.
        assert_eq!(kid(r"\u0075\u0031"), Ok("u1".to_owned()));
        assert_eq!(kid(r"u\\1"), Err(TokenError::BadKeyId));
        // A header larger than any real one is malformed, whatever it holds.
        let padded = format!(
            r#"{{"alg":"HS256","typ":"{API_TOKEN_TYP}","kid":"u1","x":"{}"}}"#,
            "x".repeat(MAX_HEADER_BYTES)
        );
        assert_eq!(parse(&token(&padded)).err(), Some(TokenError::Malformed));
    }

    #[test]
    fn the_minted_header_shortcut_agrees_with_the_general_path() {
        assert_eq!(
            B64.encode(br#"{"typ":"bintu-api+jwt","alg":"HS256","kid""#),
            MINTED_HEAD_B64
        );
        // A minted token's header starts with the shortcut's prefix.
        let minted = token(1_700_000_000);
        assert!(minted.starts_with(MINTED_HEAD_B64));
        assert_eq!(parse(&minted).map(|t| t.kid().to_owned()), Ok("u1".into()));
        let kid = |header: &str| {
            parse(&format!("{}.e30.sig", B64.encode(header))).map(|t| t.kid().to_owned())
        };
        let head = r#"{"typ":"bintu-api+jwt","alg":"HS256","kid""#;
        // Tails the shortcut does not take go the general way, with its answers.
        assert_eq!(kid(&format!(r#"{head}:"u\u0031"}}"#)), Ok("u1".into()));
        assert_eq!(kid(&format!(r#"{head}: "u1"}}"#)), Ok("u1".into()));
        assert_eq!(kid(&format!(r#"{head}:"u1","kid":"u2"}}"#)).ok(), None);
        assert_eq!(
            kid(&format!(r#"{head}:"a/b"}}"#)),
            Err(TokenError::BadKeyId)
        );
        assert_eq!(kid(&format!(r#"{head}:""}}"#)), Err(TokenError::BadKeyId));
        assert_eq!(kid(&format!(r#"{head}:"u1"}} "#)), Ok("u1".into()));
        assert_eq!(kid(&format!(r#"{head}:"u1""#)), Err(TokenError::Malformed));
        assert_eq!(
            kid(&format!(r#"{head}:"{}"}}"#, "k".repeat(MAX_KID_LEN + 1))),
            Err(TokenError::BadKeyId)
        );
        // Non-canonical trailing bits in the tail are refused, as a whole decode does.
        let mut bad = B64.encode(format!(r#"{head}:"u1"}}"#));
        bad.push('B');
        assert_eq!(
            parse(&format!("{bad}.e30.sig")).err(),
            Some(TokenError::Malformed)
        );
    }

    #[test]
    fn a_token_has_exactly_three_parts() {
        assert_eq!(split("a.b.c"), Some(("a", "b", "c")));
        assert_eq!(split(".."), Some(("", "", "")));
        assert_eq!(split("a.b"), None);
        assert_eq!(split("a.b.c.d"), None);
        assert_eq!(split("abc"), None);
        assert_eq!(split(""), None);
    }
}
