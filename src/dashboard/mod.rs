//! The user-management dashboard: static pages served by rolegate itself under
//! the `dashboard_prefix` setting (default `/_rolegate/dashboard`), from assets compiled
//! into the binary (no build step, no CDN, no file read at run time).
//!
//! The pages hold no authority of their own: they call the management API
//! with the signed-in user's own API token, so Cedar decides every action
//! exactly as for any other client. That is why this front door needs no
//! credential and decides nothing: it only hands out public files.
//!
//! Every path under the prefix is answered here (an asset, 404 or 405) and
//! nothing under it is ever forwarded, so the prefix opens no way around the
//! route table. Paths are matched after the request path's normal form, the
//! same form every other door sees.

mod assets;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use crate::error::LocalBody;

/// The Content-Security-Policy of every answer: only this origin's own
/// scripts and styles (no inline script or style, no eval), API calls to this
/// origin only, never framed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// Whether `path` (normal form) is the dashboard's: the prefix itself or below it.
pub fn owns(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The answer to a request for a path the dashboard owns (see [`owns`]).
pub fn serve(prefix: &str, method: &Method, path: &str) -> Response<LocalBody> {
    let head = method == Method::HEAD;
    if method != Method::GET && !head {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let rest = path.strip_prefix(prefix).unwrap_or("");
    // The prefix itself (`/_rolegate` and, in normal form, `/_rolegate/`)
    // sends the browser to the page: its relative links then resolve under
    // the prefix, whatever the prefix is.
    if rest.is_empty() {
        let mut r = plain(StatusCode::FOUND, "");
        if let Ok(v) = HeaderValue::from_str(&format!("{prefix}/index.html")) {
            r.headers_mut().insert(http::header::LOCATION, v);
        }
        return r;
    }
    let name = rest.trim_start_matches('/');
    match assets::find(name) {
        Some(asset) => {
            let body = if head {
                Bytes::new()
            } else {
                Bytes::from_static(asset.body)
            };
            let mut r = Response::new(Full::new(body));
            let h = r.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            );
            h.insert(
                http::header::CONTENT_LENGTH,
                HeaderValue::from(asset.body.len()),
            );
            secure(r)
        }
        None => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<LocalBody> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    secure(r)
}

/// The headers every dashboard answer carries, errors included.
fn secure(mut r: Response<LocalBody>) -> Response<LocalBody> {
    let h = r.headers_mut();
    let set = |h: &mut http::HeaderMap, name: &'static str, value: &'static str| {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    };
    set(h, "content-security-policy", CSP);
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "x-frame-options", "DENY");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    // Assets change with the binary; a revalidation per load is cheap and
    // an upgrade never serves a stale script against a newer API.
    set(h, "cache-control", "no-cache");
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn owns_the_prefix_and_below_only() {
        assert!(owns("/_rolegate", "/_rolegate"));
        assert!(owns("/_rolegate", "/_rolegate/"));
        assert!(owns("/_rolegate", "/_rolegate/app.js"));
        assert!(!owns("/_rolegate", "/_rolegatex"));
        assert!(!owns("/_rolegate", "/stream"));
    }

    #[test]
    fn every_answer_carries_the_policy() {
        for (m, p) in [
            (Method::GET, "/_rolegate/index.html"),
            (Method::GET, "/_rolegate/nope.js"),
            (Method::POST, "/_rolegate/index.html"),
            (Method::GET, "/_rolegate"),
        ] {
            let r = serve("/_rolegate", &m, p);
            assert_eq!(r.headers()["content-security-policy"], CSP, "{m} {p}");
            assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        }
    }

    #[test]
    fn index_and_modules_are_served_with_their_types() {
        let r = serve("/_rolegate", &Method::GET, "/_rolegate");
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()["location"], "/_rolegate/index.html");
        let r = serve("/_rolegate", &Method::GET, "/_rolegate/index.html");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let r = serve("/_rolegate", &Method::GET, "/_rolegate/js/app.js");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
    }
}
